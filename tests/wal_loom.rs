//! Loom explores the write-ahead log of `examples/wal/log.rs` (with loom's mutex as its
//! append lock) on the simulated device, exhaustively within a preemption bound: two
//! committer threads with one record each in several modes (where the power goes out,
//! which sync fails, two lives), then two with two records, and three with one. Every
//! execution runs the checks of `wal_harness`.
//!
//! Run: `cargo test --release --features loom --test wal_loom -- --nocapture`.
//! Preemption bound 3 with two committers, 2 with three (three at bound 3 take about a
//! minute); `GC_BOUND=n` sets both. `GC_MODEL_VERBOSE=1` prints each
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

fn bound(committers: u32) -> usize {
    match std::env::var("GC_BOUND") {
        Ok(v) => v.parse().expect("GC_BOUND must be a number"),
        Err(_) if committers <= 2 => 3,
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
/// life: the recovery's sync of the empty log (0), then two writes and up to two syncs.
fn modes() -> Vec<Scenario> {
    vec![
        // The power goes out once both committers are done.
        scenario(life(None, None), None),
        // ... after the recovery and one, two or three more operations.
        scenario(life(Some(2), None), None),
        scenario(life(Some(3), None), None),
        scenario(life(Some(4), None), None),
        // The first sync after the recovery's fails.
        scenario(life(None, Some(1)), None),
        // Two lives: the first cut short after one write.
        scenario(life(Some(2), None), life(None, None)),
        // Two lives cut short; with seed 1 the first crash loses the first record and
        // keeps the second wherever both writes precede the cut, so stale bytes lie
        // past the end the second recovery finds.
        scenario(life(Some(3), None), life(Some(2), None)),
        // The power goes out during the first recovery, then a whole life.
        scenario(life(Some(0), None), life(None, None)),
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
    let bounds: Vec<usize> = modes.iter().map(|m| bound(m.committers)).collect();
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
        bounds[0],
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
