//! Names: every namespace and nftables table of a run starts with the run's prefix,
//! `bzlab-<pid>-<tag>`, so that a sweep can tell which run made it and whether that run's
//! process is still alive.

use std::fmt;

/// What every name of every run starts with; nothing else on the machine may use it.
pub const PREFIX: &str = "bzlab";

/// One run's identity: the process that made it and a random tag (one process may run
/// several labs, as parallel tests do).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunName {
    /// The process that owns the run.
    pub pid: u32,
    /// Tells apart the labs of one process.
    pub tag: u32,
}

/// Largest tag: six hex digits keep names short.
const TAG_MAX: u32 = 0x00FF_FFFF;

impl RunName {
    /// A fresh name for a run of this process.
    #[must_use]
    pub fn new() -> Self {
        Self {
            pid: std::process::id(),
            tag: rand::random::<u32>() & TAG_MAX,
        }
    }

    /// The namespace of a host (or of the switch) of this run.
    #[must_use]
    pub fn namespace(&self, host: &str) -> String {
        format!("{self}-{host}")
    }

    /// The nftables table this run creates in each of its hosts (nft names allow no `-`).
    #[must_use]
    pub fn table(&self) -> String {
        format!("{PREFIX}_{}_{:06x}", self.pid, self.tag)
    }

    /// The run a namespace belongs to, if it is one of ours.
    #[must_use]
    pub fn of_namespace(name: &str) -> Option<Self> {
        let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
        let mut parts = rest.splitn(3, '-');
        let pid = parts.next()?.parse().ok()?;
        let tag = parts.next()?;
        if tag.len() != 6 {
            return None;
        }
        let tag = u32::from_str_radix(tag, 16).ok()?;
        parts.next()?;
        Some(Self { pid, tag })
    }

    /// Whether the process that made this run still exists.
    #[must_use]
    pub fn owner_alive(&self) -> bool {
        std::path::Path::new(&format!("/proc/{}", self.pid)).exists()
    }
}

impl Default for RunName {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}-{}-{:06x}", self.pid, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_lead_back_to_their_run() {
        let run = RunName {
            pid: 4242,
            tag: 0x00ab_cdef,
        };
        assert_eq!(run.namespace("order-1"), "bzlab-4242-abcdef-order-1");
        assert_eq!(run.table(), "bzlab_4242_abcdef");
        assert_eq!(
            RunName::of_namespace("bzlab-4242-abcdef-order-1"),
            Some(run)
        );
        assert_eq!(RunName::of_namespace("bzlab-4242-abcdef-switch"), Some(run));
    }

    #[test]
    fn names_of_others_are_not_ours() {
        for name in [
            "bzlab-4242-abcdef",
            "bzlab-x-abcdef-h",
            "bzlab-4242-abc-h",
            "bzlabs-4242-abcdef-h",
            "cni-1234",
            "",
        ] {
            assert_eq!(RunName::of_namespace(name), None, "{name}");
        }
    }
}
