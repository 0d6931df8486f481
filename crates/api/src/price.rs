//! Exact prices. A price is a whole number of cents inside every process and a JSON number
//! with exactly two decimals on the wire (`12.50`, never `12.5` or `12.499999`): serde_json
//! does not round-trip every `f64`, and money must not drift.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative price in cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Price {
    cents: u64,
}

/// Largest price accepted: one trillion dollars, far below where cents stop fitting an `f64`
/// exactly (2^53), so every accepted price also reads back exactly in other languages.
pub const PRICE_CENTS_MAX: u64 = 100_000_000_000_000;

impl Price {
    /// A price of `cents` cents.
    ///
    /// # Panics
    /// If `cents` exceeds [`PRICE_CENTS_MAX`]; callers parsing input use [`Price::from_str`].
    #[must_use]
    pub fn from_cents(cents: u64) -> Self {
        assert!(
            cents <= PRICE_CENTS_MAX,
            "price {cents} cents is out of range"
        );
        Self { cents }
    }

    /// The price in cents.
    #[must_use]
    pub fn cents(self) -> u64 {
        self.cents
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

/// Parses a decimal price such as `12`, `12.5` or `12.50`. Signs, exponents and more than two
/// decimals are refused rather than rounded.
impl FromStr for Price {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("price {s:?} is not a non-negative amount with at most two decimals");
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty()
            || !whole.bytes().all(|b| b.is_ascii_digit())
            || !frac.bytes().all(|b| b.is_ascii_digit())
            || frac.len() > 2
            || (s.contains('.') && frac.is_empty())
        {
            return Err(bad());
        }
        let whole: u64 = whole.parse().map_err(|_| bad())?;
        let frac_cents: u64 = match frac.len() {
            0 => 0,
            1 => frac.parse::<u64>().map_err(|_| bad())? * 10,
            _ => frac.parse().map_err(|_| bad())?,
        };
        let cents = whole
            .checked_mul(100)
            .and_then(|c| c.checked_add(frac_cents))
            .filter(|&c| c <= PRICE_CENTS_MAX)
            .ok_or_else(|| format!("price {s:?} is too large"))?;
        Ok(Self { cents })
    }
}

impl Serialize for Price {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // A raw value lets the number keep its trailing zero (`12.50`).
        let raw = serde_json::value::RawValue::from_string(self.to_string())
            .map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Price {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Two decimals survive the trip through f64 exactly once rounded to the nearest cent,
        // for every price up to PRICE_CENTS_MAX.
        let value = f64::deserialize(deserializer)?;
        let cents = (value * 100.0).round();
        if !value.is_finite() || value < 0.0 || cents > PRICE_CENTS_MAX as f64 {
            return Err(serde::de::Error::custom(format!(
                "price {value} is out of range"
            )));
        }
        if ((value * 100.0) - cents).abs() > 1e-6 {
            return Err(serde::de::Error::custom(format!(
                "price {value} has more than two decimals"
            )));
        }
        // The range check above makes the cast exact.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Self {
            cents: cents as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_are_written_with_two_decimals() {
        let json = serde_json::to_string(&Price::from_cents(1250)).expect("serialise");
        assert_eq!(json, "12.50");
        assert_eq!(
            serde_json::to_string(&Price::from_cents(7)).expect("serialise"),
            "0.07"
        );
    }

    #[test]
    fn prices_round_trip_exactly() {
        for cents in [
            0,
            1,
            7,
            10,
            99,
            100,
            1250,
            6_086_674,
            999_999_999_999,
            PRICE_CENTS_MAX,
        ] {
            let price = Price::from_cents(cents);
            let json = serde_json::to_string(&price).expect("serialise");
            let back: Price = serde_json::from_str(&json).expect("deserialise");
            assert_eq!(back, price, "{json}");
            assert_eq!(json.parse::<Price>(), Ok(price));
        }
    }

    #[test]
    fn parsing_refuses_anything_but_plain_decimals() {
        assert_eq!("12".parse::<Price>(), Ok(Price::from_cents(1200)));
        assert_eq!("12.5".parse::<Price>(), Ok(Price::from_cents(1250)));
        for bad in ["", "-1", "1.234", "1e3", "1.", ".5", "abc", "1,5", "+3"] {
            assert!(bad.parse::<Price>().is_err(), "{bad:?} was accepted");
        }
        assert!("99999999999999999999".parse::<Price>().is_err());
    }

    #[test]
    fn json_prices_with_more_precision_are_refused() {
        assert!(serde_json::from_str::<Price>("1.234").is_err());
        assert!(serde_json::from_str::<Price>("-1").is_err());
    }
}
