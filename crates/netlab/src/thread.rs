//! Running code inside a host. A network namespace belongs to a thread, not a process:
//! a thread that enters a host's namespace opens its sockets there, and threads it starts
//! (a tokio runtime's workers and blocking pool) inherit it. So a driver can be a client on a
//! host of its own, next to the services, while the rest of its process stays where it was.

use std::fs::File;
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};

use crate::{Error, Result};

/// Runs `f` on a new thread inside network namespace `namespace` (a name under
/// `/run/netns`, as `ip netns` makes them).
///
/// # Errors
/// The namespace does not exist or the thread cannot be started. Entering the namespace
/// failing on the new thread is its result's error.
pub fn spawn_in<F, T>(namespace: &str, f: F) -> Result<JoinHandle<Result<T>>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let path = format!("/run/netns/{namespace}");
    let file = File::open(&path).map_err(|e| Error::Io(format!("cannot open {path}: {e}")))?;
    let name = format!("in-{namespace}");
    std::thread::Builder::new()
        .name(name)
        .spawn(move || {
            setns(&file, CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::Io(format!("cannot enter {path}: {e}")))?;
            drop(file);
            Ok(f())
        })
        .map_err(|e| Error::Io(format!("cannot start a thread: {e}")))
}
