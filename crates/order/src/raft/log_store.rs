//! openraft's log storage over [`Db`]: the Raft log and the vote, durable before any append or
//! vote is answered.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogReader, StorageIOError};

use super::store::Db;
use super::types::{Entry, LogId, StorageError, TypeConfig, Vote};
use crate::error::Error;

/// The Raft log; also its own log reader (cheap to clone: the database handle is shared).
#[derive(Debug, Clone)]
pub struct LogStore {
    db: Db,
}

impl LogStore {
    /// The log in `db`.
    #[must_use]
    pub fn new(db: Db) -> Self {
        Self { db }
    }
}

/// A storage error for openraft, which stops the node on any of them.
pub(super) fn storage_error(
    subject: ErrorSubject<u64>,
    verb: ErrorVerb,
    e: &Error,
) -> StorageError {
    StorageIOError::new(subject, verb, AnyError::error(e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&n) => n,
            Bound::Excluded(&n) => n.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&n) => n.saturating_add(1),
            Bound::Excluded(&n) => n,
            Bound::Unbounded => u64::MAX,
        };
        self.db
            .entries(start, end)
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Read, &e))
    }

    /// The entries a replication stream sends: openraft (0.9) puts them in an AppendEntries
    /// whose previous entry is the one before `start`, so they must begin at `start`. When the
    /// start of the range is gone (compacted), this answers nothing, which openraft sends as a
    /// heartbeat, instead of entries that do not follow that previous entry. A leader never
    /// reads a range it compacted (openraft postpones compaction while replication uses it),
    /// but openraft 0.9 leaves a deposed leader's replication streams running until it leads
    /// again; one that still retries a replica that was down reads a log that moved on, and a
    /// replica restarted with the old term's vote accepts its request (the raft simulator,
    /// `bazaar-sim --mode raft`, found this through openraft's debug assertion on the
    /// follower; a release build would hand the follower's store an append that does not
    /// continue its log, which the store refuses, stopping the replica).
    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, StorageError> {
        let entries = self.try_get_log_entries(start..end).await?;
        if entries.first().is_some_and(|e| e.log_id.index != start) {
            return Ok(Vec::new());
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        Ok(self.db.with_state(|s| LogState {
            last_purged_log_id: s.last_purged,
            last_log_id: s.last_log.or(s.last_purged),
        }))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.db
            .save_vote(*vote)
            .await
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Write, &e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.db
            .vote()
            .await
            .map_err(|e| storage_error(ErrorSubject::Vote, ErrorVerb::Read, &e))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.db.save_committed(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.db
            .committed()
            .await
            .map_err(|e| storage_error(ErrorSubject::Store, ErrorVerb::Read, &e))
    }

    /// Returns once the entries are durable (and readable), after telling openraft so: the
    /// append is on disk before the replica answers the leader or counts itself in a quorum.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let written = self.db.append(entries.into_iter().collect()).await;
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(storage_error(ErrorSubject::Logs, ErrorVerb::Write, &e))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .truncate(log_id)
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.db
            .purge(log_id)
            .await
            .map_err(|e| storage_error(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}
