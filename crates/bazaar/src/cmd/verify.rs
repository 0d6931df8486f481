//! `bazaar verify --data-dir DIR`.

use std::path::PathBuf;

use anyhow::anyhow;

use crate::Failure;

/// Flags of `bazaar verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory holding catalog-<n>.db and order-<id>.db.
    #[arg(long, env = "BAZAAR_DATA_DIR", default_value = "bazaar-data")]
    data_dir: PathBuf,
}

/// Prints the report; fails (exit 1) on any difference.
pub fn run(args: &Args) -> Result<(), Failure> {
    let report =
        bazaar_client::verify::verify(&args.data_dir).map_err(|e| Failure::Runtime(anyhow!(e)))?;
    super::print_out(&format!("{report}\n")).map_err(Failure::Runtime)?;
    if report.ok() {
        Ok(())
    } else {
        Err(Failure::Check)
    }
}
