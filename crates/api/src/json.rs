//! Reading JSON strictly: every body and frame a service reads goes through [`from_slice`],
//! which refuses what `serde_json` alone would let through silently. A key that appears twice
//! in one object is an error (not "the last one wins"), and so is anything after the document.
//! The message names the field that did not fit (`entries[0].number: ...`).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeOwned, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses a JSON document into `T`.
///
/// # Errors
/// A sentence for a 400 reply: empty input, a syntax error, a duplicate key, or a value `T`
/// does not accept (with its path).
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err("request body is empty; send a JSON document".into());
    }
    let mut document = serde_json::Deserializer::from_slice(bytes);
    <UniqueKeys as serde::Deserialize>::deserialize(&mut document)
        .and_then(|_| document.end())
        .map_err(|e| {
            if e.is_data() {
                format!("request body is not acceptable JSON: {e}")
            } else {
                format!("request body could not be parsed as JSON: {e}")
            }
        })?;
    let mut document = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut document).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            format!("request body does not fit: {inner}")
        } else {
            format!("request body does not fit at {path}: {inner}")
        }
    })
}

/// Walks a JSON document and fails on the first object that holds a key twice.
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_unit<E: de::Error>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                let shown: String = key.chars().take(64).collect();
                return Err(de::Error::custom(format!(
                    "key {shown:?} appears twice in one object"
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn duplicate_keys_anywhere_are_refused() {
        for doc in [
            r#"{"a":1,"a":1}"#,
            r#"{"x":{"a":1,"b":2,"a":3}}"#,
            r#"[1,{"k":[{"z":0,"z":0}]}]"#,
        ] {
            let err = from_slice::<Value>(doc.as_bytes()).expect_err(doc);
            assert!(err.contains("appears twice"), "{doc}: {err}");
        }
        assert!(
            from_slice::<Value>(br#"{"a":{"a":1},"b":{"a":2}}"#).is_ok(),
            "per object"
        );
    }

    #[test]
    fn errors_say_what_and_where() {
        #[derive(Debug, serde::Deserialize)]
        struct Notice {
            #[allow(dead_code)]
            epoch: crate::Epoch,
        }
        let err = from_slice::<Notice>(br#"{"epoch": 9223372036854775808}"#).expect_err("too big");
        assert!(
            err.contains("at epoch") && err.contains("largest the store"),
            "{err}"
        );
        assert!(
            from_slice::<Value>(b"   ")
                .expect_err("empty")
                .contains("empty")
        );
        assert!(
            from_slice::<Value>(b"{} {}")
                .expect_err("trailing")
                .contains("parsed")
        );
        assert!(
            from_slice::<Value>(b"{")
                .expect_err("syntax")
                .contains("parsed")
        );
    }
}
