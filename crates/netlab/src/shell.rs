//! Running `ip` and `nft`. Every command is run to completion and its failure carries the
//! command line and what the tool printed, so a failed setup says exactly what went wrong.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Directories searched for the tools, beyond `PATH` (a test runner may have a short `PATH`).
const SBIN_DIRS: [&str; 4] = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"];

/// Where `tool` is installed, if anywhere.
#[must_use]
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}

/// Runs `program args...`, feeding `stdin` if given, and returns its stdout.
///
/// # Errors
/// [`Error::MissingTool`] when the program is not installed, [`Error::Command`] when it exits
/// non-zero.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let exe = find_tool(program).ok_or_else(|| Error::MissingTool {
        tool: program.into(),
        hint: format!("install the package that provides {program}"),
    })?;
    let command_line = || format!("{program} {}", args.join(" "));
    let mut child = Command::new(exe)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Io(format!("cannot run `{}`: {e}", command_line())))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| Error::Io(format!("cannot feed `{}`: {e}", command_line())))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| Error::Io(format!("`{}` did not finish: {e}", command_line())))?;
    if !output.status.success() {
        return Err(Error::Command {
            command: command_line(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip args...`.
///
/// # Errors
/// As [`run`].
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, None)
}

/// Loads an nftables script inside namespace `namespace` (`nft -f -`).
///
/// # Errors
/// As [`run`].
pub fn nft(namespace: &str, script: &str) -> Result<String> {
    let nft = find_tool("nft").ok_or_else(|| Error::MissingTool {
        tool: "nft".into(),
        hint: "apt-get install nftables".into(),
    })?;
    let nft = nft.display().to_string();
    run(
        "ip",
        &["netns", "exec", namespace, &nft, "-f", "-"],
        Some(script),
    )
}

/// The network namespaces that exist, by name.
///
/// # Errors
/// `ip netns list` failed.
pub fn namespaces() -> Result<Vec<String>> {
    Ok(ip(&["netns", "list"])?
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The processes inside namespace `namespace`.
///
/// # Errors
/// `ip netns pids` failed.
pub fn namespace_pids(namespace: &str) -> Result<Vec<i32>> {
    Ok(ip(&["netns", "pids", namespace])?
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect())
}
