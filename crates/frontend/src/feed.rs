//! The front-end's end of the invalidation feed: a WebSocket to the catalog, reconnected with
//! backoff. Each invalidation is applied to the cache before it is acknowledged. Pings renew
//! the cache's lease: a pong for a ping sent at `t` makes cached entries servable until
//! `t + lease`. Losing the connection, or a pong not arriving within the lease, empties the
//! cache and turns caching off until the feed is back (see `catalog::feed` for the catalog's
//! half of the argument).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bazaar_api::auth::ClientAuth;
use bazaar_api::catalog::{FeedEvent, FeedReply};
use bazaar_api::websocket::{ClusterWebSocket, connect_websocket};
use futures::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::cache::Cache;

/// First and longest pause between reconnection attempts.
const RECONNECT_PAUSE_MIN: Duration = Duration::from_millis(50);
const RECONNECT_PAUSE_MAX: Duration = Duration::from_secs(2);

/// Pings per lease: several, so one late pong does not end the lease.
const PINGS_PER_LEASE: u32 = 5;

/// Keeps the feed connected until `stop` is cancelled. The upgrade presents `auth`'s cluster key
/// (the feed is an internal route).
pub async fn run(
    feed_url: String,
    auth: ClientAuth,
    label: String,
    lease: Duration,
    cache: Arc<Cache>,
    stop: CancellationToken,
) {
    let url = format!(
        "{feed_url}?lease_ms={}&subscriber={label}",
        lease.as_millis()
    );
    let mut pause = RECONNECT_PAUSE_MIN;
    loop {
        cache.disable();
        let connected = tokio::select! {
            () = stop.cancelled() => return,
            c = connect_websocket(&url, &auth) => c,
        };
        match connected {
            Ok(socket) => {
                let (reason, was_up) = run_connection(socket, lease, &cache, &stop).await;
                cache.disable();
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
            Err(e) => tracing::debug!(error = %e, "cannot reach the invalidation feed"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(RECONNECT_PAUSE_MAX);
    }
}

/// Runs one connection; returns why it ended and whether caching was ever on during it.
async fn run_connection(
    socket: ClusterWebSocket,
    lease: Duration,
    cache: &Cache,
    stop: &CancellationToken,
) -> (&'static str, bool) {
    let (mut sink, mut stream) = socket.split();
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
            _ = ticks.tick() => {
                if last_pong.elapsed() > lease {
                    return ("no answer from the catalog within the lease", up);
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
                Some(Ok(Message::Text(text))) => match serde_json::from_str::<FeedEvent>(&text) {
                    Ok(FeedEvent::Invalidate { seq, name, version }) => {
                        cache.invalidate(&name, version);
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
                                    cache.enable();
                                    tracing::info!("invalidation feed up; caching on");
                                }
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable invalidation feed message");
                        return ("protocol error", up);
                    }
                },
                Some(Ok(Message::Close(_))) | None => return ("closed by the catalog", up),
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
