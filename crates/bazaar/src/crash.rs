//! Crash-only: a panic in any thread of any `bazaar` process ends the process at once.
//!
//! Without this, a panic ends only its thread (or, inside the async runtime, only its task),
//! and the process lives on half-broken: a database writer that panicked leaves a replica that
//! reports itself healthy while every write waits forever, so nobody fails it over. Aborting
//! turns every such bug into a crash, which the rest of the system already handles (failover,
//! recovery on restart, `up` noticing the exit).

use std::io::Write;
use std::sync::Arc;

use crate::logging::{FLUSH_DEADLINE, Logs};

/// Installs the hook: log the panic (through `logs` when given, straight to stderr otherwise),
/// give the log a moment to reach stderr, then abort.
pub fn install(logs: Option<Arc<Logs>>) {
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let thread = thread.name().unwrap_or("unnamed");
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "(a non-text panic payload)".to_owned());
        let location = info
            .location()
            .map_or_else(String::new, |l| format!("{}:{}", l.file(), l.line()));
        let backtrace = std::backtrace::Backtrace::capture();
        if logs.is_some() {
            tracing::error!(thread, location, %backtrace, "panic: {message}; ending the process (crash-only)");
        } else {
            let _ = writeln!(
                std::io::stderr(),
                "panic in thread {thread} at {location}: {message}; ending the process (crash-only)\n{backtrace}"
            );
        }
        if let Some(logs) = &logs {
            logs.flush(FLUSH_DEADLINE);
        }
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    //! The hook is tested in a child process (this test binary run again for one test), since
    //! it ends the process it runs in.

    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;
    use std::time::Duration;

    /// Which panic the child provokes.
    const CHILD_ENV: &str = "BAZAAR_CRASH_TEST_CHILD";

    /// Runs `child_provokes_a_panic` in a new process with `case`, returning its status and
    /// output.
    fn run_child(case: &str) -> (std::process::ExitStatus, String) {
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args([
                "--exact",
                "crash::tests::child_provokes_a_panic",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, case)
            .output()
            .expect("run the child");
        (
            output.status,
            format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
        )
    }

    /// Not a test of its own: the body the child runs. Without the child variable it does
    /// nothing.
    #[test]
    fn child_provokes_a_panic() {
        let Ok(case) = std::env::var(CHILD_ENV) else {
            return;
        };
        super::install(None);
        match case.as_str() {
            "thread" => {
                let _ = std::thread::Builder::new()
                    .name("doomed".into())
                    .spawn(|| panic!("boom in a thread"))
                    .expect("spawn")
                    .join();
            }
            "task" => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async {
                    // tokio would catch this and hand it to the JoinHandle, which nobody reads.
                    let _ = tokio::spawn(async { panic!("boom in a task") }).await;
                });
            }
            "writer" => {
                let fatal = bazaar_service::Fatal::new();
                let (queue, requests) = tokio::sync::mpsc::channel::<u32>(1);
                let _writer = bazaar_service::writer::spawn(
                    "db-writer",
                    requests,
                    1,
                    fatal,
                    |batch: Vec<u32>| {
                        assert!(batch.is_empty(), "boom in a database writer");
                        Ok(())
                    },
                )
                .expect("writer");
                queue.blocking_send(1).expect("queued");
            }
            other => panic!("unknown case {other}"),
        }
        // Only reached if the panic did not end the process.
        std::thread::sleep(Duration::from_secs(5));
        println!("CHILD SURVIVED");
    }

    #[test]
    fn a_panic_in_any_thread_ends_the_process() {
        if std::env::var_os(CHILD_ENV).is_some() {
            return;
        }
        for (case, words) in [
            ("thread", "boom in a thread"),
            ("task", "boom in a task"),
            ("writer", "boom in a database writer"),
        ] {
            let (status, stderr) = run_child(case);
            assert_eq!(
                status.signal(),
                Some(nix::libc::SIGABRT),
                "{case}: {status}; stderr: {stderr}"
            );
            assert!(!status.success());
            assert!(stderr.contains(words), "{case}: {stderr}");
            assert!(stderr.contains("crash-only"), "{case}: {stderr}");
            assert!(!stderr.contains("CHILD SURVIVED"), "{case}");
        }
    }
}
