//! The leader/waiter protocol, written once against [`crate::sync`].
//!
//! Each function that takes the lock is one critical section, and carries the name of
//! the TLA+ action it mirrors in `spec/GroupCommit.tla` (`arrive` is `Arrive`, and so
//! on); `docs/spec-map.md` lists them side by side.
//!
//! Invariants, all kept under `state`'s lock:
//! - at most one fsync runs at a time: only the leader runs one, and only a caller that
//!   finds nobody leading (`Idle` or `HandingOff`) becomes leader, leaving that phase in
//!   the same critical section;
//! - `durable` only grows, and only to the target of a completed, successful fsync,
//!   read from `written` just before that fsync started;
//! - once `failure` is set it stays set; every call that arrives after it, and every
//!   waiter the failed fsync (or one after it) would have served, gets its error. Only a
//!   waiter already served by an earlier, successful fsync may still return `Ok`;
//! - a waiter is a member of exactly one group, `riders` (the fsync in flight) or
//!   `next` (the fsync after it), counted there by its LSN, until that group's outcome
//!   is decided; each group's outcome is told once;
//! - a waiter always has a way out without its timeout: its group is `riders` (the
//!   running fsync will tell it), or `next` while a leader gathers or syncs, or while
//!   `next` holds an offer of the lead (`HandingOff`); `Idle` never has a next group.

use crate::adaptive::Adaptive;
use crate::config::{Config, Gathering};
use crate::error::{invalid_input, Failure, NoProgress};
use crate::group::{Group, Outcome, Wake};
use crate::stats::{InFlight, Stats};
use crate::sync::{leading, AtomicBool, AtomicU64, Condvar, Instant, Mutex, MutexGuard};
use crate::sync::{Ordering, WaitKind};
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "trace")]
macro_rules! step {
    ($state:expr, $action:literal, $lsn:expr) => {
        crate::trace::record($action, $lsn, &$state.snapshot())
    };
}
#[cfg(not(feature = "trace"))]
macro_rules! step {
    ($state:expr, $action:literal, $lsn:expr) => {
        let _ = $lsn;
    };
}

/// What the protocol is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Nobody leads. The first caller to see this becomes the leader.
    Idle,
    /// Nobody leads, and the oldest of the next group has been signalled to lead. A
    /// caller that gets here first (an arrival, already running) leads instead, and the
    /// next group rides its fsync: no device time is lost to the wake-up.
    HandingOff,
    /// A leader exists and is waiting for companions before its fsync.
    Gathering,
    /// The leader's fsync is running; it covers every LSN up to `target`.
    Syncing { target: u64 },
}

/// What a caller does next, decided under the lock.
enum Next {
    /// With the durable LSN (at least the caller's) or the error.
    Return(io::Result<u64>),
    Lead,
    /// Sleep on this group, the one of the fsync that will serve the caller.
    Wait(Arc<Group>),
}

/// How a finished fsync leaves its leader.
enum Finish {
    Return(io::Result<u64>),
    /// The flush made progress but did not cover the leader's LSN: lead again.
    LeadAgain,
}

struct State {
    /// Highest LSN written to the log (for the closure front end: callers arrived).
    written: u64,
    /// Highest LSN covered by a completed, successful fsync.
    durable: u64,
    phase: Phase,
    /// fsyncs started so far; the one in flight, if any, has this number.
    started: u64,
    /// The group of the fsync in flight (or of the last one), and its members' LSNs.
    riders: Arc<Group>,
    rider_lsns: Vec<u64>,
    /// When the oldest member of `riders` started to wait, for `Stats::longest_wait`.
    riders_since: Option<Instant>,
    /// The group waiting for the fsync after it: the next leader's companions.
    next: Arc<Group>,
    next_lsns: Vec<u64>,
    next_since: Option<Instant>,
    failure: Option<Failure>,
    /// Companions a gathering leader waits for.
    gather_until: u64,
    /// Callers active around the last successful fsync: those it served and those queued
    /// behind it. Adaptive gathering waits for as many.
    recently_active: u64,
    /// How long the last fsync took; adaptive gathering waits at most half of it.
    last_fsync_time: Duration,
    /// Adaptive gathering's measurements: whether leaders gather at all.
    adaptive: Adaptive,
    /// When adaptive gathering's current epoch began.
    epoch_began: Option<Instant>,
    /// When the fsync in flight started.
    fsync_began: Option<Instant>,
    stats: Stats,
}

