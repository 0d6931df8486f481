//! The one tracing subscriber, installed by the binary: `RUST_LOG` filters (default `info`),
//! `--log-format` picks human text or JSON lines, all on stderr.
//!
//! Logging never stops the process and never makes it wait. Lines go through a bounded queue
//! to a thread of their own that writes them to stderr and ignores failures: a closed pipe
//! (`bazaar up 2>&1 | head`) or a reader that stopped reading costs log lines, never a panic
//! or a wedged thread (a full queue drops lines, counted and reported once it drains).

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

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

/// Lines waiting for stderr at most; more are dropped.
const QUEUE_LEN_MAX: usize = 4096;

/// How long [`Logs::flush`] waits for queued lines at exit.
pub const FLUSH_DEADLINE: Duration = Duration::from_millis(500);

enum Item {
    Line(Vec<u8>),
    /// Everything queued before has been written (or failed): signal the sender.
    Flush(SyncSender<()>),
}

/// The queue's sending end, which tracing writes each formatted event into.
#[derive(Clone)]
struct QueueWriter {
    queue: SyncSender<Item>,
    dropped: Arc<AtomicU64>,
}

impl Write for QueueWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.queue.try_send(Item::Line(buf.to_vec())) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for QueueWriter {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Writes queued lines to stderr until the process ends.
fn write_lines(queue: &Receiver<Item>, dropped: &AtomicU64) {
    let mut stderr = std::io::stderr();
    for item in queue {
        match item {
            Item::Line(line) => {
                let lost = dropped.swap(0, Ordering::Relaxed);
                if lost > 0 {
                    let _ = writeln!(
                        stderr,
                        "[{lost} log lines dropped: stderr was not keeping up]"
                    );
                }
                // A closed or broken stderr loses the line; nothing else can be done with it.
                let _ = stderr.write_all(&line);
            }
            Item::Flush(done) => {
                let _ = stderr.flush();
                let _ = done.send(());
            }
        }
    }
}

/// The installed logging: flush it before the process exits.
pub struct Logs {
    queue: Option<SyncSender<Item>>,
    /// Serialises flushes; a flush needs the queue to itself only briefly.
    flushing: Mutex<()>,
}

impl Logs {
    /// Waits until the lines logged so far are written, at most `deadline`.
    pub fn flush(&self, deadline: Duration) {
        let Some(queue) = &self.queue else { return };
        let _one_at_a_time = self
            .flushing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (done, written) = sync_channel(1);
        if send_within(queue, Item::Flush(done), deadline) {
            let _ = written.recv_timeout(deadline);
        }
    }
}

/// `SyncSender::send` with a deadline (std has none): retries `try_send` briefly.
fn send_within(queue: &SyncSender<Item>, mut item: Item, deadline: Duration) -> bool {
    let until = std::time::Instant::now() + deadline;
    loop {
        match queue.try_send(item) {
            Ok(()) => return true,
            Err(TrySendError::Disconnected(_)) => return false,
            Err(TrySendError::Full(back)) if std::time::Instant::now() < until => {
                item = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TrySendError::Full(_)) => return false,
        }
    }
}

/// Installs the subscriber and starts the log writer thread.
pub fn init(format: Format) -> Logs {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(FILTER_DEFAULT));
    // Colour only on a terminal: log files (`up --log-dir`, systemd's journal) stay plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let (sender, receiver) = sync_channel(QUEUE_LEN_MAX);
    let dropped = Arc::new(AtomicU64::new(0));
    let writer = QueueWriter {
        queue: sender.clone(),
        dropped: Arc::clone(&dropped),
    };
    let started = std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(&receiver, &dropped));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        // A failed write must never print (and so panic) from inside the logger.
        .log_internal_errors(false);
    let queue = if started.is_ok() {
        match format {
            Format::Text => builder.with_writer(writer).init(),
            Format::Json => builder
                .json()
                .with_current_span(true)
                .with_writer(writer)
                .init(),
        }
        Some(sender)
    } else {
        // No thread for the queue: write directly, still ignoring failures.
        let direct = || LossyStderr;
        match format {
            Format::Text => builder.with_writer(direct).init(),
            Format::Json => builder
                .json()
                .with_current_span(true)
                .with_writer(direct)
                .init(),
        }
        None
    };
    Logs {
        queue,
        flushing: Mutex::new(()),
    }
}

/// stderr, with failures ignored.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes a line to stdout for a person to read (a report, `up`'s banner). A closed or broken
/// stdout loses the line and nothing else: the exit status still carries the verdict.
#[macro_export]
macro_rules! out {
    () => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Writes a line to stderr, ignoring failures (the last words of a failing command).
#[macro_export]
macro_rules! err_out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
