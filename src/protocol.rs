//! The leader/waiter protocol, written once against [`crate::sync`].
//!
//! Each function that takes the lock is one critical section, and carries the name of
//! the TLA+ action it mirrors in `spec/GroupCommit.tla` (`arrive` is `Arrive`, and so
//! on); `docs/spec-map.md` lists them side by side.
//!
//! Invariants, all kept under `state`'s lock:
//! - at most one fsync runs at a time: only the leader runs one, and only a caller that
//!   finds `Phase::Idle` becomes leader;
//! - `durable` only grows, and only to the target of a completed, successful fsync,
//!   read from `written` just before that fsync started;
//! - once `failure` is set it stays set; every call that arrives after it, and every
//!   waiter the failed fsync (or one after it) would have served, gets its error. Only a
//!   waiter already served by an earlier, successful fsync may still return `Ok`;
//! - a waiter always has a way out without its timeout: its fsync is running and will
//!   wake it, or a leader is gathering for it, or the phase is `Idle` and a hand-off
//!   (a `notify_one` on its group) is on its way.

use crate::config::{Config, Gathering};
use crate::error::{invalid_input, Failure};
use crate::stats::Stats;
use crate::sync::{AtomicBool, AtomicU64, Condvar, Instant, Mutex, MutexGuard, Ordering, WaitKind};
use std::io;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
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
    /// A leader exists and is waiting for companions before its fsync.
    Gathering,
    /// The leader's fsync is running; it covers every LSN up to `target`.
    Syncing { target: u64 },
}

/// What a caller does next, decided under the lock.
enum Next {
    Return(io::Result<()>),
    Lead,
    /// Sleep until the fsync numbered `generation` has finished (or a wake-up says to
    /// look again).
    Wait {
        generation: u64,
    },
}

struct State {
    /// Highest LSN written to the log (for the closure front end: callers arrived).
    written: u64,
    /// Highest LSN covered by a completed, successful fsync.
    durable: u64,
    phase: Phase,
    /// fsyncs started so far; the one in flight, if any, has this number.
    started: u64,
    /// Waiters the fsync in flight will serve.
    riders: u64,
    /// Waiters for the fsync after it: the companions of the next leader.
    next_group: u64,
    failure: Option<Failure>,
    /// Companions a gathering leader waits for.
    gather_until: u64,
    /// Callers active around the last successful fsync: those it served and those queued
    /// behind it. Adaptive gathering waits for as many.
    recently_active: u64,
    /// How long the last fsync took; adaptive gathering waits at most half of it.
    last_fsync_time: Duration,
    stats: Stats,
}

impl State {
    /// The fsync that will serve `lsn`: the one in flight if its target covers `lsn`,
    /// otherwise the next one (whose target, read from `written` when it starts, will).
    fn generation_for(&self, lsn: u64) -> u64 {
        match self.phase {
            Phase::Syncing { target } if lsn <= target => self.started,
            _ => self.started + 1,
        }
    }

    /// The decision every critical section of a caller ends with. `waited` says
    /// whether the caller is a waiter rechecking (rather than a call arriving): a waiter
    /// whose fsync succeeded was served, even if a later fsync has failed since, while
    /// a call that arrives after a failure is refused whatever its LSN.
    fn decide(&self, lsn: u64, waited: bool) -> Next {
        let served = lsn <= self.durable;
        if served && waited {
            return Next::Return(Ok(()));
        }
        if let Some(failure) = &self.failure {
            return Next::Return(Err(failure.to_io_error()));
        }
        if served {
            return Next::Return(Ok(()));
        }
        match self.phase {
            Phase::Idle => Next::Lead,
            _ => Next::Wait {
                generation: self.generation_for(lsn),
            },
        }
    }

