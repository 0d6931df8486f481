//! The invalidation feed: server push of `{name, version}` to every subscribed front-end.
//!
//! A front-end subscribes with a WebSocket (`GET /internal/feed`). For every visible change
//! the catalog sends `invalidate` and waits until each subscriber has acknowledged it or has
//! been dropped; only then is the change acknowledged to whoever made it. That is what makes
//! "no stale read after an acknowledged trade" a guarantee.
//!
//! Dropping a subscriber is only safe if it has stopped serving its cache, and a slow or
//! partitioned front-end may not have noticed the drop yet. So front-ends cache under a
//! lease: they send `ping` every so often and may serve cached entries only until `lease`
//! after the send time of the last ping the catalog answered. The catalog notes when each
//! ping *arrived* (necessarily after it was sent), and after dropping a subscriber waits until
//! that arrival time plus the lease has passed before acknowledging the change. By then the
//! front-end's lease has run out, whether or not it knows it was dropped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bazaar_api::Version;
use bazaar_api::catalog::{FeedEvent, FeedReply};
use futures::{SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest lease a front-end may ask for. The catalog may have to wait a whole lease before
/// acknowledging a trade when a subscriber stops answering, so leases must stay short.
pub const LEASE_MAX: Duration = Duration::from_secs(10);

/// Lease assumed when a front-end does not say.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(1);

/// Invalidations queued for one subscriber at most; a subscriber this far behind is dropped.
const OUTBOX_LEN: usize = 1024;

/// Feed counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FeedMetrics {
    /// Subscribed front-ends now.
    pub subscribers: Gauge,
    /// Invalidations sent, one per subscriber.
    pub invalidations: Counter,
    /// Subscribers dropped for not acknowledging in time.
    pub drops: Counter,
}

impl FeedMetrics {
    /// Registers the counters.
    pub fn register(&self, metrics: &bazaar_service::Metrics) {
        metrics.register(
            "feed_subscribers",
            "Front-ends subscribed to the invalidation feed",
            self.subscribers.clone(),
        );
        metrics.register(
            "feed_invalidations",
            "Invalidations sent to front-ends",
            self.invalidations.clone(),
        );
        metrics.register(
            "feed_drops",
            "Front-ends dropped from the feed for not acknowledging in time",
            self.drops.clone(),
        );
    }
}

/// When the lease of one subscriber can have run out at the latest.
#[derive(Debug)]
struct LeaseClock {
    lease: Duration,
    last_ping_arrival: Mutex<Option<Instant>>,
}

impl LeaseClock {
    fn renew(&self, arrival: Instant) {
        *self
            .last_ping_arrival
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(arrival);
    }

    /// `None` when no ping was ever answered: the subscriber never held a lease.
    fn expiry(&self) -> Option<Instant> {
        self.last_ping_arrival
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .map(|t| t + self.lease)
    }
}

struct Invalidation {
    name: String,
    version: Version,
    acked: oneshot::Sender<()>,
}

#[derive(Clone)]
struct Subscriber {
    label: String,
    outbox: mpsc::Sender<Invalidation>,
    clock: Arc<LeaseClock>,
}

/// The set of subscribed front-ends; cheap to clone.
#[derive(Clone)]
pub struct Feed {
    inner: Arc<Inner>,
}

struct Inner {
    subscribers: Mutex<HashMap<u64, Subscriber>>,
    next_id: AtomicU64,
    ack_timeout: Duration,
    metrics: FeedMetrics,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed")
            .field("subscribers", &self.subscriber_count())
            .finish_non_exhaustive()
    }
}

