//! One execution of the write-ahead log of `examples/wal/log.rs` under a model checker,
//! on the simulated device of `support/sim.rs`, with the assertions every explored
//! execution must pass. Shared by `tests/wal_shuttle.rs` and `tests/wal_loom.rs`.
//!
//! An execution runs up to [`LIVES`] lives of the log. Each life opens the log (recovery),
//! then `committers` threads each append `records` records and commit each one; the
//! power goes out after a chosen number of device operations (during the recovery, the
//! appends or the syncs), or once the committers are done. Every crash image the device
//! could come back with is then checked, the device reboots into one of them, and the
//! next life recovers from it. A last recovery follows the last life.
//!
//! The log's append lock, the device's lock and the manager's primitives are all the
//! checker's, so the checker chooses every interleaving of appends, marks, sync starts
//! and sync ends. The assertions:
//!
//! - `AckedSurvives`: every image the device could come back with (every volatile
//!   operation dropped, every one kept, random mixes of kept, dropped and torn, and the
//!   image it reboots into) holds every acknowledged record, and all before it;
//! - `RecoveredPrefix`: what recovery finds in such an image is a prefix of what was
//!   appended (in this life, after what was recovered), byte for byte: no torn, stale
//!   or corrupt record is accepted; and the log's own recovery finds all of it;
//! - `AckedDurable`: when `commit(lsn)` returns `Ok`, `durable_lsn()` is at least `lsn`
//!   and the device holds every record up to `lsn` durably, at that moment;
//! - `DurableBounded`: `durable_lsn()`, read after every commit and at the end of each
//!   life, never exceeds the end of the whole records the device holds durably;
//! - `NoOkAfterFailure`: no `Ok` for a commit that started after the manager failed;
//! - `Contiguous`: the appended records tile the log from its start, without gap or
//!   overlap;
//! - `StatsExact`: the manager's counters equal the commits, the device's sync calls
//!   and errors, and the waiter deadlines the checker fired, in every life;
//! - no deadlock (reported by the checker).

#![allow(dead_code)]

#[cfg(feature = "loom")]
pub use loom as model;
#[cfg(all(feature = "shuttle", not(feature = "loom")))]
pub use shuttle as model;

use crate::log::{self, AppendLock, Record, Tail, Wal};
use crate::support::sim::{Crash, CrashReport, DeviceStats, Plan, SimDevice};
use group_commit::{fired_choices, within_model, Config, ModelChoices};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The most lives of the log in one execution, each ended by a power cut.
pub const LIVES: usize = 2;
/// The most committer threads a scenario may have.
pub const MAX_COMMITTERS: u32 = 4;
/// The errno of a failing sync (EIO) and of a failing write (ENOSPC).
pub const EIO: i32 = 5;
pub const ENOSPC: i32 = 28;

/// The properties each execution checks, for the `verify: ` lines.
pub const PROPERTIES: &str = "AckedSurvives RecoveredPrefix AckedDurable DurableBounded \
     NoOkAfterFailure Contiguous StatsExact held, no deadlock";

impl AppendLock for model::sync::Mutex<Tail> {
    type Guard<'a> = model::sync::MutexGuard<'a, Tail>;

    fn new(tail: Tail) -> Self {
        model::sync::Mutex::new(tail)
    }

    fn lock(&self) -> Self::Guard<'_> {
        model::sync::Mutex::lock(self).unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The log as the checker runs it: the example's code, with the checker's append lock.
pub type ModelWal = Wal<Arc<SimDevice>, model::sync::Mutex<Tail>>;

/// What one life of the log does besides appending and committing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifePlan {
    /// The power goes out when this many device operations (writes, truncations, syncs)
    /// of the life have started, counting from its recovery; `None`: it goes out once
    /// the committers are done.
    pub cut_after: Option<u64>,
    /// The sync with this number (from 0, the recovery's included) fails with EIO.
    pub failing_sync: Option<u64>,
    /// The write with this number fails with ENOSPC, leaving a torn prefix.
    pub failing_write: Option<u64>,
}

