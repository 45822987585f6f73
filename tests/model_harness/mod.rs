//! The model of a log and its callers that `tests/loom.rs` and `tests/shuttle.rs` both
//! explore, with the assertions every explored execution must pass.
//!
//! One execution: `callers` threads (the test's main thread is caller 0) each write a
//! record to a modelled log and ask the crate to make it durable, through
//! [`FsyncManager`] or [`GroupCommit`]. The fsync closure they hand the crate models the
//! disk: it snapshots the written records when it starts and makes that snapshot durable
//! when it ends; a failing one drops every dirty record for good (what Linux may do after
//! EIO). The assertions carry the names of the TLA+ properties they check, so that
//! `docs/spec-map.md` can point at them:
//!
//! - `FsyncBeforeReturn`: an `Ok` caller's record is durable, so a completed fsync that
//!   started after the write covered it;
//! - `NoOkAfterFailure`: no `Ok` for a record that a failed fsync dropped, nor for a call
//!   that started after another had returned the failure; no fsync starts after one
//!   failed; every `Err` comes after a failure and carries its error (`ErrorPreserved`);
//! - `DurableMonotonic`: `durable_lsn()` never decreases, and every LSN at or below it is
//!   durable;
//! - `AtMostOneFsync`: no two fsync closures overlap;
//! - `StatsExact`: the counters equal the events the harness saw;
//! - `WaitsBounded`: the waits of an execution are at most one per call, plus one per
//!   hand-off offered, per rider requeued by a short flush, per deadline that passed and
//!   per spurious wake-up: a waiter whose timeout passed keeps sleeping as cheaply as
//!   before (no busy wait);
//! - `NoRedundantFsync` (leader-writes): a flush never starts with a target the durable
//!   LSN already covers, so a waiter handed the lead never runs one for nothing;
//! - `FlushProgress` (leader-writes): `WriteZero` only for the leader of a flush that
//!   made no progress, never for anyone else;
//! - `ReentryRefused`: with `reenter`, each fsync closure calls the same manager again
//!   from the leader's thread; that call returns `InvalidInput` at once, runs no fsync,
//!   and the outer fsync goes on;
//! - `EndState`: once every caller is joined, `failure()`, `written_lsn()` and `config()`
//!   agree with what happened, and bad input (an LSN marked going backwards, a commit
//!   beyond the written LSN) is refused with `InvalidInput` and no fsync.
//!
//! A deadlock (every thread blocked) is reported by the checker itself.

#![allow(dead_code)]

#[cfg(feature = "loom")]
pub use loom as model;
#[cfg(all(feature = "shuttle", not(feature = "loom")))]
pub use shuttle as model;

use group_commit::{
    fired_choices, within_model, Config, FsyncManager, GroupCommit, GroupFlush, ModelChoices, Stats,
};
use model::sync::Mutex;
use std::cell::Cell;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Once};
use std::time::Duration;

/// The errno the failing fsync returns (EIO).
pub const EIO: i32 = 5;
/// The payload of the panicking fsync closure; the quiet panic hook drops it.
pub const PLANTED_PANIC: &str = "model harness: this fsync closure panics on purpose";

/// Which front end the callers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Api {
    /// `FsyncManager::fsync`, the closure front end.
    Manager,
    /// `GroupCommit::mark_written` + `commit`, the LSN front end.
    Lsn,
    /// `GroupFlush::flush`, the leader-writes front end: no `mark_written`, and the
    /// flush says how far it got (see [`Coverage`]).
    Flush,
}

/// How far the flushes of the leader-writes front end get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coverage {
    /// Each flush covers its target exactly.
    Target,
    /// The flush with this number covers one LSN less than its target.
    Short(u64),
    /// The flush with this number reports LSN 0: below the durable LSN once one
    /// succeeded, otherwise no progress.
    Stale(u64),
    /// The flush with this number covers every record written when it started, beyond
    /// its target when some committers have not asked yet.
    Beyond(u64),
}

/// What the fsync closures do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every fsync succeeds.
    None,
    /// The fsync with this number (0 = the first to start) returns EIO.
    Fail(u64),
    /// The fsync with this number panics.
    Panic(u64),
}

