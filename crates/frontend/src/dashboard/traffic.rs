//! Request timings for the traffic panel: a middleware layer on the front-end's router records
//! every trade, stock lookup and order query (its latency and whether it failed with a 5xx) into
//! fixed rings of per-second counts and per-bin latency histograms.
//!
//! Memory is fixed at start (about 35 KB) whatever the load: old seconds are overwritten in
//! place. Recording takes one short mutex section with no allocation (about 0.1 us); the whole
//! layer costs a timed request under a microsecond (`benches/dashboard.rs`,
//! docs/PERFORMANCE.md).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::response::Response;
use serde::Serialize;
use tokio::sync::Notify;

/// Seconds of history the traffic panel shows.
pub const WINDOW_SECONDS: u64 = 300;

/// Width of one latency bin: percentiles over time are drawn per bin.
pub const LATENCY_BIN_SECONDS: u64 = 10;

/// The latency summary covers this many most recent seconds.
pub const LATENCY_SUMMARY_SECONDS: u64 = 60;

/// Latency buckets: `[0, 16 us)`, then four per doubling from 16 us (each at most 25 % wide)
/// up to 2^24 us (about 17 s); the last bucket holds everything slower.
const BUCKETS: usize = 84;
const FIRST_BUCKET_US: u64 = 16;

/// Slots in the rings: the window plus the second (bin) being filled now.
const SECOND_SLOTS: usize = WINDOW_SECONDS as usize + 1;
const BIN_SLOTS: usize = (WINDOW_SECONDS / LATENCY_BIN_SECONDS) as usize + 1;

/// What a request was, for the panel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `POST /orders`.
    Trade,
    /// `GET /stocks/{name}` and its aliases.
    Lookup,
    /// `GET /orders/{number}` and its alias.
    OrderQuery,
}

impl Kind {
    const ALL: [Self; 3] = [Self::Trade, Self::Lookup, Self::OrderQuery];

    fn index(self) -> usize {
        match self {
            Self::Trade => 0,
            Self::Lookup => 1,
            Self::OrderQuery => 2,
        }
    }

    /// Which kind a request is, from its method, matched route and query string; `None` for
    /// everything the panel does not show (health, metrics, the dashboard itself).
    #[must_use]
    pub fn of(method: &Method, route: Option<&str>, query: Option<&str>) -> Option<Self> {
        match (method, route?) {
            (&Method::POST, "/orders") => Some(Self::Trade),
            (&Method::GET, "/orders" | "/orders/{number}") => Some(Self::OrderQuery),
            (&Method::GET, "/stocks/{name}" | "/products/{name}") => Some(Self::Lookup),
            (&Method::GET, "/stocks")
                if query.is_some_and(|q| q.split('&').any(|p| p.starts_with("stockname="))) =>
            {
                Some(Self::Lookup)
            }
            _ => None,
        }
    }
}

#[derive(Clone, Copy)]
struct SecondSlot {
    /// Which second since start this slot holds; `u64::MAX` for none yet.
    second: u64,
    count: [u32; 3],
    failed: [u32; 3],
}

impl SecondSlot {
    const EMPTY: Self = Self {
        second: u64::MAX,
        count: [0; 3],
        failed: [0; 3],
    };
}

#[derive(Clone)]
struct BinSlot {
    /// Which bin since start this slot holds; `u64::MAX` for none yet.
    bin: u64,
    histogram: [[u32; BUCKETS]; 3],
}

struct Rings {
    seconds: Vec<SecondSlot>,
    bins: Vec<BinSlot>,
}

/// The recorder; one per front-end, shared by the middleware and the sampler.
pub struct Traffic {
    rings: Mutex<Rings>,
    started: Instant,
    /// Woken after each successful trade, so the sampler shows it without waiting a period.
    trade_done: Notify,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic").finish_non_exhaustive()
    }
}

impl Default for Traffic {
    fn default() -> Self {
        Self::new()
    }
}

