//! Every JSON message type in crates/api, internal and public, read strictly as the services
//! read them. Never panics; every accepted message keeps its integers storable and survives a
//! round trip through JSON.
#![no_main]

use bazaar_api::catalog::{FeedEvent, FeedReply, TradeRecord, TradeSettle, TradeTry};
use bazaar_api::envelope::{Data, ErrorBody};
use bazaar_api::ids::WIRE_INTEGER_MAX;
use bazaar_api::order::Order;
use bazaar_api::replica::{
    AppendReply, AppendRequest, LeaderNotice, OrderEntry, OrderTrade, ReplicaStatus, TradeAck,
};
use bazaar_api::stock::{Stock, StockState};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Parses `data` as `T`; if it is accepted, checks the round trip and returns it.
fn check<T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug>(data: &[u8]) -> Option<T> {
    let value: T = bazaar_api::json::from_slice(data).ok()?;
    let text = serde_json::to_vec(&value).expect("an accepted message serialises");
    let again: T = bazaar_api::json::from_slice(&text).expect("what we write we read");
    assert_eq!(again, value);
    Some(value)
}

fn storable(n: u64) {
    assert!(n <= WIRE_INTEGER_MAX, "{n}");
}

fuzz_target!(|data: &[u8]| {
    if let Some(append) = check::<AppendRequest>(data) {
        storable(append.epoch.0);
        for entry in &append.entries {
            storable(entry.number.0);
            storable(entry.quantity);
            storable(entry.epoch.0);
        }
        if let Some(prev) = append.prev {
            storable(prev.number.0);
        }
    }
    if let Some(notice) = check::<LeaderNotice>(data) {
        storable(notice.epoch.0);
    }
    if let Some(trade) = check::<OrderTrade>(data) {
        storable(trade.quantity);
    }
    if let Some(entry) = check::<OrderEntry>(data) {
        storable(entry.number.0);
    }
    if let Some(trade) = check::<TradeTry>(data) {
        storable(trade.quantity);
        storable(trade.epoch.0);
    }
    let _ = check::<TradeSettle>(data);
    if let Some(record) = check::<TradeRecord>(data) {
        storable(record.quantity);
    }
    let _ = check::<FeedEvent>(data);
    let _ = check::<FeedReply>(data);
    let _ = check::<ReplicaStatus>(data);
    let _ = check::<AppendReply>(data);
    let _ = check::<TradeAck>(data);
    let _ = check::<Order>(data);
    let _ = check::<Stock>(data);
    let _ = check::<StockState>(data);
    let _ = check::<ErrorBody>(data);
    let _ = check::<Data<Vec<OrderEntry>>>(data);
});
