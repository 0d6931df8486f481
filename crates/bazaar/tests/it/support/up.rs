//! `bazaar up` run as a user runs it, in a process group of its own so that a failing test can
//! end it and every service it started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bazaar_cluster::{ClusterFile, Role};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::exe;

/// A running `bazaar up`; dropping it kills its whole process group.
pub struct Up {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Up {
    /// Starts `bazaar up --base-port 0` with `args` in a new temporary directory and waits until
    /// it has written cluster.json.
    pub async fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).expect("log dir");
        let output = std::fs::File::create(logs.join("up.log")).expect("up.log");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(exe())
                .args(["up", "--base-port", "0", "--data-dir"])
                .arg(&data)
                .arg("--log-dir")
                .arg(&logs)
                .args(args)
                .stdin(Stdio::null())
                .stdout(output.try_clone().expect("log file"))
                .stderr(output)
                .process_group(0)
                .spawn()
                .expect("bazaar up starts")
        };
        let mut up = Self { child, dir };
        let deadline = Instant::now() + Duration::from_secs(90);
        while !up.data_dir().join("cluster.json").exists() {
            if let Some(status) = up.child.try_wait().expect("wait") {
                panic!("bazaar up exited with {status}: {}", up.log("up"));
            }
            assert!(
                Instant::now() < deadline,
                "bazaar up wrote no cluster.json: {}",
                up.log("up")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        up
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The current cluster.json.
    pub fn cluster_file(&self) -> ClusterFile {
        ClusterFile::read(&self.data_dir().join("cluster.json")).expect("cluster.json")
    }

    /// A service's base URL from cluster.json.
    pub fn url(&self, role: Role, id: Option<u8>) -> String {
        self.cluster_file()
            .find(role, id)
            .map(|s| s.url.clone())
            .expect("service in cluster.json")
    }

    /// A log file's text (`up`, `frontend`, `order-2`, ...).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit; returns whether it exited 0.
    pub async fn stop(mut self) -> bool {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.success();
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.data_dir().join(name)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for name in ["up", "frontend", "order-1", "order-2", "order-3", "catalog"] {
                let text = self.log(name);
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                eprintln!("----- last lines of {name} -----");
                for line in tail.into_iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// Whether `path` is readable by its owner only.
pub fn is_private(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 == 0)
}
