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