/// The gathering policy of the manager under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gather {
    /// Off (the default configuration).
    Off,
    /// The reference policy: `FsyncManager::new(2, 1)` or threshold 2, interval 1 ms.
    Fixed,
    /// Adaptive gathering, at most 1 ms.
    Adaptive,
}

/// One explored configuration.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// The front end.
    pub api: Api,
    /// Calling threads, the main thread included.
    pub callers: usize,
    /// What the fsyncs do.
    pub fault: Fault,
    /// The gathering policy.
    pub gather: Gather,
    /// LSN front end: after an `Ok`, commit the same LSN again (already durable: it must
    /// return without an fsync).
    pub recommit: bool,
    /// How waits end (deadlines, spurious wake-ups).
    pub choices: ModelChoices,
    /// Each fsync closure first calls the same manager again (a misuse it must refuse).
    pub reenter: bool,
    /// Leader-writes front end: how far its flushes get.
    pub coverage: Coverage,
    /// LSN front end: the records of the first `prewritten` callers are written before
    /// any caller starts, so the first fsync covers them all (riders without preemptions).
    pub prewritten: usize,
}

impl Scenario {
    /// A scenario with no faults, gathering off, deadlines that never pass.
    pub const fn new(api: Api, callers: usize) -> Self {
        Scenario {
            api,
            callers,
            fault: Fault::None,
            gather: Gather::Off,
            recommit: false,
            reenter: false,
            coverage: Coverage::Target,
            prewritten: 0,
            choices: ModelChoices {
                deadline_mask: 0,
                spurious_mask: 0,
                deadline_probability: 0.0,
                spurious_probability: 0.0,
            },
        }
    }

    /// With this fault.
    pub const fn fault(mut self, fault: Fault) -> Self {
        self.fault = fault;
        self
    }

    /// With this gathering policy.
    pub const fn gather(mut self, gather: Gather) -> Self {
        self.gather = gather;
        self
    }

    /// With recommits of already-durable LSNs.
    pub const fn recommit(mut self) -> Self {
        self.recommit = true;
        self
    }

    /// With flushes that get this far (leader-writes front end).
    pub const fn coverage(mut self, coverage: Coverage) -> Self {
        self.coverage = coverage;
        self
    }

    /// LSN front end: the first `callers` callers' records are written before any caller
    /// starts.
    pub const fn prewritten(mut self, callers: usize) -> Self {
        self.prewritten = callers;
        self
    }

    /// With a re-entrant call from inside every fsync closure.
    pub const fn reenter(mut self) -> Self {
        self.reenter = true;
        self
    }

    /// Loom: the waiter waits (numbered in execution order) whose deadline passes.
    pub const fn deadlines(mut self, mask: u64) -> Self {
        self.choices.deadline_mask = mask;
        self
    }

    /// Loom: the waiter waits that wake spuriously.
    pub const fn spurious(mut self, mask: u64) -> Self {
        self.choices.spurious_mask = mask;
        self
    }

    /// Shuttle: the probability that a waiter's wait sees its deadline pass, and that it
    /// wakes spuriously.
    pub const fn chances(mut self, deadline: f64, spurious: f64) -> Self {
        self.choices.deadline_probability = deadline;
        self.choices.spurious_probability = spurious;
        self
    }

    /// Runs one execution: call it once per execution, inside `loom::model` or the
    /// closure given to a shuttle runner.
    pub fn execute(&self) {
        let scenario = *self;
        within_model(scenario.choices, move || run(scenario));
    }

    fn config(&self) -> Config {
        let builder = Config::builder();
        let builder = match self.gather {
            Gather::Off => builder,
            Gather::Fixed => builder
                .group_threshold(2)
                .group_interval(Duration::from_millis(1)),
            Gather::Adaptive => builder.adaptive_gathering(Duration::from_millis(1)),
        };
        builder.build().expect("a valid model configuration")
    }

    /// Whether no waiter's deadline can ever pass in this scenario.
    fn deadlines_never_pass(&self) -> bool {
        self.choices.deadline_mask == 0 && self.choices.deadline_probability == 0.0
    }
}

/// The front end under test.
enum Front {
    Manager(FsyncManager),
    Lsn(GroupCommit),
    Flush(GroupFlush),
}

