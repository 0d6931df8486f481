//! Making the local log equal a source replica's: find where the two logs last agree, move the
//! local entries after that point aside (into `conflicts`), and pull everything after it from the
//! source page by page. Used on rejoin, by a newly chosen leader, and by a follower that
//! receives an append it cannot place. The caller holds the log lock.

use bazaar_api::TxnNumber;
use bazaar_api::client::ReplicaClient;
use bazaar_api::replica::{EntryRef, OrderEntry};

use crate::error::{Error, Result};
use crate::log_store::{LogStore, PAGE_LEN_MAX};
use crate::replication::core;

/// Entries compared per round while searching backwards for the agreement point.
const AGREEMENT_WINDOW_LEN: u32 = 64;

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Local entries moved to `conflicts`.
    pub moved: usize,
    /// Entries pulled from the source.
    pub pulled: usize,
}

fn refs(entries: &[OrderEntry]) -> Vec<EntryRef> {
    entries
        .iter()
        .map(|e| EntryRef {
            number: e.number,
            request_id: e.request_id,
        })
        .collect()
}

fn peer_error(source: &ReplicaClient, e: &bazaar_api::client::ClientError) -> Error {
    Error::NotReady(format!(
        "catching up from replica {} failed: {e}",
        source.id()
    ))
}

/// Makes `log` a copy of `source`'s log as of now.
///
/// # Errors
/// [`Error::NotReady`] when the source fails mid-way (the local log is then a consistent prefix
/// of the source's, and a later sync continues from there); storage errors.
pub async fn sync_from(log: &LogStore, source: &ReplicaClient) -> Result<SyncReport> {
    let agreed = agreement_point(log, source).await?;
    let next = agreed.map_or(TxnNumber(0), TxnNumber::next);
    let mut report = SyncReport::default();
    if log.next_number() > next {
        report.moved = log
            .move_suffix(next, format!("did not match replica {}'s log", source.id()))
            .await?;
        tracing::warn!(
            from = %next,
            moved = report.moved,
            source = %source.id(),
            "local log diverged; moved the divergent entries to the conflicts table"
        );
    }
    let mut from = next;
    loop {
        let page = source
            .orders_page(from, PAGE_LEN_MAX)
            .await
            .map_err(|e| peer_error(source, &e))?;
        let Some(last) = page.last().map(|e| e.number) else {
            break;
        };
        if let Some((i, bad)) = page
            .iter()
            .enumerate()
            .find(|(i, e)| e.number.0 != from.0 + *i as u64)
        {
            return Err(Error::NotReady(format!(
                "replica {} sent entry {} where {} belongs",
                source.id(),
                bad.number,
                from.0 + i as u64
            )));
        }
        report.pulled += page.len();
        log.append(page).await?;
        from = last.next();
    }
    if report.pulled > 0 {
        tracing::info!(
            pulled = report.pulled,
            source = %source.id(),
            last = ?log.last().map(|l| l.number.0),
            "caught up"
        );
    }
    Ok(report)
}

/// The highest number at which the local log and the source's hold the same entry, or `None`
/// if they share nothing (or the local log is empty).
async fn agreement_point(log: &LogStore, source: &ReplicaClient) -> Result<Option<TxnNumber>> {
    let Some(last) = log.last() else {
        return Ok(None);
    };
    // The common case is a follower that is merely behind: its last entry is the source's too.
    let theirs = source
        .orders_page(last.number, 1)
        .await
        .map_err(|e| peer_error(source, &e))?;
    if theirs
        .first()
        .is_some_and(|t| t.number == last.number && t.request_id == last.request_id)
    {
        return Ok(Some(last.number));
    }
    let mut high = last.number.0;
    loop {
        let low = high.saturating_sub(u64::from(AGREEMENT_WINDOW_LEN) - 1);
        let theirs = source
            .orders_page(TxnNumber(low), AGREEMENT_WINDOW_LEN)
            .await
            .map_err(|e| peer_error(source, &e))?;
        let mine = log.page(TxnNumber(low), AGREEMENT_WINDOW_LEN).await?;
        let mine: Vec<EntryRef> = refs(&mine)
            .into_iter()
            .filter(|m| m.number.0 <= high)
            .collect();
        if let Some(n) = core::agreement_in_window(&mine, &refs(&theirs)) {
            return Ok(Some(n));
        }
        if low == 0 {
            return Ok(None);
        }
        high = low - 1;
    }
}
