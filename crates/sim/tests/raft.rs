//! The raft checker as a test: a small budget of seeded runs (three openraft nodes with the
//! order crate's SQLite storage, a faulty in-memory network, crashes and partitions) keeps every
//! invariant and meets the faults it claims to inject, and the planted lying disk is found.
//! `bazaar-sim --mode raft --budget 60s` runs many more seeds.

use bazaar_sim::raft::{Config, Plant, Summary, run};

#[test]
fn seeded_raft_runs_keep_every_invariant_under_every_fault() {
    let mut total = Summary::default();
    for seed in 1_u64..=8 {
        match run(Config::new(seed, 800)) {
            Ok(summary) => {
                eprintln!("seed {seed}: {summary}");
                assert!(summary.acked > 0, "seed {seed} traded nothing: {summary}");
                total.acked += summary.acked;
                total.refused += summary.refused;
                total.crashes += summary.crashes;
                total.partitions += summary.partitions;
                total.leaderships += summary.leaderships;
                total.installs += summary.installs;
                total.net.lost += summary.net.lost;
                total.net.duplicated += summary.net.duplicated;
                total.net.late += summary.net.late;
            }
            Err(violation) => panic!("{violation}"),
        }
    }
    // The runs met what the checker claims to survive.
    assert!(total.crashes >= 8 && total.partitions >= 4, "{total:?}");
    assert!(total.leaderships > 8, "leaders changed: {total:?}");
    assert!(
        total.installs > 0,
        "a replica caught up from a snapshot: {total:?}"
    );
    assert!(total.refused > 0, "some buys were refused: {total:?}");
    assert!(
        total.net.lost > 0 && total.net.duplicated > 0 && total.net.late > 0,
        "{total:?}"
    );
}

#[test]
fn a_planted_bug_a_disk_that_loses_acknowledged_writes_is_found() {
    let found = (1_u64..=40).find_map(|seed| {
        let mut config = Config::new(seed, 1_000);
        config.plant = Some(Plant::LyingDisk);
        run(config).err()
    });
    let violation = found.expect("the lying disk is caught within 40 seeds");
    eprintln!("{violation}");
    assert!(
        violation.what.contains("acknowledged trade lost")
            || violation.what.contains("forked")
            || violation.what.contains("state machine safety")
            || violation.what.contains("exactly once")
            // openraft's own debug assertion: a follower's log went back.
            || violation.what.contains("Raft core ended"),
        "{}",
        violation.what
    );
    assert!(violation.replay.contains("--plant lying-disk"));
    assert!(!violation.trace.is_empty());
}
