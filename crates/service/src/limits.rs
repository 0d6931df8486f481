//! What one listener may spend on its clients: how long a client may take to send a request
//! head or body or stay idle, how many connections and requests it may hold at once, and how
//! large a request may be. Each limit is a constant here; those an operator may want to change
//! are also flags (and environment variables) of every service.

use std::time::Duration;

use crate::duration::parse_duration;

/// How long a client may take from the first byte of a request head to its end (the TLS
/// handshake counts as a head). A slow or stalled head holds a connection and nothing else.
pub const HEADER_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// How long a connection may stay open without a request (before the first one, or between
/// two on a keep-alive connection). Above the clients' pool idle time
/// ([`bazaar_api::client::POOL_IDLE_TIMEOUT`]), so a pooled connection is never closed under a
/// request that is being sent.
pub const IDLE_TIMEOUT_DEFAULT: Duration = Duration::from_secs(60);

/// How long a client may take to send a request body once its head has arrived. A request
/// whose body is late gets 408.
pub const BODY_READ_TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// Most connections a listener holds open at once; more wait in the kernel's accept queue. It is
/// lowered further to fit the process's open-file limit (see [`FD_RESERVE`]).
pub const CONNECTIONS_MAX_DEFAULT: usize = 1024;

/// Most requests a listener works on at once; more are refused at once with 503 and
/// `Retry-After` (load shedding) rather than queued behind the ones already late.
pub const IN_FLIGHT_MAX_DEFAULT: usize = 512;

/// File descriptors kept out of the connection budget for databases, lock files, outgoing
/// connections to other services and the runtime itself.
pub const FD_RESERVE: u64 = 64;

/// Fewest connections a listener accepts, whatever the open-file limit.
pub const CONNECTIONS_MIN: usize = 8;

/// Largest request body any route may accept, in bytes: a declared length above it gets 413
/// before routing. Each route's own limit (64 KiB, [`bazaar_api::BODY_LEN_MAX`], unless the
/// route raises it with `DefaultBodyLimit`, as the Raft routes do to 8 MiB) is enforced, also
/// before reading, by the JSON extractor.
pub const BODY_LEN_CEILING: u64 = 8 * 1024 * 1024;

/// Largest request head (request line and headers), in bytes; larger heads get 431.
pub const HEAD_LEN_MAX: usize = 16 * 1024;

/// Longest request target (path and query), in bytes; longer ones get 414.
pub const URI_LEN_MAX: usize = 8 * 1024;

/// `Retry-After` of a shed request, in seconds.
pub const RETRY_AFTER_S: u64 = 1;

/// The flags of the limits an operator may want to change.
#[derive(Debug, Clone, clap::Args)]
pub struct LimitArgs {
    /// Longest time a client may take to send a request head (and the TLS handshake).
    #[arg(long, env = "BAZAAR_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// Longest time a connection may stay open without a request.
    #[arg(long, env = "BAZAAR_IDLE_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Longest time a client may take to send a request body.
    #[arg(long, env = "BAZAAR_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// Most connections open at once (lowered to fit the open-file limit).
    #[arg(long, env = "BAZAAR_MAX_CONNECTIONS", default_value_t = CONNECTIONS_MAX_DEFAULT)]
    pub max_connections: usize,

    /// Most requests handled at once; more get 503 with Retry-After.
    #[arg(long, env = "BAZAAR_MAX_IN_FLIGHT", default_value_t = IN_FLIGHT_MAX_DEFAULT)]
    pub max_in_flight: usize,
}

impl Default for LimitArgs {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            body_timeout: BODY_READ_TIMEOUT_DEFAULT,
            max_connections: CONNECTIONS_MAX_DEFAULT,
            max_in_flight: IN_FLIGHT_MAX_DEFAULT,
        }
    }
}

/// The limits a listener enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// See [`HEADER_READ_TIMEOUT_DEFAULT`].
    pub header_timeout: Duration,
    /// See [`IDLE_TIMEOUT_DEFAULT`].
    pub idle_timeout: Duration,
    /// See [`BODY_READ_TIMEOUT_DEFAULT`].
    pub body_timeout: Duration,
    /// See [`CONNECTIONS_MAX_DEFAULT`].
    pub connections_max: usize,
    /// See [`IN_FLIGHT_MAX_DEFAULT`].
    pub in_flight_max: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_timeout: HEADER_READ_TIMEOUT_DEFAULT,
            idle_timeout: IDLE_TIMEOUT_DEFAULT,
            body_timeout: BODY_READ_TIMEOUT_DEFAULT,
            connections_max: CONNECTIONS_MAX_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
        }
    }
}

/// Longest timeout accepted: beyond this a stalled client holds a connection for good.
const TIMEOUT_MAX: Duration = Duration::from_secs(3600);

impl LimitArgs {
    /// Checks the flags and fits the connection cap to the open-file limit.
    ///
    /// # Errors
    /// One line naming the flag and the bad value.
    pub fn resolve(&self) -> Result<Limits, String> {
        for (flag, value) in [
            ("--header-timeout", self.header_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--body-timeout", self.body_timeout),
        ] {
            if value < Duration::from_millis(10) || value > TIMEOUT_MAX {
                return Err(format!(
                    "{flag} {value:?} must be from 10ms to {TIMEOUT_MAX:?}"
                ));
            }
        }
        if self.max_connections < CONNECTIONS_MIN {
            return Err(format!(
                "--max-connections {} must be at least {CONNECTIONS_MIN}",
                self.max_connections
            ));
        }
        if self.max_in_flight == 0 {
            return Err("--max-in-flight must be at least 1".into());
        }
        let fd_budget = open_file_limit().map(|limit| {
            usize::try_from(limit.saturating_sub(FD_RESERVE).max(CONNECTIONS_MIN as u64))
                .unwrap_or(usize::MAX)
        });
        let connections_max = match fd_budget {
            Some(budget) if budget < self.max_connections => {
                tracing::info!(
                    connections_max = budget,
                    flag = self.max_connections,
                    "fitting the connection cap to the open-file limit"
                );
                budget
            }
            _ => self.max_connections,
        };
        Ok(Limits {
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            body_timeout: self.body_timeout,
            connections_max,
            in_flight_max: self.max_in_flight,
        })
    }
}

/// The soft limit on open files, if known.
fn open_file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _hard)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_resolve_and_fit_the_open_file_limit() {
        let limits = LimitArgs::default().resolve().expect("defaults");
        assert!(limits.connections_max <= CONNECTIONS_MAX_DEFAULT);
        assert!(limits.connections_max >= CONNECTIONS_MIN);
        if let Some(limit) = open_file_limit() {
            assert!(
                u64::try_from(limits.connections_max).expect("small")
                    <= limit.saturating_sub(FD_RESERVE).max(CONNECTIONS_MIN as u64)
            );
        }
    }

    #[test]
    fn bad_limits_are_named() {
        let cases = [
            (
                LimitArgs {
                    header_timeout: Duration::ZERO,
                    ..LimitArgs::default()
                },
                "--header-timeout",
            ),
            (
                LimitArgs {
                    max_connections: 1,
                    ..LimitArgs::default()
                },
                "--max-connections",
            ),
            (
                LimitArgs {
                    max_in_flight: 0,
                    ..LimitArgs::default()
                },
                "--max-in-flight",
            ),
        ];
        for (args, flag) in cases {
            let err = args.resolve().expect_err(flag);
            assert!(err.contains(flag), "{err}");
        }
    }
}
