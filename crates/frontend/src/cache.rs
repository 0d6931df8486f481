//! What the front-end knows of the log, and the lookup cache that rests on it: LRU replacement
//! over one mutex, entries holding the encoded reply and the log position they were read at.
//!
//! Knowledge comes from the leader's invalidation feed (`crate::feed`): a `hello` gives a floor
//! (every acknowledged change is below it), each `invalidate` names stocks and the position a
//! state must reach to show the change. From that, a lookup of stock S must not answer from a
//! state below `need(S) = max(floor, the newest position S was invalidated at)`. The knowledge
//! is trusted only while the feed's lease is valid; without it a lookup asks the leader for a
//! position instead (`Lookup::Miss { bound: None, .. }`).
//!
//! Four rules keep the cache from ever serving a state older than an acknowledged trade:
//! 1. An invalidation drops the stock and raises its `need`; a fill read at a position below
//!    `need` is refused (an in-flight lookup that read a catalog before the change must not
//!    re-insert the old value).
//! 2. Entries are served and filled only while the lease is valid.
//! 3. Every new subscription (a `hello`) and every loss of the feed empties the cache and bumps
//!    the generation, so fills started before are refused.
//! 4. The front-end records each trade it relays as an invalidation of its own.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::body::Bytes;
use bazaar_api::client::{CacheEntryView, CacheView};
use bazaar_api::log::Position;
use bazaar_api::{Epoch, Version};
use lru::LruCache;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// Cache counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct CacheMetrics {
    hits: Counter,
    misses: Counter,
    evictions: Counter,
    invalidations: Counter,
    entries: Gauge,
    enabled: Gauge,
}

impl CacheMetrics {
    /// Registers the counters.
    pub fn register(&self, metrics: &bazaar_service::Metrics) {
        metrics.register(
            "cache_hits",
            "Lookups answered from the cache",
            self.hits.clone(),
        );
        metrics.register(
            "cache_misses",
            "Lookups that went to a catalog",
            self.misses.clone(),
        );
        metrics.register(
            "cache_evictions",
            "Entries evicted by LRU replacement",
            self.evictions.clone(),
        );
        metrics.register(
            "cache_invalidations",
            "Stock invalidations received from the order leader",
            self.invalidations.clone(),
        );
        metrics.register("cache_entries", "Entries cached now", self.entries.clone());
        metrics.register(
            "cache_enabled",
            "1 while the invalidation feed's lease is valid and entries may be served",
            self.enabled.clone(),
        );
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Cached and fresh: the encoded reply.
    Hit(Bytes),
    /// Not cached.
    Miss {
        /// The position the answer must reflect, when the front-end can vouch for it; `None`
        /// when it cannot (ask the leader).
        bound: Option<Position>,
        /// Permission to fill, when the cache is on and knowledge is trusted.
        ticket: Option<FillTicket>,
    },
}

/// Permission to fill, tied to the knowledge generation current when the lookup started.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    generation: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    body: Bytes,
    version: Version,
    position: Position,
}

struct Inner {
    /// `None` with `--no-cache`: knowledge is still kept, for lookups' bounds.
    lru: Option<LruCache<String, Entry>>,
    /// Grows whenever knowledge starts over (a new subscription, a lost feed).
    generation: u64,
    /// The epoch of the leader whose feed the knowledge comes from; `None` while unsubscribed.
    epoch: Option<Epoch>,
    floor: Position,
    need: HashMap<String, Position>,
}

impl Inner {
    fn need(&self, name: &str) -> Position {
        self.need
            .get(name)
            .copied()
            .unwrap_or_default()
            .max(self.floor)
    }
}