impl Front {
    fn stats(&self) -> Stats {
        match self {
            Front::Manager(m) => m.stats(),
            Front::Lsn(g) => g.stats(),
            Front::Flush(f) => f.stats(),
        }
    }

    fn durable_lsn(&self) -> Option<u64> {
        match self {
            Front::Manager(_) => None,
            Front::Lsn(g) => Some(g.durable_lsn()),
            Front::Flush(f) => Some(f.durable_lsn()),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    Eio,
    Panic,
}

/// The modelled log and disk. Record `r` is bit `r`: for the closure front end, the
/// caller's number; for the LSN front end, its LSN less one (LSNs are given out in
/// append order, from 1).
#[derive(Default)]
struct Log {
    written: u64,
    durable: u64,
    /// Dropped by a failed fsync: never durable.
    lost: u64,
    next_lsn: u64,
    fsync_running: bool,
    fsyncs: u64,
    failed_fsyncs: u64,
    first_failure: Option<FailureKind>,
    highest_durable_seen: u64,
    /// A call has returned the failure (`Err`, or the closure's panic): every call that
    /// starts after that must be refused.
    failure_returned: bool,
    /// Re-entrant calls made (and refused) from inside fsync closures.
    reentries: u64,
    /// Leader-writes: the highest LSN a successful flush reported.
    reported: u64,
    /// Leader-writes: flushes that reported no more than `reported` before them (no
    /// progress): each may fail its leader with `WriteZero`, nothing else may.
    stalls: u64,
    /// Leader-writes: calls that got `WriteZero`.
    write_zero: u64,
    /// Leader-writes: the highest LSN requested.
    requested: u64,
}

/// How one call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Ok,
    Err(io::ErrorKind, Option<i32>),
    Panicked,
}

struct Shared {
    scenario: Scenario,
    front: Front,
    log: Mutex<Log>,
}

fn bit_of_lsn(lsn: u64) -> u64 {
    1 << (lsn - 1)
}

/// Every record with an LSN at or below `lsn`.
fn lsns_up_to(lsn: u64) -> u64 {
    if lsn >= 64 {
        u64::MAX
    } else {
        (1 << lsn) - 1
    }
}

/// `ReentryRefused`: from inside a fsync closure, the same manager is called again.
fn reenter(shared: &Shared) {
    let inner_ran = Cell::new(false);
    let inner = || {
        inner_ran.set(true);
        Ok(())
    };
    let result = match &shared.front {
        Front::Manager(m) => m.fsync(inner),
        Front::Lsn(g) => {
            // The newest LSN: written, and not durable while this fsync runs.
            let lsn = shared.log.lock().unwrap().next_lsn;
            g.commit(lsn, inner)
        }
        Front::Flush(f) => {
            let lsn = shared.log.lock().unwrap().next_lsn;
            f.flush(lsn, |_| inner().map(|()| lsn)).map(drop)
        }
    };
    assert!(
        result.is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput) && !inner_ran.get(),
        "ReentryRefused: a call from inside the manager's own fsync closure was not refused"
    );
    shared.log.lock().unwrap().reentries += 1;
}

/// The fsync closure: models the disk (see [`Log`]).
fn fsync(shared: &Shared) -> io::Result<()> {
    flush(shared, None).map(drop)
}

/// The flush of the leader-writes front end, told its `target`: makes durable the
/// records up to the LSN it reports, as `Coverage` says.
fn flush_to(shared: &Shared, target: u64) -> io::Result<u64> {
    if let Some(durable) = shared.front.durable_lsn() {
        assert!(
            target > durable,
            "NoRedundantFsync: a flush started with target {target}, durable already {durable}"
        );
    }
    flush(shared, Some(target)).map(|covered| covered.expect("a flush reports"))
}

