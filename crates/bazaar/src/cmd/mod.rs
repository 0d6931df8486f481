//! One module per subcommand.

pub mod chaos;
pub mod client;
pub mod demo;
pub mod eval;
pub mod log;
pub mod netchaos;
pub mod serve;
pub mod status;
pub mod up;
pub mod verify;

/// The data directory of an experiment (`chaos`, `netchaos`): `--data-dir` when given, which
/// must not hold a system yet, else a fresh temporary one that is removed after a passing run
/// and kept for inspection after a failing one.
pub struct ExperimentDir {
    /// Where the experiment's system lives.
    pub path: std::path::PathBuf,
    temporary: Option<tempfile::TempDir>,
}

impl ExperimentDir {
    /// Checks `given`, or makes a temporary directory named after `command`.
    ///
    /// # Errors
    /// `given` already holds a system (exit 2), or no temporary directory can be made.
    pub fn new(given: Option<&std::path::Path>, command: &str) -> Result<Self, crate::Failure> {
        use anyhow::anyhow;
        match given {
            Some(dir) if dir.join("cluster.json").exists() => Err(crate::Failure::Config(anyhow!(
                "--data-dir {} already holds a system; {command} needs a fresh directory",
                dir.display()
            ))),
            Some(dir) => Ok(Self {
                path: dir.to_owned(),
                temporary: None,
            }),
            None => {
                let dir = tempfile::Builder::new()
                    .prefix(&format!("bazaar-{command}-"))
                    .tempdir()
                    .map_err(|e| {
                        crate::Failure::Runtime(anyhow!("cannot create a temporary directory: {e}"))
                    })?;
                Ok(Self {
                    path: dir.path().to_owned(),
                    temporary: Some(dir),
                })
            }
        }
    }

    /// Ends the run: a temporary directory goes after a pass and stays (its path printed)
    /// after a failure, which is then the command's failure.
    ///
    /// # Errors
    /// [`crate::Failure::Check`] when the run did not pass.
    pub fn finish(self, passed: bool) -> Result<(), crate::Failure> {
        if passed {
            return Ok(());
        }
        if let Some(dir) = self.temporary {
            out!("data kept for inspection: {}", dir.keep().display());
        }
        Err(crate::Failure::Check)
    }
}

/// Writes a command's report to stdout. A reader that went away (`bazaar log | head`) is not an
/// error: it has read all it wanted.
///
/// # Errors
/// Any other write failure (a full disk behind a redirect).
pub fn print_out(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.map_err(|e| anyhow::anyhow!("cannot write to stdout: {e}")),
    }
}
