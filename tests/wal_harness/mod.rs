//! One execution of the write-ahead log of `examples/wal/log.rs` under a model checker,
//! on the simulated device of `support/sim.rs`, with the assertions every explored
//! execution must pass. Shared by `tests/wal_shuttle.rs` and `tests/wal_loom.rs`.
//!
//! An execution runs up to [`LIVES`] lives of the log, in segments so small that a record
//! or two fill one (every execution rolls over). Each life opens the log (recovery), then
//! `committers` threads each append `records` records to the log buffer and commit each
//! one, the leader of each flush writing the buffer out; the power goes out after a
//! chosen number of device operations (during the recovery, a flush's writes, a
//! rollover's creation and syncs, or a flush's syncs), or once the committers are done.
//! Every crash image the device could come back with (unsynced writes and unsynced
//! directory entries dropped, kept or torn) is then checked, the device reboots into one
//! of them, and the next life recovers from it. A last recovery follows the last life.
//!
//! The log's append lock and condition variable, the device's lock and the manager's
//! primitives are all the checker's, so the checker chooses every interleaving of
//! reservations, copies into the buffer (a flush may meet a hole), flushes, sync starts
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
//!   overlap, a segment's unused end excepted (only where the next record did not fit),
//!   and none spans segments;
//! - `StatsExact`: the manager's counters equal the commits, the log's flushes and
//!   flushes again after a hole, the device's errors, and the waiter deadlines the
//!   checker fired, in every life;
//! - no deadlock (reported by the checker).

#![allow(dead_code)]

#[cfg(feature = "loom")]
pub use loom as model;
#[cfg(all(feature = "shuttle", not(feature = "loom")))]
pub use shuttle as model;

use crate::log::{self, AppendLock, Record, Tail, Wal};
use crate::support::sim::{Crash, CrashReport, DeviceStats, Image, Plan, SimDevice};
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

/// The log's append lock on the checker's mutex and condition variable.
pub struct ModelLock {
    tail: model::sync::Mutex<Tail>,
    copied: model::sync::Condvar,
}

impl AppendLock for ModelLock {
    type Guard<'a> = model::sync::MutexGuard<'a, Tail>;

    fn new(tail: Tail) -> Self {
        ModelLock {
            tail: model::sync::Mutex::new(tail),
            copied: model::sync::Condvar::new(),
        }
    }

    fn lock(&self) -> Self::Guard<'_> {
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(&'a self, guard: Self::Guard<'a>) -> Self::Guard<'a> {
        self.copied
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_all(&self) {
        self.copied.notify_all();
    }
}

/// The log as the checker runs it: the example's code, with the checker's append lock.
pub type ModelWal = Wal<Arc<SimDevice>, ModelLock>;

/// What one life of the log does besides appending and committing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LifePlan {
    /// The power goes out when this many device operations (creations, removals, writes,
    /// truncations, syncs) of the life have started, counting from its recovery; `None`: it goes out once
    /// the committers are done.
    pub cut_after: Option<u64>,
    /// The sync with this number (from 0, of segments and the directory, the recovery's
    /// included) fails with EIO.
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
    /// The segment size: small, so that records roll over to new segments.
    pub segment_bytes: u64,
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
    pub segments_created: AtomicU64,
    pub hole_waits: AtomicU64,
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
    segment_bytes: u64,
}

/// The end of the whole records the device holds durably: what survives if every
/// volatile operation is lost.
fn durable_end(device: &SimDevice, segment_bytes: u64) -> u64 {
    log::scan_image(&device.crash_image(Crash::DropAll, 0), segment_bytes).end
}

