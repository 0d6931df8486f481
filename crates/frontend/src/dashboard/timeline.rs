//! Per-second deltas of counters that only grow (the cache's hits, misses, evictions and
//! invalidations), for a moving timeline: the sampler observes the counters, each observation's
//! increase is added to the second it was seen in, and the series ends with the last complete
//! second, so an idle system yields the same series every time.

use std::collections::VecDeque;
use std::time::Instant;

/// Seconds a timeline shows.
pub const TIMELINE_SECONDS: u64 = 120;

/// Deltas of `N` counters per second.
#[derive(Debug, Clone)]
pub struct Timeline<const N: usize> {
    started: Instant,
    /// The counters at the last observation; `None` until the first (or after a reset).
    last: Option<[u64; N]>,
    /// (second since `started`, deltas), oldest first, at most `TIMELINE_SECONDS + 1` long.
    seconds: VecDeque<(u64, [u64; N])>,
}

impl<const N: usize> Timeline<N> {
    /// An empty timeline whose clock starts at `started`.
    #[must_use]
    pub fn new(started: Instant) -> Self {
        Self {
            started,
            last: None,
            seconds: VecDeque::new(),
        }
    }

    /// Forgets the last observation, so the next one sets a baseline instead of adding
    /// everything that happened while nobody looked to a single second.
    pub fn reset_baseline(&mut self) {
        self.last = None;
    }

    /// Adds the increase since the last observation to the second of `at`.
    pub fn observe(&mut self, at: Instant, counters: [u64; N]) {
        let second = at.saturating_duration_since(self.started).as_secs();
        let Some(last) = self.last.replace(counters) else {
            return;
        };
        let mut delta = [0u64; N];
        for ((d, now), before) in delta.iter_mut().zip(counters).zip(last) {
            // A counter that went down (a cache rebuilt) counts from zero again.
            *d = now.checked_sub(before).unwrap_or(now);
        }
        match self.seconds.back_mut() {
            Some((s, total)) if *s == second => {
                for (t, d) in total.iter_mut().zip(delta) {
                    *t = t.saturating_add(d);
                }
            }
            _ => self.seconds.push_back((second, delta)),
        }
        while self
            .seconds
            .front()
            .is_some_and(|(s, _)| s + TIMELINE_SECONDS < second)
        {
            self.seconds.pop_front();
        }
    }

    /// For each counter, its increase per second over the last [`TIMELINE_SECONDS`] complete
    /// seconds before `at`, oldest first.
    #[must_use]
    pub fn series(&self, at: Instant) -> [Vec<u64>; N] {
        let now = at.saturating_duration_since(self.started).as_secs();
        let mut series: [Vec<u64>; N] =
            std::array::from_fn(|_| Vec::with_capacity(TIMELINE_SECONDS as usize));
        for back in (1..=TIMELINE_SECONDS).rev() {
            let delta = now
                .checked_sub(back)
                .and_then(|s| self.seconds.iter().find(|(x, _)| *x == s))
                .map_or([0; N], |(_, d)| *d);
            for (column, d) in series.iter_mut().zip(delta) {
                column.push(d);
            }
        }
        series
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn increases_land_in_the_second_they_were_seen_and_old_seconds_leave() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut timeline = Timeline::<2>::new(t0);
        timeline.observe(at(0), [10, 5]);
        timeline.observe(at(300), [12, 5]);
        timeline.observe(at(700), [15, 6]);
        timeline.observe(at(1_200), [16, 6]);
        let [a, b] = timeline.series(at(2_000));
        let n = a.len();
        assert_eq!(n, TIMELINE_SECONDS as usize);
        assert_eq!(
            &a[n - 2..],
            &[5, 1],
            "the first observation only sets a baseline"
        );
        assert_eq!(&b[n - 2..], &[1, 0]);
        let [a, _] = timeline.series(at(1_500));
        assert_eq!(a.last(), Some(&5), "second 1 is not complete yet");
        timeline.observe(at(200_000), [16, 6]);
        let [a, _] = timeline.series(at(201_000));
        assert!(a.iter().all(|d| *d == 0), "{a:?}");
        assert!(timeline.seconds.len() <= TIMELINE_SECONDS as usize + 1);
    }

    #[test]
    fn a_reset_baseline_does_not_count_what_happened_meanwhile() {
        let t0 = Instant::now();
        let mut timeline = Timeline::<1>::new(t0);
        timeline.observe(t0, [1]);
        timeline.reset_baseline();
        timeline.observe(t0 + Duration::from_secs(5), [1_000]);
        timeline.observe(t0 + Duration::from_millis(5_500), [1_003]);
        let [a] = timeline.series(t0 + Duration::from_secs(6));
        assert_eq!(a.iter().sum::<u64>(), 3);
    }
}
