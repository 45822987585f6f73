//! Shuttle runs the crate's own protocol code under random and PCT schedules, with 4 to 8
//! calling threads, through both front ends; every execution runs the checks of
//! `model_harness`.
//!
//! Run: `cargo test --release --features shuttle --test shuttle -- --nocapture`.
//! Each test runs `GC_SHUTTLE_ITERATIONS` schedules (default 250,000; four tests, so
//! 1,000,000 a run); `GC_SHUTTLE_PCT_DEPTH` sets PCT's depth (default 3).
//!
//! Each execution draws its scenario from shuttle's seeded randomness, so a schedule
//! replays it exactly: the number of threads (4 to 8), the fault (none, or fsync number
//! 0-2 fails with EIO or panics), the gathering policy (off, fixed, adaptive), the chance
//! that a waiter's wait sees its deadline pass (0 in half the executions: then a lost
//! hand-off deadlocks, and shuttle reports it) and the chance of a spurious wake-up, and
//! for the LSN front end whether callers commit their LSN again once it is durable.
//!
//! # Replaying a failure
//!
//! A failing test prints the scenario it drew and shuttle's schedule:
//!
//! ```text
//! failing schedule:
//! "
//! 91022cf2e8a3b6c70b0000000000...
//! "
//! pass that string to `shuttle::replay` to replay the failure
//! ```
//!
//! Replay it with the `replay` test below, naming the front end of the failing test
//! (`manager` or `lsn`); the schedule may also be a file holding it:
//!
//! ```text
//! GC_SHUTTLE_REPLAY=91022cf2e8a3b6c70b0000000000... GC_SHUTTLE_REPLAY_API=manager \
//!     cargo test --release --features shuttle --test shuttle replay -- --nocapture
//! ```
//!
//! which calls `shuttle::replay(move || execution(api, &tally), schedule)` (or
//! `shuttle::replay_from_file`) with the same body the failing test ran.

#![cfg(all(feature = "shuttle", not(feature = "loom")))]

mod model_harness;

use model_harness::{Api, Coverage, Fault, Gather, Scenario};
use shuttle::rand::{thread_rng, Rng};
use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Schedules per test.
fn iterations() -> usize {
    env_number("GC_SHUTTLE_ITERATIONS").unwrap_or(250_000)
}

fn pct_depth() -> usize {
    env_number("GC_SHUTTLE_PCT_DEPTH").unwrap_or(3)
}

fn env_number(name: &str) -> Option<usize> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {value:?}")),
    )
}

/// The probabilities a wait's deadline passes, or it wakes spuriously, when not 0.
const CHANCES: [f64; 3] = [0.05, 0.2, 0.5];

/// What the executions of one test drew.
#[derive(Default)]
struct Tally {
    executions: AtomicU64,
    threads: [AtomicU64; 9],
    failing: AtomicU64,
    panicking: AtomicU64,
    gathering: AtomicU64,
    deadlines: AtomicU64,
    spurious: AtomicU64,
    recommit: AtomicU64,
    reenter: AtomicU64,
    coverage: AtomicU64,
}

thread_local! {
    // The scenario of the execution under way (shuttle runs every task on the thread
    // that started it), printed if the test fails.
    static CURRENT: Cell<Option<Scenario>> = const { Cell::new(None) };
}

/// Draws a scenario from shuttle's randomness (so a schedule replays it).
fn draw(api: Api) -> Scenario {
    let mut rng = thread_rng();
    let mut scenario = Scenario::new(api, rng.gen_range(4..=8));
    scenario = match rng.gen_range(0..4) {
        0 => scenario.fault(Fault::Fail(rng.gen_range(0..3))),
        1 => scenario.fault(Fault::Panic(rng.gen_range(0..3))),
        _ => scenario,
    };
    scenario = match rng.gen_range(0..4) {
        0 => scenario.gather(Gather::Fixed),
        1 => scenario.gather(Gather::Adaptive),
        _ => scenario,
    };
    let mut chance = || {
        if rng.gen_bool(0.5) {
            0.0
        } else {
            CHANCES[rng.gen_range(0..CHANCES.len())]
        }
    };
    scenario = scenario.chances(chance(), chance());
    if api == Api::Lsn && rng.gen_bool(0.5) {
        scenario = scenario.recommit();
    }
    if rng.gen_bool(0.125) {
        scenario = scenario.reenter();
    }
    if api == Api::Flush {
        // How far the flushes get: drawn per scenario, for one of the first three.
        let n = rng.gen_range(0..3);
        scenario = scenario.coverage(match rng.gen_range(0..5) {
            0 => Coverage::Short(n),
            1 => Coverage::Stale(n),
            2 => Coverage::Beyond(n),
            _ => Coverage::Target,
        });
    }
    scenario
}