impl Feed {
    /// A feed that waits `ack_timeout` for each acknowledgement.
    #[must_use]
    pub fn new(ack_timeout: Duration, metrics: FeedMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                subscribers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                ack_timeout,
                metrics,
            }),
        }
    }

    /// Subscribed front-ends now.
    #[must_use]
    pub fn subscriber_count(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Subscriber>> {
        self.inner
            .subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells every subscriber that `name` changed to `version`, and returns once each has
    /// acknowledged or has been dropped and its lease has run out.
    pub async fn invalidate(&self, name: &str, version: Version) {
        let subscribers: Vec<(u64, Subscriber)> =
            self.lock().iter().map(|(id, s)| (*id, s.clone())).collect();
        if subscribers.is_empty() {
            return;
        }
        let ack_timeout = self.inner.ack_timeout;
        let sends = subscribers.into_iter().map(|(id, subscriber)| async move {
            let (acked, ack) = oneshot::channel();
            let queued = subscriber.outbox.try_send(Invalidation {
                name: name.to_owned(),
                version,
                acked,
            });
            let delivered = queued.is_ok()
                && matches!(tokio::time::timeout(ack_timeout, ack).await, Ok(Ok(())));
            (id, subscriber, delivered)
        });
        let mut lease_end: Option<Instant> = None;
        for (id, subscriber, delivered) in futures::future::join_all(sends).await {
            self.inner.metrics.invalidations.inc();
            if delivered {
                continue;
            }
            if self.lock().remove(&id).is_some() {
                self.inner.metrics.drops.inc();
                self.inner.metrics.subscribers.dec();
                tracing::warn!(
                    subscriber = %subscriber.label,
                    stock = %name,
                    "front-end did not acknowledge an invalidation; dropped from the feed"
                );
            }
            lease_end = lease_end.max(subscriber.clock.expiry());
        }
        if let Some(end) = lease_end {
            // Until then the dropped front-end may still believe its cache is valid.
            tokio::time::sleep_until(end).await;
        }
    }

    /// Runs one subscription until the socket closes, the subscriber is dropped, or
    /// `shutdown` is cancelled.
    pub async fn serve_subscriber(
        self,
        socket: WebSocket,
        label: String,
        lease: Duration,
        shutdown: CancellationToken,
    ) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (outbox, mut inbox) = mpsc::channel(OUTBOX_LEN);
        let clock = Arc::new(LeaseClock {
            lease: lease.min(LEASE_MAX),
            last_ping_arrival: Mutex::new(None),
        });
        // Registered before the first ping is read: a front-end holds a lease only after
        // that, so every change it could miss is sent to it.
        self.lock().insert(
            id,
            Subscriber {
                label: label.clone(),
                outbox,
                clock: Arc::clone(&clock),
            },
        );
        self.inner.metrics.subscribers.inc();
        tracing::info!(subscriber = %label, lease_ms = lease.as_millis(), "front-end subscribed");

        let (mut sink, mut stream) = socket.split();
        let mut pending: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
        let mut seq = 0_u64;
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break "catalog shutting down";
                }
                next = inbox.recv() => {
                    let Some(invalidation) = next else { break "dropped" };
                    seq += 1;
                    pending.insert(seq, invalidation.acked);
                    let event = FeedEvent::Invalidate {
                        seq,
                        name: invalidation.name,
                        version: invalidation.version,
                    };
                    if send_event(&mut sink, &event).await.is_err() {
                        break "send failed";
                    }
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<FeedReply>(&text) {
                        Ok(FeedReply::Ack { seq }) => {
                            if let Some(acked) = pending.remove(&seq) {
                                let _ = acked.send(());
                            }
                        }
                        Ok(FeedReply::Ping { nonce }) => {
                            clock.renew(Instant::now());
                            if send_event(&mut sink, &FeedEvent::Pong { nonce }).await.is_err() {
                                break "send failed";
                            }
                        }
                        Err(e) => {
                            tracing::warn!(subscriber = %label, error = %e, "unreadable feed message");
                            break "protocol error";
                        }
                    },
                    Some(Ok(Message::Close(_))) | None => break "closed by the front-end",
                    Some(Err(_)) => break "connection lost",
                    Some(Ok(_)) => {}
                },
            }
        };
        if self.lock().remove(&id).is_some() {
            self.inner.metrics.subscribers.dec();
        }
        // Dropping `pending` fails every unacknowledged invalidation, so broadcasters stop
        // waiting for acks and wait out this subscriber's lease instead.
        drop(pending);
        tracing::info!(subscriber = %label, reason, "front-end unsubscribed");
    }
}

async fn send_event(
    sink: &mut futures::stream::SplitSink<WebSocket, Message>,
    event: &FeedEvent,
) -> Result<(), axum::Error> {
    let text = serde_json::to_string(event).expect("feed events always serialise");
    sink.send(Message::Text(text.into())).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalidate_without_subscribers_returns_at_once() {
        let feed = Feed::new(Duration::from_millis(10), FeedMetrics::default());
        tokio::time::timeout(Duration::from_millis(100), feed.invalidate("A", Version(1)))
            .await
            .expect("no subscribers, no waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_subscriber_is_dropped_after_its_lease() {
        let feed = Feed::new(Duration::from_millis(50), FeedMetrics::default());
        let (outbox, _inbox) = mpsc::channel(1);
        let clock = Arc::new(LeaseClock {
            lease: Duration::from_millis(500),
            last_ping_arrival: Mutex::new(None),
        });
        clock.renew(Instant::now());
        feed.lock().insert(
            7,
            Subscriber {
                label: "silent".into(),
                outbox,
                clock,
            },
        );
        let started = Instant::now();
        feed.invalidate("A", Version(1)).await;
        assert_eq!(feed.subscriber_count(), 0, "dropped");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited out the lease: {:?}",
            started.elapsed()
        );
    }
}
