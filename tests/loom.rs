//! Loom explores the crate's own protocol code, exhaustively within a preemption bound,
//! through both front ends; every execution runs the checks of `model_harness`.
//!
//! Run: `cargo test --release --features loom --test loom -- --nocapture`; each test
//! prints one `verify: ` line with its bound, modes and executions. `GC_MODEL_FULL=1`
//! raises the bounds (see `docs/verification.md` for both sets of figures),
//! `GC_BOUND=n` sets them, `GC_MODEL_VERBOSE=1` prints each mode's executions.
//!
//! Threads are calling threads, the test's main thread included (loom allows 5 in all).
//! A waiter's deadline passing and a spurious wake-up are the checker's choices, set per
//! run by masks: bit `i` applies to the `i`-th waiter wait of an execution. With no bit
//! set no deadline ever passes, so a hand-off that relies on the timeout deadlocks, and
//! loom reports it.

#![cfg(feature = "loom")]

mod model_harness;

use model_harness::{Api, Coverage, Fault, Gather, Scenario};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

fn full() -> bool {
    std::env::var_os("GC_MODEL_FULL").is_some_and(|v| v != "0")
}

/// The preemption bound for `callers` threads.
fn bound(callers: usize) -> usize {
    match (callers, full()) {
        (..=3, false) => 3,
        (_, false) => 2,
        (..=2, true) => 6,
        (3, true) => 4,
        (_, true) => 3,
    }
}

fn verbose() -> bool {
    std::env::var_os("GC_MODEL_VERBOSE").is_some_and(|v| v != "0")
}

/// Prints the scenario being explored, and which of its executions failed, if loom
/// reports a failure in it.
struct ReportScenario(Scenario, Arc<AtomicUsize>);

impl Drop for ReportScenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let execution = self.1.load(Ordering::Relaxed);
            eprintln!("loom: failed at execution {execution} of {:?}", self.0);
        }
    }
}

/// Explores `scenario` exhaustively within `bound` preemptions; returns the number of
/// executions.
fn explore(scenario: Scenario, bound: usize) -> usize {
    let executions = Arc::new(AtomicUsize::new(0));
    let report = ReportScenario(scenario, Arc::clone(&executions));
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    let counter = Arc::clone(&executions);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        scenario.execute();
    });
    drop(report);
    let executions = executions.load(Ordering::Relaxed);
    if verbose() {
        println!("loom: {scenario:?}, preemption bound {bound}: {executions} executions");
    }
    executions
}

/// What the modes of a run cover, in a few words.
fn describe(scenarios: &[Scenario]) -> String {
    let count = |f: &dyn Fn(&Scenario) -> bool| scenarios.iter().filter(|s| f(s)).count();
    format!(
        "{} modes (deadlines passing {}, spurious wake-ups {}, failing fsync {}, \
         panicking fsync {}, gathering {}, recommit {}, re-entrant calls {}, prewritten {})",
        scenarios.len(),
        count(&|s| s.choices.deadline_mask != 0),
        count(&|s| s.choices.spurious_mask != 0),
        count(&|s| matches!(s.fault, Fault::Fail(_))),
        count(&|s| matches!(s.fault, Fault::Panic(_))),
        count(&|s| s.gather != Gather::Off),
        count(&|s| s.recommit),
        count(&|s| s.reenter),
        count(&|s| s.prewritten > 0),
    )
}

fn explore_all(name: &str, scenarios: &[Scenario]) {
    model_harness::quiet_planted_panics();
    let (api, callers) = (scenarios[0].api, scenarios[0].callers);
    // GC_BOUND overrides the bound, to find the smallest one that shows a failure.
    let bound = std::env::var("GC_BOUND")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or_else(|| bound(callers));
    let total: usize = scenarios.iter().map(|s| explore(*s, bound)).sum();
    println!(
        "verify: loom {name}, {callers} threads, preemption bound {bound}, {}, \
         {total} executions: {}",
        describe(scenarios),
        model_harness::properties(api),
    );
}

/// Deadline masks: the first wait, the second, the first two, the first three.
const DEADLINES: [u64; 4] = [0b1, 0b10, 0b11, 0b111];
/// Spurious wake-up masks.
const SPURIOUS: [u64; 3] = [0b1, 0b10, 0b101];

