//! The lookup cache: LRU replacement over one mutex, entries tagged with the catalog's version.
//!
//! Three rules keep it from ever serving a state older than an acknowledged trade:
//! 1. Invalidations drop the stock and remember the newest version seen for it; a fill whose
//!    version is older is refused (an in-flight lookup that read the catalog before the change
//!    must not re-insert the old value).
//! 2. Entries are served and filled only while the invalidation feed's lease is valid. When the
//!    feed is lost the cache is emptied and the generation grows, so fills started before the
//!    loss are refused too.
//! 3. The front-end drops a stock itself when it relays a successful trade of it.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bazaar_api::client::{CacheEntryView, CacheView};
use bazaar_api::{Stock, StockState, Version};
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
            "Lookups that went to the catalog",
            self.misses.clone(),
        );
        metrics.register(
            "cache_evictions",
            "Entries evicted by LRU replacement",
            self.evictions.clone(),
        );
        metrics.register(
            "cache_invalidations",
            "Invalidations received from the catalog",
            self.invalidations.clone(),
        );
        metrics.register("cache_entries", "Entries cached now", self.entries.clone());
        metrics.register(
            "cache_enabled",
            "1 while the invalidation feed is up and entries may be served",
            self.enabled.clone(),
        );
    }
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// Cached and fresh.
    Hit(Stock),
    /// Not cached; fill with the ticket after reading the catalog (if the cache is on).
    Miss(Option<FillTicket>),
}

/// Permission to fill, tied to the cache generation current when the lookup started.
#[derive(Debug, Clone, Copy)]
pub struct FillTicket {
    generation: u64,
}

#[derive(Debug, Clone)]
struct Entry {
    stock: Stock,
    version: Version,
}

struct Inner {
    lru: LruCache<String, Entry>,
    /// Grows whenever the cache is emptied for a feed change.
    generation: u64,
    /// True between the feed's first answered ping and its loss.
    enabled: bool,
    /// Newest version named by an invalidation, per stock, in this generation.
    newest: HashMap<String, Version>,
}

