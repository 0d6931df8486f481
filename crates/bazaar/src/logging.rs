//! The one tracing subscriber, installed by the binary: `RUST_LOG` filters (default `info`),
//! `--log-format` picks human text or JSON lines, all on stderr.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// `--log-format` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Log filter when `RUST_LOG` is not set. openraft logs an error every 200 ms for each peer it
/// cannot reach (and on every refused read while one is down). Our raft layer logs each peer
/// going away and coming back once, and turns a stopped raft node into a fatal error it logs,
/// so openraft's own lines are off unless asked for (`RUST_LOG=info,openraft=info`).
pub const FILTER_DEFAULT: &str = "info,openraft=off";

/// Installs the subscriber.
pub fn init(format: Format) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(FILTER_DEFAULT));
    // Colour only on a terminal: log files (`up --log-dir`, systemd's journal) stay plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.init(),
        Format::Json => builder.json().with_current_span(true).init(),
    }
}
