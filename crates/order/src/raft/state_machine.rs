//! openraft's state machine over [`Db`]: applying runs the ledger's apply step (numbering
//! trades, refusing buys larger than what is available, exactly once per request id), and
//! snapshots carry the orders and the stocks.

use std::io::Cursor;

use openraft::storage::RaftStateMachine;
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};

use super::log_store::storage_error;
use super::store::{Db, SnapshotRecord};
use super::types::{
    Applied, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::error::Error;
use crate::orders::OrderRow;
use bazaar_ledger::StockRecord;

/// Snapshot counters exported at `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct SnapshotCounters {
    /// Snapshots this replica built from its state machine.
    pub built: Counter,
    /// Snapshots this replica installed from a leader (it was too far behind for the log).
    pub installed: Counter,
}

/// A snapshot's data: every order it covers, in number order, and the stocks.
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotData {
    orders: Vec<OrderRow>,
    stocks: Vec<StockRecord>,
}

fn encode(orders: Vec<OrderRow>, stocks: Vec<StockRecord>) -> Cursor<Vec<u8>> {
    // Plain structs of strings and integers always serialize.
    Cursor::new(
        serde_json::to_vec(&SnapshotData { orders, stocks })
            .expect("snapshot rows serialize to JSON"),
    )
}

/// The state machine; cheap to clone.
#[derive(Debug, Clone)]
pub struct StateMachine {
    db: Db,
    counters: SnapshotCounters,
}

impl StateMachine {
    /// The state machine in `db`.
    #[must_use]
    pub fn new(db: Db, counters: SnapshotCounters) -> Self {
        Self { db, counters }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    /// Reads a consistent cut of the state machine while applying goes on, and records it as
    /// the current snapshot. Only the meta and the order count are written: the rows stay in
    /// `orders`, which only grows past them.
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let read_error =
            |e: Error| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Read, &e);
        let (applied, membership, orders, stocks) = self.db.cut().await.map_err(read_error)?;
        let count = orders.len() as u64;
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id: snapshot_id(applied, count),
        };
        let data = encode(orders, stocks.clone());
        self.db
            .save_snapshot(SnapshotRecord {
                meta: meta.clone(),
                orders: count,
                stocks,
            })
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(None), ErrorVerb::Write, &e))?;
        self.counters.built.inc();
        tracing::info!(last_log = ?applied.map(|l| l.index), orders = count, "raft snapshot built");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(data),
        })
    }
}

/// Two snapshots with the same applied entry hold the same orders, so the id can be derived.
fn snapshot_id(applied: Option<LogId>, orders: u64) -> String {
    match applied {
        Some(l) => format!(
            "{}-{}-{}-{orders}",
            l.leader_id.term, l.leader_id.node_id, l.index
        ),
        None => format!("empty-{orders}"),
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.db.with_state(|s| (s.applied, s.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.db
            .apply(entries.into_iter().collect())
            .await
            .map_err(|e| storage_error(ErrorSubject::StateMachine, ErrorVerb::Write, &e))
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let signature = Some(meta.signature());
        let data: SnapshotData = serde_json::from_slice(snapshot.get_ref()).map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Read,
                &Error::Storage(format!("cannot decode the snapshot: {e}")),
            )
        })?;
        let count = data.orders.len() as u64;
        self.db
            .install(
                SnapshotRecord {
                    meta: meta.clone(),
                    orders: count,
                    stocks: data.stocks,
                },
                data.orders,
            )
            .await
            .map_err(|e| storage_error(ErrorSubject::Snapshot(signature), ErrorVerb::Write, &e))?;
        self.counters.installed.inc();
        tracing::info!(
            last_log = ?meta.last_log_id.map(|l| l.index),
            orders = count,
            "raft snapshot installed"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let Some(record) = self.db.with_state(|s| s.snapshot.clone()) else {
            return Ok(None);
        };
        let signature = Some(record.meta.signature());
        let orders = self.db.orders_below(record.orders).await.map_err(|e| {
            storage_error(
                ErrorSubject::Snapshot(signature.clone()),
                ErrorVerb::Read,
                &e,
            )
        })?;
        // Orders only grow past a snapshot (installing a newer one is the only replacement, and
        // it runs on the same worker as this read), so the rows are all there.
        if orders.len() as u64 != record.orders {
            return Err(storage_error(
                ErrorSubject::Snapshot(signature),
                ErrorVerb::Read,
                &Error::Storage(format!(
                    "snapshot {} holds {} orders but the state machine has {} below that",
                    record.meta.snapshot_id,
                    record.orders,
                    orders.len()
                )),
            ));
        }
        Ok(Some(Snapshot {
            meta: record.meta,
            snapshot: Box::new(encode(orders, record.stocks)),
        }))
    }
}