/// The cache; shared by every request handler and the feed task.
pub struct Cache {
    inner: Mutex<Inner>,
    capacity: NonZeroUsize,
    /// Nanoseconds after `epoch` until which the feed lease is valid (0: never).
    lease_until_ns: AtomicU64,
    epoch: Instant,
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
    /// An empty, disabled cache of `capacity` entries; the feed enables it.
    #[must_use]
    pub fn new(capacity: NonZeroUsize, metrics: CacheMetrics) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lru: LruCache::new(capacity),
                generation: 0,
                enabled: false,
                newest: HashMap::new(),
            }),
            capacity,
            lease_until_ns: AtomicU64::new(0),
            epoch: Instant::now(),
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

    fn nanos_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    fn lease_valid(&self) -> bool {
        self.nanos_since_epoch(Instant::now()) < self.lease_until_ns.load(Ordering::Acquire)
    }

    /// Extends the lease to `until` (never shortens it).
    pub fn renew_lease(&self, until: Instant) {
        self.lease_until_ns
            .fetch_max(self.nanos_since_epoch(until), Ordering::AcqRel);
    }

    /// Looks `name` up, counting a hit or a miss.
    pub fn lookup(&self, name: &str) -> Lookup {
        let usable = self.lease_valid();
        let mut inner = self.lock();
        if usable
            && inner.enabled
            && let Some(entry) = inner.lru.get(name)
        {
            let stock = entry.stock.clone();
            drop(inner);
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.metrics.hits.inc();
            tracing::debug!(stock = %name, "cache hit");
            return Lookup::Hit(stock);
        }
        let ticket = (usable && inner.enabled).then_some(FillTicket {
            generation: inner.generation,
        });
        drop(inner);
        self.misses.fetch_add(1, Ordering::Relaxed);
        self.metrics.misses.inc();
        tracing::debug!(stock = %name, "cache miss");
        Lookup::Miss(ticket)
    }

    /// Inserts what the catalog returned, unless an invalidation or a feed change since the
    /// lookup started makes it possibly stale.
    pub fn fill(&self, ticket: FillTicket, state: &StockState) {
        let usable = self.lease_valid();
        let mut inner = self.lock();
        if !usable || !inner.enabled || inner.generation != ticket.generation {
            return;
        }
        if inner
            .newest
            .get(&state.name)
            .is_some_and(|newest| state.version < *newest)
        {
            tracing::debug!(stock = %state.name, version = %state.version, "stale fill refused");
            return;
        }
        let entry = Entry {
            stock: Stock::from(state.clone()),
            version: state.version,
        };
        if let Some((evicted, _)) = inner.lru.push(state.name.clone(), entry)
            && evicted != state.name
        {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            self.metrics.evictions.inc();
            tracing::debug!(stock = %evicted, "evicted {evicted}");
        }
        self.metrics.entries.set(inner.lru.len() as i64);
    }

    /// Applies an invalidation from the catalog.
    pub fn invalidate(&self, name: &str, version: Version) {
        let mut inner = self.lock();
        inner.lru.pop(name);
        let newest = inner.newest.entry(name.to_owned()).or_default();
        *newest = (*newest).max(version);
        self.metrics.entries.set(inner.lru.len() as i64);
        drop(inner);
        self.invalidations.fetch_add(1, Ordering::Relaxed);
        self.metrics.invalidations.inc();
        tracing::debug!(stock = %name, %version, "invalidated {name}");
    }

    /// Drops a stock this front-end just traded.
    pub fn drop_stock(&self, name: &str) {
        let mut inner = self.lock();
        inner.lru.pop(name);
        self.metrics.entries.set(inner.lru.len() as i64);
    }

    /// The feed is up: start caching (from empty).
    pub fn enable(&self) {
        let mut inner = self.lock();
        inner.enabled = true;
        self.metrics.enabled.set(1);
    }

    /// The feed is down or reconnecting: empty the cache and stop caching. Fills that started
    /// before this are refused.
    pub fn disable(&self) {
        let mut inner = self.lock();
        inner.lru.clear();
        inner.newest.clear();
        inner.generation += 1;
        inner.enabled = false;
        self.lease_until_ns.store(0, Ordering::Release);
        self.metrics.entries.set(0);
        self.metrics.enabled.set(0);
    }

    /// `GET /cache`.
    #[must_use]
    pub fn view(&self) -> CacheView {
        let enabled = self.lease_valid();
        let inner = self.lock();
        CacheView {
            capacity: self.capacity.get(),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            invalidations: self.invalidations.load(Ordering::Relaxed),
            enabled: enabled && inner.enabled,
            entries: inner
                .lru
                .iter()
                .map(|(name, entry)| CacheEntryView {
                    name: name.clone(),
                    version: entry.version,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bazaar_api::Price;
    use std::time::Duration;

    fn state(name: &str, quantity: u64, version: u64) -> StockState {
        StockState {
            name: name.into(),
            price: Price::from_cents(100),
            quantity,
            volume: 0,
            version: Version(version),
        }
    }

    fn live_cache(capacity: usize) -> Cache {
        let cache = Cache::new(
            NonZeroUsize::new(capacity).expect("non-zero"),
            CacheMetrics::default(),
        );
        cache.enable();
        cache.renew_lease(Instant::now() + Duration::from_secs(60));
        cache
    }

    fn fill_after_miss(cache: &Cache, s: &StockState) {
        match cache.lookup(&s.name) {
            Lookup::Miss(Some(ticket)) => cache.fill(ticket, s),
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
            fill_after_miss(&cache, &state(name, 1, 0));
        }
        assert!(matches!(cache.lookup("A"), Lookup::Hit(_)));
        fill_after_miss(&cache, &state("D", 1, 0));
        assert_eq!(names(&cache), ["D", "A", "C"], "B was least recently used");
        let view = cache.view();
        assert_eq!((view.hits, view.misses), (1, 4));
    }

    #[test]
    fn a_fill_older_than_an_invalidation_is_refused() {
        let cache = live_cache(3);
        let Lookup::Miss(Some(ticket)) = cache.lookup("A") else {
            panic!("miss expected");
        };
        // The lookup read version 4; meanwhile a trade made version 5 and was pushed.
        cache.invalidate("A", Version(5));
        cache.fill(ticket, &state("A", 10, 4));
        assert!(names(&cache).is_empty());
        fill_after_miss(&cache, &state("A", 9, 5));
        assert_eq!(names(&cache), ["A"]);
    }

    #[test]
    fn losing_the_feed_empties_the_cache_and_refuses_older_fills() {
        let cache = live_cache(3);
        fill_after_miss(&cache, &state("A", 1, 0));
        let Lookup::Miss(Some(ticket)) = cache.lookup("B") else {
            panic!("miss expected");
        };
        cache.disable();
        assert!(names(&cache).is_empty());
        assert!(
            matches!(cache.lookup("A"), Lookup::Miss(None)),
            "no caching while down"
        );
        cache.enable();
        cache.renew_lease(Instant::now() + Duration::from_secs(60));
        cache.fill(ticket, &state("B", 1, 0));
        assert!(
            names(&cache).is_empty(),
            "a fill from before the loss is refused"
        );
    }

    #[test]
    fn an_expired_lease_stops_hits() {
        let cache = live_cache(3);
        fill_after_miss(&cache, &state("A", 1, 0));
        cache.lease_until_ns.store(0, Ordering::Release);
        assert!(matches!(cache.lookup("A"), Lookup::Miss(None)));
        assert!(!cache.view().enabled);
    }
}