/// The disk: `target` is `Some` for the leader-writes front end, whose flush reports
/// how far it got.
fn flush(shared: &Shared, target: Option<u64>) -> io::Result<Option<u64>> {
    if shared.scenario.reenter {
        reenter(shared);
    }
    let (number, snapshot, written_lsn) = {
        let mut log = shared.log.lock().unwrap();
        assert!(
            !log.fsync_running,
            "AtMostOneFsync: an fsync started while another was running"
        );
        assert!(
            log.first_failure.is_none(),
            "NoOkAfterFailure: an fsync started after one had failed"
        );
        log.fsync_running = true;
        let number = log.fsyncs;
        log.fsyncs += 1;
        (number, log.written, log.next_lsn)
    };
    // The lock is released here: the fsync runs while other callers write and arrive.
    let mut log = shared.log.lock().unwrap();
    log.fsync_running = false;
    let failure = match shared.scenario.fault {
        Fault::Fail(n) if n == number => Some(FailureKind::Eio),
        Fault::Panic(n) if n == number => Some(FailureKind::Panic),
        _ => None,
    };
    match (failure, target) {
        (None, None) => {
            let lost = log.lost;
            log.durable |= snapshot & !lost;
            Ok(None)
        }
        (None, Some(target)) => {
            let covered = match shared.scenario.coverage {
                Coverage::Short(n) if n == number => target - 1,
                Coverage::Stale(n) if n == number => 0,
                Coverage::Beyond(n) if n == number => written_lsn,
                _ => target,
            };
            let lost = log.lost;
            log.durable |= snapshot & lsns_up_to(covered) & !lost;
            if covered <= log.reported {
                log.stalls += 1;
            }
            log.reported = log.reported.max(covered);
            Ok(Some(covered))
        }
        (Some(kind), _) => {
            // The kernel drops every dirty page: no later fsync can make them durable.
            let dirty = log.written & !log.durable;
            log.lost |= dirty;
            log.failed_fsyncs += 1;
            log.first_failure.get_or_insert(kind);
            drop(log);
            if kind == FailureKind::Panic {
                std::panic::panic_any(PLANTED_PANIC);
            }
            Err(io::Error::from_raw_os_error(EIO))
        }
    }
}

fn call(body: impl FnOnce() -> io::Result<()>) -> Outcome {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => Outcome::Ok,
        Ok(Err(error)) => Outcome::Err(error.kind(), error.raw_os_error()),
        Err(payload) => {
            let ours = payload.downcast_ref::<&str>() == Some(&PLANTED_PANIC);
            assert!(ours, "a call panicked with an unexpected payload");
            Outcome::Panicked
        }
    }
}

/// The checks after one call for record `bit` (and, LSN front end, `lsn`);
/// `after_failure` says whether the call started after one had returned the failure.
fn check(shared: &Shared, outcome: Outcome, bit: u64, lsn: Option<u64>, after_failure: bool) {
    let mut log = shared.log.lock().unwrap();
    match outcome {
        Outcome::Ok => {
            assert!(
                !after_failure,
                "NoOkAfterFailure: Ok for a call that started after another had returned the failure"
            );
            assert!(
                log.lost & bit == 0,
                "NoOkAfterFailure: Ok for a record that a failed fsync dropped"
            );
            assert!(
                log.durable & bit != 0,
                "FsyncBeforeReturn: Ok before an fsync that started after the write had completed"
            );
        }
        Outcome::Err(io::ErrorKind::WriteZero, None) => {
            // `FlushProgress`: only a leader whose flush made no progress gets this.
            log.write_zero += 1;
            assert!(
                log.write_zero <= log.stalls,
                "FlushProgress: WriteZero for {} calls, but only {} flushes made no progress",
                log.write_zero,
                log.stalls
            );
        }
        Outcome::Err(kind, raw) => match log.first_failure {
            None => panic!("NoOkAfterFailure: an Err with no failed fsync ({kind:?})"),
            Some(FailureKind::Eio) => assert_eq!(
                raw,
                Some(EIO),
                "ErrorPreserved: the error lost the errno of the failed fsync"
            ),
            Some(FailureKind::Panic) => assert_eq!(
                (kind, raw),
                (io::ErrorKind::Other, None),
                "ErrorPreserved: wrong error after a panicked fsync"
            ),
        },
        Outcome::Panicked => {}
    }
    if !matches!(
        outcome,
        Outcome::Ok | Outcome::Err(io::ErrorKind::WriteZero, None)
    ) {
        log.failure_returned = true;
    }
    if let (Some(durable), Some(lsn)) = (shared.front.durable_lsn(), lsn) {
        // Observed under the log's lock, so the observations are totally ordered.
        assert!(
            durable >= log.highest_durable_seen,
            "DurableMonotonic: durable_lsn went from {} down to {durable}",
            log.highest_durable_seen
        );
        log.highest_durable_seen = durable;
        assert!(
            lsns_up_to(durable) & !log.durable == 0,
            "DurableMonotonic: durable_lsn {durable} covers a record no fsync made durable"
        );
        if outcome == Outcome::Ok {
            assert!(
                durable >= lsn,
                "FsyncBeforeReturn: Ok for LSN {lsn} but durable_lsn is {durable}"
            );
        }
    }
}

