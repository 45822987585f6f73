//! Loom explores the write-ahead log of `examples/wal/log.rs` (with loom's mutex and
//! condition variable as its append lock) on the simulated device, exhaustively within a
//! preemption bound: two committer threads with one record each in several modes (where
//! the power goes out, which sync fails, two lives), then two with two records, and three
//! with one. Segments hold one record each: the second record rolls over to segment 1
//! (creation, header, sync, directory sync) in every execution. Every execution runs the
//! checks of `wal_harness`.
//!
//! Run: `cargo test --release --features loom --test wal_loom -- --nocapture`.
//! Preemption bound 3 with two committers in one life, 2 with three committers or two
//! lives (at bound 3 those take minutes); `GC_BOUND=n` sets every mode's. `GC_MODEL_VERBOSE=1` prints each
//! mode's executions. A failure prints the mode and the number of the failing execution.

#![cfg(feature = "loom")]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;
mod wal_harness;

use group_commit::ModelChoices;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use wal_harness::{LifePlan, Scenario, Tally, PROPERTIES};

/// The preemption bound of a mode: 3 for two committers in one life, 2 for three
/// committers or two lives (each life's interleavings multiply the other's).
fn bound(scenario: &Scenario) -> usize {
    match std::env::var("GC_BOUND") {
        Ok(v) => v.parse().expect("GC_BOUND must be a number"),
        Err(_) if scenario.committers <= 2 && scenario.lives[1].is_none() => 3,
        Err(_) => 2,
    }
}

fn verbose() -> bool {
    std::env::var_os("GC_MODEL_VERBOSE").is_some_and(|v| v != "0")
}

const fn life(cut_after: Option<u64>, failing_sync: Option<u64>) -> Option<LifePlan> {
    Some(LifePlan {
        cut_after,
        failing_sync,
        failing_write: None,
    })
}

const fn scenario(first: Option<LifePlan>, second: Option<LifePlan>) -> Scenario {
    sized(2, 1, first, second)
}

const fn sized(
    committers: u32,
    records: u32,
    first: Option<LifePlan>,
    second: Option<LifePlan>,
) -> Scenario {
    Scenario {
        committers,
        records,
        varied_lengths: false,
        gathering: false,
        // 32-byte header + one 32-byte record: the next record starts a segment.
        segment_bytes: 80,
        seed: 1,
        lives: [first, second],
        choices: ModelChoices {
            deadline_mask: 0,
            spurious_mask: 0,
            deadline_probability: 0.0,
            spurious_probability: 0.0,
        },
    }
}

/// The modes of two committers with one record each. Device operations of a first
/// life: the recovery makes segment 0 (0: create, 1: header, 2: sync, 3: directory sync);
/// then the flushes: the first record's write and sync of segment 0, and the second
/// record's rollover (create segment 1, its header, its sync, the directory sync), its
/// write and the sync of segment 1, in an order the schedule decides (one flush may
/// carry both records).
fn modes() -> Vec<Scenario> {
    vec![
        // The power goes out once both committers are done.
        scenario(life(None, None), None),
        // ... after the recovery and one, three or five more operations: a flush's
        // write, a rollover under way, a rollover's directory sync.
        scenario(life(Some(5), None), None),
        scenario(life(Some(7), None), None),
        scenario(life(Some(9), None), None),
        // The first sync after the recovery's fails; a later one (a rollover's sync, its
        // directory sync, or a flush's) fails.
        scenario(life(None, Some(2)), None),
        scenario(life(None, Some(4)), None),
        // Two lives: the first cut short after one write, the second a few operations
        // after its recovery.
        scenario(life(Some(5), None), life(Some(7), None)),
        // Two lives cut short, the first during a rollover, the second during its
        // recovery (which removes a segment whose records were lost, cuts the tail,
        // and syncs the directory).
        scenario(life(Some(8), None), life(Some(3), None)),
        // The power goes out during the first recovery (segment 0 made, not synced),
        // then a whole life.
        scenario(life(Some(2), None), life(None, None)),
        // Two records each.
        sized(2, 2, life(None, None), None),
    ]
}

struct ReportScenario(Scenario, Arc<AtomicUsize>);

impl Drop for ReportScenario {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let execution = self.1.load(Ordering::Relaxed);
            eprintln!("loom: failed at execution {execution} of {:?}", self.0);
        }
    }
}

fn explore(scenario: Scenario, bound: usize, tally: &Arc<Tally>) -> usize {
    let executions = Arc::new(AtomicUsize::new(0));
    let report = ReportScenario(scenario, Arc::clone(&executions));
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(bound);
    let (counter, tally) = (Arc::clone(&executions), Arc::clone(tally));
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        scenario.execute(&tally);
    });
    drop(report);
    let executions = executions.load(Ordering::Relaxed);
    if verbose() {
        println!("loom: {executions} executions, preemption bound {bound}: {scenario:?}");
    }
    executions
}

fn run(name: &str, modes: &[Scenario]) {
    let tally = Arc::new(Tally::default());
    let bounds: Vec<usize> = modes.iter().map(bound).collect();
    let executions: usize = modes
        .iter()
        .zip(&bounds)
        .map(|(mode, bound)| explore(*mode, *bound, &tally))
        .sum();
    let n = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    println!(
        "verify: wal loom, {name}, preemption bound {}, {} modes, {executions} executions: \
         {} crashes ({} during recovery), {} records acknowledged, {} acknowledged records \
         found intact in {} crash images: {PROPERTIES}",
        bounds.iter().max().expect("a mode"),
        modes.len(),
        n(&tally.crashes),
        n(&tally.crashes_in_recovery),
        n(&tally.records_acknowledged),
        n(&tally.acknowledged_checked),
        n(&tally.images_checked),
    );
}

#[test]
fn wal_2_committers() {
    run("2 committers", &modes());
}

#[test]
fn wal_3_committers() {
    run("3 committers", &[sized(3, 1, life(None, None), None)]);
}
