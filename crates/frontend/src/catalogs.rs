//! The catalogs, any of which may answer a lookup: the one that answered last is asked first,
//! and a catalog that fails or lags is skipped for the next, so one catalog's loss costs at
//! most one failed attempt (and a lagging one costs its wait).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bazaar_api::ErrorKind;
use bazaar_api::catalog::{StockAt, StocksAt};
use bazaar_api::client::{CatalogClient, ClientError, Http};
use bazaar_api::log::Position;

use crate::error::{Error, Result};

/// The catalogs; cheap to clone.
#[derive(Debug, Clone)]
pub struct Catalogs {
    clients: Arc<Vec<CatalogClient>>,
    /// Index of the catalog to ask first.
    preferred: Arc<AtomicUsize>,
}

impl Catalogs {
    /// Clients of the catalogs at `urls` (at least one).
    #[must_use]
    pub fn new(http: &Http, urls: &[String]) -> Self {
        Self {
            clients: Arc::new(
                urls.iter()
                    .map(|url| CatalogClient::new(http.clone(), url.clone()))
                    .collect(),
            ),
            preferred: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The catalogs' base URLs.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(CatalogClient::base)
    }

    /// Asks each catalog in turn, from the preferred one, until one answers; a definite answer
    /// (such as an unknown stock) is final.
    async fn ask<T, F, Fut>(&self, call: F) -> Result<T>
    where
        F: Fn(CatalogClient) -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let count = self.clients.len();
        let first = self.preferred.load(Ordering::Relaxed) % count.max(1);
        let mut last = None;
        for i in 0..count {
            let index = (first + i) % count;
            match call(self.clients[index].clone()).await {
                Ok(value) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(value);
                }
                Err(e)
                    if e.is_unreachable()
                        || matches!(
                            e.kind(),
                            Some(
                                ErrorKind::Unavailable
                                    | ErrorKind::Overloaded
                                    | ErrorKind::NotReady
                            )
                        ) =>
                {
                    tracing::debug!(catalog = %self.clients[index].base(), error = %e, "catalog did not answer; asking the next");
                    last = Some(e);
                }
                Err(e) => return Err(Error::from_catalog(e)),
            }
        }
        Err(Error::CatalogUnavailable(last.map_or_else(
            || "no catalog is configured".into(),
            |e| e.to_string(),
        )))
    }

    /// One stock from a view at `min_position` or later.
    ///
    /// # Errors
    /// `unknown_stock` from a catalog; [`Error::CatalogUnavailable`] when none answered.
    pub async fn stock(&self, name: &str, min_position: Position) -> Result<StockAt> {
        self.ask(|c| async move { c.stock_get(name, min_position).await })
            .await
    }

    /// Every stock from a view at `min_position` or later.
    ///
    /// # Errors
    /// [`Error::CatalogUnavailable`] when none answered.
    pub async fn stocks(&self, min_position: Position) -> Result<StocksAt> {
        self.ask(|c| async move { c.stocks(min_position).await })
            .await
    }
}
