//! Release: when a committed change may be shown to the world. The same in both replication
//! modes.
//!
//! ```text
//!  leader core / raft state machine            release                    the world
//!  --------------------------------            -------                    ---------
//!  sequenced(entry i, effects) ------------->  push {i+1, names} -------> every front-end
//!                                               (feed, waits for acks)     acks
//!  committed(i+1) -------------------------->  visible = i+1 once: committed, pushed, every
//!                                               entry before visible, handover over
//!                                               |-> trade replies waiting for i+1 go out
//!                                               '-> catalogs' long polls get entry i
//! ```
//!
//! A change is released (acknowledged to its client, offered to the catalogs) only once it is
//! committed and every subscribed front-end has acknowledged its invalidation, in log order.
//! So when a client hears "done", every front-end either knows the stock changed at that
//! position or has lost its lease; and no catalog can show a change that some front-end could
//! still contradict from its cache. (docs/DESIGN.md section 6 carries the whole argument.)
//!
//! A new leader releases nothing until `lease + grace` after it took over: a front-end that
//! still trusts a lease from the previous leader, and never heard of this one, has lost it by
//! then (the previous leader renews leases only while it can vouch for its epoch, which it
//! cannot for more than the grace after this one was chosen). Its first release is its whole
//! log up to where it took over, as a snapshot of the stock table.
//!
//! # Layout
//! - [`feed`] — the front-ends' subscriptions.

pub mod feed;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bazaar_api::Epoch;
use bazaar_api::feed::FeedEvent;
use bazaar_api::log::{AppliedEntry, BookSnapshot, LogFollow, Position};
use bazaar_ledger::View;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use self::feed::Feed;

/// Released entries kept for catalogs; one further behind gets a snapshot instead.
pub const RING_LEN_MAX: usize = 16_384;

/// Most entries one answer to a following catalog carries.
pub const FOLLOW_PAGE_LEN_MAX: usize = 1024;

/// Longest a following catalog's request is held open.
pub const FOLLOW_WAIT_MAX: Duration = Duration::from_secs(5);

/// What has been released, as the world may see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The leading epoch, `None` when this replica does not lead.
    pub epoch: Option<Epoch>,
    /// Every change below this position is released (`None` until the first release of this
    /// leadership).
    pub position: Option<Position>,
}

/// Why a wait for a release ended without it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReleased {
    /// This replica stopped leading the epoch.
    Resigned,
    /// The deadline passed.
    Timeout,
}

/// Whether this replica can vouch, now, that it still leads: the lease authority the feed and
/// `/internal/position` consult (primary-backup: every live follower confirmed the epoch
/// recently; raft: a majority did).
pub trait Vouch: Send + Sync + 'static {
    /// True when the last confirmation of this replica's leadership is at most `grace` old.
    fn vouches(&self, grace: Duration) -> bool;
}

#[derive(Debug)]
struct Pending {
    entry: AppliedEntry,
    pushed: bool,
}

#[derive(Debug)]
struct Gate {
    epoch: Option<Epoch>,
    /// The stock table where this leadership took over, released first.
    base: Option<BookSnapshot>,
    handover_until: Instant,
    committed: Position,
    /// Sequenced, not yet released entries, by index.
    pending: BTreeMap<u64, Pending>,
    /// The highest position sequenced (or taken over): the floor new subscribers hear.
    assigned: Position,
    released: Option<Position>,
    view: View,
    ring: VecDeque<AppliedEntry>,
}

/// The release gate; cheap to clone.
#[derive(Clone)]
pub struct Release {
    inner: Arc<Inner>,
}

struct Inner {
    gate: Mutex<Gate>,
    released: watch::Sender<Released>,
    feed: Feed,
    vouch: Arc<dyn Vouch>,
    grace: Duration,
    tasks: TaskTracker,
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Release")
            .field("released", &*self.inner.released.borrow())
            .finish_non_exhaustive()
    }
}

impl Release {
    /// A gate over `feed`; `vouch` tells whether this replica can still vouch for its
    /// leadership, `grace` how stale that may be. Push tasks run in `tasks`.
    #[must_use]
    pub fn new(feed: Feed, vouch: Arc<dyn Vouch>, grace: Duration, tasks: TaskTracker) -> Self {
        let (released, _) = watch::channel(Released {
            epoch: None,
            position: None,
        });
        Self {
            inner: Arc::new(Inner {
                gate: Mutex::new(Gate {
                    epoch: None,
                    base: None,
                    handover_until: Instant::now(),
                    committed: Position(0),
                    pending: BTreeMap::new(),
                    assigned: Position(0),
                    released: None,
                    view: View::new(),
                    ring: VecDeque::new(),
                }),
                released,
                feed,
                vouch,
                grace,
                tasks,
            }),
        }
    }

