//! Taking work in batches from a queue: whatever arrived while the previous batch was being
//! handled forms the next one. This is what turns one fsync (or one network round trip) per
//! request into one per batch under load, while a lone request still goes alone at once.

use tokio::sync::mpsc;

/// Waits for the first item, then takes every item already queued behind it, up to `len_max`.
/// `None` when the queue is closed and empty.
pub async fn recv<T>(queue: &mut mpsc::Receiver<T>, len_max: usize) -> Option<Vec<T>> {
    let first = queue.recv().await?;
    Some(drain(queue, first, len_max))
}

/// [`recv`] for a dedicated thread outside the async runtime.
///
/// # Panics
/// If called from inside an async context (tokio forbids blocking there).
pub fn blocking_recv<T>(queue: &mut mpsc::Receiver<T>, len_max: usize) -> Option<Vec<T>> {
    let first = queue.blocking_recv()?;
    Some(drain(queue, first, len_max))
}

fn drain<T>(queue: &mut mpsc::Receiver<T>, first: T, len_max: usize) -> Vec<T> {
    let mut batch = vec![first];
    while batch.len() < len_max {
        match queue.try_recv() {
            Ok(item) => batch.push(item),
            Err(_) => break,
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_batch_is_what_queued_up_to_the_limit() {
        let (tx, mut rx) = mpsc::channel(16);
        for i in 0..5 {
            tx.send(i).await.expect("send");
        }
        assert_eq!(recv(&mut rx, 3).await, Some(vec![0, 1, 2]));
        assert_eq!(recv(&mut rx, 3).await, Some(vec![3, 4]));
        drop(tx);
        assert_eq!(recv(&mut rx, 3).await, None);
    }
}
