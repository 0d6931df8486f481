//! The fault schedule: a pure function of the seed, the fault kinds and the duration, so the
//! same seed always gives the same schedule. Targets are roles ("the leader", "a follower"),
//! resolved when the fault starts, because who leads depends on what happened before.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// Time before the first fault: clients are trading at full speed by then.
pub const WARMUP: Duration = Duration::from_secs(3);

/// Time after the last fault heals before the run ends: recovery shows in the timeline.
pub const TAIL: Duration = Duration::from_secs(4);

/// The kinds of fault `--faults` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Symmetric partitions and cut hosts.
    Partition,
    /// One host cannot reach another, which still reaches it.
    OneWay,
    /// SIGSTOP for 1-5 s, then SIGCONT.
    Pause,
    /// SIGKILL, then a restart with the same command.
    Kill,
}

impl FaultKind {
    /// Every kind, in `--faults` order.
    pub const ALL: [Self; 4] = [Self::Partition, Self::OneWay, Self::Pause, Self::Kill];

    /// The `--faults` spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Partition => "partition",
            Self::OneWay => "one-way",
            Self::Pause => "pause",
            Self::Kill => "kill",
        }
    }

    /// Parses a comma-separated list such as `partition,one-way,pause,kill`.
    ///
    /// # Errors
    /// An unknown or repeated kind, or an empty list, named in the message.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, String> {
        let mut kinds = Vec::new();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            let kind = Self::ALL
                .into_iter()
                .find(|k| k.as_str() == word)
                .ok_or_else(|| {
                    format!("--faults: {word:?} is not one of partition, one-way, pause, kill")
                })?;
            if kinds.contains(&kind) {
                return Err(format!("--faults: {word:?} is listed twice"));
            }
            kinds.push(kind);
        }
        if kinds.is_empty() {
            return Err("--faults needs at least one of partition, one-way, pause, kill".into());
        }
        Ok(kinds)
    }
}

/// A host chosen by its role when the fault starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pick {
    /// The replica the front-end sends trades to.
    Leader,
    /// The n-th (0 or 1) replica that does not lead, by id.
    Follower(u8),
    /// Every replica that does not lead.
    Followers,
    /// The front-end.
    Frontend,
    /// The first catalog: the one the front-end asks first (the other stays whole, so a
    /// fault here tests the front-end's failover between catalogs).
    Catalog,
}

impl fmt::Display for Pick {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Leader => f.write_str("leader"),
            Self::Follower(n) => write!(f, "follower {}", n + 1),
            Self::Followers => f.write_str("followers"),
            Self::Frontend => f.write_str("front-end"),
            Self::Catalog => f.write_str("catalog"),
        }
    }
}

/// One fault, by role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    /// Nothing crosses between side `a` and side `b`; other hosts reach both.
    Split {
        /// One side.
        a: Vec<Pick>,
        /// The other.
        b: Vec<Pick>,
    },
    /// The replicas cannot reach each other; everything else reaches all of them.
    ReplicasApart,
    /// One service cut off from every other service (the clients' host still reaches it).
    Cut {
        /// Who.
        host: Pick,
    },
    /// `from` cannot reach `to`; `to` still reaches `from`.
    OneWay {
        /// Whose packets are lost.
        from: Pick,
        /// Where they were going.
        to: Pick,
    },
    /// SIGSTOP, then SIGCONT when the fault ends.
    Pause {
        /// Who.
        host: Pick,
    },
    /// SIGKILL, then a restart with the same command when the fault ends.
    Kill {
        /// Who.
        host: Pick,
    },
}

fn list(picks: &[Pick]) -> String {
    let names: Vec<String> = picks.iter().map(Pick::to_string).collect();
    format!("{{{}}}", names.join(", "))
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Split { a, b } => write!(f, "partition {} | {}", list(a), list(b)),
            Self::ReplicasApart => f.write_str("partition replicas from each other"),
            Self::Cut { host } => write!(f, "cut {host} off"),
            Self::OneWay { from, to } => write!(f, "one-way: {from} cannot reach {to}"),
            Self::Pause { host } => write!(f, "pause {host}"),
            Self::Kill { host } => write!(f, "kill -9 {host}"),
        }
    }
}

/// A fault at a time after the start, for a while.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// When it starts, from the start of the run.
    pub at: Duration,
    /// How long it lasts (a killed service stays down this long).
    pub length: Duration,
    /// What it is.
    pub fault: Fault,
}

fn tenths(rng: &mut StdRng, from_s: u64, to_s: u64) -> Duration {
    Duration::from_millis(rng.random_range(from_s * 10..=to_s * 10) * 100)
}

fn pick_one<T: Clone>(rng: &mut StdRng, choices: &[T]) -> T {
    choices[rng.random_range(0..choices.len())].clone()
}