/// One explored configuration.
#[derive(Clone, Copy, Debug)]
pub struct Scenario {
    /// Threads that append and commit, 1 to [`MAX_COMMITTERS`].
    pub committers: u32,
    /// Records each committer appends (and commits) in each life.
    pub records: u32,
    /// Whether payload lengths differ between records (else every record has the same
    /// length, so stale records of an earlier life line up with new ones).
    pub varied_lengths: bool,
    /// Fixed gathering (threshold 2), or none.
    pub gathering: bool,
    /// The device's seed: which volatile operations a crash keeps, drops or tears.
    pub seed: u64,
    /// Per life; the lives run in order, up to the first `None`.
    pub lives: [Option<LifePlan>; LIVES],
    /// How the manager's waits end.
    pub choices: ModelChoices,
}

/// Counts over the executions of one test, for its `verify: ` line.
#[derive(Default)]
pub struct Tally {
    pub executions: AtomicU64,
    pub committers: [AtomicU64; MAX_COMMITTERS as usize + 1],
    pub crashes: AtomicU64,
    pub crashes_in_recovery: AtomicU64,
    pub records_acknowledged: AtomicU64,
    pub acknowledged_checked: AtomicU64,
    pub images_checked: AtomicU64,
    pub failed_syncs: AtomicU64,
    pub failed_writes: AtomicU64,
    pub kept: AtomicU64,
    pub dropped: AtomicU64,
    pub torn: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Tally {
    fn crash_report(&self, report: CrashReport) {
        add(&self.kept, report.kept);
        add(&self.dropped, report.dropped);
        add(&self.torn, report.torn);
    }
}

impl Scenario {
    /// Runs one execution: call it once per execution, inside `loom::model` or the
    /// closure given to a shuttle runner.
    pub fn execute(&self, tally: &Tally) {
        let scenario = *self;
        add(&tally.executions, 1);
        add(&tally.committers[scenario.committers as usize], 1);
        within_model(scenario.choices, move || run(scenario, tally));
    }

    fn config(&self) -> Config {
        let builder = Config::builder();
        let builder = if self.gathering {
            builder
                .group_threshold(2)
                .group_interval(Duration::from_millis(1))
        } else {
            builder
        };
        builder.build().expect("a valid model configuration")
    }

    fn payload_len(&self, thread: u32, seq: u32) -> usize {
        if self.varied_lengths {
            log::SAMPLE_ID + 4 * ((thread + seq) as usize % 4)
        } else {
            log::SAMPLE_ID + 4
        }
    }
}

/// What the harness knows of the log's content.
struct Knowledge {
    /// Every record that may be in the log, in LSN order: those recovered, then those
    /// appended with success since.
    history: Vec<Record>,
    /// `history[..acked]` must survive any crash.
    acked: usize,
}

/// The end of the whole records the device holds durably: what survives if every
/// volatile operation is lost.
fn durable_end(device: &SimDevice) -> u64 {
    log::scan(&device.crash_image(Crash::DropAll, 0)).end
}

/// `DurableBounded`. `durable_lsn()` is read first: it and what the device holds
/// durably only grow (until the crash), so a later read of the device bounds it.
fn check_durable_bound(wal: &ModelWal, device: &SimDevice) {
    let durable = wal.group().durable_lsn();
    let end = durable_end(device);
    assert!(
        durable <= end,
        "DurableBounded: durable_lsn is {durable}, but the device holds whole records \
         durably only up to {end}"
    );
}

/// How one committer's calls went.
#[derive(Default)]
struct Done {
    /// Records appended with success, and whether their commit returned `Ok`.
    records: Vec<(Record, bool)>,
    commit_oks: u64,
    commit_errs: u64,
}

fn committer(
    wal: &ModelWal,
    device: &SimDevice,
    scenario: Scenario,
    life: usize,
    thread: u32,
) -> Done {
    let mut done = Done::default();
    for seq in 0..scenario.records {
        let len = scenario.payload_len(thread, seq);
        let payload = log::sample_payload(life as u64, thread, u64::from(seq), len);
        let Ok(lsn) = wal.append(&payload) else {
            break;
        };
        let start = lsn - (log::HEADER + len) as u64;
        done.records.push((
            Record {
                start,
                lsn,
                payload,
            },
            false,
        ));
        let failed_before = wal.group().failure().is_some();
        let result = wal.commit(lsn);
        check_durable_bound(wal, device);
        if result.is_err() {
            done.commit_errs += 1;
            break;
        }
        done.commit_oks += 1;
        assert!(
            !failed_before,
            "NoOkAfterFailure: commit({lsn}) returned Ok after the manager had failed"
        );
        let durable = wal.group().durable_lsn();
        assert!(
            durable >= lsn,
            "AckedDurable: commit({lsn}) returned Ok with durable_lsn {durable}"
        );
        let end = durable_end(device);
        assert!(
            end >= lsn,
            "AckedDurable: commit({lsn}) returned Ok, but the device holds whole records \
             durably only up to {end}"
        );
        done.records.last_mut().expect("just pushed").1 = true;
    }
    done
}

impl Knowledge {
    /// Checks one image the device could come back with (`AckedSurvives`,
    /// `RecoveredPrefix`).
    fn check_image(&self, image: &[u8], what: &str, tally: &Tally) {
        add(&tally.images_checked, 1);
        let recovery = log::scan(image);
        let found = recovery.records.len();
        assert!(
            found >= self.acked,
            "AckedSurvives: {what}: {} records acknowledged, {found} recovered (stopped: \
             {:?}); the first lost ends at {:?}",
            self.acked,
            recovery.stop,
            self.history.get(found).map(|r| r.lsn),
        );
        assert!(
            found <= self.history.len(),
            "RecoveredPrefix: {what}: {found} records recovered, {} appended; the extra \
             one: {:?}",
            self.history.len(),
            recovery
                .records
                .get(self.history.len())
                .map(|r| (r.start, r.lsn)),
        );
        for (got, want) in recovery.records.iter().zip(&self.history) {
            assert!(
                got == want,
                "RecoveredPrefix: {what}: recovered {:?} where {:?} was appended",
                (got.start, got.lsn, log::parse_sample(&got.payload)),
                (want.start, want.lsn, log::parse_sample(&want.payload)),
            );
        }
        add(&tally.acknowledged_checked, self.acked as u64);
    }