/// One caller: write, make durable, check; returns how its calls ended.
fn caller(shared: &Shared, me: usize) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    match &shared.front {
        Front::Manager(m) => {
            let bit = 1 << me;
            let after_failure = {
                let mut log = shared.log.lock().unwrap();
                log.written |= bit;
                log.failure_returned
            };
            let outcome = call(|| m.fsync(|| fsync(shared)));
            check(shared, outcome, bit, None, after_failure);
            outcomes.push(outcome);
        }
        Front::Flush(f) => {
            let (lsn, after_failure) = {
                // The log buffer: records get their LSNs in order; no mark_written.
                let mut log = shared.log.lock().unwrap();
                log.next_lsn += 1;
                let lsn = log.next_lsn;
                log.written |= bit_of_lsn(lsn);
                log.requested = log.requested.max(lsn);
                (lsn, log.failure_returned)
            };
            let outcome = call(|| {
                let durable = f.flush(lsn, |target| flush_to(shared, target))?;
                assert!(
                    durable >= lsn,
                    "FsyncBeforeReturn: Ok({durable}) for LSN {lsn}"
                );
                Ok(())
            });
            check(shared, outcome, bit_of_lsn(lsn), Some(lsn), after_failure);
            outcomes.push(outcome);
        }
        Front::Lsn(g) if me < shared.scenario.prewritten => {
            // Written before the callers started (see `run`): LSN `me + 1`.
            let lsn = me as u64 + 1;
            let after_failure = shared.log.lock().unwrap().failure_returned;
            let outcome = call(|| g.commit(lsn, || fsync(shared)));
            check(shared, outcome, bit_of_lsn(lsn), Some(lsn), after_failure);
            outcomes.push(outcome);
        }
        Front::Lsn(g) => {
            let (lsn, after_failure) = {
                // The append lock: LSNs are marked written in order.
                let mut log = shared.log.lock().unwrap();
                log.next_lsn += 1;
                let lsn = log.next_lsn;
                log.written |= bit_of_lsn(lsn);
                g.mark_written(lsn).expect("LSNs are marked in order");
                (lsn, log.failure_returned)
            };
            let outcome = call(|| g.commit(lsn, || fsync(shared)));
            check(shared, outcome, bit_of_lsn(lsn), Some(lsn), after_failure);
            outcomes.push(outcome);
            if shared.scenario.recommit && outcome == Outcome::Ok {
                let ran = Cell::new(false);
                let after_failure = shared.log.lock().unwrap().failure_returned;
                let again = call(|| {
                    g.commit(lsn, || {
                        ran.set(true);
                        Ok(())
                    })
                });
                assert!(
                    !ran.get(),
                    "AtMostOneFsync: a commit of an already durable LSN ran an fsync"
                );
                assert_ne!(again, Outcome::Panicked);
                check(shared, again, bit_of_lsn(lsn), Some(lsn), after_failure);
                outcomes.push(again);
            }
        }
    }
    outcomes
}

fn run(scenario: Scenario) {
    assert!((1..=63).contains(&scenario.callers));
    let front = match scenario.api {
        Api::Manager => Front::Manager(match scenario.gather {
            // The reference constructor, as users of the drop-in call it.
            Gather::Fixed => FsyncManager::new(2, 1),
            _ => FsyncManager::with_config(scenario.config()),
        }),
        Api::Lsn => Front::Lsn(GroupCommit::new(scenario.config())),
        Api::Flush => Front::Flush(GroupFlush::new(scenario.config())),
    };
    let shared = Arc::new(Shared {
        scenario,
        front,
        log: Mutex::new(Log::default()),
    });
    if let Front::Lsn(g) = &shared.front {
        let mut log = shared.log.lock().unwrap();
        for _ in 0..scenario.prewritten.min(scenario.callers) {
            log.next_lsn += 1;
            log.written |= bit_of_lsn(log.next_lsn);
            g.mark_written(log.next_lsn)
                .expect("LSNs are marked in order");
        }
    }
    let others: Vec<_> = (1..scenario.callers)
        .map(|me| {
            let shared = Arc::clone(&shared);
            model::thread::spawn(move || caller(&shared, me))
        })
        .collect();
    let mut outcomes = caller(&shared, 0);
    for other in others {
        outcomes.extend(other.join().expect("callers catch their panics"));
    }
    check_stats(&shared, &outcomes);
    check_end_state(&shared);
}

