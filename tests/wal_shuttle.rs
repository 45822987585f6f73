//! Shuttle runs the write-ahead log of `examples/wal/log.rs` (the module the example
//! runs, with shuttle's mutex and condition variable as its append lock) on the simulated
//! device, under random and PCT schedules: 2 to 4 committer threads, segments of one to
//! three records (so flushes roll over to new segments), power cuts at any device
//! operation, failing syncs and writes, two lives and three recoveries per execution.
//! Every execution runs the checks of `wal_harness`.
//!
//! Run: `cargo test --release --features shuttle --test wal_shuttle -- --nocapture`.
//! Each test runs `GC_WAL_SHUTTLE_ITERATIONS` schedules (default 100,000);
//! `GC_SHUTTLE_PCT_DEPTH` sets PCT's depth (default 3).
//!
//! Each execution draws its scenario from shuttle's seeded randomness, so a schedule
//! replays it exactly. A failing test prints the scenario and shuttle's schedule;
//! replay it with the `replay` test (the schedule may also be a file holding it):
//!
//! ```text
//! GC_WAL_REPLAY=91022cf2e8a3b6c70b0000000000... \
//!     cargo test --release --features shuttle --test wal_shuttle replay -- --nocapture
//! ```

#![cfg(all(feature = "shuttle", not(feature = "loom")))]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;
mod wal_harness;

use group_commit::ModelChoices;
use shuttle::rand::{thread_rng, Rng};
use shuttle::scheduler::{PctScheduler, RandomScheduler, Scheduler};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wal_harness::{LifePlan, Scenario, Tally, LIVES, MAX_COMMITTERS, PROPERTIES};

/// Schedules per test.
fn iterations() -> usize {
    env_number("GC_WAL_SHUTTLE_ITERATIONS").unwrap_or(100_000)
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

thread_local! {
    // The scenario of the execution under way (shuttle runs every task on the thread
    // that started it), printed if the test fails.
    static CURRENT: Cell<Option<Scenario>> = const { Cell::new(None) };
}

/// Draws a scenario from shuttle's randomness (so a schedule replays it).
fn draw() -> Scenario {
    let mut rng = thread_rng();
    let committers = rng.gen_range(2..=MAX_COMMITTERS);
    let records = rng.gen_range(1..=2);
    // Device operations in a life, about: the recovery's cut, syncs and segment 0, then
    // per record a write, a sync, and a rollover's creation, header and two syncs.
    let ops = 6 + 4 * u64::from(committers * records);
    let mut lives = [None; LIVES];
    for life in &mut lives {
        *life = Some(LifePlan {
            cut_after: rng.gen_bool(0.8).then(|| rng.gen_range(0..=ops)),
            failing_sync: rng.gen_bool(0.15).then(|| rng.gen_range(0..4)),
            failing_write: rng.gen_bool(0.1).then(|| rng.gen_range(0..4)),
        });
    }
    let mut chance = || {
        if rng.gen_bool(0.5) {
            0.0
        } else {
            [0.1, 0.3][rng.gen_range(0..2)]
        }
    };
    let choices = ModelChoices {
        deadline_probability: chance(),
        spurious_probability: chance(),
        ..ModelChoices::default()
    };
    Scenario {
        committers,
        records,
        varied_lengths: rng.gen_bool(0.5),
        gathering: rng.gen_bool(0.25),
        // Records of 32 to 44 bytes after a 32-byte segment header: 80 holds one, 112
        // two or three (with a segment's end unused when the next does not fit).
        segment_bytes: [80, 112][rng.gen_range(0..2)],
        seed: rng.gen(),
        lives,
        choices,
    }
}

/// One execution: the body every test (and a replay) gives shuttle.
fn execution(tally: &Tally) {
    let scenario = draw();
    CURRENT.with(|current| current.set(Some(scenario)));
    scenario.execute(tally);
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

fn explore(scheduler: impl Scheduler + 'static, how: &str) {
    let tally = Arc::new(Tally::default());
    let body = Arc::clone(&tally);
    let report = ReportScenario(Arc::clone(&tally));
    let runner = shuttle::Runner::new(scheduler, shuttle::Config::default());
    let schedules = runner.run(move || execution(&body));
    drop(report);
    let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let committers: Vec<String> = (2..=MAX_COMMITTERS as usize)
        .map(|c| n(&tally.committers[c]).to_string())
        .collect();
    println!(
        "verify: wal shuttle, {how}, {schedules} schedules, 2-4 committers ({}), {LIVES} \
         lives each: {} crashes ({} during recovery), {} records acknowledged, {} \
         acknowledged records found intact in {} crash images; {} segments created, {} \
         flushes again after a hole; volatile operations kept {} / dropped {} / torn {}; \
         {} syncs and {} writes failed: {PROPERTIES}",
        committers.join("/"),
        n(&tally.crashes),
        n(&tally.crashes_in_recovery),
        n(&tally.records_acknowledged),
        n(&tally.acknowledged_checked),
        n(&tally.images_checked),
        n(&tally.segments_created),
        n(&tally.hole_waits),
        n(&tally.kept),
        n(&tally.dropped),
        n(&tally.torn),
        n(&tally.failed_syncs),
        n(&tally.failed_writes),
    );
    assert_eq!(schedules as u64, n(&tally.executions));
}

#[test]
fn wal_random() {
    explore(RandomScheduler::new(iterations()), "random");
}

#[test]
fn wal_pct() {
    let depth = pct_depth();
    let how = format!("PCT depth {depth}");
    explore(PctScheduler::new(depth, iterations()), &how);
}

/// Replays a printed schedule (see the module documentation); does nothing unless
/// `GC_WAL_REPLAY` is set.
#[test]
fn replay() {
    let Ok(schedule) = std::env::var("GC_WAL_REPLAY") else {
        return;
    };
    let tally = Arc::new(Tally::default());
    let report = ReportScenario(Arc::clone(&tally));
    if std::path::Path::new(&schedule).is_file() {
        shuttle::replay_from_file(move || execution(&tally), &schedule);
    } else {
        shuttle::replay(move || execution(&tally), schedule.trim());
    }
    drop(report);
    println!("shuttle: the schedule replayed without a failure");
}