    /// Power loss: checks what the device could come back with, reboots it, and keeps
    /// what the image it came back with holds (now durable, all of it).
    fn crash(&mut self, device: &SimDevice, seed: u64, tally: &Tally) {
        add(&tally.crashes, 1);
        self.check_image(
            &device.crash_image(Crash::DropAll, 0),
            "every volatile operation lost",
            tally,
        );
        self.check_image(
            &device.crash_image(Crash::KeepAll, 0),
            "every volatile operation kept",
            tally,
        );
        for k in 0..2 {
            let image = device.crash_image(Crash::Random, seed ^ k);
            self.check_image(&image, "a random crash image", tally);
        }
        tally.crash_report(device.reboot());
        let contents = device.contents();
        self.check_image(&contents, "the image the device rebooted into", tally);
        let found = log::scan(&contents).records.len();
        self.history.truncate(found);
        self.acked = found;
    }

    /// The log's own recovery must find exactly what the harness expects.
    fn check_recovery(&self, recovery: &log::Recovery, what: &str) {
        assert!(
            recovery.records == self.history,
            "RecoveredPrefix: {what}: the log recovered {} records up to {}, expected {} \
             up to {}",
            recovery.records.len(),
            recovery.end,
            self.history.len(),
            self.history.last().map_or(0, |r| r.lsn),
        );
    }
}

fn run(scenario: Scenario, tally: &Tally) {
    let device = SimDevice::new(scenario.seed);
    let config = scenario.config();
    let mut known = Knowledge {
        history: Vec::new(),
        acked: 0,
    };
    for (life, plan) in scenario.lives.iter().map_while(|plan| *plan).enumerate() {
        if let Some(n) = plan.failing_sync {
            device.fail_syncs(Plan::Once(n), EIO);
        }
        if let Some(n) = plan.failing_write {
            device.fail_writes(Plan::Once(n), ENOSPC);
        }
        if let Some(n) = plan.cut_after {
            device.cut_power_after(n);
        }
        let crash_seed = scenario.seed.wrapping_add(life as u64 + 1);
        let before = device.stats();
        let fired_before = fired_choices().deadlines;
        let Ok((wal, recovery)) = ModelWal::open_with_lock(Arc::clone(&device), config) else {
            // The power went out, or the planned sync failed, during recovery.
            add(&tally.crashes_in_recovery, 1);
            known.crash(&device, crash_seed, tally);
            continue;
        };
        known.check_recovery(&recovery, "at the start of a life");
        let wal = Arc::new(wal);
        let threads: Vec<_> = (0..scenario.committers)
            .map(|thread| {
                let (wal, device) = (Arc::clone(&wal), Arc::clone(&device));
                model::thread::spawn(move || committer(&wal, &device, scenario, life, thread))
            })
            .collect();
        let mut appended = Vec::new();
        let (mut oks, mut errs) = (0, 0);
        for thread in threads {
            let done = thread.join().expect("a committer panicked");
            appended.extend(done.records);
            oks += done.commit_oks;
            errs += done.commit_errs;
        }
        check_durable_bound(&wal, &device);
        appended.sort_by_key(|(record, _)| record.lsn);
        let first = known.history.len();
        known
            .history
            .extend(appended.iter().map(|(record, _)| record.clone()));
        check_contiguous(&known.history);
        // Every record up to an acknowledged one is acknowledged.
        if let Some(last) = appended.iter().rposition(|(_, acked)| *acked) {
            known.acked = known.acked.max(first + last + 1);
        }
        add(&tally.records_acknowledged, oks);
        let after = device.stats();
        add(&tally.failed_syncs, after.sync_errors - before.sync_errors);
        add(
            &tally.failed_writes,
            after.failed_writes - before.failed_writes,
        );
        check_stats(
            &wal,
            &before,
            &after,
            recovery.end > 0,
            oks,
            errs,
            fired_choices().deadlines - fired_before,
        );
        drop(wal);
        known.crash(&device, crash_seed, tally);
    }
    let (_, recovery) = ModelWal::open_with_lock(Arc::clone(&device), config)
        .expect("recovery with the power on and no fault planned");
    known.check_recovery(&recovery, "after the last life");
}

/// `Contiguous`: records tile the log from offset 0.
fn check_contiguous(history: &[Record]) {
    assert!(
        history.first().map_or(true, |r| r.start == 0),
        "Contiguous: the first record starts at {}",
        history[0].start
    );
    for pair in history.windows(2) {
        assert!(
            pair[0].lsn == pair[1].start,
            "Contiguous: a record ends at {} and the next starts at {}",
            pair[0].lsn,
            pair[1].start
        );
    }
}

/// `StatsExact` for one life: `recovered` says whether the recovery committed what it
/// found through the manager (else it synced the empty log itself).
fn check_stats(
    wal: &ModelWal,
    before: &DeviceStats,
    after: &DeviceStats,
    recovered: bool,
    oks: u64,
    errs: u64,
    deadlines_fired: u32,
) {
    let stats = wal.group().stats();
    let recovery_commit = u64::from(recovered);
    let sync_calls = after.sync_calls - before.sync_calls;
    let sync_errors = after.sync_errors - before.sync_errors;
    let why = format!(
        "StatsExact: {stats:?}; commits Ok {oks}, Err {errs}, recovery commit \
         {recovery_commit}; device sync calls {sync_calls}, errors {sync_errors}"
    );
    assert_eq!(stats.requests, oks + errs + recovery_commit, "{why}");
    assert_eq!(
        stats.served + stats.already_durable,
        oks + recovery_commit,
        "{why}"
    );
    assert_eq!(stats.failed_requests, errs, "{why}");
    // Every sync of the life ran as the manager's fsync, but the recovery's own sync of
    // an empty log.
    assert_eq!(stats.fsyncs, sync_calls - (1 - recovery_commit), "{why}");
    assert_eq!(stats.failed_fsyncs, sync_errors, "{why}");
    assert_eq!(stats.waiting, 0, "{why}");
    let successful = stats.fsyncs - stats.failed_fsyncs;
    assert!(stats.served >= successful, "{why}");
    assert!(stats.group_commits <= successful, "{why}");
    assert_eq!(stats.group_commits > 0, stats.served > successful, "{why}");
    if successful > 0 {
        assert!(stats.served <= successful * stats.largest_group, "{why}");
    } else {
        assert_eq!(stats.largest_group, 0, "{why}");
    }
    assert_eq!(stats.timeouts, u64::from(deadlines_fired), "{why}");
}