/// `EndState`: with every caller joined, the accessors agree with what happened, and
/// bad input is refused without an fsync (single-threaded: no interleavings added).
fn check_end_state(shared: &Shared) {
    let log = shared.log.lock().unwrap();
    let (failure, config) = match &shared.front {
        Front::Manager(m) => (m.failure(), m.config()),
        Front::Lsn(g) => (g.failure(), g.config()),
        Front::Flush(f) => (f.failure(), f.config()),
    };
    assert_eq!(
        config.gathering(),
        shared.scenario.config().gathering(),
        "EndState: config()"
    );
    match (log.first_failure, failure) {
        (None, None) => {}
        (Some(FailureKind::Eio), Some(f)) => assert_eq!(
            (f.kind(), f.raw_os_error()),
            (io::Error::from_raw_os_error(EIO).kind(), Some(EIO)),
            "ErrorPreserved: failure()"
        ),
        (Some(FailureKind::Panic), Some(f)) => assert_eq!(
            (f.kind(), f.raw_os_error()),
            (io::ErrorKind::Other, None),
            "ErrorPreserved: failure() after a panic"
        ),
        (expected, got) => panic!("EndState: failure() is {got:?}, expected {expected:?}"),
    }
    if let Front::Flush(f) = &shared.front {
        // A call raised the requested LSN unless its LSN was durable already.
        let (requested, durable) = (f.requested_lsn(), f.durable_lsn());
        assert!(
            requested <= log.requested && requested.max(durable) >= log.requested,
            "EndState: requested_lsn() {requested}, durable {durable}, highest asked {}",
            log.requested
        );
        return;
    }
    let Front::Lsn(g) = &shared.front else {
        return;
    };
    let written = g.written_lsn();
    assert_eq!(written, log.next_lsn, "EndState: written_lsn()");
    drop(log);
    let refused = |result: io::Result<()>| {
        result.is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput && e.raw_os_error().is_none())
    };
    // Marking the written LSN again is allowed; going back is not.
    g.mark_written(written)
        .expect("EndState: marking the written LSN again is refused");
    if written > 0 {
        assert!(
            refused(g.mark_written(written - 1)),
            "EndState: a written LSN going backwards is accepted"
        );
    }
    let before = g.stats();
    let ran = Cell::new(false);
    let beyond = g.commit(written + 1, || {
        ran.set(true);
        Ok(())
    });
    assert!(
        refused(beyond) && !ran.get(),
        "EndState: a commit beyond the written LSN is not refused, or ran an fsync"
    );
    let after = g.stats();
    assert_eq!(
        (after.requests, after.failed_requests, after.fsyncs),
        (
            before.requests + 1,
            before.failed_requests + 1,
            before.fsyncs
        ),
        "StatsExact: a refused commit"
    );
}

