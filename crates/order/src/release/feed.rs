//! The invalidation feed: the leader pushes `{position, names}` to every subscribed front-end.
//!
//! A front-end subscribes with a WebSocket (`GET /internal/feed` on the leader) and first hears
//! a `hello` naming a floor: every change acknowledged so far is below it. For every change the
//! leader sends `invalidate` and waits until each subscriber has acknowledged it or has been
//! dropped; only then is the change released (acknowledged to the client, offered to the
//! catalogs). That is what makes "no stale read after an acknowledged trade" a guarantee.
//!
//! Dropping a subscriber is only safe if it has stopped trusting its knowledge, and a slow or
//! partitioned front-end may not have noticed the drop yet. So front-ends trust the feed under a
//! lease: they send `ping` every so often and may use what they know only until `lease` after
//! the send time of the last ping the leader answered. The leader notes when each ping
//! *arrived* (necessarily after it was sent), and after dropping a subscriber waits until that
//! arrival time plus the lease has passed before releasing the change. By then the front-end's
//! lease has run out, whether or not it knows it was dropped.
//!
//! A leader answers a ping only while it can vouch that it still leads: its lease basis (the
//! last time every live follower, or a majority in raft mode, confirmed its epoch) is at most
//! the grace old. A deposed leader therefore stops renewing leases within the grace, and a new
//! leader releases nothing until `lease + grace` after it took over (`super::Release`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket};
use bazaar_api::feed::{FeedEvent, FeedReply};
use bazaar_api::log::Position;
use futures::{SinkExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Longest lease accepted (`--feed-lease`). The leader may have to wait a whole lease before
/// releasing a trade when a subscriber stops answering, and a new leader waits one before it
/// releases anything, so leases must stay short.
pub const LEASE_MAX: Duration = Duration::from_secs(10);

/// The lease when `--feed-lease` does not say: pings every 80 ms, and a new leader's first
/// release 400 ms plus the grace after it takes over.
pub const LEASE_DEFAULT: Duration = Duration::from_millis(400);

/// Longest subscriber label kept for logs.
const LABEL_LEN_MAX: usize = 64;

/// Invalidations queued for one subscriber at most; a subscriber this far behind is dropped.
const OUTBOX_LEN: usize = 1024;

/// Feed counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct FeedMetrics {
    /// Subscribed front-ends now.
    pub subscribers: Gauge,
    /// Invalidations sent, one per subscriber and change.
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
    position: Position,
    names: Vec<String>,
    acked: oneshot::Sender<()>,
}

/// What a subscription starts with, and whether a ping may be answered now.
pub trait Authority: Send + Sync + 'static {
    /// The hello for a new subscriber (`None`: this replica does not lead; refuse it).
    fn hello(&self) -> Option<FeedEvent>;
    /// Whether this replica can vouch, now, that it still leads.
    fn may_renew(&self) -> bool;
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
    lease: Duration,
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
    /// A feed that grants `lease` and waits `ack_timeout` for each acknowledgement.
    #[must_use]
    pub fn new(lease: Duration, ack_timeout: Duration, metrics: FeedMetrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                subscribers: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
                ack_timeout,
                lease,
                metrics,
            }),
        }
    }

    /// The lease it grants.
    #[must_use]
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }

    /// Ends every subscription (this replica stopped leading): front-ends find the new leader
    /// and subscribe there, starting from its floor.
    pub fn close_all(&self) {
        let dropped = std::mem::take(&mut *self.lock());
        for _ in &dropped {
            self.inner.metrics.subscribers.dec();
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

    /// Tells every subscriber that `names` changed in the entry below `position`, and returns
    /// once each has acknowledged or has been dropped and its lease has run out.
    pub async fn invalidate(&self, position: Position, names: &[String]) {
        let subscribers: Vec<(u64, Subscriber)> =
            self.lock().iter().map(|(id, s)| (*id, s.clone())).collect();
        if subscribers.is_empty() {
            return;
        }
        let ack_timeout = self.inner.ack_timeout;
        let sends = subscribers.into_iter().map(|(id, subscriber)| async move {
            let (acked, ack) = oneshot::channel();
            let queued = subscriber.outbox.try_send(Invalidation {
                position,
                names: names.to_vec(),
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
                    %position,
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

    /// Runs one subscription until the socket closes, the subscriber is dropped (or every
    /// subscriber is, when this replica stops leading), or `shutdown` is cancelled.
    pub async fn serve_subscriber(
        self,
        socket: WebSocket,
        label: String,
        authority: Arc<dyn Authority>,
        shutdown: CancellationToken,
    ) {
        let label: String = label
            .chars()
            .filter(|c| !c.is_control())
            .take(LABEL_LEN_MAX)
            .collect();
        let lease = self.inner.lease;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (outbox, mut inbox) = mpsc::channel(OUTBOX_LEN);
        let clock = Arc::new(LeaseClock {
            lease,
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
        let (mut sink, mut stream) = socket.split();
        // The floor is read after registering: a change whose push started before this
        // subscriber was in the set is below it.
        let Some(hello) = authority.hello() else {
            if self.lock().remove(&id).is_some() {
                self.inner.metrics.subscribers.dec();
            }
            let _ = sink.send(Message::Close(None)).await;
            return;
        };
        if send_event(&mut sink, &hello).await.is_err() {
            if self.lock().remove(&id).is_some() {
                self.inner.metrics.subscribers.dec();
            }
            return;
        }
        tracing::info!(subscriber = %label, lease_ms = lease.as_millis(), "front-end subscribed");

        let mut pending: HashMap<u64, oneshot::Sender<()>> = HashMap::new();
        let mut seq = 0_u64;
        let reason = loop {
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = sink.send(Message::Close(None)).await;
                    break "replica shutting down";
                }
                next = inbox.recv() => {
                    let Some(invalidation) = next else { break "dropped" };
                    seq += 1;
                    pending.insert(seq, invalidation.acked);
                    let event = FeedEvent::Invalidate {
                        seq,
                        position: invalidation.position,
                        names: invalidation.names,
                    };
                    if send_event(&mut sink, &event).await.is_err() {
                        break "send failed";
                    }
                }
                frame = stream.next() => match frame {
                    Some(Ok(Message::Text(text))) => match bazaar_api::json::from_slice::<FeedReply>(text.as_bytes()) {
                        Ok(FeedReply::Ack { seq }) => {
                            if let Some(acked) = pending.remove(&seq) {
                                let _ = acked.send(());
                            }
                        }
                        Ok(FeedReply::Ping { nonce }) => {
                            // A leader that cannot vouch for its epoch lets the lease run out.
                            if authority.may_renew() {
                                clock.renew(Instant::now());
                                if send_event(&mut sink, &FeedEvent::Pong { nonce }).await.is_err() {
                                    break "send failed";
                                }
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
        let feed = Feed::new(
            Duration::from_millis(500),
            Duration::from_millis(10),
            FeedMetrics::default(),
        );
        tokio::time::timeout(
            Duration::from_millis(100),
            feed.invalidate(Position(1), &["A".into()]),
        )
        .await
        .expect("no subscribers, no waiting");
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_subscriber_is_dropped_after_its_lease() {
        let feed = Feed::new(
            Duration::from_millis(500),
            Duration::from_millis(50),
            FeedMetrics::default(),
        );
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
        feed.invalidate(Position(1), &["A".into()]).await;
        assert_eq!(feed.subscriber_count(), 0, "dropped");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "waited out the lease: {:?}",
            started.elapsed()
        );
    }
}