impl Traffic {
    /// An empty recorder whose clock starts now.
    #[must_use]
    pub fn new() -> Self {
        Self {
            rings: Mutex::new(Rings {
                seconds: vec![SecondSlot::EMPTY; SECOND_SLOTS],
                bins: vec![
                    BinSlot {
                        bin: u64::MAX,
                        histogram: [[0; BUCKETS]; 3],
                    };
                    BIN_SLOTS
                ],
            }),
            started: Instant::now(),
            trade_done: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Rings> {
        self.rings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The second since the recorder started that `at` falls in (the view changes with it).
    #[must_use]
    pub fn second_at(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }

    /// Records one request that finished at `at` after `latency`.
    pub fn record(&self, kind: Kind, latency: Duration, failed: bool, at: Instant) {
        let second = self.second_at(at);
        let bin = second / LATENCY_BIN_SECONDS;
        let k = kind.index();
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut rings = self.lock();
        let slot = &mut rings.seconds[slot_of(second, SECOND_SLOTS)];
        if slot.second != second {
            *slot = SecondSlot {
                second,
                ..SecondSlot::EMPTY
            };
        }
        slot.count[k] = slot.count[k].saturating_add(1);
        if failed {
            slot.failed[k] = slot.failed[k].saturating_add(1);
        }
        let slot = &mut rings.bins[slot_of(bin, BIN_SLOTS)];
        if slot.bin != bin {
            slot.bin = bin;
            slot.histogram = [[0; BUCKETS]; 3];
        }
        let count = &mut slot.histogram[k][bucket_of(micros)];
        *count = count.saturating_add(1);
    }

    /// Waits until a trade succeeds.
    pub async fn trade_done(&self) {
        self.trade_done.notified().await;
    }

    /// The panel's view at `now`. The per-second series ends with the last complete second
    /// (the current one would show a falsely low rate); the latency bins end with the bin being
    /// filled. Either way the view changes only when traffic does, or when old data leaves the
    /// window: an idle system yields the same view every time.
    #[must_use]
    pub fn view(&self, now: Instant) -> TrafficView {
        let now_second = self.second_at(now);
        let now_bin = now_second / LATENCY_BIN_SECONDS;
        let rings = self.lock();
        // Seconds `now - WINDOW ..= now - 1`, oldest first; a second before the start is 0.
        let mut per_second = KindSeries::<Vec<u32>>::default();
        let mut failed_per_second = Vec::with_capacity(SECOND_SLOTS);
        for back in (1..=WINDOW_SECONDS).rev() {
            let slot = now_second
                .checked_sub(back)
                .map(|s| (s, rings.seconds[slot_of(s, SECOND_SLOTS)]))
                .filter(|(s, slot)| slot.second == *s)
                .map(|(_, slot)| slot)
                .unwrap_or(SecondSlot::EMPTY);
            for kind in Kind::ALL {
                per_second.get_mut(kind).push(slot.count[kind.index()]);
            }
            failed_per_second.push(slot.failed.iter().fold(0u32, |a, b| a.saturating_add(*b)));
        }
        let bin_count = WINDOW_SECONDS / LATENCY_BIN_SECONDS;
        let bins_in_summary = LATENCY_SUMMARY_SECONDS / LATENCY_BIN_SECONDS;
        let mut latency_bins = KindSeries::<Vec<Option<BinLatency>>>::default();
        let mut summary = [[0u64; BUCKETS]; 3];
        // Bins `now - (count - 1) ..= now`: the bin being filled is included, so latency shows
        // within a sample of the first request (it changes only when a request lands in it).
        for back in (0..bin_count).rev() {
            let slot = now_bin
                .checked_sub(back)
                .map(|b| (b, &rings.bins[slot_of(b, BIN_SLOTS)]))
                .filter(|(b, slot)| slot.bin == *b)
                .map(|(_, slot)| slot);
            for kind in Kind::ALL {
                let histogram = slot.map(|s| &s.histogram[kind.index()]);
                if back < bins_in_summary
                    && let Some(h) = histogram
                {
                    for (total, count) in summary[kind.index()].iter_mut().zip(h) {
                        *total += u64::from(*count);
                    }
                }
                latency_bins
                    .get_mut(kind)
                    .push(histogram.and_then(BinLatency::of));
            }
        }
        let latency = KindSeries {
            trade: LatencySummary::of(&summary[Kind::Trade.index()]),
            lookup: LatencySummary::of(&summary[Kind::Lookup.index()]),
            order_query: LatencySummary::of(&summary[Kind::OrderQuery.index()]),
        };
        TrafficView {
            window_s: WINDOW_SECONDS,
            bin_s: LATENCY_BIN_SECONDS,
            summary_s: LATENCY_SUMMARY_SECONDS,
            per_second,
            failed_per_second,
            latency,
            latency_bins,
        }
    }
}

fn slot_of(index: u64, slots: usize) -> usize {
    // `slots` is a small constant, so the remainder fits in usize.
    usize::try_from(index % slots as u64).expect("a remainder below a usize fits a usize")
}

fn bucket_of(micros: u64) -> usize {
    if micros < FIRST_BUCKET_US {
        return 0;
    }
    let power = u64::from(63 - micros.leading_zeros()); // >= 4
    let quarter = (micros >> (power - 2)) & 3;
    usize::try_from(1 + (power - 4) * 4 + quarter)
        .unwrap_or(BUCKETS - 1)
        .min(BUCKETS - 1)
}

/// The largest latency bucket `i` holds (its exclusive upper bound), in microseconds.
fn bucket_upper_us(i: usize) -> u64 {
    if i == 0 {
        return FIRST_BUCKET_US;
    }
    let i = i as u64;
    let power = 4 + (i - 1) / 4;
    let quarter = (i - 1) % 4;
    (1 << power) + (quarter + 1) * (1 << (power - 2))
}

/// The `q` quantile (0 < q <= 1) of a histogram, as its bucket's upper bound; `None` if empty.
fn quantile<C: Copy + Into<u64>>(histogram: &[C], q: f64) -> Option<u64> {
    let total: u64 = histogram.iter().map(|c| (*c).into()).sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based; float rounding cannot leave the range 1..=total.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0u64;
    for (i, count) in histogram.iter().enumerate() {
        seen += (*count).into();
        if seen >= rank {
            return Some(bucket_upper_us(i));
        }
    }
    None
}

/// Three series, one per kind of request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KindSeries<T> {
    /// Trades.
    pub trade: T,
    /// Stock lookups.
    pub lookup: T,
    /// Order queries.
    pub order_query: T,
}

impl<T> KindSeries<T> {
    fn get_mut(&mut self, kind: Kind) -> &mut T {
        match kind {
            Kind::Trade => &mut self.trade,
            Kind::Lookup => &mut self.lookup,
            Kind::OrderQuery => &mut self.order_query,
        }
    }
}

/// Latency percentiles of one bin, in microseconds (bucket upper bounds: at most 25 % high).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BinLatency {
    /// Median.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
}

impl BinLatency {
    fn of(histogram: &[u32; BUCKETS]) -> Option<Self> {
        Some(Self {
            p50_us: quantile(histogram, 0.50)?,
            p99_us: quantile(histogram, 0.99)?,
        })
    }
}

/// Latency over the summary window, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LatencySummary {
    /// Requests in the window.
    pub count: u64,
    /// Median; `None` without requests.
    pub p50_us: Option<u64>,
    /// 90th percentile.
    pub p90_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// Slowest.
    pub max_us: Option<u64>,
}

