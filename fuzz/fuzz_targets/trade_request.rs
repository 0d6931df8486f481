//! The public trade body: strict JSON, then `TradeRequest::from_json`. Never panics; what it
//! accepts is a valid trade that survives a round trip.
#![no_main]

use bazaar_api::order::TradeRequest;
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
    assert_eq!(TradeRequest::from_json(&again), Ok(trade));
});