impl State {
    fn new() -> Self {
        State {
            written: 0,
            durable: 0,
            phase: Phase::Idle,
            started: 0,
            riders: Arc::new(Group::new()),
            rider_lsns: Vec::new(),
            riders_since: None,
            next: Arc::new(Group::new()),
            next_lsns: Vec::new(),
            next_since: None,
            failure: None,
            gather_until: 0,
            recently_active: 0,
            last_fsync_time: Duration::ZERO,
            adaptive: Adaptive::default(),
            epoch_began: None,
            fsync_began: None,
            stats: Stats::default(),
        }
    }

    /// The decision every critical section of an arriving caller ends with: a call that
    /// arrives after a failure is refused whatever its LSN.
    fn decide(&mut self, lsn: u64) -> Next {
        if let Some(failure) = &self.failure {
            return Next::Return(Err(failure.to_io_error()));
        }
        if lsn <= self.durable {
            return Next::Return(Ok(self.durable));
        }
        match self.phase {
            Phase::Idle | Phase::HandingOff => Next::Lead,
            _ => Next::Wait(self.join_group(lsn)),
        }
    }

    fn waiting(&self) -> u64 {
        (self.rider_lsns.len() + self.next_lsns.len()) as u64
    }

    /// `JoinGroup`: count the caller in the group of the fsync that will serve it (the
    /// one in flight if its target covers `lsn`, otherwise the next).
    fn join_group(&mut self, lsn: u64) -> Arc<Group> {
        match self.phase {
            Phase::Syncing { target } if lsn <= target => {
                self.rider_lsns.push(lsn);
                Arc::clone(&self.riders)
            }
            _ => {
                if self.next_lsns.is_empty() {
                    self.next_since = Some(Instant::now());
                }
                self.next_lsns.push(lsn);
                Arc::clone(&self.next)
            }
        }
    }

    #[cfg(feature = "trace")]
    fn snapshot(&self) -> crate::trace::Snapshot {
        crate::trace::Snapshot {
            written: self.written,
            durable: self.durable,
            phase: self.phase,
            started: self.started,
            riders: self.rider_lsns.len() as u64,
            next_group: self.next_lsns.len() as u64,
            failed: self.failure.is_some(),
            gather_until: self.gather_until,
            recently_active: self.recently_active,
        }
    }
}

/// The protocol's shared state. Every front end wraps one of these.
pub(crate) struct Protocol {
    state: Mutex<State>,
    /// A gathering leader sleeps here until enough companions have arrived.
    gatherer: Condvar,
    /// `State::durable`, published for callers that are already covered.
    durable: AtomicU64,
    /// Set with `State::failure`, for the same callers.
    poisoned: AtomicBool,
    /// Calls answered by `already_durable`, which takes no lock.
    lock_free_returns: AtomicU64,
    config: Config,
}

impl Protocol {
    pub(crate) fn new(config: Config) -> Self {
        Protocol {
            state: Mutex::new(State::new()),
            gatherer: Condvar::new(),
            durable: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            lock_free_returns: AtomicU64::new(0),
            config,
        }
    }

    /// A protocol for a log recovered up to `lsn`: written and durable there already,
    /// so the first call above it is the first to need an fsync.
    pub(crate) fn recovered(config: Config, lsn: u64) -> Self {
        let protocol = Protocol::new(config);
        {
            let mut st = protocol.state.lock();
            st.written = lsn;
            st.durable = lsn;
        }
        protocol.durable.store(lsn, Ordering::Release);
        protocol
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// LSN front end: the log has written everything up to `lsn`.
    pub(crate) fn mark_written(&self, lsn: u64) -> io::Result<()> {
        if lsn == u64::MAX {
            return Err(reserved_lsn("mark"));
        }
        let mut st = self.state.lock();
        if lsn < st.written {
            return Err(invalid_input(format!(
                "written LSN went backwards: {lsn} after {}",
                st.written
            )));
        }
        st.written = lsn;
        step!(st, "MarkWritten", lsn);
        Ok(())
    }

    /// LSN front end: returns once `lsn` is durable, running `flush` if this caller
    /// has to lead. A waiter served by another's fsync takes the lock once.
    pub(crate) fn commit<F>(&self, lsn: u64, flush: F) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        if let Some(durable) = self.already_durable(lsn) {
            return Ok(durable);
        }
        let mut st = self.state.lock();
        st.stats.requests += 1;
        let refused = self
            .refuse_reentry()
            .and_then(|()| check_commit_lsn(lsn, st.written));
        if let Err(error) = refused {
            st.stats.failed_requests += 1;
            return Err(error);
        }
        self.request(st, lsn, flush)
    }