impl LatencySummary {
    fn of(histogram: &[u64; BUCKETS]) -> Self {
        Self {
            count: histogram.iter().sum(),
            p50_us: quantile(histogram, 0.50),
            p90_us: quantile(histogram, 0.90),
            p99_us: quantile(histogram, 0.99),
            max_us: quantile(histogram, 1.0),
        }
    }
}

/// What the traffic panel shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TrafficView {
    /// Seconds covered by the per-second series.
    pub window_s: u64,
    /// Seconds per latency bin.
    pub bin_s: u64,
    /// Seconds covered by the latency summary.
    pub summary_s: u64,
    /// Requests per second, oldest first, ending with the last complete second.
    pub per_second: KindSeries<Vec<u32>>,
    /// Requests per second (all kinds) answered with a 5xx status.
    pub failed_per_second: Vec<u32>,
    /// Latency over the last `summary_s` seconds (the current bin and the complete ones before
    /// it, so between `summary_s - bin_s` and `summary_s` seconds).
    pub latency: KindSeries<LatencySummary>,
    /// Latency per bin, oldest first, ending with the bin being filled; `None` for a bin
    /// without requests.
    pub latency_bins: KindSeries<Vec<Option<BinLatency>>>,
}

/// The layer that feeds a [`Traffic`] recorder: add it with `Router::layer`, after the routes,
/// so each request's matched route is known.
///
/// A hand-written tower layer rather than `axum::middleware::from_fn`: it passes everything the
/// panel does not show straight to the route without an allocation, and a timed request costs
/// about 0.75 us in-process against about 1.15 us for the same work in `from_fn`
/// (`benches/dashboard.rs`).
#[derive(Debug, Clone)]
pub struct TrafficLayer {
    traffic: Arc<Traffic>,
}

impl TrafficLayer {
    /// A layer recording into `traffic`.
    #[must_use]
    pub fn new(traffic: Arc<Traffic>) -> Self {
        Self { traffic }
    }
}

impl<S> tower::Layer<S> for TrafficLayer {
    type Service = Recorded<S>;

    fn layer(&self, inner: S) -> Recorded<S> {
        Recorded {
            inner,
            traffic: Arc::clone(&self.traffic),
        }
    }
}

/// A route wrapped by [`TrafficLayer`].
#[derive(Debug, Clone)]
pub struct Recorded<S> {
    inner: S,
    traffic: Arc<Traffic>,
}

