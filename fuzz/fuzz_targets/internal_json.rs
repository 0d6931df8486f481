//! Every JSON message type in crates/api, internal and public, read as the services and the
//! typed clients read them: strictly (`bazaar_api::json::from_slice`, what every request body
//! goes through) and leniently (`serde_json`, what the typed clients use on replies and the
//! order leader on the front-ends' feed frames). Never panics; every accepted message keeps its
//! integers storable (at most 2^63-1, SQLite's largest), the strict reader accepts nothing the
//! lenient one refuses and reads the same value, and every accepted message survives a round
//! trip through JSON (every type here derives `PartialEq` and round-trips).
#![no_main]

use bazaar_api::catalog::{CatalogStatus, StockAt, StocksAt};
use bazaar_api::envelope::{Data, ErrorBody, LeaderHint};
use bazaar_api::feed::{FeedEvent, FeedReply};
use bazaar_api::ids::{Epoch, ReplicaId, TxnNumber, Version, WIRE_INTEGER_MAX};
use bazaar_api::log::{
    AppliedEntry, BookSnapshot, Command, Effect, LogFollow, LogIndex, Position, PositionReply,
    StockChange, StockDef, TradeCommand,
};
use bazaar_api::order::Order;
use bazaar_api::price::{PRICE_CENTS_MAX, Price};
use bazaar_api::replica::{
    AppendReply, AppendRequest, EntryId, EpochRun, LeaderNotice, LogEntry, OrderTrade,
    PeerStatus, ReplicaStatus, RestockRequest, StatusFence, TradeAck, TradeReceipt,
};
use bazaar_api::stock::{Stock, StockState};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn storable(n: u64) {
    assert!(n <= WIRE_INTEGER_MAX, "{n} is larger than {WIRE_INTEGER_MAX}");
}

/// What an accepted value must satisfy: every integer that may reach a store is storable.
trait Bounded {
    fn bounded(&self);
}

macro_rules! newtype_bounded {
    ($($t:ty),*) => {$(
        impl Bounded for $t {
            fn bounded(&self) {
                storable(self.0);
            }
        }
    )*};
}
newtype_bounded!(Epoch, Version, TxnNumber, LogIndex, Position);

impl Bounded for ReplicaId {
    fn bounded(&self) {
        assert!(self.0 >= 1, "replica ids start at 1");
    }
}

impl Bounded for Price {
    fn bounded(&self) {
        assert!(self.cents() <= PRICE_CENTS_MAX, "{self}");
    }
}

impl<T: Bounded> Bounded for Option<T> {
    fn bounded(&self) {
        if let Some(value) = self {
            value.bounded();
        }
    }
}

impl<T: Bounded> Bounded for Vec<T> {
    fn bounded(&self) {
        self.iter().for_each(Bounded::bounded);
    }
}

impl<T: Bounded> Bounded for Data<T> {
    fn bounded(&self) {
        self.data.bounded();
    }
}

impl Bounded for StockDef {
    fn bounded(&self) {
        self.price.bounded();
        storable(self.quantity);
    }
}

impl Bounded for TradeCommand {
    fn bounded(&self) {
        storable(self.quantity);
    }
}

impl Bounded for Command {
    fn bounded(&self) {
        match self {
            Self::Genesis { stocks } => stocks.bounded(),
            Self::Trade(trade) => trade.bounded(),
            Self::Restock { to } => storable(*to),
        }
        // What the leader checks before a command reaches its log: never panics, and what it
        // lets through is a trade a client could have asked for.
        if self.validate().is_ok() {
            match self {
                Self::Trade(trade) => {
                    assert!(bazaar_api::validate_stock_name(&trade.name).is_ok());
                    assert!((1..=bazaar_api::TRADE_QUANTITY_MAX).contains(&trade.quantity));
                }
                Self::Restock { to } => {
                    assert!((1..=bazaar_api::TRADE_QUANTITY_MAX).contains(to));
                }
                Self::Genesis { stocks } => {
                    for stock in stocks {
                        assert!(stock.quantity <= bazaar_api::TRADE_QUANTITY_MAX);
                    }
                }
            }
        }
    }
}

impl Bounded for Effect {
    fn bounded(&self) {
        match self {
            Self::Listed { stocks } => stocks.bounded(),
            Self::Traded {
                number, quantity, ..
            } => {
                number.bounded();
                storable(*quantity);
            }
            Self::Restocked { quantity, .. } => storable(*quantity),
        }
        let _ = self.stocks().count();
    }
}

impl Bounded for AppliedEntry {
    fn bounded(&self) {
        self.index.bounded();
        self.effects.bounded();
    }
}

impl Bounded for StockState {
    fn bounded(&self) {
        self.price.bounded();
        storable(self.quantity);
        storable(self.volume);
        self.version.bounded();
    }
}

impl Bounded for Stock {
    fn bounded(&self) {
        self.price.bounded();
        storable(self.quantity);
    }
}

impl Bounded for BookSnapshot {
    fn bounded(&self) {
        self.position.bounded();
        self.stocks.bounded();
        self.next_number.bounded();
    }
}

impl Bounded for LogFollow {
    fn bounded(&self) {
        match self {
            Self::Entries {
                epoch,
                from,
                entries,
            } => {
                epoch.bounded();
                from.bounded();
                entries.bounded();
            }
            Self::Snapshot { epoch, snapshot } => {
                epoch.bounded();
                snapshot.bounded();
            }
        }
    }
}

impl Bounded for StockChange {
    fn bounded(&self) {
        self.version.bounded();
    }
}

impl Bounded for PositionReply {
    fn bounded(&self) {
        self.position.bounded();
        self.epoch.bounded();
    }
}

