//! The trade rules on one stock, free of I/O: what a reservation, a confirmation, a cancellation
//! and a restock do to quantity, reservations, volume and version.
//!
//! Invariant, checked on every change: `reserved <= quantity`, so the quantity can never be
//! driven below zero by confirming buys, however they interleave.

use bazaar_api::{Price, StockState, TradeType, Version};

use crate::error::{Error, Result};

/// Largest quantity a stock may reach through sells: far below `i64::MAX` (SQLite's integer),
/// so even every in-flight sell confirming at once cannot overflow.
pub const QUANTITY_LIMIT: u64 = 1 << 62;

/// A stock as the catalog's writer keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockRow {
    /// Name.
    pub name: String,
    /// Price.
    pub price: Price,
    /// Shares on offer, counting reserved ones (they leave on confirm).
    pub quantity: u64,
    /// Shares held back for buys that are tried but not yet confirmed or cancelled.
    pub reserved: u64,
    /// Shares traded by confirmed trades.
    pub volume: u64,
    /// Grows on every visible change.
    pub version: Version,
    /// Quantity the catalog was seeded with.
    pub initial: u64,
    /// Shares added by restocking, in total.
    pub restocked: u64,
}

impl StockRow {
    /// Shares a new buy may take.
    #[must_use]
    pub fn available(&self) -> u64 {
        self.quantity - self.reserved
    }

    /// The public view.
    #[must_use]
    pub fn state(&self) -> StockState {
        StockState {
            name: self.name.clone(),
            price: self.price,
            quantity: self.quantity,
            volume: self.volume,
            version: self.version,
        }
    }

    /// Try: a buy holds `quantity` back from other buyers; a sell checks it will fit.
    ///
    /// # Errors
    /// [`Error::InsufficientStock`] or [`Error::QuantityLimit`]; nothing changes then.
    pub fn reserve(&mut self, kind: TradeType, quantity: u64) -> Result<()> {
        match kind {
            TradeType::Buy if quantity > self.available() => Err(Error::InsufficientStock {
                stock: self.name.clone(),
                wanted: quantity,
                available: self.available(),
            }),
            TradeType::Buy => {
                self.reserved += quantity;
                self.check();
                Ok(())
            }
            TradeType::Sell if self.quantity.saturating_add(quantity) > QUANTITY_LIMIT => {
                Err(Error::QuantityLimit {
                    stock: self.name.clone(),
                    wanted: quantity,
                })
            }
            TradeType::Sell => Ok(()),
        }
    }

    /// Cancel: gives a buy's held-back shares back.
    pub fn release(&mut self, kind: TradeType, quantity: u64) {
        if kind == TradeType::Buy {
            assert!(
                self.reserved >= quantity,
                "releasing {quantity} of {} with only {} reserved",
                self.name,
                self.reserved
            );
            self.reserved -= quantity;
        }
        self.check();
    }

    /// Confirm: the trade becomes visible, so the version grows.
    pub fn apply(&mut self, kind: TradeType, quantity: u64) {
        match kind {
            TradeType::Buy => {
                assert!(
                    self.reserved >= quantity,
                    "confirming a buy of {quantity} of {} with only {} reserved",
                    self.name,
                    self.reserved
                );
                self.reserved -= quantity;
                self.quantity -= quantity;
            }
            TradeType::Sell => {
                self.quantity = self
                    .quantity
                    .checked_add(quantity)
                    .expect("QUANTITY_LIMIT leaves room for every pending sell");
            }
        }
        self.volume = self.volume.saturating_add(quantity);
        self.version = Version(self.version.0 + 1);
        self.check();
    }

    /// Restock: a sold-out stock goes back to `to`. Returns whether anything changed.
    pub fn restock(&mut self, to: u64) -> bool {
        if self.quantity != 0 {
            return false;
        }
        self.quantity = to;
        self.restocked = self.restocked.saturating_add(to);
        self.version = Version(self.version.0 + 1);
        self.check();
        true
    }

    fn check(&self) {
        assert!(
            self.reserved <= self.quantity,
            "{}: reserved {} exceeds quantity {}",
            self.name,
            self.reserved,
            self.quantity
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(quantity: u64) -> StockRow {
        StockRow {
            name: "FishCo".into(),
            price: Price::from_cents(100),
            quantity,
            reserved: 0,
            volume: 0,
            version: Version(0),
            initial: quantity,
            restocked: 0,
        }
    }

    #[test]
    fn reservations_hold_buys_back_until_confirmed() {
        let mut s = row(10);
        s.reserve(TradeType::Buy, 6).expect("6 of 10");
        assert_eq!((s.quantity, s.available()), (10, 4));
        let err = s.reserve(TradeType::Buy, 5).expect_err("only 4 left");
        assert!(matches!(err, Error::InsufficientStock { available: 4, .. }));
        s.apply(TradeType::Buy, 6);
        assert_eq!(
            (s.quantity, s.reserved, s.volume, s.version),
            (4, 0, 6, Version(1))
        );
    }

    #[test]
    fn cancel_returns_shares_and_leaves_version_alone() {
        let mut s = row(10);
        s.reserve(TradeType::Buy, 10).expect("all");
        s.release(TradeType::Buy, 10);
        assert_eq!((s.quantity, s.available(), s.version), (10, 10, Version(0)));
    }

    #[test]
    fn sells_become_available_only_on_confirm() {
        let mut s = row(0);
        s.reserve(TradeType::Sell, 5).expect("sell");
        assert_eq!(s.available(), 0);
        s.apply(TradeType::Sell, 5);
        assert_eq!((s.quantity, s.volume), (5, 5));
        assert!(s.reserve(TradeType::Sell, QUANTITY_LIMIT).is_err());
    }

    #[test]
    fn restock_touches_only_sold_out_stocks() {
        let mut s = row(0);
        assert!(s.restock(100));
        assert_eq!((s.quantity, s.restocked, s.version), (100, 100, Version(1)));
        assert!(!s.restock(100));
    }
}
