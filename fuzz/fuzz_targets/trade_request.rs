//! The public trade body (`POST /orders` on a front-end): strict JSON, then
//! `TradeRequest::from_json`. Never panics; what it accepts is a valid trade that survives a
//! round trip, and the `OrderTrade` the front-end relays for it (`POST /trades` on the leader)
//! becomes a log command the leader's `Command::validate` accepts, so no trade a front-end
//! accepted is refused as malformed further on.
#![no_main]

use bazaar_api::log::Command;
use bazaar_api::order::TradeRequest;
use bazaar_api::replica::OrderTrade;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = bazaar_api::json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(trade) = TradeRequest::from_json(&body) else {
        return;
    };
    assert!(bazaar_api::validate_stock_name(&trade.name).is_ok());
    assert!((1..=bazaar_api::TRADE_QUANTITY_MAX).contains(&trade.quantity));
    let again = serde_json::to_value(&trade).expect("a trade serialises");
    assert_eq!(TradeRequest::from_json(&again), Ok(trade.clone()));
    // What the front-end sends the leader, as the front-end builds it.
    let relayed = OrderTrade {
        request_id: trade.request_id.unwrap_or_default(),
        name: trade.name,
        kind: trade.kind,
        quantity: trade.quantity,
    };
    let text = serde_json::to_vec(&relayed).expect("a relayed trade serialises");
    let read: OrderTrade = bazaar_api::json::from_slice(&text).expect("the leader reads it");
    assert_eq!(read, relayed);
    assert_eq!(Command::Trade(read.command()).validate(), Ok(()));
});
