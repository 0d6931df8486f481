//! The front-end's end of the invalidation feed: a WebSocket to whichever replica leads,
//! re-established when the leader changes or the connection breaks. The first message is the
//! leader's `hello` (knowledge starts over from its floor); each invalidation is applied to the
//! cache before it is acknowledged; pings renew the lease: a pong for a ping sent at `t` makes
//! knowledge trusted until `t + lease`. Losing the connection, a pong not arriving within the
//! lease, or the leader changing, empties the cache and trusts nothing until the next hello and
//! pong (the leader's half of the argument is in the order service's `release::feed`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bazaar_api::auth::ClientAuth;
use bazaar_api::feed::{FeedEvent, FeedReply};
use bazaar_api::websocket::{ClusterWebSocket, connect_websocket};
use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;
use crate::leader::{Current, LeaderSelector, Leadership};

/// First and longest pause between reconnection attempts.
const RECONNECT_PAUSE_MIN: Duration = Duration::from_millis(20);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_millis(500);

/// Pings per lease: several, so one late pong does not end the lease.
const PINGS_PER_LEASE: u32 = 5;

/// The longest lease a leader may grant that this front-end accepts, and the shortest.
const LEASE_MAX: Duration = Duration::from_secs(10);
const LEASE_MIN: Duration = Duration::from_millis(50);

/// How long the leader may take to send its hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(2);

/// Keeps the feed connected to the leader until `stop` is cancelled. The upgrade presents
/// `auth`'s cluster key (the feed is an internal route).
pub async fn run(
    leader: LeaderSelector,
    auth: ClientAuth,
    label: String,
    cache: Arc<Cache>,
    stop: CancellationToken,
) {
    let mut pause = RECONNECT_PAUSE_MIN;
    let mut leadership = leader.watch();
    loop {
        cache.lost();
        let current = match &*leadership.borrow_and_update() {
            Leadership::Known(current) => Some(current.clone()),
            Leadership::Searching | Leadership::Absent(_) => None,
        };
        let Some(current) = current else {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = leadership.changed() => {}
            }
            continue;
        };
        let url = format!(
            "{}?subscriber={}",
            current.client.feed_url(),
            label.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-")
        );
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = connect_websocket(&url, &auth) => c,
        };
        match connected {
            Ok(socket) => {
                let (reason, was_up) =
                    run_connection(socket, &cache, &current, &mut leadership, &stop).await;
                cache.lost();
                if stop.is_cancelled() {
                    return;
                }
                if was_up {
                    pause = RECONNECT_PAUSE_MIN;
                    tracing::warn!(
                        reason,
                        "invalidation feed lost; caching off until it is back"
                    );
                }
            }
            Err(e) => {
                tracing::debug!(leader = %current.client.id(), error = %e, "cannot subscribe to the leader's feed");
                // Refused: this replica may not lead any more.
                leader.report_failed(&current, None);
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
    }
}

/// Runs one subscription; returns why it ended and whether knowledge was trusted during it.
async fn run_connection(
    socket: ClusterWebSocket,
    cache: &Cache,
    current: &Current,
    leadership: &mut tokio::sync::watch::Receiver<Leadership>,
    stop: &CancellationToken,
) -> (&'static str, bool) {
    let (mut sink, mut stream) = socket.split();
    let hello = tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await;
    let lease = match hello {
        Ok(Some(Ok(Message::Text(text)))) => {
            match bazaar_api::json::from_slice::<FeedEvent>(text.as_bytes()) {
                Ok(FeedEvent::Hello {
                    epoch,
                    floor,
                    lease_ms,
                }) => {
                    cache.hello(epoch, floor);
                    Duration::from_millis(lease_ms).clamp(LEASE_MIN, LEASE_MAX)
                }
                _ => return ("the leader's first message was not a hello", false),
            }
        }
        Ok(_) => return ("the leader closed the feed before its hello", false),
        Err(_) => return ("no hello from the leader in time", false),
    };
    let mut ticks = tokio::time::interval(lease / PINGS_PER_LEASE);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Pings in flight: nonce and send time, oldest first.
    let mut pings: VecDeque<(u64, Instant)> = VecDeque::new();
    let mut nonce = 0_u64;
    let mut last_pong = Instant::now();
    let mut up = false;
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let _ = sink.send(Message::Close(None)).await;
                return ("front-end shutting down", up);
            }
            changed = leadership.changed() => {
                let moved = changed.is_err() || match &*leadership.borrow() {
                    Leadership::Known(c) => c.generation != current.generation,
                    Leadership::Searching | Leadership::Absent(_) => true,
                };
                if moved {
                    let _ = sink.send(Message::Close(None)).await;
                    return ("the leader changed", up);
                }
            }
            _ = ticks.tick() => {
                if last_pong.elapsed() > lease {
                    return ("no answer from the leader within the lease", up);
                }
                nonce += 1;
                pings.push_back((nonce, Instant::now()));
                while pings.len() > PINGS_PER_LEASE as usize * 2 {
                    pings.pop_front();
                }
                if send(&mut sink, &FeedReply::Ping { nonce }).await.is_err() {
                    return ("send failed", up);
                }
            }
            frame = stream.next() => match frame {
                Some(Ok(Message::Text(text))) => match bazaar_api::json::from_slice::<FeedEvent>(text.as_bytes()) {
                    Ok(FeedEvent::Invalidate { seq, position, names }) => {
                        cache.invalidate(position, &names);
                        if send(&mut sink, &FeedReply::Ack { seq }).await.is_err() {
                            return ("send failed", up);
                        }
                    }
                    Ok(FeedEvent::Pong { nonce: answered }) => {
                        while let Some(&(n, sent)) = pings.front() {
                            if n > answered {
                                break;
                            }
                            pings.pop_front();
                            if n == answered {
                                last_pong = Instant::now();
                                cache.renew_lease((sent + lease).into_std());
                                if !up {
                                    up = true;
                                    tracing::info!(leader = %current.client.id(), "invalidation feed up; caching on");
                                }
                            }
                        }
                    }
                    Ok(FeedEvent::Hello { .. }) => return ("a second hello", up),
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable invalidation feed message");
                        return ("protocol error", up);
                    }
                },
                Some(Ok(Message::Close(_))) | None => return ("closed by the leader", up),
                Some(Err(_)) => return ("connection lost", up),
                Some(Ok(_)) => {}
            },
        }
    }
}

async fn send<S>(sink: &mut S, reply: &FeedReply) -> Result<(), S::Error>
where
    S: futures::Sink<Message> + Unpin,
{
    let text = serde_json::to_string(reply).expect("feed replies always serialise");
    sink.send(Message::Text(text.into())).await
}