    /// Leader-writes front end: returns once `lsn` is durable. There is no
    /// `mark_written`: the request itself raises `written` (the highest LSN asked for),
    /// and the leader's `flush` writes and syncs up to at least that, and says how far
    /// it got.
    pub(crate) fn flush<F>(&self, lsn: u64, flush: F) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        if let Some(durable) = self.already_durable(lsn) {
            return Ok(durable);
        }
        let mut st = self.state.lock();
        st.stats.requests += 1;
        let refused = self
            .refuse_reentry()
            .and_then(|()| check_commit_lsn(lsn, u64::MAX - 1));
        if let Err(error) = refused {
            st.stats.failed_requests += 1;
            return Err(error);
        }
        st.written = st.written.max(lsn);
        step!(st, "RequestFlush", lsn);
        self.request(st, lsn, flush)
    }

    /// Closure front end: the caller's write is done; returns once an fsync that started
    /// after this call began has succeeded.
    pub(crate) fn commit_arrival<F>(&self, flush: F) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        let mut st = self.state.lock();
        st.stats.requests += 1;
        if let Err(error) = self.refuse_reentry() {
            st.stats.failed_requests += 1;
            return Err(error);
        }
        // Each call is a write of its own: its LSN is its place in the arrival order.
        st.written += 1;
        let lsn = st.written;
        step!(st, "CommitArrival", lsn);
        self.request(st, lsn, flush)
    }

    /// `FastPath`: an LSN that is already durable needs neither the lock nor an fsync.
    /// Returns the durable LSN if it covers `lsn`. Front ends call it first, before they
    /// build the closure for the slow path.
    #[inline]
    pub(crate) fn already_durable(&self, lsn: u64) -> Option<u64> {
        if lsn == 0 || self.poisoned.load(Ordering::Acquire) {
            return None;
        }
        let durable = self.durable.load(Ordering::Acquire);
        (lsn <= durable).then(|| {
            self.lock_free_returns.fetch_add(1, Ordering::Relaxed);
            durable
        })
    }

    /// `RefuseReentry`: a call from inside this manager's own fsync closure, on the
    /// leader's thread, would wait for the fsync it is part of. It is refused (and
    /// counted as a failed request) without poisoning anything: the outer fsync goes on.
    fn refuse_reentry(&self) -> io::Result<()> {
        if leading::contains(self.id()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "re-entrant call: this thread is running this manager's fsync closure, \
                 and the call would wait for that fsync to finish (a deadlock)",
            ));
        }
        Ok(())
    }

    fn id(&self) -> usize {
        self as *const Self as usize
    }

    fn request<F>(&self, mut st: MutexGuard<'_, State>, lsn: u64, flush: F) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        match self.arrive(&mut st, lsn) {
            Next::Return(result) => {
                step!(st, "Return", lsn);
                result
            }
            Next::Lead => self.lead(st, lsn, flush),
            Next::Wait(group) => {
                step!(st, "Wait", lsn);
                drop(st);
                self.await_outcome(group, lsn, flush)
            }
        }
    }

    /// `Arrive`: the first critical section of a call.
    fn arrive(&self, st: &mut State, lsn: u64) -> Next {
        let next = st.decide(lsn);
        match &next {
            Next::Return(Ok(_)) => st.stats.already_durable += 1,
            Next::Return(Err(_)) => st.stats.failed_requests += 1,
            Next::Wait(_) => self.wake_gatherer(st),
            Next::Lead => {}
        }
        step!(st, "Arrive", lsn);
        next
    }

    /// A gathering leader wakes once it has the companions it waits for.
    fn wake_gatherer(&self, st: &State) {
        if st.phase == Phase::Gathering && st.next_lsns.len() as u64 == st.gather_until {
            self.gatherer.notify_one();
        }
    }

    /// `Wait` on the caller's group, ended by its outcome (`WakeServed`, `WakeFailed`,
    /// `Requeue`), an offer of the lead (`TakeLead`), or `Timeout`. A served waiter
    /// returns without the protocol's lock; the others take it once more.
    fn await_outcome<F>(&self, mut group: Arc<Group>, lsn: u64, flush: F) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        let timeout = self.config.waiter_timeout();
        let mut deadline = Instant::now().checked_add(timeout);
        loop {
            match group.wait(deadline) {
                Wake::Outcome(Outcome::Durable(durable)) if lsn <= durable => return Ok(durable),
                Wake::Outcome(Outcome::Failed(failure)) => return Err(failure.to_io_error()),
                Wake::Outcome(Outcome::Durable(_)) => {
                    let mut st = self.state.lock();
                    match self.requeue(&mut st, lsn) {
                        Next::Return(result) => return result,
                        Next::Lead => return self.lead(st, lsn, flush),
                        Next::Wait(again) => group = again,
                    }
                }
                Wake::Lead => {
                    let mut st = self.state.lock();
                    if self.take_lead(&mut st, &group, lsn) {
                        return self.lead(st, lsn, flush);
                    }
                }
                Wake::TimedOut => {
                    let mut st = self.state.lock();
                    if self.timeout(&mut st, &group, lsn) {
                        return self.lead(st, lsn, flush);
                    }
                    drop(st);
                    // A fresh deadline: a waiter whose timeout passed sleeps as before.
                    deadline = Instant::now().checked_add(timeout);
                }
            }
        }
    }

    /// `Requeue`: a rider that the flush it rode did not cover (it reported less than
    /// its target) decides again, as an arrival would, without counting a new request.
    fn requeue(&self, st: &mut State, lsn: u64) -> Next {
        let next = st.decide(lsn);
        match &next {
            Next::Return(Ok(_)) => st.stats.served += 1,
            Next::Return(Err(_)) => st.stats.failed_requests += 1,
            Next::Wait(_) => self.wake_gatherer(st),
            Next::Lead => {}
        }
        st.stats.requeued += 1;
        step!(st, "Requeue", lsn);
        next
    }

    /// `TakeLead`: a waiter that took the offer of the lead leads if nobody does yet
    /// and its group is still the next one. Otherwise somebody who was already running
    /// took the lead first, and the group rides that leader's fsync: the waiter sleeps
    /// again. Returns whether it leads.
    fn take_lead(&self, st: &mut State, group: &Arc<Group>, lsn: u64) -> bool {
        let leads = Self::claim_lead(st, group, lsn);
        step!(st, "TakeLead", lsn);
        leads
    }

    /// `Timeout`: the safety net. The waiter counts the expiry and checks, on its own,
    /// that somebody will tell its group: a next group while nobody leads is orphaned
    /// (or at least free to lead), and the waiter leads, within the protocol, so never
    /// beside another fsync. Returns whether it leads.
    fn timeout(&self, st: &mut State, group: &Arc<Group>, lsn: u64) -> bool {
        st.stats.timeouts += 1;
        let leads = Self::claim_lead(st, group, lsn);
        step!(st, "Timeout", lsn);
        leads
    }

    /// Leaves the next group to lead it, if nobody leads (and nothing failed: a failure
    /// leaves the phase `Idle` with the group told).
    fn claim_lead(st: &mut State, group: &Arc<Group>, lsn: u64) -> bool {
        let free = matches!(st.phase, Phase::Idle | Phase::HandingOff)
            && st.failure.is_none()
            && Arc::ptr_eq(group, &st.next);
        if free {
            let at = st.next_lsns.iter().position(|&l| l == lsn);
            st.next_lsns
                .swap_remove(at.expect("a member of the next group is counted"));
        }
        free
    }

    /// `BecomeLeader`, then `Gather` when it applies, `StartFsync`, `RunFsync` and
    /// `FinishFsync`; again while the flush covers less than the leader's own LSN but
    /// makes progress.
    fn lead<'a, F>(
        &'a self,
        mut st: MutexGuard<'a, State>,
        lsn: u64,
        mut flush: F,
    ) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        loop {
            st.phase = Phase::Gathering;
            step!(st, "BecomeLeader", lsn);
            if let Some((companions, longest)) = self.gathering_plan(&st) {
                st = self.gather(st, companions, longest);
                step!(st, "Gather", lsn);
            }
            let (target, began) = self.start_fsync(&mut st);
            step!(st, "StartFsync", lsn);
            drop(st);

            let outcome = {
                let _leading = leading::enter(self.id());
                catch_unwind(AssertUnwindSafe(|| flush(target)))
            };
            let took = began.elapsed();

            match self.finish_fsync(target, outcome, took, lsn) {
                Finish::Return(result) => return result,
                Finish::LeadAgain => st = self.state.lock(),
            }
        }
    }

    /// How many companions a new leader waits for, and for how long at most; `None`
    /// when it should start its fsync at once.
    fn gathering_plan(&self, st: &State) -> Option<(u64, Duration)> {
        let (companions, longest) = match self.config.gathering() {
            Gathering::Off => return None,
            // A lone leader does not wait: nobody is there to gather with (F8).
            Gathering::Fixed { .. } if st.next_lsns.is_empty() => return None,
            Gathering::Fixed {
                threshold,
                interval,
            } => (threshold as u64, interval),
            Gathering::Adaptive { .. } if !st.adaptive.gathering() => return None,
            Gathering::Adaptive { max_wait } => (
                st.recently_active.saturating_sub(1),
                max_wait.min(st.last_fsync_time / 2),
            ),
        };
        ((st.next_lsns.len() as u64) < companions && !longest.is_zero())
            .then_some((companions, longest))
    }

    /// `Gather`: wait, for at most `longest`, until `companions` callers wait for the
    /// fsync this leader will start. The leader is not its own companion.
    fn gather<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        companions: u64,
        longest: Duration,
    ) -> MutexGuard<'a, State> {
        st.gather_until = companions;
        let began = Instant::now();
        match began.checked_add(longest) {
            Some(deadline) => {
                while (st.next_lsns.len() as u64) < companions {
                    let timed_out;
                    (st, timed_out) = self.gatherer.wait_until(st, deadline, WaitKind::Gather);
                    if timed_out {
                        break;
                    }
                }
            }
            None => {
                while (st.next_lsns.len() as u64) < companions {
                    st = self.gatherer.wait(st);
                }
            }
        }
        st.stats.longest_wait = st.stats.longest_wait.max(began.elapsed());
        st
    }

    /// Adaptive gathering counts each successful fsync in its epoch, and at the end of
    /// one decides whether the next gathers (see `adaptive.rs`).
    fn measure(&self, st: &mut State, served: u64) {
        if !matches!(self.config.gathering(), Gathering::Adaptive { .. }) {
            return;
        }
        if st.adaptive.count(served) {
            let now = Instant::now();
            let began = *st.epoch_began.get_or_insert(now);
            if st.adaptive.end_epoch(now.saturating_duration_since(began)) {
                st.epoch_began = Some(now);
            }
        }
    }

    /// `StartFsync`: fix the target before the fsync starts, so it covers exactly what
    /// was written by then; the next group becomes this fsync's riders.
    /// Returns the target and when the fsync began.
    fn start_fsync(&self, st: &mut State) -> (u64, Instant) {
        st.started += 1;
        let target = st.written;
        st.phase = Phase::Syncing { target };
        debug_assert!(
            st.rider_lsns.is_empty(),
            "riders of a finished fsync left behind"
        );
        // The last riders' group can be the next group again if nobody else holds it
        // (it had no members, so it was never told anything): no allocation for the
        // fsyncs of a lone caller.
        let fresh = if Arc::strong_count(&st.riders) == 1 && !st.riders.was_told() {
            Arc::clone(&st.riders)
        } else {
            Arc::new(Group::new())
        };
        st.riders = std::mem::replace(&mut st.next, fresh);
        std::mem::swap(&mut st.rider_lsns, &mut st.next_lsns);
        st.riders_since = st.next_since.take();
        let began = Instant::now();
        st.fsync_began = Some(began);
        st.stats.fsyncs += 1;
        (target, began)
    }

    /// `FinishFsync`: record the outcome before anybody else can start an fsync; then,
    /// outside the lock, `HandOff` (offer the lead to the next group) and `WakeRiders`
    /// (tell the riders' group the durable LSN, one `notify_all`).
    ///
    /// A flush reports how far it made the log durable (`covered`, the target for the
    /// closure and LSN front ends). The riders at or below it are served; those above
    /// it `Requeue` when woken. A next group that it covers whole is served too, so the
    /// lead is never offered to a group with nothing left to flush. If the leader's own
    /// LSN is not covered, it leads again when the flush made progress, and gets an
    /// error when it made none: never an `Ok` for an uncovered LSN, never a loop without
    /// progress.
    fn finish_fsync(
        &self,
        target: u64,
        outcome: std::thread::Result<io::Result<u64>>,
        took: Duration,
        lsn: u64,
    ) -> Finish {
        let mut st = self.state.lock();
        st.stats.fsync_time += took;
        st.last_fsync_time = took;
        st.fsync_began = None;
        let covered = match outcome {
            Ok(Ok(covered)) => covered,
            Ok(Err(error)) => {
                let (failure, told) = self.poison(&mut st, Failure::from_error(&error));
                step!(st, "FailFsync", lsn);
                drop(st);
                Self::wake_failed(told, failure);
                return Finish::Return(Err(error));
            }
            Err(panic) => {
                let (failure, told) = self.poison(&mut st, Failure::from_panic());
                step!(st, "PanicFsync", lsn);
                drop(st);
                Self::wake_failed(told, failure);
                resume_unwind(panic)
            }
        };
        let before = st.durable;
        if covered < target {
            st.stats.short_fsyncs += 1;
        }
        // `durable` never decreases: a flush that reports less covers nothing new.
        let durable = covered.max(before);
        st.durable = durable;
        self.durable.store(durable, Ordering::Release);
        st.stats.covered += durable - before;
        // A group nobody joined is not told: its wake-up would reach no one.
        let riders = (!st.rider_lsns.is_empty()).then(|| Arc::clone(&st.riders));
        Self::note_longest_wait(&mut st);
        let mut served = Self::take_group(&mut st.rider_lsns, durable);
        let next_served = !st.next_lsns.is_empty() && st.next_lsns.iter().all(|&l| l <= durable);
        let next_group = next_served.then(|| {
            served += st.next_lsns.len() as u64;
            st.next_lsns.clear();
            st.next_since = None;
            std::mem::replace(&mut st.next, Arc::new(Group::new()))
        });
        let leader_served = lsn <= durable;
        let group = served + u64::from(leader_served);
        st.stats.served += group;
        st.stats.largest_group = st.stats.largest_group.max(group);
        if group > 1 {
            st.stats.group_commits += 1;
        }
        st.recently_active = group + st.waiting();
        self.measure(&mut st, group);
        let result = if leader_served {
            Ok(durable)
        } else if durable > before {
            // Progress, but not to this leader's LSN: it keeps the lead (`Gathering`
            // says a leader exists and no fsync runs) and flushes again once the
            // callers it served are woken.
            st.phase = Phase::Gathering;
            step!(st, "FinishFsync", lsn);
            drop(st);
            Self::wake_riders(riders, next_group, durable);
            return Finish::LeadAgain;
        } else {
            st.stats.failed_requests += 1;
            Err(no_progress(covered, before, lsn))
        };
        let hand_off = !st.next_lsns.is_empty();
        st.phase = if hand_off {
            st.stats.hand_offs += 1;
            Phase::HandingOff
        } else {
            Phase::Idle
        };
        let next = Arc::clone(&st.next);
        step!(st, "FinishFsync", lsn);
        drop(st);
        if hand_off {
            next.offer_lead();
        }
        Self::wake_riders(riders, next_group, durable);
        Finish::Return(result)
    }

    /// The riders' wait ends now (and the next group's, if it is told too).
    fn note_longest_wait(st: &mut State) {
        let oldest = st.riders_since.take().into_iter().chain(st.next_since);
        if let Some(since) = oldest.min() {
            st.stats.longest_wait = st.stats.longest_wait.max(since.elapsed());
        }
    }

    /// Counts the members `durable` serves and forgets them all: those it does not
    /// serve will `Requeue` when woken.
    fn take_group(lsns: &mut Vec<u64>, durable: u64) -> u64 {
        let served = lsns.iter().filter(|&&l| l <= durable).count() as u64;
        lsns.clear();
        served
    }

    /// `WakeRiders`: the riders' group (and a next group served whole) is told.
    fn wake_riders(riders: Option<Arc<Group>>, next: Option<Arc<Group>>, durable: u64) {
        for group in riders.into_iter().chain(next) {
            group.finish(Outcome::Durable(durable));
        }
    }

    /// A failed or panicked fsync poisons the manager before anyone else can start one;
    /// both groups are to be told the failure.
    fn poison(&self, st: &mut State, failure: Failure) -> (Failure, [Arc<Group>; 2]) {
        st.failure = Some(failure.clone());
        self.poisoned.store(true, Ordering::Release);
        let unserved = st.waiting();
        Self::note_longest_wait(st);
        st.rider_lsns.clear();
        st.next_lsns.clear();
        st.stats.failed_fsyncs += 1;
        st.stats.failed_requests += 1 + unserved;
        st.phase = Phase::Idle;
        let told = [Arc::clone(&st.riders), Arc::clone(&st.next)];
        (failure, told)
    }

    /// `WakeFailed`: each waiter the failure left unserved is told it.
    fn wake_failed(told: [Arc<Group>; 2], failure: Failure) {
        for group in told {
            group.finish(Outcome::Failed(failure.clone()));
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.state.lock();
        let mut stats = st.stats;
        let lock_free = self.lock_free_returns.load(Ordering::Relaxed);
        stats.requests += lock_free;
        stats.already_durable += lock_free;
        stats.waiting = st.waiting();
        stats
    }

    /// The fsync running now, if any: how long it has run and who waits. Takes the lock,
    /// which no fsync holds, so it answers even while an fsync hangs.
    pub(crate) fn in_flight(&self) -> Option<InFlight> {
        let st = self.state.lock();
        let began = st.fsync_began?;
        let target = match st.phase {
            Phase::Syncing { target } => target,
            _ => st.written,
        };
        Some(InFlight {
            age: began.elapsed(),
            riders: st.rider_lsns.len() as u64,
            waiting: st.waiting(),
            target,
        })
    }

    /// Whether the protocol runs on the checker's primitives (a checker build, built
    /// inside one of its executions).
    #[cfg(any(feature = "loom", feature = "shuttle"))]
    pub(crate) fn uses_checker_primitives(&self) -> bool {
        self.state.is_model()
    }

    pub(crate) fn durable_lsn(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    pub(crate) fn written_lsn(&self) -> u64 {
        self.state.lock().written
    }

    pub(crate) fn failure(&self) -> Option<Failure> {
        self.state.lock().failure.clone()
    }

    /// Wakes every sleeping caller without changing any state: what a spurious wake-up
    /// does. For tests.
    pub(crate) fn wake_everyone_spuriously(&self) {
        let st = self.state.lock();
        st.riders.nudge();
        st.next.nudge();
        self.gatherer.notify_all();
    }
}

/// LSN 0 names no record: an LSN is a record's end offset, and every log starts at 0,
/// so a commit of 0 is an LSN that was never set. `u64::MAX` is reserved (no file
/// reaches it), so that "one past" a real LSN always exists.
/// An LSN beyond `written` was never marked written, so no fsync could cover it.
fn check_commit_lsn(lsn: u64, written: u64) -> io::Result<()> {
    match lsn {
        0 => Err(invalid_input(
            "cannot commit LSN 0: an LSN is the end offset of a record, and no record ends at 0"
                .to_owned(),
        )),
        u64::MAX => Err(reserved_lsn("commit")),
        _ if lsn > written => Err(invalid_input(format!(
            "LSN {lsn} is beyond the written LSN {written}"
        ))),
        _ => Ok(()),
    }
}

/// A flush for a closure that syncs everything written so far: it covers its target,
/// so it never runs twice for one call.
pub(crate) fn covering_target<F>(sync: F) -> impl FnMut(u64) -> io::Result<u64>
where
    F: FnOnce(u64) -> io::Result<()>,
{
    let mut sync = Some(sync);
    move |target| {
        let sync = sync
            .take()
            .expect("a flush that covers its target runs once");
        sync(target).map(|()| target)
    }
}

/// A flush that made no progress toward the leader's LSN: it returned no more than what
/// was durable already. Not a failure of the device (nothing is lost, nothing poisoned),
/// so not its error: `WriteZero`, as a write that wrote nothing.
fn no_progress(covered: u64, durable: u64, lsn: u64) -> io::Error {
    let what = if covered < durable {
        format!("returned LSN {covered}, below the durable LSN {durable}")
    } else {
        format!("returned LSN {covered}, no further than the durable LSN {durable}")
    };
    io::Error::new(
        io::ErrorKind::WriteZero,
        NoProgress(format!(
            "the flush made no progress: it {what}; LSN {lsn} of this call is not durable"
        )),
    )
}

fn reserved_lsn(what: &str) -> io::Error {
    invalid_input(format!(
        "cannot {what} LSN u64::MAX: it is reserved (no file reaches it)"
    ))
}
