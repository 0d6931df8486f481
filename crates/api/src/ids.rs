//! Identifier newtypes. Bare integers never cross a module boundary: a transaction number, a
//! per-stock version and a leader epoch are all `u64` underneath, and mixing them up is exactly
//! the bug these types exist to prevent.
//!
//! Every integer that may reach a database is at most [`WIRE_INTEGER_MAX`] (SQLite stores
//! signed 64-bit integers): the newtypes refuse larger values when they are deserialized, and
//! plain `u64` fields of wire types use [`bounded`]. A value from the network therefore can
//! never reach a database writer that cannot store it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Largest integer any wire value may carry: `i64::MAX`, the largest SQLite stores.
pub const WIRE_INTEGER_MAX: u64 = i64::MAX as u64;

fn check_wire_integer(what: &str, value: u64) -> Result<u64, String> {
    if value > WIRE_INTEGER_MAX {
        Err(format!(
            "{what} {value} is larger than {WIRE_INTEGER_MAX}, the largest the store can hold"
        ))
    } else {
        Ok(value)
    }
}

/// Deserializers for plain integer fields of wire types, refusing values above
/// [`WIRE_INTEGER_MAX`] (`#[serde(deserialize_with = "crate::ids::bounded::u64")]`).
pub mod bounded {
    use serde::{Deserialize, Deserializer};

    /// A `u64` of at most [`super::WIRE_INTEGER_MAX`].
    ///
    /// # Errors
    /// Not an unsigned integer, or too large.
    pub fn u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let value = <u64 as Deserialize>::deserialize(deserializer)?;
        super::check_wire_integer("integer", value).map_err(serde::de::Error::custom)
    }

    /// An optional `u64` of at most [`super::WIRE_INTEGER_MAX`].
    ///
    /// # Errors
    /// Not null or an unsigned integer, or too large.
    pub fn option_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
        Option::<u64>::deserialize(deserializer)?
            .map(|value| super::check_wire_integer("integer", value))
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

/// An order's number in the replicated log. Numbers start at 0 and grow by one per successful
/// trade, with no gaps, across leader changes. At most [`WIRE_INTEGER_MAX`] on the wire.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "u64", into = "u64")]
pub struct TxnNumber(pub u64);

impl TxnNumber {
    /// The largest transaction number a store holds.
    pub const MAX: Self = Self(WIRE_INTEGER_MAX);

    /// The number after this one.
    ///
    /// # Panics
    /// Never for a number that came from the wire or a store: those are at most
    /// [`TxnNumber::MAX`], so one more still fits in a `u64`. Use [`TxnNumber::checked_next`]
    /// where the result must itself be storable.
    #[must_use]
    pub fn next(self) -> Self {
        Self(
            self.0
                .checked_add(1)
                .expect("transaction numbers are bounded by TxnNumber::MAX, far below u64::MAX"),
        )
    }

    /// The number after this one, if a store can hold it.
    #[must_use]
    pub fn checked_next(self) -> Option<Self> {
        self.0
            .checked_add(1)
            .filter(|n| *n <= WIRE_INTEGER_MAX)
            .map(Self)
    }
}

impl TryFrom<u64> for TxnNumber {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, Self::Error> {
        check_wire_integer("transaction number", n).map(Self)
    }
}

impl From<TxnNumber> for u64 {
    fn from(n: TxnNumber) -> Self {
        n.0
    }
}

/// Parses an order number as written in a URL: decimal digits only (no sign, no spaces, no
/// `0x`), at most [`TxnNumber::MAX`].
impl FromStr for TxnNumber {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shown: String = s.chars().take(32).collect();
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "order number {shown:?} is not a non-negative integer (digits only)"
            ));
        }
        match s.parse::<u64>() {
            Ok(n) if n <= WIRE_INTEGER_MAX => Ok(Self(n)),
            _ => Err(format!(
                "order number {shown:?} is larger than {WIRE_INTEGER_MAX}, the largest there can be"
            )),
        }
    }
}

impl fmt::Display for TxnNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An order replica's id (1..=255). Leader selection prefers the highest live id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct ReplicaId(pub u8);

impl TryFrom<u8> for ReplicaId {
    type Error = String;

    fn try_from(id: u8) -> Result<Self, Self::Error> {
        if id == 0 {
            Err("replica ids start at 1".into())
        } else {
            Ok(Self(id))
        }
    }
}

