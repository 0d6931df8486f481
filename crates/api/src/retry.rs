//! Back-off for retry loops: every loop that calls another service again after a failure waits
//! a growing, jittered pause between attempts and stops at its deadline, so a fault never turns
//! into a tight loop of requests (or of durable writes on the other side).

use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use tokio::time::Instant;

/// Exponential back-off with jitter, bounded by a deadline.
///
/// ```
/// # async fn demo() {
/// use std::time::Duration;
/// use bazaar_api::retry::Backoff;
/// let mut backoff = Backoff::new(
///     Duration::from_millis(5),
///     Duration::from_millis(200),
///     tokio::time::Instant::now() + Duration::from_secs(2),
/// );
/// loop {
///     # let attempt_failed = false;
///     if !attempt_failed { break }
///     if !backoff.wait().await { break } // deadline reached: give up
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Backoff {
    /// The pause before jitter of the next wait; doubles after each wait up to `max`.
    base: Duration,
    /// Longest pause before jitter.
    max: Duration,
    /// No attempt starts after this.
    deadline: Instant,
    /// Jitter source; a fresh random key per back-off, so concurrent loops spread out.
    jitter: std::collections::hash_map::RandomState,
    /// Waits so far, mixed into the jitter.
    waits: u32,
}

impl Backoff {
    /// Pauses start at `first`, double up to `max`, and never run past `deadline`.
    #[must_use]
    pub fn new(first: Duration, max: Duration, deadline: Instant) -> Self {
        Self {
            base: first.max(Duration::from_micros(100)),
            max: max.max(first),
            deadline,
            jitter: std::collections::hash_map::RandomState::new(),
            waits: 0,
        }
    }

    /// The deadline.
    #[must_use]
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// The pause before the next attempt: between half and all of the current base, cut to
    /// what is left before the deadline; `None` once the deadline has passed.
    pub fn next_pause(&mut self) -> Option<Duration> {
        let left = self.deadline.checked_duration_since(Instant::now())?;
        if left.is_zero() {
            return None;
        }
        let mut hasher = self.jitter.build_hasher();
        hasher.write_u32(self.waits);
        let fraction = f64::from(u32::try_from(hasher.finish() >> 32).unwrap_or(u32::MAX))
            / f64::from(u32::MAX);
        let pause = self.base.mul_f64(0.5 + fraction / 2.0);
        self.base = self.base.saturating_mul(2).min(self.max);
        self.waits = self.waits.saturating_add(1);
        Some(pause.min(left))
    }

    /// Sleeps for the next pause. Returns false (at once) when the deadline has passed: the
    /// caller must give up.
    pub async fn wait(&mut self) -> bool {
        match self.next_pause() {
            Some(pause) => {
                tokio::time::sleep(pause).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_with_jitter_and_stop_at_the_deadline() {
        let start = Instant::now();
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(80),
            start + Duration::from_millis(500),
        );
        let mut pauses = Vec::new();
        while backoff.wait().await {
            pauses.push(Instant::now());
            assert!(pauses.len() < 100, "the loop must end");
        }
        assert_eq!(Instant::now(), start + Duration::from_millis(500));
        let gaps: Vec<Duration> = std::iter::once(start)
            .chain(pauses.iter().copied())
            .collect::<Vec<_>>()
            .windows(2)
            .map(|w| w[1] - w[0])
            .collect();
        assert!(gaps[0] >= Duration::from_millis(5) && gaps[0] <= Duration::from_millis(10));
        assert!(gaps[1] >= Duration::from_millis(10) && gaps[1] <= Duration::from_millis(20));
        assert!(
            gaps.iter().all(|g| *g <= Duration::from_millis(80)),
            "capped: {gaps:?}"
        );
        assert!(
            gaps.len() < 20,
            "a 500 ms deadline allows only a few attempts: {gaps:?}"
        );
        assert!(!backoff.wait().await, "still over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_passed_deadline_allows_no_wait() {
        let mut backoff = Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(10),
            Instant::now(),
        );
        assert_eq!(backoff.next_pause(), None);
    }
}
