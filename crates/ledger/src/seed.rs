//! The catalog file the log's first entry is written from: CSV with the header
//! `name,price,quantity`, one stock a line. Blank lines and lines starting with `#` are skipped;
//! an empty quantity means [`QUANTITY_DEFAULT`]. Fields are not quoted, so names cannot contain
//! commas.

use std::collections::HashSet;
use std::path::Path;

use bazaar_api::log::StockDef;
use bazaar_api::{Price, validate_stock_name};

/// Initial quantity when the CSV leaves it empty (SPEC.md section 3).
pub const QUANTITY_DEFAULT: u64 = 100;

/// The shipped catalog, built into the binary so `bazaar up` works from any directory.
pub const BUILT_IN_CSV: &str = include_str!("../../../data/stocks.csv");

/// Reads the CSV at `path`, or the built-in one.
///
/// # Errors
/// A sentence naming the file (and line) that is wrong.
pub fn load(path: Option<&Path>) -> Result<Vec<StockDef>, String> {
    match path {
        None => parse(BUILT_IN_CSV, "built-in data/stocks.csv"),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read catalog file {}: {e}", path.display()))?;
            parse(&text, &path.display().to_string())
        }
    }
}

/// Parses CSV text; `origin` names it in errors.
///
/// # Errors
/// `origin line N: what is wrong`.
pub fn parse(text: &str, origin: &str) -> Result<Vec<StockDef>, String> {
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'));
    let at = |line: usize, what: String| format!("{origin} line {line}: {what}");
    match lines.next() {
        Some((_, header))
            if header
                .split(',')
                .map(str::trim)
                .map(str::to_ascii_lowercase)
                .eq(["name", "price", "quantity"]) => {}
        Some((line, header)) => {
            return Err(at(
                line,
                format!("header must be `name,price,quantity`, found `{header}`"),
            ));
        }
        None => return Err(format!("{origin} is empty")),
    }
    let mut stocks = Vec::new();
    let mut seen = HashSet::new();
    for (line, text) in lines {
        let fields: Vec<&str> = text.split(',').map(str::trim).collect();
        let [name, price, quantity] = fields[..] else {
            return Err(at(
                line,
                format!(
                    "expected 3 fields (name,price,quantity), found {}",
                    fields.len()
                ),
            ));
        };
        validate_stock_name(name).map_err(|e| at(line, e))?;
        if !seen.insert(name.to_owned()) {
            return Err(at(line, format!("stock {name:?} is listed twice")));
        }
        let price: Price = price.parse().map_err(|e| at(line, e))?;
        let quantity = if quantity.is_empty() {
            QUANTITY_DEFAULT
        } else {
            quantity
                .parse::<u64>()
                .ok()
                .filter(|q| *q <= bazaar_api::TRADE_QUANTITY_MAX)
                .ok_or_else(|| {
                    at(
                        line,
                        format!(
                            "quantity {quantity:?} is not an integer from 0 to {}",
                            bazaar_api::TRADE_QUANTITY_MAX
                        ),
                    )
                })?
        };
        stocks.push(StockDef {
            name: name.to_owned(),
            price,
            quantity,
        });
    }
    if stocks.is_empty() {
        return Err(format!("{origin} lists no stocks"));
    }
    Ok(stocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_catalog_has_at_least_ten_stocks_of_100() {
        let stocks = load(None).expect("built-in CSV parses");
        assert!(stocks.len() >= 10);
        assert!(stocks.iter().all(|s| s.quantity == 100));
    }

    #[test]
    fn empty_quantity_defaults_and_comments_are_skipped() {
        let stocks = parse("# c\nname,price,quantity\n\nA,1.50,\nB,2,7\n", "t").expect("parse");
        assert_eq!(stocks[0].quantity, QUANTITY_DEFAULT);
        assert_eq!(stocks[0].price, Price::from_cents(150));
        assert_eq!(stocks[1].quantity, 7);
    }

    #[test]
    fn errors_name_the_origin_and_line() {
        let cases = [
            ("name,price\nA,1", "t line 1: header"),
            ("name,price,quantity\nA,1,1\nB,x,1", "t line 3: price"),
            ("name,price,quantity\nA,1,-3", "t line 2: quantity"),
            (
                "name,price,quantity\nA,1,1,9",
                "t line 2: expected 3 fields",
            ),
            (
                "name,price,quantity\nA,1,1\nA,2,2",
                "t line 3: stock \"A\" is listed twice",
            ),
            (
                "name,price,quantity\n,1,1",
                "t line 2: stock name must not be empty",
            ),
            ("name,price,quantity\n", "t lists no stocks"),
            ("", "t is empty"),
        ];
        for (text, want) in cases {
            let err = parse(text, "t").expect_err(text);
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }
}
