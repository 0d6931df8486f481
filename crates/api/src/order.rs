//! Orders and the public trade request.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{RequestId, TxnNumber};
use crate::{TRADE_QUANTITY_MAX, validate_stock_name};

/// Buy or sell. Accepted in any letter case, always written lower-case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeType {
    /// Takes shares out of the catalog.
    Buy,
    /// Puts shares into the catalog.
    Sell,
}

impl TradeType {
    /// The wire spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Buy => "buy",
            Self::Sell => "sell",
        }
    }
}

impl fmt::Display for TradeType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TradeType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("buy") {
            Ok(Self::Buy)
        } else if s.eq_ignore_ascii_case("sell") {
            Ok(Self::Sell)
        } else {
            Err(format!("type must be \"buy\" or \"sell\", not {s:?}"))
        }
    }
}

impl<'de> Deserialize<'de> for TradeType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A committed order, as `GET /orders/{number}` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// Transaction number.
    pub number: TxnNumber,
    /// Stock traded.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares traded.
    #[serde(deserialize_with = "crate::ids::bounded::u64")]
    pub quantity: u64,
}

/// The body of `POST /orders`, after validation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TradeRequest {
    /// Stock to trade.
    pub name: String,
    /// Buy or sell.
    #[serde(rename = "type")]
    pub kind: TradeType,
    /// Shares, 1..=[`TRADE_QUANTITY_MAX`].
    pub quantity: u64,
    /// The client's name for this trade (a UUID), to retry it safely: a trade is applied at
    /// most once per request id, and a retry is answered with the first one's number. Without
    /// one the front-end makes one up, and a client that lost the reply cannot tell.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
}

impl TradeRequest {
    /// Validates a parsed JSON body field by field, so each mistake gets its own message
    /// (a generic "bad JSON" helps nobody).
    ///
    /// # Errors
    /// A sentence naming the first field that is missing or wrong.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, String> {
        let obj = body
            .as_object()
            .ok_or("request body must be a JSON object with fields name, type and quantity")?;
        let name = match obj.get("name") {
            None => return Err("missing field \"name\"".into()),
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return Err("field \"name\" must be a string".into()),
        };
        validate_stock_name(&name)?;
        let kind = match obj.get("type") {
            None => return Err("missing field \"type\"".into()),
            Some(serde_json::Value::String(s)) => s.parse()?,
            Some(_) => return Err("field \"type\" must be the string \"buy\" or \"sell\"".into()),
        };
        let quantity = match obj.get("quantity") {
            None => return Err("missing field \"quantity\"".into()),
            Some(serde_json::Value::Number(n)) => parse_quantity(n)?,
            Some(other) => {
                return Err(format!(
                    "field \"quantity\" must be a positive integer, not {other}"
                ));
            }
        };
        let request_id = match obj.get("request_id") {
            None | Some(serde_json::Value::Null) => None,
            Some(serde_json::Value::String(s)) => Some(s.parse()?),
            Some(_) => return Err("field \"request_id\" must be a UUID string".into()),
        };
        Ok(Self {
            name,
            kind,
            quantity,
            request_id,
        })
    }
}

fn parse_quantity(n: &serde_json::Number) -> Result<u64, String> {
    let wrong =
        || format!("field \"quantity\" must be an integer from 1 to {TRADE_QUANTITY_MAX}, not {n}");
    match n.as_u64() {
        Some(q) if (1..=TRADE_QUANTITY_MAX).contains(&q) => Ok(q),
        _ => Err(wrong()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn trade_type_accepts_any_case_and_writes_lower_case() {
        for s in ["buy", "BUY", "Buy", "bUy"] {
            assert_eq!(s.parse::<TradeType>(), Ok(TradeType::Buy));
        }
        assert_eq!("Sell".parse::<TradeType>(), Ok(TradeType::Sell));
        assert!("hold".parse::<TradeType>().is_err());
        assert_eq!(
            serde_json::to_string(&TradeType::Sell).expect("serialise"),
            "\"sell\""
        );
    }

    #[test]
    fn valid_trade_request_parses() {
        let req =
            TradeRequest::from_json(&json!({"name": "FishCo", "type": "SELL", "quantity": 3}))
                .expect("valid");
        assert_eq!(req.kind, TradeType::Sell);
        assert_eq!(req.quantity, 3);
        assert_eq!(req.request_id, None);
        let id = RequestId::new();
        let req = TradeRequest::from_json(
            &json!({"name": "FishCo", "type": "buy", "quantity": 1, "request_id": id.to_string()}),
        )
        .expect("valid");
        assert_eq!(req.request_id, Some(id));
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (json!([]), "JSON object"),
            (json!({"type": "buy", "quantity": 1}), "\"name\""),
            (json!({"name": 5, "type": "buy", "quantity": 1}), "\"name\""),
            (json!({"name": "A", "quantity": 1}), "\"type\""),
            (json!({"name": "A", "type": "hold", "quantity": 1}), "buy"),
            (json!({"name": "A", "type": 1, "quantity": 1}), "\"type\""),
            (json!({"name": "A", "type": "buy"}), "\"quantity\""),
            (
                json!({"name": "A", "type": "buy", "quantity": 0}),
                "quantity",
            ),
            (
                json!({"name": "A", "type": "buy", "quantity": -1}),
                "quantity",
            ),
            (
                json!({"name": "A", "type": "buy", "quantity": 1.5}),
                "quantity",
            ),
            (
                json!({"name": "A", "type": "buy", "quantity": "2"}),
                "quantity",
            ),
            (
                json!({"name": "A", "type": "buy", "quantity": 2_147_483_648_u64}),
                "quantity",
            ),
            (
                json!({"name": "x".repeat(65), "type": "buy", "quantity": 1}),
                "65 characters",
            ),
            (
                json!({"name": "A", "type": "buy", "quantity": 1, "request_id": "r-1"}),
                "not a UUID",
            ),
            (
                json!({"name": "A", "type": "buy", "quantity": 1, "request_id": 7}),
                "\"request_id\"",
            ),
        ];
        for (body, needle) in cases {
            let err = TradeRequest::from_json(&body).expect_err("must be refused");
            assert!(err.contains(needle), "{body}: {err}");
        }
        assert!(
            TradeRequest::from_json(
                &json!({"name": "A", "type": "buy", "quantity": 2_147_483_647})
            )
            .is_ok()
        );
    }
}