/// `DurableBounded`. `durable_lsn()` is read first: it and what the device holds
/// durably only grow (until the crash), so a later read of the device bounds it.
fn check_durable_bound(wal: &ModelWal, device: &SimDevice) {
    let durable = wal.group().durable_lsn();
    let end = durable_end(device, wal.segment_bytes());
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
        let end = durable_end(device, scenario.segment_bytes);
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
    fn check_image(&self, image: &Image, what: &str, tally: &Tally) {
        add(&tally.images_checked, 1);
        let recovery = log::scan_image(image, self.segment_bytes);
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
        let segment_bytes = self.segment_bytes;
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
        let found = log::scan_image(&contents, segment_bytes).records.len();
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
        segment_bytes: scenario.segment_bytes,
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
        let opened = ModelWal::open_with_lock(Arc::clone(&device), config, scenario.segment_bytes);
        let Ok((wal, recovery)) = opened else {
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
        check_contiguous(&known.history, scenario.segment_bytes);
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
        add(&tally.segments_created, wal.segments_created());
        add(&tally.hole_waits, wal.flush_counts().hole_waits);
        check_stats(
            &wal,
            &before,
            &after,
            oks,
            errs,
            fired_choices().deadlines - fired_before,
        );
        drop(wal);
        known.crash(&device, crash_seed, tally);
    }
    let (_, recovery) =
        ModelWal::open_with_lock(Arc::clone(&device), config, scenario.segment_bytes)
            .expect("recovery with the power on and no fault planned");
    known.check_recovery(&recovery, "after the last life");
}

/// `Contiguous`: records tile the log from the first record's place in segment 0; a
/// record starts the next segment only if it did not fit in the one before, and none
/// spans segments.
fn check_contiguous(history: &[Record], segment_bytes: u64) {
    let first = log::segment_start(0, segment_bytes);
    assert!(
        history.first().map_or(true, |r| r.start == first),
        "Contiguous: the first record starts at {}, not {first}",
        history[0].start
    );
    for record in history {
        let segment = record.start / segment_bytes;
        assert!(
            record.start >= log::segment_start(segment, segment_bytes)
                && record.lsn <= (segment + 1) * segment_bytes,
            "Contiguous: the record {}..{} is not inside one segment's records",
            record.start,
            record.lsn
        );
    }
    for pair in history.windows(2) {
        let segment_end = (pair[0].start / segment_bytes + 1) * segment_bytes;
        let len = pair[1].lsn - pair[1].start;
        let back_to_back = pair[1].start == pair[0].lsn && pair[1].lsn <= segment_end;
        let next_segment = pair[1].start == segment_end + log::SEGMENT_HEADER as u64
            && pair[0].lsn + len > segment_end;
        assert!(
            back_to_back || next_segment,
            "Contiguous: a record ends at {} and the next ({len} bytes) starts at {} \
             ({segment_bytes}-byte segments)",
            pair[0].lsn,
            pair[1].start
        );
    }
}

/// `StatsExact` for one life: the recovery's flush, then the committers' commits (and
/// their flushes again after a hole) and the log's flushes.
fn check_stats(
    wal: &ModelWal,
    before: &DeviceStats,
    after: &DeviceStats,
    oks: u64,
    errs: u64,
    deadlines_fired: u32,
) {
    let stats = wal.group().stats();
    let counts = wal.flush_counts();
    // Every device error of a life whose recovery succeeded failed a flush.
    let device_errors = after.errors - before.errors;
    let why = format!(
        "StatsExact: {stats:?}; commits Ok {oks}, Err {errs}; the log's {counts:?}; device \
         errors {device_errors}"
    );
    let retries = counts.hole_waits;
    assert_eq!(stats.requests, oks + errs + retries + 1, "{why}");
    assert_eq!(stats.served + stats.already_durable, oks + 1, "{why}");
    // A flush again after a hole followed a `WriteZero` to the leader.
    assert_eq!(stats.failed_requests, errs + retries, "{why}");
    assert_eq!(stats.fsyncs, counts.flushes + 1, "{why}");
    assert_eq!(stats.failed_fsyncs, counts.failed_flushes, "{why}");
    assert_eq!(stats.failed_fsyncs, device_errors, "{why}");
    assert_eq!(stats.waiting, 0, "{why}");
    let successful = stats.fsyncs - stats.failed_fsyncs;
    assert!(stats.group_commits <= successful, "{why}");
    assert!(stats.short_fsyncs <= successful, "{why}");
    assert_eq!(stats.timeouts, u64::from(deadlines_fired), "{why}");
}
