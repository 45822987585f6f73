//! How a waiting caller sleeps and is told its outcome: a slot of its own.
//!
//! A waiter puts a [`Slot`] in its group's list (under the protocol's lock) and sleeps
//! on it, outside that lock. Whoever decides its outcome takes the slot off the list
//! under the protocol's lock, then, after letting go of it, writes the [`Signal`] into
//! the slot and wakes that one sleeper. So a finishing leader wakes exactly whom its
//! fsync served plus one next leader, and a served waiter returns without touching the
//! shared state again.
//!
//! The slot is the only place that knows how its owner sleeps: a thread waits on the
//! slot's condvar; a task would leave a `Waker` in the slot and be woken by it (the
//! signal is the same, only the way to sleep differs).

use crate::error::Failure;
use crate::sync::{Condvar, Instant, Mutex, WaitKind};

/// What a sleeping caller is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Signal {
    /// A completed, successful fsync covered the caller's LSN.
    Served,
    /// Nobody leads: the caller should, unless someone already running has taken the
    /// lead first (`TakeLead` decides). The slot stays in the next group meanwhile.
    Lead,
    /// The fsync that was to serve the caller (or one before it) failed.
    Failed(Failure),
}

/// One waiting caller's mailbox.
pub(crate) struct Slot {
    signal: Mutex<Option<Signal>>,
    wake: Condvar,
    /// When the caller started to wait, for `Stats::longest_wait`.
    pub(crate) since: Instant,
    /// The LSN the caller needs durable.
    pub(crate) lsn: u64,
}

impl Slot {
    pub(crate) fn new(since: Instant, lsn: u64) -> Self {
        Slot {
            signal: Mutex::new(None),
            wake: Condvar::new(),
            since,
            lsn,
        }
    }

    /// Delivers the caller's outcome and wakes it, after the protocol's lock is let go:
    /// `Served` or `Failed` once, by whoever took the slot off its list, replacing an
    /// unread `Lead`. A `Lead` never replaces an outcome: it can arrive late (its
    /// sender let go of the lock, a running caller led and served this one, and only
    /// then was the `Lead` written), and is stale by then.
    pub(crate) fn signal(&self, signal: Signal) {
        let mut slot = self.signal.lock();
        if signal == Signal::Lead && slot.is_some() {
            return;
        }
        debug_assert!(
            matches!(*slot, None | Some(Signal::Lead)),
            "an outcome is signalled once"
        );
        *slot = Some(signal);
        drop(slot);
        self.wake.notify_one();
    }

    /// Sleeps until the slot is signalled (`Some`) or `deadline` passes (`None`). A
    /// spurious wake-up sleeps again without touching the protocol's state; `None` as
    /// the deadline means none (a timeout too long to represent).
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Option<Signal> {
        let mut slot = self.signal.lock();
        loop {
            if let Some(signal) = slot.take() {
                return Some(signal);
            }
            match deadline {
                Some(deadline) => {
                    let timed_out;
                    (slot, timed_out) = self.wake.wait_until(slot, deadline, WaitKind::Waiter);
                    if timed_out {
                        return slot.take();
                    }
                }
                None => slot = self.wake.wait(slot),
            }
        }
    }

    /// Wakes the sleeper without a signal, as a spurious wake-up would. For tests.
    pub(crate) fn nudge(&self) {
        let _slot = self.signal.lock();
        self.wake.notify_one();
    }
}