    #[cfg(feature = "trace")]
    fn snapshot(&self) -> crate::trace::Snapshot {
        crate::trace::Snapshot {
            written: self.written,
            durable: self.durable,
            phase: self.phase,
            started: self.started,
            riders: self.riders,
            next_group: self.next_group,
            failed: self.failure.is_some(),
            gather_until: self.gather_until,
            recently_active: self.recently_active,
        }
    }
}

/// The protocol's shared state. Both front ends wrap one of these.
pub(crate) struct Protocol {
    state: Mutex<State>,
    /// Waiters sleep on the condvar of the fsync that will serve them, chosen by the
    /// parity of its number: the riders of the fsync in flight on one, the next group on
    /// the other, so a finished fsync wakes only whom it served, plus one next leader.
    groups: [Condvar; 2],
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
            state: Mutex::new(State {
                written: 0,
                durable: 0,
                phase: Phase::Idle,
                started: 0,
                riders: 0,
                next_group: 0,
                failure: None,
                gather_until: 0,
                recently_active: 0,
                last_fsync_time: Duration::ZERO,
                stats: Stats::default(),
            }),
            groups: [Condvar::new(), Condvar::new()],
            gatherer: Condvar::new(),
            durable: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            lock_free_returns: AtomicU64::new(0),
            config,
        }
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// LSN front end: the log has written everything up to `lsn`.
    pub(crate) fn mark_written(&self, lsn: u64) -> io::Result<()> {
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

    /// LSN front end: returns once `lsn` is durable, running `do_fsync` if this caller
    /// has to lead.
    pub(crate) fn commit<F>(&self, lsn: u64, do_fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()>,
    {
        if self.already_durable(lsn) {
            return Ok(());
        }
        let mut st = self.state.lock();
        st.stats.requests += 1;
        if lsn > st.written {
            st.stats.failed_requests += 1;
            return Err(invalid_input(format!(
                "LSN {lsn} is beyond the written LSN {}",
                st.written
            )));
        }
        self.request(st, lsn, do_fsync)
    }

    /// Closure front end: the caller's write is done; returns once an fsync that started
    /// after this call began has succeeded.
    pub(crate) fn commit_arrival<F>(&self, do_fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()>,
    {
        let mut st = self.state.lock();
        st.stats.requests += 1;
        // Each call is a write of its own: its LSN is its place in the arrival order.
        st.written += 1;
        let lsn = st.written;
        step!(st, "CommitArrival", lsn);
        self.request(st, lsn, do_fsync)
    }

    /// `FastPath`: an LSN that is already durable needs neither the lock nor an fsync.
    fn already_durable(&self, lsn: u64) -> bool {
        let covered =
            !self.poisoned.load(Ordering::Acquire) && lsn <= self.durable.load(Ordering::Acquire);
        if covered {
            self.lock_free_returns.fetch_add(1, Ordering::Relaxed);
        }
        covered
    }

    fn request<F>(&self, mut st: MutexGuard<'_, State>, lsn: u64, do_fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()>,
    {
        let mut next = self.arrive(&mut st, lsn);
        let mut blocked_since: Option<Instant> = None;
        let mut deadline: Option<Option<Instant>> = None;
        loop {
            match next {
                Next::Return(result) => {
                    Self::note_wait(&mut st, blocked_since);
                    step!(st, "Return", lsn);
                    return result;
                }
                Next::Lead => {
                    Self::note_wait(&mut st, blocked_since);
                    return self.lead(st, lsn, do_fsync);
                }
                Next::Wait { generation } => {
                    let since = *blocked_since.get_or_insert_with(Instant::now);
                    let until = *deadline
                        .get_or_insert_with(|| since.checked_add(self.config.waiter_timeout()));
                    step!(st, "Wait", lsn);
                    let timed_out;
                    (st, timed_out) = self.wait(st, generation, until);
                    if timed_out {
                        st.stats.timeouts += 1;
                        deadline = Some(Instant::now().checked_add(self.config.waiter_timeout()));
                        step!(st, "Timeout", lsn);
                    } else {
                        step!(st, "Wake", lsn);
                    }
                    next = self.recheck(&mut st, lsn);
                }
            }
        }
    }

    /// `Arrive`: the first critical section of a call.
    fn arrive(&self, st: &mut State, lsn: u64) -> Next {
        let next = st.decide(lsn, false);
        match &next {
            Next::Return(Ok(())) => st.stats.already_durable += 1,
            Next::Return(Err(_)) => st.stats.failed_requests += 1,
            Next::Wait { generation } => self.join_group(st, *generation),
            Next::Lead => {}
        }
        step!(st, "Arrive", lsn);
        next
    }

    /// `JoinGroup`: count the caller in the group of the fsync that will serve it, and
    /// wake a gathering leader once it has the companions it waits for.
    fn join_group(&self, st: &mut State, generation: u64) {
        if generation == st.started {
            st.riders += 1;
        } else {
            st.next_group += 1;
            if st.phase == Phase::Gathering && st.next_group == st.gather_until {
                self.gatherer.notify_one();
            }
        }
    }

    /// `Wait`, ended by `Wake` (a notify, or a spurious wake-up) or `Timeout`.
    fn wait<'a>(
        &self,
        st: MutexGuard<'a, State>,
        generation: u64,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, State>, bool) {
        let group = &self.groups[(generation % 2) as usize];
        match deadline {
            Some(deadline) => group.wait_until(st, deadline, WaitKind::Waiter),
            // A timeout too long to represent: wait without one.
            None => (group.wait(st), false),
        }
    }

    /// `Recheck`: a waiter that woke, for whatever reason, looks at the state again. It
    /// stays in its group unless it leaves (served, failed) or takes the lead; a
    /// spurious wake-up or a timeout therefore changes nothing while somebody leads.
    fn recheck(&self, st: &mut State, lsn: u64) -> Next {
        let next = st.decide(lsn, true);
        match &next {
            // Counted as served by the leader that covered it, or failed by `poison`.
            Next::Return(_) => {}
            Next::Lead => st.next_group -= 1,
            Next::Wait { .. } => {}
        }
        step!(st, "Recheck", lsn);
        next
    }

    /// `BecomeLeader`, then `Gather` when it applies, `StartFsync`, `RunFsync` and
    /// `FinishFsync`.
    fn lead<F>(&self, mut st: MutexGuard<'_, State>, lsn: u64, do_fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()>,
    {
        st.phase = Phase::Gathering;
        step!(st, "BecomeLeader", lsn);
        if let Some((companions, longest)) = self.gathering_plan(&st) {
            st = self.gather(st, companions, longest);
            step!(st, "Gather", lsn);
        }
        let (generation, target) = self.start_fsync(&mut st);
        step!(st, "StartFsync", lsn);
        drop(st);

        let began = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(do_fsync));
        let took = began.elapsed();

        self.finish_fsync(generation, target, outcome, took, lsn)
    }

    /// How many companions a new leader waits for, and for how long at most; `None`
    /// when it should start its fsync at once.
    fn gathering_plan(&self, st: &State) -> Option<(u64, Duration)> {
        let (companions, longest) = match self.config.gathering() {
            Gathering::Off => return None,
            // A lone leader does not wait: nobody is there to gather with (F8).
            Gathering::Fixed { .. } if st.next_group == 0 => return None,
            Gathering::Fixed {
                threshold,
                interval,
            } => (threshold as u64, interval),
            Gathering::Adaptive { max_wait } => (
                st.recently_active.saturating_sub(1),
                max_wait.min(st.last_fsync_time / 2),
            ),
        };
        (st.next_group < companions && !longest.is_zero()).then_some((companions, longest))
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
                while st.next_group < companions {
                    let timed_out;
                    (st, timed_out) = self.gatherer.wait_until(st, deadline, WaitKind::Gather);
                    if timed_out {
                        break;
                    }
                }
            }
            None => {
                while st.next_group < companions {
                    st = self.gatherer.wait(st);
                }
            }
        }
        Self::note_wait(&mut st, Some(began));
        st
    }

    /// `StartFsync`: fix the target before the fsync starts, so it covers exactly what
    /// was written by then; the next group becomes this fsync's riders.
    fn start_fsync(&self, st: &mut State) -> (u64, u64) {
        st.started += 1;
        let target = st.written;
        st.phase = Phase::Syncing { target };
        st.riders = st.next_group;
        st.next_group = 0;
        st.stats.fsyncs += 1;
        (st.started, target)
    }

    /// `FinishFsync`: record the outcome before anybody else can start an fsync, then
    /// wake whom it concerns (`WakeRiders`, `HandOff`).
    fn finish_fsync(
        &self,
        generation: u64,
        target: u64,
        outcome: std::thread::Result<io::Result<()>>,
        took: Duration,
        lsn: u64,
    ) -> io::Result<()> {
        let mut st = self.state.lock();
        st.stats.fsync_time += took;
        st.last_fsync_time = took;
        match outcome {
            Ok(Ok(())) => {
                // Targets grow with `written`, so this only ever raises `durable`.
                st.durable = target;
                self.durable.store(target, Ordering::Release);
                let served = st.riders + 1;
                st.riders = 0;
                st.stats.served += served;
                st.stats.largest_group = st.stats.largest_group.max(served);
                if served > 1 {
                    st.stats.group_commits += 1;
                }
                st.recently_active = served + st.next_group;
                st.phase = Phase::Idle;
                step!(st, "FinishFsync", lsn);
                if served > 1 {
                    self.wake_riders(generation);
                }
                if st.next_group > 0 {
                    self.hand_off(generation + 1);
                }
                Ok(())
            }
            Ok(Err(error)) => {
                self.poison(&mut st, Failure::from_error(&error));
                step!(st, "FailFsync", lsn);
                Err(error)
            }
            Err(panic) => {
                self.poison(&mut st, Failure::from_panic());
                step!(st, "PanicFsync", lsn);
                drop(st);
                resume_unwind(panic)
            }
        }
    }

    /// `WakeRiders`: `notify_all` on the group the finished fsync served.
    fn wake_riders(&self, generation: u64) {
        self.groups[(generation % 2) as usize].notify_all();
    }

    /// `HandOff`: the phase is `Idle` (set under the lock), so whichever waiter of the
    /// next group wakes first leads; `notify_one` makes sure one wakes.
    fn hand_off(&self, generation: u64) {
        self.groups[(generation % 2) as usize].notify_one();
    }

    /// A failed or panicked fsync poisons the manager before anyone else can start one,
    /// and every waiter is woken to fail.
    fn poison(&self, st: &mut State, failure: Failure) {
        st.failure = Some(failure);
        self.poisoned.store(true, Ordering::Release);
        st.stats.failed_fsyncs += 1;
        st.stats.failed_requests += 1 + st.riders + st.next_group;
        st.riders = 0;
        st.next_group = 0;
        st.phase = Phase::Idle;
        for group in &self.groups {
            group.notify_all();
        }
    }

    fn note_wait(st: &mut State, blocked_since: Option<Instant>) {
        if let Some(since) = blocked_since {
            st.stats.longest_wait = st.stats.longest_wait.max(since.elapsed());
        }
    }

    pub(crate) fn stats(&self) -> Stats {
        let st = self.state.lock();
        let mut stats = st.stats;
        let lock_free = self.lock_free_returns.load(Ordering::Relaxed);
        stats.requests += lock_free;
        stats.already_durable += lock_free;
        stats.waiting = st.riders + st.next_group;
        stats
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
        let _st = self.state.lock();
        for group in &self.groups {
            group.notify_all();
        }
        self.gatherer.notify_all();
    }
}
