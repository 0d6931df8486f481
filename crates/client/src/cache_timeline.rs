//! Which stocks the front-end's cache holds over time, from `GET /cache` samples taken during a
//! cached run, and when entries left it.
//!
//! The samples only show snapshots, so why an entry left is inferred: between two samples the
//! eviction counter grew by `d`, so up to `d` of the entries that left were evicted by LRU
//! replacement, and LRU evicts the least recently used first, which is the end of the
//! snapshot's list. The other entries that left were dropped because their stock changed (a
//! trade relayed by this front-end, or an invalidation from the catalog) or because the cache
//! was emptied when the feed was lost. Evictions of entries cached and evicted between two
//! samples are invisible in the snapshots and appear only in the counter deltas.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bazaar_api::client::{CacheView, FrontendClient};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Default pause between samples.
pub const SAMPLE_INTERVAL_DEFAULT: Duration = Duration::from_millis(20);

/// Most samples one timeline keeps (ten minutes at the default interval).
pub const SAMPLES_MAX: usize = 30_000;

/// One `GET /cache` reply and when it came.
#[derive(Debug, Clone)]
pub struct CacheSample {
    /// Since sampling started.
    pub at: Duration,
    /// The reply.
    pub view: CacheView,
}

/// Samples `GET /cache` every `interval` until `stop` is cancelled or [`SAMPLES_MAX`] samples
/// are taken. Failed requests are skipped: a gap in the timeline is better than no timeline.
pub async fn sample(
    frontend: FrontendClient,
    interval: Duration,
    stop: CancellationToken,
) -> Vec<CacheSample> {
    let started = Instant::now();
    let mut samples = Vec::new();
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while samples.len() < SAMPLES_MAX {
        tokio::select! {
            () = stop.cancelled() => break,
            _ = ticks.tick() => {}
        }
        match frontend.cache().await {
            Ok(view) => samples.push(CacheSample {
                at: started.elapsed(),
                view,
            }),
            Err(e) => tracing::debug!(error = %e, "cache sample failed"),
        }
    }
    samples
}

/// Why an entry left the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Departure {
    /// Replaced by LRU to make room.
    Evicted,
    /// Dropped because the stock changed (or the cache was emptied).
    Invalidated,
}

/// A stretch of time during which a stock was cached.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Residency {
    /// Row index into [`CacheTimeline::stocks`].
    pub stock: usize,
    /// Seconds since sampling started.
    pub from_s: f64,
    /// Seconds since sampling started.
    pub to_s: f64,
}

/// An entry seen leaving the cache.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DepartureEvent {
    /// Row index into [`CacheTimeline::stocks`].
    pub stock: usize,
    /// Seconds since sampling started: the first sample without the entry.
    pub at_s: f64,
    /// Why, as inferred.
    pub kind: Departure,
}

/// Counter growth between two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterDelta {
    /// Seconds since sampling started, at the later sample.
    pub at_s: f64,
    /// Evictions in the interval.
    pub evictions: u64,
    /// Invalidations received in the interval.
    pub invalidations: u64,
}

/// The timeline, ready to draw.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheTimeline {
    /// Cache capacity.
    pub capacity: usize,
    /// One row per stock: every stock listed, then any other seen in the cache.
    pub stocks: Vec<String>,
    /// Seconds from the first to the last sample.
    pub duration_s: f64,
    /// Samples the timeline is made of.
    pub samples: usize,
    /// When each stock was cached.
    pub residencies: Vec<Residency>,
    /// Entries seen leaving.
    pub departures: Vec<DepartureEvent>,
    /// Counter growth per sample interval.
    pub deltas: Vec<CounterDelta>,
    /// Evictions over the whole timeline.
    pub evictions: u64,
    /// Invalidations over the whole timeline.
    pub invalidations: u64,
    /// Hits over the whole timeline.
    pub hits: u64,
    /// Misses over the whole timeline.
    pub misses: u64,
}

impl CacheTimeline {
    /// Builds the timeline from samples in time order; `stocks` fixes the order of the rows.
    #[must_use]
    pub fn from_samples(samples: &[CacheSample], stocks: &[String]) -> Self {
        let mut timeline = Self {
            stocks: stocks.to_vec(),
            samples: samples.len(),
            ..Self::default()
        };
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return timeline;
        };
        timeline.capacity = last.view.capacity;
        timeline.duration_s = (last.at.saturating_sub(first.at)).as_secs_f64();
        timeline.evictions = last.view.evictions.saturating_sub(first.view.evictions);
        timeline.invalidations = last
            .view
            .invalidations
            .saturating_sub(first.view.invalidations);
        timeline.hits = last.view.hits.saturating_sub(first.view.hits);
        timeline.misses = last.view.misses.saturating_sub(first.view.misses);
        for s in samples {
            for e in &s.view.entries {
                if !timeline.stocks.contains(&e.name) {
                    timeline.stocks.push(e.name.clone());
                }
            }
        }
        let row = |name: &str| timeline.stocks.iter().position(|s| s == name);
        let t = |s: &CacheSample| s.at.saturating_sub(first.at).as_secs_f64();