/// One execution: the body every test (and a replay) gives shuttle.
fn execution(api: Api, tally: &Tally) {
    // Installed here, after shuttle's own hook, so that it runs first.
    model_harness::quiet_planted_panics();
    let scenario = draw(api);
    CURRENT.with(|current| current.set(Some(scenario)));
    let count = |counter: &AtomicU64, yes: bool| {
        counter.fetch_add(u64::from(yes), Ordering::Relaxed);
    };
    count(&tally.executions, true);
    count(&tally.threads[scenario.callers], true);
    count(&tally.failing, matches!(scenario.fault, Fault::Fail(_)));
    count(&tally.panicking, matches!(scenario.fault, Fault::Panic(_)));
    count(&tally.gathering, scenario.gather != Gather::Off);
    count(
        &tally.deadlines,
        scenario.choices.deadline_probability > 0.0,
    );
    count(&tally.spurious, scenario.choices.spurious_probability > 0.0);
    count(&tally.recommit, scenario.recommit);
    count(&tally.reenter, scenario.reenter);
    count(&tally.coverage, scenario.coverage != Coverage::Target);
    scenario.execute();
}

/// Prints the scenario of the failing execution, and its number, when a test fails.
struct ReportScenario(Arc<Tally>);

impl Drop for ReportScenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            if let Some(scenario) = CURRENT.with(Cell::get) {
                let schedule = self.0.executions.load(Ordering::Relaxed);
                eprintln!("shuttle: failed at schedule {schedule} of {scenario:?}");
            }
        }
    }
}

fn explore(name: &str, api: Api, scheduler: impl Scheduler + 'static, how: &str) {
    let tally = Arc::new(Tally::default());
    let body = Arc::clone(&tally);
    let report = ReportScenario(Arc::clone(&tally));
    let runner = shuttle::Runner::new(scheduler, shuttle::Config::default());
    let schedules = runner.run(move || execution(api, &body));
    drop(report);
    let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let threads: Vec<String> = (4..=8).map(|t| n(&tally.threads[t]).to_string()).collect();
    let recommit = match api {
        Api::Lsn => format!(", recommit {}", n(&tally.recommit)),
        Api::Manager => String::new(),
        Api::Flush => format!(
            ", flushes covering less, stale or more {}",
            n(&tally.coverage)
        ),
    };
    println!(
        "verify: shuttle {name}, {how}, {schedules} schedules, 4-8 threads ({}), \
         fsync fails {} / panics {}, gathering {}, deadlines passing {}, spurious wake-ups {}, \
         re-entrant calls {}{recommit}: {}",
        threads.join("/"),
        n(&tally.failing),
        n(&tally.panicking),
        n(&tally.gathering),
        n(&tally.deadlines),
        n(&tally.spurious),
        n(&tally.reenter),
        model_harness::properties(api),
    );
    assert_eq!(schedules as u64, n(&tally.executions));
}

fn random(name: &str, api: Api) {
    let iterations = iterations();
    explore(name, api, RandomScheduler::new(iterations), "random");
}

fn pct(name: &str, api: Api) {
    let (iterations, depth) = (iterations(), pct_depth());
    let how = format!("PCT depth {depth}");
    explore(name, api, PctScheduler::new(depth, iterations), &how);
}

#[test]
fn manager_random() {
    random("manager", Api::Manager);
}

#[test]
fn manager_pct() {
    pct("manager", Api::Manager);
}

#[test]
fn lsn_random() {
    random("lsn", Api::Lsn);
}

#[test]
fn lsn_pct() {
    pct("lsn", Api::Lsn);
}

#[test]
fn flush_random() {
    random("flush", Api::Flush);
}

#[test]
fn flush_pct() {
    pct("flush", Api::Flush);
}

/// Replays a printed schedule (see the module documentation); does nothing unless
/// `GC_SHUTTLE_REPLAY` is set.
#[test]
fn replay() {
    let Ok(schedule) = std::env::var("GC_SHUTTLE_REPLAY") else {
        return;
    };
    let api = match std::env::var("GC_SHUTTLE_REPLAY_API").as_deref() {
        Ok("manager") => Api::Manager,
        Ok("lsn") => Api::Lsn,
        Ok("flush") => Api::Flush,
        other => panic!("set GC_SHUTTLE_REPLAY_API to manager, lsn or flush, not {other:?}"),
    };
    let tally = Arc::new(Tally::default());
    let report = ReportScenario(Arc::clone(&tally));
    if std::path::Path::new(&schedule).is_file() {
        shuttle::replay_from_file(move || execution(api, &tally), &schedule);
    } else {
        shuttle::replay(move || execution(api, &tally), schedule.trim());
    }
    drop(report);
    println!("shuttle: the schedule replayed without a failure");
}

/// An adopter's own shuttle test builds a manager inside `shuttle::check_*` and nothing
/// else: the manager must run on shuttle's primitives, and outside on std's.
#[test]
fn adopter_tests_need_no_within_model() {
    use group_commit::GroupFlush;
    shuttle::check_random(
        || {
            let log = Arc::new(GroupFlush::new(group_commit::Config::default()));
            assert!(
                log.uses_checker_primitives(),
                "a manager built inside a shuttle test uses std primitives"
            );
            let other = {
                let log = Arc::clone(&log);
                shuttle::thread::spawn(move || log.flush(2, Ok))
            };
            log.flush(1, Ok).unwrap();
            assert!(other.join().unwrap().unwrap() >= 2);
        },
        1_000,
    );
    assert!(!GroupFlush::new(group_commit::Config::default()).uses_checker_primitives());
}
