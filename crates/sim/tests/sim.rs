//! The simulator as a test: seeded runs keep every invariant (a small budget here; `.ci/run`
//! runs a minute of seeds in each mode), the same seed replays the same run, and a planted bug is
//! found.

use bazaar_sim::{Config, Plant, Profile, run};

#[test]
fn seeded_runs_in_both_profiles_keep_every_invariant() {
    for seed in 1_u64..=12 {
        let profile = if seed.is_multiple_of(2) {
            Profile::Lab
        } else {
            Profile::Quorum
        };
        match run(Config::new(seed, 3_000, profile)) {
            Ok(summary) => {
                assert!(summary.acked > 0, "seed {seed} traded nothing: {summary}");
                eprintln!("seed {seed} ({profile:?}): {summary}");
            }
            Err(violation) => panic!("{violation}"),
        }
    }
}

#[test]
fn the_same_seed_replays_the_same_run() {
    let config = Config::new(7, 2_000, Profile::Quorum);
    let first = run(config).expect("seed 7 is clean");
    let second = run(config).expect("seed 7 is clean");
    assert_eq!(first, second);
    assert!(first.crashes > 0 && first.partitions > 0, "{first}");
}

#[test]
fn a_planted_bug_storage_that_acknowledges_before_it_persists_is_found() {
    let found = (1..=200).find_map(|seed| {
        let mut config = Config::new(seed, 3_000, Profile::Quorum);
        config.plant = Some(Plant::LyingDisk);
        run(config).err()
    });
    let violation = found.expect("the lying disk is caught within 200 seeds");
    eprintln!("{violation}");
    assert!(
        violation.what.contains("forked") || violation.what.contains("no replica's log"),
        "{}",
        violation.what
    );
    assert!(!violation.trace.is_empty());
}
