//! Tests of the network fault harness (`bazaar-netlab`) and short seeded fault schedules on
//! test hosts. They need root, `ip netns` and nftables (`.ci/net` installs what is missing);
//! without root each test says so and passes without running.
//!
//! - `harness` — the lab itself: it cleans up, a cut blocks, one-way loss is one-way, a pause
//!   stops answers.
//! - `schedule` — `bazaar netchaos` with a short seeded schedule in both replication modes.

mod harness;
mod schedule;

/// True when the harness can run here; otherwise prints why the test is skipped.
pub fn lab_available(test: &str) -> bool {
    match bazaar_netlab::check_prerequisites() {
        Ok(()) => true,
        Err(e) => {
            eprintln!("skipping {test}: {e} (these tests need root, `ip netns` and nftables)");
            false
        }
    }
}