impl Bounded for EpochRun {
    fn bounded(&self) {
        self.start.bounded();
        self.epoch.bounded();
    }
}

impl Bounded for ReplicaStatus {
    fn bounded(&self) {
        self.id.bounded();
        self.leader.bounded();
        self.epoch.bounded();
        self.position.bounded();
        self.last_number.bounded();
        self.visible.bounded();
    }
}

impl Bounded for PeerStatus {
    fn bounded(&self) {
        self.id.bounded();
        self.epoch.bounded();
        self.leader.bounded();
        self.len.bounded();
        self.runs.bounded();
    }
}

impl Bounded for StatusFence {
    fn bounded(&self) {
        self.epoch.bounded();
        self.leader.bounded();
    }
}

impl Bounded for OrderTrade {
    fn bounded(&self) {
        storable(self.quantity);
        // The leader validates the command the trade becomes.
        Command::Trade(self.command()).bounded();
    }
}

impl Bounded for TradeReceipt {
    fn bounded(&self) {
        self.transaction_number.bounded();
        self.position.bounded();
    }
}

impl Bounded for TradeAck {
    fn bounded(&self) {
        self.transaction_number.bounded();
    }
}

impl Bounded for RestockRequest {
    fn bounded(&self) {
        storable(self.to);
    }
}

impl Bounded for LogEntry {
    fn bounded(&self) {
        self.index.bounded();
        self.epoch.bounded();
        self.command.bounded();
    }
}

impl Bounded for LeaderNotice {
    fn bounded(&self) {
        self.leader.bounded();
        self.epoch.bounded();
        self.live.bounded();
    }
}

impl Bounded for EntryId {
    fn bounded(&self) {
        self.index.bounded();
        self.epoch.bounded();
    }
}

impl Bounded for AppendRequest {
    fn bounded(&self) {
        self.epoch.bounded();
        self.leader.bounded();
        self.prev.bounded();
        self.entries.bounded();
    }
}

impl Bounded for AppendReply {
    fn bounded(&self) {
        match self {
            Self::Appended { len } => len.bounded(),
            Self::Mismatch { len, runs } => {
                len.bounded();
                runs.bounded();
            }
        }
    }
}

impl Bounded for StockAt {
    fn bounded(&self) {
        self.stock.bounded();
        self.position.bounded();
    }
}

impl Bounded for StocksAt {
    fn bounded(&self) {
        self.stocks.bounded();
        self.position.bounded();
    }
}

impl Bounded for CatalogStatus {
    fn bounded(&self) {
        self.position.bounded();
        self.saved.bounded();
    }
}

impl Bounded for FeedEvent {
    fn bounded(&self) {
        match self {
            Self::Hello {
                epoch,
                floor,
                lease_ms,
            } => {
                epoch.bounded();
                floor.bounded();
                storable(*lease_ms);
            }
            Self::Invalidate { seq, position, .. } => {
                storable(*seq);
                position.bounded();
            }
            Self::Pong { nonce } => storable(*nonce),
        }
    }
}

impl Bounded for FeedReply {
    fn bounded(&self) {
        match self {
            Self::Ack { seq } => storable(*seq),
            Self::Ping { nonce } => storable(*nonce),
        }
    }
}

impl Bounded for Order {
    fn bounded(&self) {
        self.number.bounded();
        storable(self.quantity);
    }
}

impl Bounded for LeaderHint {
    fn bounded(&self) {
        self.id.bounded();
    }
}

impl Bounded for ErrorBody {
    fn bounded(&self) {
        self.error.leader.bounded();
        self.error.epoch.bounded();
        if let Some(kind) = self.error.kind {
            let _ = kind.status();
        }
    }
}

/// Reads `data` as `T` strictly and leniently; whatever either accepts is bounded and survives
/// a round trip, and the strict reader accepts only what the lenient one does, as the same
/// value.
fn check<T>(data: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug + Bounded,
{
    let strict = bazaar_api::json::from_slice::<T>(data).ok();
    let lenient = serde_json::from_slice::<T>(data).ok();
    if let Some(value) = &strict {
        assert_eq!(lenient.as_ref(), Some(value), "strict accepted what lenient did not");
    }
    for value in strict.iter().chain(lenient.iter()) {
        value.bounded();
        let text = serde_json::to_vec(value).expect("an accepted message serialises");
        let again: T = bazaar_api::json::from_slice(&text).expect("what we write we read");
        assert_eq!(&again, value);
    }
}

fuzz_target!(|data: &[u8]| {
    // Replica to replica (primary-backup) and front-end to replica.
    check::<AppendRequest>(data);
    check::<AppendReply>(data);
    check::<LogEntry>(data);
    check::<Command>(data);
    check::<LeaderNotice>(data);
    check::<Option<StatusFence>>(data);
    check::<PeerStatus>(data);
    check::<ReplicaStatus>(data);
    check::<OrderTrade>(data);
    check::<TradeReceipt>(data);
    check::<RestockRequest>(data);
    // The log as catalogs and front-ends follow it.
    check::<LogFollow>(data);
    check::<PositionReply>(data);
    check::<StockChange>(data);
    // Catalog replies.
    check::<StockAt>(data);
    check::<StocksAt>(data);
    check::<CatalogStatus>(data);
    // The invalidation feed, both ways.
    check::<FeedEvent>(data);
    check::<FeedReply>(data);
    // Public resources and envelopes, as the typed clients read replies.
    check::<TradeAck>(data);
    check::<Order>(data);
    check::<Stock>(data);
    check::<StockState>(data);
    check::<ErrorBody>(data);
    check::<Data<Vec<LogEntry>>>(data);
    check::<Data<Position>>(data);
    check::<Data<Vec<Stock>>>(data);
});