        // Open residency start per row.
        let mut open: Vec<Option<f64>> = vec![None; timeline.stocks.len()];
        let mut residencies = Vec::new();
        let mut departures = Vec::new();
        let mut deltas = Vec::new();
        for (i, sample) in samples.iter().enumerate() {
            let now = t(sample);
            let cached: HashSet<&str> = sample
                .view
                .entries
                .iter()
                .map(|e| e.name.as_str())
                .collect();
            for e in &sample.view.entries {
                if let Some(r) = row(&e.name) {
                    open[r].get_or_insert(now);
                }
            }
            if i > 0 {
                let prev = &samples[i - 1].view;
                let evictions = sample.view.evictions.saturating_sub(prev.evictions);
                let invalidations = sample.view.invalidations.saturating_sub(prev.invalidations);
                deltas.push(CounterDelta {
                    at_s: now,
                    evictions,
                    invalidations,
                });
                // Least recently used first: the end of the previous snapshot.
                let mut evictable = evictions;
                for gone in prev
                    .entries
                    .iter()
                    .rev()
                    .filter(|e| !cached.contains(e.name.as_str()))
                {
                    let Some(r) = row(&gone.name) else { continue };
                    let kind = if evictable > 0 {
                        evictable -= 1;
                        Departure::Evicted
                    } else {
                        Departure::Invalidated
                    };
                    departures.push(DepartureEvent {
                        stock: r,
                        at_s: now,
                        kind,
                    });
                    if let Some(from_s) = open[r].take() {
                        residencies.push(Residency {
                            stock: r,
                            from_s,
                            to_s: now,
                        });
                    }
                }
            }
        }
        let end = t(last);
        for (r, from) in open.into_iter().enumerate() {
            if let Some(from_s) = from {
                residencies.push(Residency {
                    stock: r,
                    from_s,
                    to_s: end,
                });
            }
        }
        timeline.residencies = residencies;
        timeline.departures = departures;
        timeline.deltas = deltas;
        timeline
    }

    /// Departures of one kind.
    #[must_use]
    pub fn count(&self, kind: Departure) -> usize {
        self.departures.iter().filter(|d| d.kind == kind).count()
    }
}

#[cfg(test)]
mod tests {
    use bazaar_api::Version;
    use bazaar_api::client::CacheEntryView;

    use super::*;

    fn sample(ms: u64, entries: &[&str], evictions: u64, invalidations: u64) -> CacheSample {
        CacheSample {
            at: Duration::from_millis(ms),
            view: CacheView {
                capacity: 3,
                hits: ms,
                misses: 0,
                evictions,
                invalidations,
                enabled: true,
                entries: entries
                    .iter()
                    .map(|n| CacheEntryView {
                        name: (*n).into(),
                        version: Version(0),
                        position: bazaar_api::log::Position(1),
                    })
                    .collect(),
            },
        }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn evictions_take_the_least_recently_used_and_the_rest_are_invalidations() {
        let samples = [
            // Most recently used first.
            sample(0, &["A", "B", "C"], 0, 0),
            // D came in and evicted C (the LRU end); B was traded and dropped.
            sample(20, &["D", "A"], 1, 1),
            sample(40, &["D", "A"], 1, 1),
        ];
        let t = CacheTimeline::from_samples(&samples, &names(&["A", "B", "C", "D"]));
        assert_eq!(t.samples, 3);
        assert!((t.duration_s - 0.04).abs() < 1e-9);
        assert_eq!((t.evictions, t.invalidations, t.hits), (1, 1, 40));
        let events: Vec<(usize, Departure)> =
            t.departures.iter().map(|d| (d.stock, d.kind)).collect();
        assert_eq!(
            events,
            [(2, Departure::Evicted), (1, Departure::Invalidated)]
        );
        assert_eq!(t.count(Departure::Evicted), 1);
        // A cached throughout, B and C until 20 ms, D from 20 ms.
        let mut spans: Vec<(usize, f64, f64)> = t
            .residencies
            .iter()
            .map(|r| (r.stock, r.from_s, r.to_s))
            .collect();
        spans.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
        assert_eq!(
            spans,
            [
                (0, 0.0, 0.04),
                (1, 0.0, 0.02),
                (2, 0.0, 0.02),
                (3, 0.02, 0.04)
            ]
        );
        assert_eq!(t.deltas.len(), 2);
        assert_eq!((t.deltas[0].evictions, t.deltas[1].evictions), (1, 0));
    }

    #[test]
    fn unknown_stocks_get_their_own_row_and_no_samples_give_an_empty_timeline() {
        let samples = [sample(0, &["X"], 0, 0), sample(20, &[], 0, 0)];
        let t = CacheTimeline::from_samples(&samples, &names(&["A"]));
        assert_eq!(t.stocks, ["A", "X"]);
        assert_eq!(t.departures.len(), 1);
        assert_eq!(t.departures[0].kind, Departure::Invalidated);
        let empty = CacheTimeline::from_samples(&[], &names(&["A"]));
        assert_eq!((empty.samples, empty.residencies.len()), (0, 0));
    }

    #[test]
    fn a_stock_cached_again_has_two_residencies() {
        let samples = [
            sample(0, &["A"], 0, 0),
            sample(20, &[], 0, 1),
            sample(40, &["A"], 0, 1),
        ];
        let t = CacheTimeline::from_samples(&samples, &names(&["A"]));
        assert_eq!(t.residencies.len(), 2);
        assert!((t.residencies[1].from_s - 0.04).abs() < 1e-9);
    }
}