/// The cache and the knowledge; shared by every request handler and the feed task.
pub struct Cache {
    inner: Mutex<Inner>,
    capacity: Option<NonZeroUsize>,
    /// Nanoseconds after `clock` until which the feed's lease is valid (0: never).
    lease_until_ns: AtomicU64,
    clock: Instant,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
    invalidations: AtomicU64,
    metrics: CacheMetrics,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl Cache {
    /// Empty, with no knowledge yet; `capacity` `None` keeps knowledge but caches nothing.
    #[must_use]
    pub fn new(capacity: Option<NonZeroUsize>, metrics: CacheMetrics) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lru: capacity.map(LruCache::new),
                generation: 0,
                epoch: None,
                floor: Position(0),
                need: HashMap::new(),
            }),
            capacity,
            lease_until_ns: AtomicU64::new(0),
            clock: Instant::now(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            invalidations: AtomicU64::new(0),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn nanos_since_clock(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.clock).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lease_valid(&self) -> bool {
        self.nanos_since_clock(Instant::now()) < self.lease_until_ns.load(Ordering::Acquire)
    }

    /// Extends the lease to `until` (never shortens it).
    pub fn renew_lease(&self, until: Instant) {
        self.lease_until_ns
            .fetch_max(self.nanos_since_clock(until), Ordering::AcqRel);
        self.metrics.enabled.set(1);
    }

    /// Whether knowledge is trusted now: subscribed, lease valid.
    fn trusted(&self, inner: &Inner) -> bool {
        inner.epoch.is_some() && self.lease_valid()
    }

    /// Looks `name` up, counting a hit or a miss.
    pub fn lookup(&self, name: &str) -> Lookup {
        let mut inner = self.lock();
        let trusted = self.trusted(&inner);
        if trusted && let Some(entry) = inner.lru.as_mut().and_then(|lru| lru.get(name)) {
            let body = entry.body.clone();
            drop(inner);
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.metrics.hits.inc();
            tracing::debug!(stock = %name, "cache hit");
            return Lookup::Hit(body);
        }
        let bound = trusted.then(|| inner.need(name));
        let ticket = (trusted && inner.lru.is_some()).then_some(FillTicket {
            generation: inner.generation,
        });
        drop(inner);
        if self.capacity.is_some() {
            self.misses.fetch_add(1, Ordering::Relaxed);
            self.metrics.misses.inc();
            tracing::debug!(stock = %name, "cache miss");
        }
        Lookup::Miss { bound, ticket }
    }

    /// Inserts what a catalog returned (read at `position`), unless the knowledge changed since
    /// the lookup started or an invalidation since makes it stale.
    pub fn fill(
        &self,
        ticket: FillTicket,
        name: &str,
        position: Position,
        version: Version,
        body: Bytes,
    ) {
        let mut inner = self.lock();
        if !self.trusted(&inner) || inner.generation != ticket.generation {
            return;
        }
        if position < inner.need(name) {
            tracing::debug!(stock = %name, %position, "stale fill refused");
            return;
        }
        let Some(lru) = inner.lru.as_mut() else {
            return;
        };
        let entry = Entry {
            body,
            version,
            position,
        };
        if let Some((evicted, _)) = lru.push(name.to_owned(), entry)
            && evicted != name
        {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            self.metrics.evictions.inc();
            tracing::debug!(stock = %evicted, "evicted {evicted}");
        }
        self.metrics.entries.set(lru.len() as i64);
    }

    /// A new subscription's `hello`: knowledge starts over from `floor`.
    pub fn hello(&self, epoch: Epoch, floor: Position) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.epoch = Some(epoch);
        inner.floor = floor;
        inner.need.clear();
        if let Some(lru) = inner.lru.as_mut() {
            lru.clear();
        }
        self.metrics.entries.set(0);
    }

    /// An invalidation from the leader (or a trade this front-end relayed): `names` changed in
    /// the entry below `position`.
    pub fn invalidate(&self, position: Position, names: &[String]) {
        let mut inner = self.lock();
        for name in names {
            if let Some(lru) = inner.lru.as_mut() {
                lru.pop(name);
            }
            let need = inner.need.entry(name.clone()).or_default();
            *need = (*need).max(position);
        }
        let len = inner.lru.as_ref().map_or(0, LruCache::len);
        drop(inner);
        self.metrics.entries.set(len as i64);
        let count = names.len() as u64;
        self.invalidations.fetch_add(count, Ordering::Relaxed);
        self.metrics.invalidations.inc_by(count);
        tracing::debug!(?names, %position, "invalidated");
    }

    /// The feed is down or moving to another leader: forget everything and trust nothing.
    /// Fills that started before are refused.
    pub fn lost(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.epoch = None;
        inner.need.clear();
        if let Some(lru) = inner.lru.as_mut() {
            lru.clear();
        }
        self.lease_until_ns.store(0, Ordering::Release);
        self.metrics.entries.set(0);
        self.metrics.enabled.set(0);
    }

    /// `GET /cache`.
    #[must_use]
    pub fn view(&self) -> CacheView {
        let inner = self.lock();
        let enabled = self.trusted(&inner) && inner.lru.is_some();
        CacheView {
            capacity: self.capacity.map_or(0, NonZeroUsize::get),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            enabled,
            entries: inner
                .lru
                .iter()
                .flat_map(LruCache::iter)
                .map(|(name, entry)| CacheEntryView {
                    name: name.clone(),
                    version: entry.version,
                    position: entry.position,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn live_cache(capacity: usize) -> Cache {
        let cache = Cache::new(NonZeroUsize::new(capacity), CacheMetrics::default());
        cache.hello(Epoch(1), Position(1));
        cache.renew_lease(Instant::now() + Duration::from_secs(60));
        cache
    }

    fn fill_after_miss(cache: &Cache, name: &str, position: u64) {
        match cache.lookup(name) {
            Lookup::Miss {
                ticket: Some(ticket),
                ..
            } => cache.fill(
                ticket,
                name,
                Position(position),
                Version(0),
                Bytes::from_static(b"{}"),
            ),
            other => panic!("expected a miss with a ticket, got {other:?}"),
        }
    }

    fn names(cache: &Cache) -> Vec<String> {
        cache.view().entries.into_iter().map(|e| e.name).collect()
    }

    #[test]
    fn replacement_is_least_recently_used() {
        let cache = live_cache(3);
        for name in ["A", "B", "C"] {
            fill_after_miss(&cache, name, 1);
        }
        assert!(matches!(cache.lookup("A"), Lookup::Hit(_)));
        fill_after_miss(&cache, "D", 1);
        assert_eq!(names(&cache), ["D", "A", "C"], "B was least recently used");
        let view = cache.view();
        assert_eq!((view.hits, view.misses), (1, 4));
    }

    #[test]
    fn a_fill_read_before_an_invalidation_is_refused() {
        let cache = live_cache(3);
        let Lookup::Miss {
            ticket: Some(ticket),
            bound,
        } = cache.lookup("A")
        else {
            panic!("miss expected");
        };
        assert_eq!(bound, Some(Position(1)), "the floor bounds every lookup");
        // The lookup read position 4; meanwhile a trade of A at position 5 was pushed.
        cache.invalidate(Position(5), &["A".into()]);
        cache.fill(ticket, "A", Position(4), Version(1), Bytes::new());
        assert!(names(&cache).is_empty());
        match cache.lookup("A") {
            Lookup::Miss { bound, .. } => assert_eq!(bound, Some(Position(5))),
            other => panic!("{other:?}"),
        }
        fill_after_miss(&cache, "A", 5);
        assert_eq!(names(&cache), ["A"]);
    }

    #[test]
    fn losing_the_feed_empties_the_cache_and_refuses_older_fills() {
        let cache = live_cache(3);
        fill_after_miss(&cache, "A", 1);
        let Lookup::Miss {
            ticket: Some(ticket),
            ..
        } = cache.lookup("B")
        else {
            panic!("miss expected");
        };
        cache.lost();
        assert!(names(&cache).is_empty());
        assert!(
            matches!(
                cache.lookup("A"),
                Lookup::Miss {
                    bound: None,
                    ticket: None
                }
            ),
            "no caching, and no bound to vouch for, while down"
        );
        cache.hello(Epoch(2), Position(3));
        cache.renew_lease(Instant::now() + Duration::from_secs(60));
        cache.fill(ticket, "B", Position(9), Version(0), Bytes::new());
        assert!(
            names(&cache).is_empty(),
            "a fill from before the loss is refused"
        );
    }

    #[test]
    fn an_expired_lease_stops_hits_and_bounds() {
        let cache = live_cache(3);
        fill_after_miss(&cache, "A", 1);
        cache.lease_until_ns.store(0, Ordering::Release);
        assert!(matches!(
            cache.lookup("A"),
            Lookup::Miss {
                bound: None,
                ticket: None
            }
        ));
        assert!(!cache.view().enabled);
    }

    #[test]
    fn without_a_cache_knowledge_still_bounds_lookups() {
        let cache = Cache::new(None, CacheMetrics::default());
        cache.hello(Epoch(1), Position(2));
        cache.renew_lease(Instant::now() + Duration::from_secs(60));
        cache.invalidate(Position(7), &["A".into()]);
        assert!(matches!(
            cache.lookup("A"),
            Lookup::Miss {
                bound: Some(Position(7)),
                ticket: None
            }
        ));
    }
}