    /// The front-ends' feed.
    #[must_use]
    pub fn feed(&self) -> &Feed {
        &self.inner.feed
    }

    /// Whether this replica can vouch for its leadership now: it leads, and its followers (a
    /// majority in raft mode, enough live ones for `--min-copies` in primary-backup) confirmed
    /// its epoch within the grace. A leader that cannot is unable to commit anything.
    #[must_use]
    pub fn vouches(&self) -> bool {
        self.inner.vouch.vouches(self.inner.grace)
    }

    /// What is released now.
    #[must_use]
    pub fn released(&self) -> Released {
        *self.inner.released.borrow()
    }

    fn gate(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.inner
            .gate
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This replica now leads `epoch`, from the stock table `base` (its log up to there).
    pub fn lead(&self, epoch: Epoch, base: BookSnapshot) {
        let handover_until = Instant::now() + self.inner.feed.lease() + self.inner.grace;
        {
            let mut gate = self.gate();
            gate.epoch = Some(epoch);
            gate.assigned = base.position;
            gate.base = Some(base);
            gate.handover_until = handover_until;
            gate.committed = Position(0);
            gate.pending.clear();
            gate.released = None;
            gate.ring.clear();
        }
        self.publish();
        let this = self.clone();
        self.inner.tasks.spawn(
            async move {
                tokio::time::sleep_until(handover_until).await;
                this.advance();
            }
            .in_current_span(),
        );
        tracing::info!(%epoch, "leading; first release after the handover wait");
    }

    /// This replica stopped leading: nothing more is released, every subscription ends.
    pub fn resign(&self) {
        {
            let mut gate = self.gate();
            gate.epoch = None;
            gate.base = None;
            gate.pending.clear();
            gate.released = None;
            gate.ring.clear();
        }
        self.inner.feed.close_all();
        self.publish();
    }

    /// Entries just appended (primary-backup) or applied (raft) on the leader, with what they
    /// change: front-ends are told now.
    pub fn sequenced(&self, entries: Vec<AppliedEntry>) {
        let mut pushes = Vec::new();
        {
            let mut gate = self.gate();
            let Some(epoch) = gate.epoch else {
                return;
            };
            let floor = gate.base.as_ref().map_or(Position(0), |b| b.position);
            for entry in entries {
                let position = entry.index.position();
                if position <= floor || gate.pending.contains_key(&entry.index.0) {
                    continue;
                }
                gate.assigned = gate.assigned.max(position);
                let mut names: Vec<String> = entry
                    .effects
                    .iter()
                    .flat_map(|e| e.stocks().map(str::to_owned).collect::<Vec<_>>())
                    .collect();
                names.sort_unstable();
                names.dedup();
                let pushed = names.is_empty();
                if !pushed {
                    pushes.push((position, names));
                }
                gate.pending
                    .insert(entry.index.0, Pending { entry, pushed });
            }
            drop(gate);
            for (position, names) in pushes {
                let this = self.clone();
                self.inner.tasks.spawn(
                    async move {
                        this.inner.feed.invalidate(position, &names).await;
                        this.pushed(epoch, position);
                    }
                    .in_current_span(),
                );
            }
        }
        self.advance();
    }

    fn pushed(&self, epoch: Epoch, position: Position) {
        {
            let mut gate = self.gate();
            if gate.epoch != Some(epoch) {
                return;
            }
            if let Some(index) = position.last_index()
                && let Some(pending) = gate.pending.get_mut(&index.0)
            {
                pending.pushed = true;
            }
        }
        self.advance();
    }

    /// Every entry below `position` is committed.
    pub fn committed(&self, position: Position) {
        {
            let mut gate = self.gate();
            if gate.epoch.is_none() {
                return;
            }
            gate.committed = gate.committed.max(position);
        }
        self.advance();
    }

    /// Releases what may be released now.
    fn advance(&self) {
        let changed = {
            let mut gate = self.gate();
            let Some(_) = gate.epoch else {
                return;
            };
            if Instant::now() < gate.handover_until {
                return;
            }
            let before = gate.released;
            if gate.released.is_none() {
                let Some(base) = gate.base.clone() else {
                    return;
                };
                if gate.committed < base.position {
                    return;
                }
                gate.released = Some(base.position);
                gate.view = View::from_snapshot(base);
            }
            while let Some(released) = gate.released {
                let next = released.next_index().0;
                let committed = gate.committed;
                let ready = gate
                    .pending
                    .get(&next)
                    .is_some_and(|p| p.pushed && p.entry.index.position() <= committed);
                if !ready {
                    break;
                }
                let Some(pending) = gate.pending.remove(&next) else {
                    break;
                };
                if let Err(e) = gate.view.apply(&pending.entry) {
                    // The view is built from this leader's own ledger: disagreement is a bug.
                    panic!("released entry {next} does not fit the released view: {e}");
                }
                gate.ring.push_back(pending.entry);
                while gate.ring.len() > RING_LEN_MAX {
                    gate.ring.pop_front();
                }
                gate.released = Some(released.next_index().position());
            }
            gate.released != before
        };
        if changed {
            self.publish();
        }
    }

    fn publish(&self) {
        let gate = self.gate();
        let now = Released {
            epoch: gate.epoch,
            position: gate.released,
        };
        drop(gate);
        self.inner.released.send_if_modified(|r| {
            let changed = *r != now;
            *r = now;
            changed
        });
    }

    /// Waits until everything below `position` is released under `epoch`.
    ///
    /// # Errors
    /// [`NotReleased::Resigned`] when this replica stops leading `epoch` first;
    /// [`NotReleased::Timeout`] after `deadline`.
    pub async fn wait(
        &self,
        epoch: Epoch,
        position: Position,
        deadline: Instant,
    ) -> Result<(), NotReleased> {
        let mut released = self.inner.released.subscribe();
        let reached = released
            .wait_for(|r| r.epoch != Some(epoch) || r.position.is_some_and(|p| p >= position));
        match tokio::time::timeout_at(deadline, reached).await {
            Ok(Ok(r)) if r.epoch == Some(epoch) => Ok(()),
            Ok(_) => Err(NotReleased::Resigned),
            Err(_) => Err(NotReleased::Timeout),
        }
    }

    /// The hello a new subscriber hears (`None` when not leading).
    #[must_use]
    pub fn hello(&self) -> Option<FeedEvent> {
        let gate = self.gate();
        Some(FeedEvent::Hello {
            epoch: gate.epoch?,
            floor: gate.assigned,
            lease_ms: u64::try_from(self.inner.feed.lease().as_millis()).unwrap_or(u64::MAX),
        })
    }

    /// Whether this replica may renew a front-end's lease now.
    #[must_use]
    pub fn may_renew(&self) -> bool {
        self.gate().epoch.is_some() && self.inner.vouch.vouches(self.inner.grace)
    }

    /// A position every acknowledged change is below, for a front-end that cannot vouch for its
    /// own knowledge (`None`: not leading, nothing released yet, or leadership not vouched
    /// for).
    #[must_use]
    pub fn position(&self) -> Option<(Epoch, Position)> {
        let released = self.released();
        let epoch = released.epoch?;
        let position = released.position?;
        self.inner
            .vouch
            .vouches(self.inner.grace)
            .then_some((epoch, position))
    }

    /// What a catalog at `from`, last told by a leader of `epoch`, gets next: entries it lacks,
    /// or a snapshot when it followed another leader or is behind what is kept. Waits up to
    /// `wait` for something new when it is up to date.
    ///
    /// # Errors
    /// `None` when this replica does not lead, or has released nothing yet within `wait`.
    pub async fn follow(
        &self,
        from: Position,
        epoch: Option<Epoch>,
        wait: Duration,
    ) -> Option<LogFollow> {
        let deadline = Instant::now() + wait.min(FOLLOW_WAIT_MAX);
        let mut released = self.inner.released.subscribe();
        loop {
            if let Some(answer) = self.follow_now(from, epoch) {
                return Some(answer);
            }
            let now = *released.borrow_and_update();
            let leading = now.epoch?;
            if tokio::time::timeout_at(deadline, released.changed())
                .await
                .is_err()
            {
                // Up to date and nothing new: an empty page (the catalog asks again).
                return (now.position == Some(from)).then_some(LogFollow::Entries {
                    epoch: leading,
                    from,
                    entries: Vec::new(),
                });
            }
        }
    }

    fn follow_now(&self, from: Position, epoch: Option<Epoch>) -> Option<LogFollow> {
        let gate = self.gate();
        let leading = gate.epoch?;
        let released = gate.released?;
        let ring_start = gate.ring.front().map_or(released, |e| Position(e.index.0));
        if epoch != Some(leading) || from < ring_start || from > released {
            return Some(LogFollow::Snapshot {
                epoch: leading,
                snapshot: gate.view.snapshot(),
            });
        }
        if from == released {
            return None;
        }
        let skip = usize::try_from(from.0 - ring_start.0).ok()?;
        let entries: Vec<AppliedEntry> = gate
            .ring
            .iter()
            .skip(skip)
            .take(FOLLOW_PAGE_LEN_MAX)
            .cloned()
            .collect();
        Some(LogFollow::Entries {
            epoch: leading,
            from,
            entries,
        })
    }
}

/// The feed's view of this gate.
impl feed::Authority for Release {
    fn hello(&self) -> Option<FeedEvent> {
        Release::hello(self)
    }

    fn may_renew(&self) -> bool {
        Release::may_renew(self)
    }
}

#[cfg(test)]
mod tests;
