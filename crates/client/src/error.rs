//! Why a load run or an evaluation could not be carried out at all. Failed requests during a
//! run are not errors here: they are counted in the report, which decides the exit code.

/// A run that could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad settings: fix the flag named in the message.
    #[error("{0}")]
    Config(String),
    /// The front-end could not be reached or did not answer as the API promises before the
    /// run began: start it, or check the URL.
    #[error("{url} is unreachable: {detail}")]
    Unreachable {
        /// What was called.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// Starting or stopping a local system failed.
    #[error(transparent)]
    Cluster(#[from] bazaar_cluster::Error),
    /// Reading or writing an output file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Drawing a plot failed.
    #[error("cannot draw {path}: {detail}")]
    Plot {
        /// The file being drawn.
        path: String,
        /// The plotting library's words.
        detail: String,
    },
    /// A client task panicked: a bug in this crate.
    #[error("a client task failed: {0}")]
    Task(String),
}

impl Error {
    /// An I/O error on `path`.
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// True when the settings were wrong (exit code 2 at the binary's edge).
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
