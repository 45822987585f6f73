//! How waiting callers sleep and are told their outcome: a group per fsync.
//!
//! The callers one fsync will serve share a [`Group`]: its own mutex, condvar and
//! outcome, apart from the protocol's state. A caller joins a group under the
//! protocol's lock (which counts it), then sleeps on the group, outside that lock.
//! Whoever decides the group's outcome records it under the protocol's lock, and then,
//! after letting go of it, writes it into the group and wakes its members with one
//! `notify_all`: a finished fsync wakes exactly the callers it served, and a served
//! caller returns without touching the protocol's state again. The hand-off is a flag
//! in the next group and one `notify_one`: exactly one next leader is woken.
//!
//! The group is the only place that knows how its members sleep: threads wait on its
//! condvar; a task would leave a `Waker` in it, woken with the same outcome.

use crate::error::Failure;
use crate::sync::{Condvar, Instant, Mutex, MutexGuard, WaitKind};

/// What a group is told when its fsync ends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A successful fsync made everything up to this LSN durable: a member at or below
    /// it is served; one above it (a flush that covered less) must queue again.
    Durable(u64),
    /// The fsync that was to serve the group (or one before it) failed.
    Failed(Failure),
}

/// What woke a sleeping member.
pub(crate) enum Wake {
    Outcome(Outcome),
    /// The group was offered the lead and this member took the offer.
    Lead,
    TimedOut,
}

struct Mailbox {
    outcome: Option<Outcome>,
    /// A finished leader offered the lead to one member; the first to see it takes it.
    lead_offered: bool,
}

/// The callers one fsync will serve.
pub(crate) struct Group {
    mailbox: Mutex<Mailbox>,
    wake: Condvar,
}

impl Group {
    pub(crate) fn new() -> Self {
        Group {
            mailbox: Mutex::new(Mailbox {
                outcome: None,
                lead_offered: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Records the group's outcome and wakes every member. Called once per group, after
    /// the protocol's lock is let go.
    pub(crate) fn finish(&self, outcome: Outcome) {
        let mut mailbox = self.mailbox.lock();
        debug_assert!(mailbox.outcome.is_none(), "a group's outcome is told once");
        mailbox.outcome = Some(outcome);
        drop(mailbox);
        self.wake.notify_all();
    }

    /// Offers the lead to one member, and wakes one.
    pub(crate) fn offer_lead(&self) {
        self.mailbox.lock().lead_offered = true;
        self.wake.notify_one();
    }

    /// Sleeps until the group has an outcome, this member takes an offered lead, or
    /// `deadline` passes (`None`: no deadline). A spurious wake-up sleeps again without
    /// touching the protocol's state.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> Wake {
        let mut mailbox = self.mailbox.lock();
        loop {
            if let Some(wake) = Self::news(&mut mailbox) {
                return wake;
            }
            match deadline {
                Some(deadline) => {
                    let timed_out;
                    (mailbox, timed_out) =
                        self.wake.wait_until(mailbox, deadline, WaitKind::Waiter);
                    if timed_out {
                        return Self::news(&mut mailbox).unwrap_or(Wake::TimedOut);
                    }
                }
                None => mailbox = self.wake.wait(mailbox),
            }
        }
    }

    fn news(mailbox: &mut MutexGuard<'_, Mailbox>) -> Option<Wake> {
        if let Some(outcome) = &mailbox.outcome {
            return Some(Wake::Outcome(outcome.clone()));
        }
        if mailbox.lead_offered {
            mailbox.lead_offered = false;
            return Some(Wake::Lead);
        }
        None
    }

    /// Whether the group has been told an outcome or offered the lead.
    pub(crate) fn was_told(&self) -> bool {
        let mailbox = self.mailbox.lock();
        mailbox.outcome.is_some() || mailbox.lead_offered
    }

    /// Wakes every member without news, as a spurious wake-up would. For tests.
    pub(crate) fn nudge(&self) {
        let _mailbox = self.mailbox.lock();
        self.wake.notify_all();
    }
}
