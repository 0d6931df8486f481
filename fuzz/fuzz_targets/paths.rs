//! Every parser of a path segment or query string the services read: order numbers
//! (`/orders/{number}`, `?order-number=`), stock names (`/stocks/{name}`, `?stockname=`),
//! request ids, replica ids, trade types, prices, and the query strings of the routes that take
//! one (`GET /internal/log/entries?from=&limit=`, `GET /internal/log?from=&epoch=&wait_ms=`,
//! `GET /stocks[/{name}]?min_position=` on a catalog, `GET /internal/feed?subscriber=`), read as
//! axum's `Query` reads them (`serde_urlencoded`). Never panics; what is accepted is within
//! bounds (every integer that may reach a store at most 2^63-1) and round-trips through text.
#![no_main]

use std::str::FromStr;

use bazaar_api::catalog::LookupQuery;
use bazaar_api::feed::FeedQuery;
use bazaar_api::ids::WIRE_INTEGER_MAX;
use bazaar_api::log::LogFollowQuery;
use bazaar_api::replica::EntriesQuery;
use bazaar_api::{Price, ReplicaId, RequestId, TradeType, TxnNumber};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What an accepted query must satisfy.
trait Bounded {
    fn bounded(&self);
}

impl Bounded for EntriesQuery {
    fn bounded(&self) {
        assert!(self.from.0 <= WIRE_INTEGER_MAX, "{self:?}");
    }
}

impl Bounded for LogFollowQuery {
    fn bounded(&self) {
        assert!(self.from.0 <= WIRE_INTEGER_MAX, "{self:?}");
        assert!(self.epoch.is_none_or(|e| e.0 <= WIRE_INTEGER_MAX), "{self:?}");
        assert!(self.wait_ms.is_none_or(|ms| ms <= WIRE_INTEGER_MAX), "{self:?}");
    }
}

impl Bounded for LookupQuery {
    fn bounded(&self) {
        assert!(
            self.min_position.is_none_or(|p| p.0 <= WIRE_INTEGER_MAX),
            "{self:?}"
        );
    }
}

impl Bounded for FeedQuery {
    fn bounded(&self) {}
}

/// Reads `bytes` as the query string of a route taking `T`; what is accepted is bounded and
/// reads back the same after `serde_urlencoded` writes it (every query type derives
/// `PartialEq`, and none holds a `Price`, whose serialiser speaks JSON only).
fn query<T>(bytes: &[u8])
where
    T: DeserializeOwned + Serialize + PartialEq + std::fmt::Debug + Bounded,
{
    if let Ok(value) = serde_urlencoded::from_bytes::<T>(bytes) {
        value.bounded();
        let text = serde_urlencoded::to_string(&value).expect("an accepted query serialises");
        let again: T = serde_urlencoded::from_str(&text).expect("what we write we read");
        assert_eq!(again, value, "{text:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    query::<EntriesQuery>(data);
    query::<LogFollowQuery>(data);
    query::<LookupQuery>(data);
    query::<FeedQuery>(data);
    let Ok(text) = std::str::from_utf8(data) else {
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
        assert!(price.cents() <= bazaar_api::price::PRICE_CENTS_MAX);
        assert_eq!(Price::from_str(&price.to_string()), Ok(price));
    }
    // The front-end's query aliases: `GET /orders?order-number=N`, `GET /stocks?stockname=X`.
    #[derive(serde::Deserialize)]
    struct OrdersQuery {
        #[serde(rename = "order-number")]
        order_number: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct StocksQuery {
        stockname: Option<String>,
    }
    if let Ok(OrdersQuery {
        order_number: Some(number),
    }) = serde_urlencoded::from_str(text)
    {
        if let Ok(n) = TxnNumber::from_str(&number) {
            assert!(n.0 <= WIRE_INTEGER_MAX);
        }
    }
    if let Ok(StocksQuery {
        stockname: Some(name),
    }) = serde_urlencoded::from_str(text)
    {
        let _ = bazaar_api::validate_stock_name(&name);
    }
});
