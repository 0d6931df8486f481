//! `bazaar catalog|order|frontend`: open (validating flags and files), bind, serve until a
//! signal.

use std::net::SocketAddr;

use anyhow::{Context, anyhow};
use tokio::net::TcpListener;

use crate::Failure;
use crate::signals::shutdown_token;

async fn bind(addr: SocketAddr) -> Result<TcpListener, Failure> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
        .map_err(Failure::Runtime)
}

/// `bazaar catalog`.
pub async fn catalog(config: bazaar_catalog::Config) -> Result<(), Failure> {
    use bazaar_catalog::Error;
    let listen = config.listen;
    let service = bazaar_catalog::Catalog::open(config).map_err(|e| match e {
        Error::Config(_) => Failure::Config(anyhow!(e)),
        e => Failure::Runtime(anyhow!(e)),
    })?;
    let listener = bind(listen).await?;
    service
        .serve(listener, shutdown_token())
        .await
        .map_err(|e| Failure::Runtime(anyhow!(e)))
}

/// `bazaar order`.
pub async fn order(config: bazaar_order::Config) -> Result<(), Failure> {
    use bazaar_order::Error;
    let listen = config.listen_addr();
    let service = bazaar_order::OrderService::open(config).map_err(|e| match e {
        Error::Config(_) => Failure::Config(anyhow!(e)),
        e => Failure::Runtime(anyhow!(e)),
    })?;
    let listener = bind(listen).await?;
    service
        .serve(listener, shutdown_token())
        .await
        .map_err(|e| Failure::Runtime(anyhow!(e)))
}

/// `bazaar frontend`.
pub async fn frontend(config: bazaar_frontend::Config) -> Result<(), Failure> {
    config.validate().map_err(|e| Failure::Config(anyhow!(e)))?;
    let listener = bind(config.listen).await?;
    bazaar_frontend::serve(config, listener, shutdown_token())
        .await
        .map_err(|e| Failure::Runtime(anyhow!(e)))
}