/// What a wrapped route returns: the route's own future when the request is not timed.
pub type RecordedFuture<F> =
    futures::future::Either<F, futures::future::BoxFuture<'static, Result<Response, Infallible>>>;

impl<S> tower::Service<Request> for Recorded<S>
where
    S: tower::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = RecordedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let kind = Kind::of(
            request.method(),
            request
                .extensions()
                .get::<MatchedPath>()
                .map(MatchedPath::as_str),
            request.uri().query(),
        );
        let Some(kind) = kind else {
            return futures::future::Either::Left(self.inner.call(request));
        };
        let traffic = Arc::clone(&self.traffic);
        let started = Instant::now();
        let response = self.inner.call(request);
        futures::future::Either::Right(Box::pin(async move {
            let response = response.await?;
            let finished = Instant::now();
            let status = response.status();
            traffic.record(
                kind,
                finished.saturating_duration_since(started),
                status.is_server_error(),
                finished,
            );
            if kind == Kind::Trade && status.is_success() {
                traffic.trade_done.notify_one();
            }
            Ok(response)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_at_most_a_quarter_wide() {
        let mut lower = 0;
        for i in 0..BUCKETS - 1 {
            let upper = bucket_upper_us(i);
            assert_eq!(bucket_of(lower), i, "lower bound {lower} of bucket {i}");
            assert_eq!(
                bucket_of(upper - 1),
                i,
                "last value {} of bucket {i}",
                upper - 1
            );
            assert_eq!(bucket_of(upper), i + 1, "{upper} starts the next bucket");
            if i > 0 {
                assert!(
                    (upper - lower) * 4 <= lower,
                    "bucket {i} [{lower}, {upper})"
                );
            }
            lower = upper;
        }
        assert_eq!(
            bucket_of(u64::MAX),
            BUCKETS - 1,
            "the last bucket takes the rest"
        );
    }

    #[test]
    fn requests_are_classified_by_route() {
        let of = |m: Method, r: &str, q: Option<&str>| Kind::of(&m, Some(r), q);
        assert_eq!(of(Method::POST, "/orders", None), Some(Kind::Trade));
        assert_eq!(
            of(Method::GET, "/orders/{number}", None),
            Some(Kind::OrderQuery)
        );
        assert_eq!(
            of(Method::GET, "/orders", Some("order-number=3")),
            Some(Kind::OrderQuery)
        );
        assert_eq!(of(Method::GET, "/stocks/{name}", None), Some(Kind::Lookup));
        assert_eq!(
            of(Method::GET, "/products/{name}", None),
            Some(Kind::Lookup)
        );
        assert_eq!(
            of(Method::GET, "/stocks", Some("stockname=FishCo")),
            Some(Kind::Lookup)
        );
        assert_eq!(of(Method::GET, "/stocks", None), None, "the listing");
        assert_eq!(of(Method::GET, "/health", None), None);
        assert_eq!(of(Method::GET, "/dashboard/events", None), None);
        assert_eq!(Kind::of(&Method::GET, None, None), None, "no route matched");
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_land_in_their_second_and_only_complete_seconds_are_shown() {
        let traffic = Traffic::new();
        let t0 = traffic.started;
        traffic.record(Kind::Trade, ms(2), false, t0 + ms(100));
        traffic.record(Kind::Trade, ms(2), true, t0 + ms(900));
        traffic.record(Kind::Lookup, ms(1), false, t0 + ms(1500));
        let during = traffic.view(t0 + ms(1_200));
        assert_eq!(during.per_second.trade.len(), WINDOW_SECONDS as usize);
        assert_eq!(during.per_second.trade.last(), Some(&2));
        assert_eq!(during.failed_per_second.last(), Some(&1));
        assert_eq!(
            during.per_second.lookup.last(),
            Some(&0),
            "second 1 is not complete yet"
        );
        let later = traffic.view(t0 + ms(3_000));
        let n = later.per_second.trade.len();
        assert_eq!(&later.per_second.trade[n - 3..], &[2, 0, 0]);
        assert_eq!(&later.per_second.lookup[n - 3..], &[0, 1, 0]);
    }

    #[test]
    fn an_idle_recorder_shows_the_same_view_every_time() {
        let traffic = Traffic::new();
        let t0 = traffic.started;
        traffic.record(Kind::Trade, ms(3), false, t0 + ms(10));
        let a = traffic.view(t0 + Duration::from_secs(WINDOW_SECONDS + 20));
        let b = traffic.view(t0 + Duration::from_secs(WINDOW_SECONDS + 40));
        assert_eq!(a, b, "the trade has left the window; nothing moves");
        assert!(a.per_second.trade.iter().all(|c| *c == 0));
        assert_eq!(a.latency.trade.count, 0);
    }

    #[test]
    fn a_slot_reused_after_a_full_window_starts_from_zero() {
        let traffic = Traffic::new();
        let t0 = traffic.started;
        traffic.record(Kind::Lookup, ms(1), false, t0 + ms(500));
        let wrapped = t0 + Duration::from_secs(SECOND_SLOTS as u64) + ms(500);
        traffic.record(Kind::Lookup, ms(1), false, wrapped);
        let view = traffic.view(wrapped + Duration::from_secs(1));
        assert_eq!(view.per_second.lookup.iter().sum::<u32>(), 1);
        assert_eq!(view.per_second.lookup.last(), Some(&1));
    }

    #[test]
    fn percentiles_come_from_the_last_minute_including_the_bin_being_filled() {
        let traffic = Traffic::new();
        let t0 = traffic.started;
        // 98 fast trades and 2 slow ones in bin 0, visible at once and until bin 6 starts.
        for i in 0..100u64 {
            let latency = if i < 98 { ms(2) } else { ms(50) };
            traffic.record(Kind::Trade, latency, false, t0 + ms(i * 10));
        }
        let view = traffic.view(t0 + ms(1_500));
        let summary = view.latency.trade;
        assert_eq!(summary.count, 100);
        let p50 = summary.p50_us.expect("p50");
        assert!((2_000..=2_500).contains(&p50), "p50 {p50}");
        let p99 = summary.p99_us.expect("p99");
        assert!((50_000..=62_500).contains(&p99), "p99 {p99}");
        assert_eq!(summary.max_us, Some(p99));
        assert_eq!(view.latency.lookup, LatencySummary::default());
        let bins = &view.latency_bins.trade;
        assert_eq!(bins.len(), (WINDOW_SECONDS / LATENCY_BIN_SECONDS) as usize);
        assert_eq!(bins.last().copied().flatten().map(|b| b.p50_us), Some(p50));
        assert!(bins[..bins.len() - 1].iter().all(Option::is_none));
        let still = traffic.view(t0 + Duration::from_secs(LATENCY_SUMMARY_SECONDS - 1));
        assert_eq!(
            still.latency.trade.count, 100,
            "bin 0 is in the last minute"
        );
        let after = traffic.view(t0 + Duration::from_secs(LATENCY_SUMMARY_SECONDS));
        assert_eq!(after.latency.trade.count, 0, "bin 0 left the summary");
        assert!(
            after.latency_bins.trade.iter().any(Option::is_some),
            "still drawn"
        );
    }

    /// The layer on a router with the real route patterns: it records what it should, and
    /// only a successful trade wakes the sampler.
    #[tokio::test]
    async fn the_layer_records_panel_routes_and_wakes_on_successful_trades() {
        use axum::body::Body;
        use axum::http::StatusCode;
        use axum::routing::{get, post};
        use tower::ServiceExt;

        let traffic = Arc::new(Traffic::new());
        let app = axum::Router::new()
            .route(
                "/orders",
                post(|body: String| async move {
                    if body == "ok" {
                        StatusCode::OK
                    } else {
                        StatusCode::CONFLICT
                    }
                }),
            )
            .route(
                "/stocks/{name}",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            )
            .route("/health", get(|| async { StatusCode::OK }))
            .layer(TrafficLayer::new(Arc::clone(&traffic)));
        let call = |method: &str, uri: &str, body: &'static str| {
            let request = axum::http::Request::builder()
                .method(method)
                .uri(uri)
                .body(Body::from(body))
                .expect("request");
            app.clone().oneshot(request)
        };
        call("POST", "/orders", "refused").await.expect("call");
        let woken = tokio::time::timeout(Duration::from_millis(50), traffic.trade_done()).await;
        assert!(woken.is_err(), "a refused trade does not wake the sampler");
        call("POST", "/orders", "ok").await.expect("call");
        tokio::time::timeout(Duration::from_secs(1), traffic.trade_done())
            .await
            .expect("a successful trade wakes the sampler");
        call("GET", "/stocks/FishCo", "").await.expect("call");
        call("GET", "/health", "").await.expect("call");
        let view = traffic.view(Instant::now() + Duration::from_secs(1));
        let sum = |series: &[u32]| series.iter().sum::<u32>();
        assert_eq!(sum(&view.per_second.trade), 2);
        assert_eq!(sum(&view.per_second.lookup), 1);
        assert_eq!(sum(&view.per_second.order_query), 0);
        assert_eq!(sum(&view.failed_per_second), 1, "the 503 lookup");
    }
}