fn draw(rng: &mut StdRng, kind: FaultKind) -> (Fault, Duration) {
    match kind {
        FaultKind::Partition => {
            let fault = pick_one(
                rng,
                &[
                    Fault::Split {
                        a: vec![Pick::Leader],
                        b: vec![Pick::Followers],
                    },
                    Fault::Split {
                        a: vec![Pick::Frontend, Pick::Follower(0)],
                        b: vec![Pick::Leader, Pick::Follower(1)],
                    },
                    Fault::Split {
                        a: vec![Pick::Frontend, Pick::Leader],
                        b: vec![Pick::Followers],
                    },
                    Fault::ReplicasApart,
                    Fault::Cut { host: Pick::Leader },
                    Fault::Cut {
                        host: Pick::Frontend,
                    },
                    Fault::Cut {
                        host: Pick::Catalog,
                    },
                    Fault::Cut {
                        host: Pick::Follower(0),
                    },
                ],
            );
            (fault, tenths(rng, 3, 6))
        }
        FaultKind::OneWay => {
            let (from, to) = pick_one(
                rng,
                &[
                    (Pick::Leader, Pick::Followers),
                    (Pick::Followers, Pick::Leader),
                    (Pick::Frontend, Pick::Leader),
                    (Pick::Leader, Pick::Frontend),
                    (Pick::Leader, Pick::Catalog),
                    (Pick::Follower(0), Pick::Leader),
                ],
            );
            (Fault::OneWay { from, to }, tenths(rng, 3, 6))
        }
        FaultKind::Pause => {
            let host = pick_one(
                rng,
                &[
                    Pick::Leader,
                    Pick::Leader,
                    Pick::Follower(0),
                    Pick::Catalog,
                    Pick::Frontend,
                ],
            );
            (Fault::Pause { host }, tenths(rng, 1, 5))
        }
        FaultKind::Kill => {
            let host = pick_one(rng, &[Pick::Leader, Pick::Follower(0), Pick::Follower(1)]);
            (Fault::Kill { host }, tenths(rng, 1, 3))
        }
    }
}

/// The schedule for a run of `duration`: faults one at a time, each followed by 2-4 s of
/// quiet, from [`WARMUP`] until [`TAIL`] before the end.
#[must_use]
pub fn schedule(seed: u64, kinds: &[FaultKind], duration: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut planned = Vec::new();
    if kinds.is_empty() {
        return planned;
    }
    let end = duration.saturating_sub(TAIL);
    let mut at = WARMUP;
    loop {
        // Cycle through the kinds so a short run still sees each of them.
        let kind = kinds[planned.len() % kinds.len()];
        let (fault, length) = draw(&mut rng, kind);
        let quiet = tenths(&mut rng, 2, 4);
        if at + length > end {
            break;
        }
        planned.push(Planned { at, length, fault });
        at += length + quiet;
    }
    planned
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let kinds = FaultKind::ALL;
        let a = schedule(7, &kinds, Duration::from_secs(120));
        assert_eq!(a, schedule(7, &kinds, Duration::from_secs(120)));
        assert_ne!(a, schedule(8, &kinds, Duration::from_secs(120)));
    }

    #[test]
    fn faults_do_not_overlap_and_fit_the_run() {
        let run = Duration::from_secs(60);
        let planned = schedule(3, &FaultKind::ALL, run);
        assert!(planned.len() >= 4, "{planned:?}");
        for pair in planned.windows(2) {
            assert!(pair[0].at + pair[0].length < pair[1].at, "{pair:?}");
        }
        let last = planned.last().expect("faults");
        assert!(last.at + last.length <= run - TAIL);
        assert!(planned[0].at >= WARMUP);
        for kind in FaultKind::ALL {
            let seen = planned.iter().any(|p| {
                matches!(
                    (&p.fault, kind),
                    (
                        Fault::Split { .. } | Fault::ReplicasApart | Fault::Cut { .. },
                        FaultKind::Partition
                    ) | (Fault::OneWay { .. }, FaultKind::OneWay)
                        | (Fault::Pause { .. }, FaultKind::Pause)
                        | (Fault::Kill { .. }, FaultKind::Kill)
                )
            });
            assert!(seen, "{kind:?} in {planned:?}");
        }
    }

    #[test]
    fn pauses_last_one_to_five_seconds() {
        for seed in 0..50 {
            for p in schedule(seed, &[FaultKind::Pause], Duration::from_secs(60)) {
                assert!(
                    (Duration::from_secs(1)..=Duration::from_secs(5)).contains(&p.length),
                    "{p:?}"
                );
            }
        }
    }

    #[test]
    fn fault_lists_parse_and_bad_ones_are_named() {
        assert_eq!(
            FaultKind::parse_list("partition,one-way,pause,kill"),
            Ok(FaultKind::ALL.to_vec())
        );
        assert_eq!(FaultKind::parse_list("pause"), Ok(vec![FaultKind::Pause]));
        assert!(
            FaultKind::parse_list("partition,flood")
                .expect_err("unknown")
                .contains("flood")
        );
        assert!(FaultKind::parse_list("pause,pause").is_err());
        assert!(FaultKind::parse_list("").is_err());
    }
}
