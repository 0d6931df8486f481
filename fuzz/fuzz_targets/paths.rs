//! Every parser of a path segment or query string in crates/api: order numbers, stock names,
//! request ids, replica ids, trade types, prices, and the query strings of the routes that
//! take one. Never panics; what is accepted is within bounds and round-trips through text.
#![no_main]

use std::str::FromStr;

use bazaar_api::catalog::TradesQuery;
use bazaar_api::ids::WIRE_INTEGER_MAX;
use bazaar_api::replica::OrdersPageQuery;
use bazaar_api::{Price, ReplicaId, RequestId, TradeType, TxnNumber};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        let _ = serde_urlencoded::from_bytes::<OrdersPageQuery>(data);
        let _ = serde_urlencoded::from_bytes::<TradesQuery>(data);
        return;
    };
    if let Ok(n) = TxnNumber::from_str(text) {
        assert!(n.0 <= WIRE_INTEGER_MAX);
        assert!(!text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(TxnNumber::from_str(&n.to_string()), Ok(n));
    } else if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        // Refused digits must be a number above the maximum.
        let trimmed = text.trim_start_matches('0');
        assert!(trimmed.len() >= 19, "{text:?} refused");
    }
    if bazaar_api::validate_stock_name(text).is_ok() {
        assert!(!text.is_empty() && text.chars().count() <= bazaar_api::STOCK_NAME_LEN_MAX);
        assert!(!text.chars().any(char::is_control));
    }
    if let Ok(id) = RequestId::from_str(text) {
        assert_eq!(RequestId::from_str(&id.to_string()), Ok(id));
    }
    if let Ok(id) = ReplicaId::from_str(text) {
        assert!(id.0 >= 1);
        assert_eq!(ReplicaId::from_str(&id.to_string()), Ok(id));
    }
    if let Ok(kind) = TradeType::from_str(text) {
        assert_eq!(TradeType::from_str(kind.as_str()), Ok(kind));
    }
    if let Ok(price) = Price::from_str(text) {
        assert_eq!(Price::from_str(&price.to_string()), Ok(price));
    }
    if let Ok(query) = serde_urlencoded::from_str::<OrdersPageQuery>(text) {
        assert!(query.from <= WIRE_INTEGER_MAX);
    }
    if let Ok(query) = serde_urlencoded::from_str::<TradesQuery>(text) {
        assert!(query.older_than_ms.is_none_or(|ms| ms <= WIRE_INTEGER_MAX));
    }
    // The front-end's query aliases.
    #[derive(serde::Deserialize)]
    struct Aliases {
        #[serde(rename = "order-number")]
        order_number: Option<String>,
        stockname: Option<String>,
    }
    if let Ok(aliases) = serde_urlencoded::from_str::<Aliases>(text) {
        if let Some(number) = aliases.order_number {
            let _ = TxnNumber::from_str(&number);
        }
        if let Some(name) = aliases.stockname {
            let _ = bazaar_api::validate_stock_name(&name);
        }
    }
});