/// `StatsExact`: the counters equal what the harness saw happen.
fn check_stats(shared: &Shared, outcomes: &[Outcome]) {
    let stats = shared.front.stats();
    let log = shared.log.lock().unwrap();
    let count = |f: fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count() as u64;
    let oks = count(|o| matches!(o, Outcome::Ok));
    let errs = count(|o| matches!(o, Outcome::Err(..)));
    let panics = count(|o| matches!(o, Outcome::Panicked));
    let why = format!(
        "StatsExact: {stats:?}; ok {oks}, err {errs}, panicked {panics}, fsyncs {}, failed {}",
        log.fsyncs, log.failed_fsyncs
    );
    assert_eq!(
        stats.requests,
        outcomes.len() as u64 + log.reentries,
        "{why}"
    );
    assert_eq!(stats.fsyncs, log.fsyncs, "{why}");
    assert_eq!(stats.failed_fsyncs, log.failed_fsyncs, "{why}");
    assert_eq!(
        panics,
        u64::from(log.first_failure == Some(FailureKind::Panic)),
        "{why}"
    );
    assert_eq!(stats.served + stats.already_durable, oks, "{why}");
    assert_eq!(
        stats.failed_requests,
        errs + panics + log.reentries,
        "{why}"
    );
    if shared.scenario.reenter {
        assert_eq!(log.reentries, log.fsyncs, "ReentryRefused: {why}");
    }
    assert_eq!(stats.waiting, 0, "{why}");
    if shared.scenario.api == Api::Flush {
        // Flushes that reported less than their target, and LSNs made durable.
        assert_eq!(stats.covered, log.reported, "{why}");
    }
    if shared.scenario.api == Api::Manager {
        // Each call is a new write: it can never be durable already.
        assert_eq!(stats.already_durable, 0, "{why}");
    }
    // `served` sums the group sizes of the successful fsyncs, and the requeued waiters
    // found durable when they decided again.
    let successful = stats.fsyncs - stats.failed_fsyncs;
    assert!(stats.group_commits <= successful, "{why}");
    assert!(
        stats.served <= successful * stats.largest_group + stats.requeued,
        "{why}"
    );
    if shared.scenario.api == Api::Flush {
        // A flush that covers less than its leader's LSN may serve nobody.
        assert!(stats.served >= 2 * stats.group_commits, "{why}");
    } else {
        assert_eq!(stats.requeued, 0, "{why}");
        // Every successful fsync serves at least its leader.
        let extra = stats.served - successful.min(stats.served);
        assert!(stats.served >= successful, "{why}");
        assert!(extra >= stats.group_commits, "{why}");
        assert_eq!(extra > 0, stats.group_commits > 0, "{why}");
        if successful > 0 {
            assert!(stats.largest_group >= 1, "{why}");
            assert!(
                stats.largest_group + (successful - 1) <= stats.served,
                "{why}"
            );
        } else {
            assert_eq!(stats.largest_group, 0, "{why}");
        }
    }
    let fired = fired_choices();
    // Checked first: a busy wait also miscounts timeouts, but this names the cause.
    let justified = outcomes.len() as u64
        + stats.hand_offs
        + stats.requeued
        + u64::from(fired.deadlines + fired.spurious);
    assert!(
        u64::from(fired.waits) <= justified,
        "WaitsBounded: {} waits for {} calls, {} hand-offs, {} requeued, {} deadlines \
         passed, {} spurious wake-ups",
        fired.waits,
        outcomes.len(),
        stats.hand_offs,
        stats.requeued,
        fired.deadlines,
        fired.spurious
    );
    // A deadline choice fires only at a waiter's timed wait, and the waiter counts each
    // one; gathering deadlines are not choices and not timeouts.
    assert_eq!(
        stats.timeouts,
        u64::from(fired.deadlines),
        "{why}; deadline choices fired {}",
        fired.deadlines
    );
    if shared.scenario.deadlines_never_pass() {
        assert_eq!(stats.timeouts, 0, "{why}");
    }
}

/// The properties every execution of `api` checks, for the checkers' summary lines.
pub fn properties(api: Api) -> &'static str {
    match api {
        Api::Manager => {
            "FsyncBeforeReturn NoOkAfterFailure ErrorPreserved AtMostOneFsync StatsExact WaitsBounded ReentryRefused EndState held, no deadlock"
        }
        Api::Lsn => {
            "FsyncBeforeReturn NoOkAfterFailure ErrorPreserved DurableMonotonic AtMostOneFsync StatsExact WaitsBounded ReentryRefused EndState held, no deadlock"
        }
        Api::Flush => {
            "FsyncBeforeReturn NoOkAfterFailure ErrorPreserved DurableMonotonic AtMostOneFsync NoRedundantFsync FlushProgress StatsExact WaitsBounded ReentryRefused EndState held, no deadlock"
        }
    }
}

/// Drops the report of the planted panic (expected, and caught) from the panic hook, so
/// checker output stays readable; every other panic is reported as before. Call it
/// after the checker has installed its own hook.
pub fn quiet_planted_panics() {
    static QUIET: Once = Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PLANTED_PANIC) {
                previous(info);
            }
        }));
    });
}