/// Every mode for `callers` threads of `api`.
fn modes(api: Api, callers: usize) -> Vec<Scenario> {
    let base = Scenario::new(api, callers);
    let mut all = vec![base];
    all.extend(DEADLINES.iter().map(|&m| base.deadlines(m)));
    all.extend(SPURIOUS.iter().map(|&m| base.spurious(m)));
    for n in 0..callers.min(2) as u64 {
        all.push(base.fault(Fault::Fail(n)));
        all.push(base.fault(Fault::Panic(n)));
    }
    // A failure seen by a waiter that timed out, or woke spuriously.
    all.push(base.fault(Fault::Fail(0)).deadlines(0b1));
    all.push(base.fault(Fault::Fail(0)).spurious(0b1));
    all.push(base.gather(Gather::Fixed));
    all.push(base.gather(Gather::Adaptive));
    all.push(base.gather(Gather::Fixed).deadlines(0b1));
    all.push(base.reenter());
    all.push(base.reenter().fault(Fault::Fail(1)));
    if api == Api::Flush {
        all.extend([
            base.coverage(Coverage::Short(0)),
            base.coverage(Coverage::Short(1)),
            base.coverage(Coverage::Stale(0)),
            base.coverage(Coverage::Stale(1)),
            base.coverage(Coverage::Beyond(0)),
            base.coverage(Coverage::Short(0)).fault(Fault::Fail(1)),
            base.coverage(Coverage::Short(0)).deadlines(0b1),
        ]);
    }
    if api == Api::Lsn {
        all.push(base.recommit());
        all.push(base.recommit().fault(Fault::Fail(0)));
        // A durable LSN committed again after a later fsync failed: refused.
        all.push(base.recommit().fault(Fault::Fail(1)));
        // All but the last caller ride the first fsync; a rider times out before its
        // signal arrives, after the last caller's fsync failed: it must still get Ok.
        all.push(
            base.prewritten(callers - 1)
                .fault(Fault::Fail(1))
                .deadlines(0b1),
        );
    }
    all
}

/// Fewer modes for 4 threads, where each run costs more.
fn modes4(api: Api) -> Vec<Scenario> {
    let base = Scenario::new(api, 4);
    let mut all = vec![
        base,
        base.deadlines(0b1),
        base.deadlines(0b10),
        base.spurious(0b1),
        base.fault(Fault::Fail(0)),
        base.fault(Fault::Fail(1)),
        base.fault(Fault::Panic(0)),
        base.gather(Gather::Fixed),
    ];
    if api == Api::Lsn {
        all.push(base.recommit());
    }
    if full() {
        all.extend([
            base.deadlines(0b11),
            base.spurious(0b10),
            base.fault(Fault::Panic(1)),
        ]);
    }
    all
}

#[test]
fn manager_2_threads() {
    explore_all("manager", &modes(Api::Manager, 2));
}

#[test]
fn manager_3_threads() {
    explore_all("manager", &modes(Api::Manager, 3));
}

#[test]
fn manager_4_threads() {
    explore_all("manager", &modes4(Api::Manager));
}

#[test]
fn lsn_2_threads() {
    explore_all("lsn", &modes(Api::Lsn, 2));
}

#[test]
fn lsn_3_threads() {
    explore_all("lsn", &modes(Api::Lsn, 3));
}

#[test]
fn flush_2_threads() {
    explore_all("flush", &modes(Api::Flush, 2));
}

#[test]
fn flush_3_threads() {
    explore_all("flush", &modes(Api::Flush, 3));
}

#[test]
fn lsn_4_threads() {
    explore_all("lsn", &modes4(Api::Lsn));
}

#[test]
fn flush_4_threads() {
    let base = Scenario::new(Api::Flush, 4);
    explore_all(
        "flush",
        &[
            base,
            base.coverage(Coverage::Short(0)),
            base.coverage(Coverage::Stale(1)),
            base.fault(Fault::Fail(0)),
        ],
    );
}

/// An adopter's own loom test builds a manager inside `loom::model` and nothing else:
/// the manager must run on loom's primitives (std's would hide every interleaving of
/// the protocol from loom, or block the model's one OS thread), and outside a model on
/// std's.
#[test]
fn adopter_tests_need_no_within_model() {
    use group_commit::FsyncManager;
    loom::model(|| {
        let manager = Arc::new(FsyncManager::new(0, 0));
        assert!(
            manager.uses_checker_primitives(),
            "a manager built inside loom::model uses std primitives"
        );
        let other = {
            let manager = Arc::clone(&manager);
            loom::thread::spawn(move || manager.fsync(|| Ok(())))
        };
        manager.fsync(|| Ok(())).unwrap();
        other.join().unwrap().unwrap();
        assert_eq!(manager.stats().requests, 2);
    });
    assert!(!FsyncManager::new(0, 0).uses_checker_primitives());
}
