//! The one-writer-thread pattern every database here uses (ARCHITECTURE.md: group commit). A
//! dedicated thread owns the write connection; requests arrive on a bounded queue, each with a
//! oneshot for its reply. The thread takes whatever is queued, executes it in one transaction,
//! commits once, and only then sends the replies. A failed commit cannot be retried
//! meaningfully, so it raises the service's [`Fatal`] and the thread ends.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::Fatal;
use crate::batch;

/// A reply held back until the batch it belongs to is durable.
pub type Deferred = Box<dyn FnOnce() + Send>;

/// Holds `value` back for `reply`. The caller may have given up by the time it is sent (its
/// client disconnected); the change stands anyway.
pub fn defer<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) -> Deferred {
    Box::new(move || {
        let _ = reply.send(value);
    })
}

/// Sends a writer the request `make` builds around its reply channel, and waits for the reply.
/// `None` when the writer is gone (the service is stopping, or a commit failed).
pub async fn request<C, T>(
    queue: &mpsc::Sender<C>,
    make: impl FnOnce(oneshot::Sender<T>) -> C,
) -> Option<T> {
    let (reply, answer) = oneshot::channel();
    queue.send(make(reply)).await.ok()?;
    answer.await.ok()
}

/// Starts a writer thread named `name` that hands batches of up to `batch_len_max` requests
/// to `commit`. When `commit` fails, `fatal` is raised with its message and the thread ends;
/// otherwise it ends when every sender of `queue` is gone and the queue is drained.
///
/// # Errors
/// The thread could not be started.
pub fn spawn<C, F>(
    name: &str,
    mut queue: mpsc::Receiver<C>,
    batch_len_max: usize,
    fatal: Fatal,
    mut commit: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    C: Send + 'static,
    F: FnMut(Vec<C>) -> Result<(), String> + Send + 'static,
{
    let label = name.to_owned();
    // The thread logs under the span current where it is started (the service's root span).
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name(label.clone())
        .spawn(move || {
            let _entered = span.enter();
            while let Some(requests) = batch::blocking_recv(&mut queue, batch_len_max) {
                if let Err(e) = commit(requests) {
                    fatal.raise(format!("{label}: {e}"));
                    return;
                }
            }
            tracing::debug!(writer = %label, "writer stopped");
        })
}

/// Waits for a writer thread to end, at most `deadline`. Every handle to its queue is gone by
/// the time a service calls this, so it ends once its queue is drained; the deadline only
/// guards against a handle leaked by a bug.
pub async fn join(thread: std::thread::JoinHandle<()>, deadline: Duration) {
    let joined = tokio::task::spawn_blocking(move || thread.join());
    if tokio::time::timeout(deadline, joined).await.is_err() {
        tracing::warn!("database writer did not stop in time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn replies_wait_for_the_commit_and_a_failure_is_fatal() {
        let fatal = Fatal::new();
        let (tx, rx) = mpsc::channel::<(u32, oneshot::Sender<u32>)>(8);
        let thread = spawn("test-writer", rx, 4, fatal.clone(), |batch| {
            if batch.iter().any(|(n, _)| *n == 13) {
                return Err("unlucky".into());
            }
            let replies: Vec<Deferred> = batch
                .into_iter()
                .map(|(n, reply)| defer(reply, n * 2))
                .collect();
            replies.into_iter().for_each(|reply| reply());
            Ok(())
        })
        .expect("spawn");
        let (reply, answer) = oneshot::channel();
        tx.send((21, reply)).await.expect("send");
        assert_eq!(answer.await.ok(), Some(42));
        let (reply, answer) = oneshot::channel();
        tx.send((13, reply)).await.expect("send");
        assert!(answer.await.is_err(), "no reply from a failed commit");
        assert_eq!(fatal.raised().await, "test-writer: unlucky");
        join(thread, Duration::from_secs(5)).await;
    }
}