impl From<ReplicaId> for u8 {
    fn from(id: ReplicaId) -> Self {
        id.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ReplicaId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.parse::<u8>() {
            Ok(0) | Err(_) => Err(format!("replica id {s:?} is not an integer in 1..=255")),
            Ok(id) => Ok(Self(id)),
        }
    }
}

/// The identity of one trade as the front-end first saw it. Every retry of that trade, on any
/// leader, carries the same id, and every store applies an id at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RequestId(pub uuid::Uuid);

impl RequestId {
    /// A fresh random id.
    #[must_use]
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RequestId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        uuid::Uuid::parse_str(s)
            .map(Self)
            .map_err(|e| format!("request id {s:?} is not a UUID: {e}"))
    }
}

/// A stock's version in the catalog: it grows by one on every visible change (a confirmed
/// trade, a restock). Cache entries carry it so a late fill can be told from a fresh one.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "u64", into = "u64")]
pub struct Version(pub u64);

impl Version {
    /// The version after this one, if a store can hold it.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        self.0
            .checked_add(1)
            .filter(|n| *n <= WIRE_INTEGER_MAX)
            .map(Self)
    }
}

impl TryFrom<u64> for Version {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, Self::Error> {
        check_wire_integer("version", n).map(Self)
    }
}

impl From<Version> for u64 {
    fn from(v: Version) -> Self {
        v.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A leadership epoch: a fencing token that grows with every leader change. In primary-backup
/// mode the front-end's leader selection makes it; in raft mode it is the Raft term. Replicas
/// and the catalog refuse requests from an epoch older than the newest they have seen.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(try_from = "u64", into = "u64")]
pub struct Epoch(pub u64);

impl Epoch {
    /// The epoch after this one, if a store can hold it. Leader selection must use this rather
    /// than adding one: an epoch reported by a peer may be as large as the wire allows.
    #[must_use]
    pub fn next(self) -> Option<Self> {
        self.0
            .checked_add(1)
            .filter(|n| *n <= WIRE_INTEGER_MAX)
            .map(Self)
    }
}

impl TryFrom<u64> for Epoch {
    type Error = String;

    fn try_from(n: u64) -> Result<Self, Self::Error> {
        check_wire_integer("epoch", n).map(Self)
    }
}

impl From<Epoch> for u64 {
    fn from(e: Epoch) -> Self {
        e.0
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_ids_are_one_to_255() {
        assert_eq!("3".parse::<ReplicaId>(), Ok(ReplicaId(3)));
        assert!("0".parse::<ReplicaId>().is_err());
        assert!("256".parse::<ReplicaId>().is_err());
        assert!("x".parse::<ReplicaId>().is_err());
    }

    #[test]
    fn replica_id_zero_is_refused_on_the_wire() {
        assert!(serde_json::from_str::<ReplicaId>("0").is_err());
        assert_eq!(
            serde_json::from_str::<ReplicaId>("2").ok(),
            Some(ReplicaId(2))
        );
        assert_eq!(
            serde_json::to_string(&ReplicaId(2)).ok().as_deref(),
            Some("2")
        );
    }

    #[test]
    fn integers_the_store_cannot_hold_are_refused_on_the_wire() {
        let max = WIRE_INTEGER_MAX.to_string();
        let over = (WIRE_INTEGER_MAX + 1).to_string();
        assert_eq!(
            serde_json::from_str::<TxnNumber>(&max).ok(),
            Some(TxnNumber::MAX)
        );
        for text in [over.as_str(), "18446744073709551615"] {
            let err = serde_json::from_str::<TxnNumber>(text).expect_err(text);
            assert!(err.to_string().contains("largest the store"), "{err}");
            assert!(serde_json::from_str::<Epoch>(text).is_err());
            assert!(serde_json::from_str::<Version>(text).is_err());
        }
        assert_eq!(
            serde_json::to_string(&Epoch(7)).ok().as_deref(),
            Some("7"),
            "still written as a bare number"
        );
        #[derive(Debug, Deserialize)]
        struct Plain {
            #[serde(deserialize_with = "bounded::u64")]
            n: u64,
            #[serde(default, deserialize_with = "bounded::option_u64")]
            m: Option<u64>,
        }
        let parsed = serde_json::from_str::<Plain>(&format!(r#"{{"n":{max}}}"#)).expect("max");
        assert_eq!((parsed.n, parsed.m), (WIRE_INTEGER_MAX, None));
        assert!(serde_json::from_str::<Plain>(&format!(r#"{{"n":{over}}}"#)).is_err());
        assert!(serde_json::from_str::<Plain>(&format!(r#"{{"n":1,"m":{over}}}"#)).is_err());
        assert!(serde_json::from_str::<Plain>(r#"{"n":1,"m":null}"#).is_ok());
    }

    #[test]
    fn arithmetic_stops_at_the_largest_storable_value() {
        assert_eq!(TxnNumber(41).next(), TxnNumber(42));
        assert_eq!(TxnNumber(41).checked_next(), Some(TxnNumber(42)));
        assert_eq!(TxnNumber::MAX.checked_next(), None);
        assert_eq!(TxnNumber::MAX.next().0, WIRE_INTEGER_MAX + 1, "no overflow");
        assert_eq!(Epoch(WIRE_INTEGER_MAX).next(), None);
        assert_eq!(Epoch(2).next(), Some(Epoch(3)));
        assert_eq!(Version(WIRE_INTEGER_MAX).next(), None);
        assert_eq!(Version(0).next(), Some(Version(1)));
    }

    #[test]
    fn order_numbers_in_urls_are_digits_only() {
        assert_eq!("0".parse::<TxnNumber>(), Ok(TxnNumber(0)));
        assert_eq!("0042".parse::<TxnNumber>(), Ok(TxnNumber(42)));
        assert_eq!(
            "9223372036854775807".parse::<TxnNumber>(),
            Ok(TxnNumber::MAX)
        );
        for bad in [
            "",
            "+0",
            "-1",
            " 1",
            "1 ",
            "0x10",
            "1e3",
            "١",
            "9223372036854775808",
        ] {
            assert!(bad.parse::<TxnNumber>().is_err(), "{bad:?}");
        }
        let long = "9".repeat(200);
        let err = long.parse::<TxnNumber>().expect_err("too large");
        assert!(
            err.len() < 200,
            "the message does not echo a huge input: {err}"
        );
    }

    /// The pattern `name` has in docs/openapi.yaml.
    fn openapi_pattern(name: &str) -> regex_automata::meta::Regex {
        let doc = include_str!("../../../docs/openapi.yaml");
        let from = doc
            .find(&format!("\n    {name}:\n"))
            .unwrap_or_else(|| panic!("no schema {name}"));
        let line = doc[from..]
            .lines()
            .find(|l| l.trim_start().starts_with("pattern: '"))
            .expect("a pattern");
        let pattern = line
            .trim()
            .trim_start_matches("pattern: '")
            .trim_end_matches('\'');
        regex_automata::meta::Regex::new(pattern).expect("a valid pattern")
    }

    #[test]
    fn the_openapi_order_number_pattern_accepts_exactly_what_the_server_does() {
        let pattern = openapi_pattern("OrderNumber");
        let mut samples: Vec<String> = [
            "0",
            "7",
            "0042",
            "9223372036854775807",
            "9223372036854775808",
            "9223372036854775799",
            "9223372036854775810",
            "18446744073709551615",
            "99999999999999999999",
            "000000000000000000000009223372036854775807",
            "+0",
            "-1",
            "",
            " 1",
            "1e3",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        // Every 19-digit prefix of the maximum, with each last digit.
        for len in 1..=19 {
            for d in 0..=9 {
                samples.push(format!("{}{d}", &WIRE_INTEGER_MAX.to_string()[..len - 1]));
            }
        }
        for sample in samples {
            assert_eq!(
                pattern.is_match(&sample),
                sample.parse::<TxnNumber>().is_ok(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn the_openapi_stock_name_pattern_accepts_exactly_what_the_server_does() {
        let pattern = openapi_pattern("StockName");
        for name in [
            "GameStart",
            "Fish Co",
            "é",
            "a\u{7f}",
            "a\nb",
            "a\u{85}",
            "\u{9f}",
            "\u{a0}",
        ] {
            assert_eq!(
                pattern.is_match(name),
                crate::validate_stock_name(name).is_ok(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn request_ids_round_trip_through_text() {
        let id = RequestId::new();
        assert_eq!(id.to_string().parse::<RequestId>(), Ok(id));
        assert!("not-a-uuid".parse::<RequestId>().is_err());
    }
}
