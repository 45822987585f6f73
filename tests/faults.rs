//! Faults, with many threads: fsync failing with EIO (once, always, intermittently)
//! or ENOSPC, writes failing with ENOSPC, and fsync closures that panic.
//!
//! In each case: the manager is poisoned by the first failure; no call that starts
//! after it returns `Ok` (and none returns `Ok` for a record the failed fsync should
//! have covered); every error keeps the original `ErrorKind` and `raw_os_error`; no
//! fsync runs after the failure; nothing hangs (every scenario runs under a watchdog);
//! and after a crash that loses every unsynced write, every acknowledged record is there.
//!
//! The WAL scenarios run `examples/wal` on the simulated device of `tests/support`, in
//! 1 KiB segments (a rollover every 13 records, with its own syncs of the new segment
//! and the directory, which fail as planned too), whose failed syncs behave like
//! Linux's after EIO: the pages they were flushing are never made durable by a later
//! sync, even one that succeeds.
#![cfg(not(any(feature = "loom", feature = "shuttle")))]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;

use group_commit::{Config, FsyncManager, GroupCommit};
use log::{Record, Wal};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex, Once};
use std::time::Duration;
use support::sim::{Crash, Plan, SimDevice};
use support::{within, Rng, WATCHDOG};

const THREADS: u32 = 16;
const RECORDS: u64 = 150;
/// Calls each thread makes after it saw the failure, all of which must fail.
const CALLS_AFTER: u64 = 20;
const EIO: i32 = 5;
const ENOSPC: i32 = 28;
/// Small segments, so that flushes roll over often.
const SEGMENT_BYTES: u64 = 1024;

/// The injected panics are expected: keep them out of the test output.
fn quiet_injected_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.contains("injected"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// What one committer saw.
#[derive(Default)]
struct Seen {
    /// Records `commit` acknowledged.
    acked: Vec<Record>,
    /// Errors from `commit` or `append`.
    errors: Vec<io::Error>,
    /// Calls that returned `Ok` although the manager was already poisoned.
    ok_after_failure: u64,
}

fn assert_same_error(error: &io::Error, errno: i32, what: &str) {
    assert_eq!(error.raw_os_error(), Some(errno), "{what}: {error}");
    assert_eq!(
        error.kind(),
        io::Error::from_raw_os_error(errno).kind(),
        "{what}"
    );
}

/// Many threads append and commit on a WAL whose device fails as `plan` says.
fn wal_with_failing_syncs(plan: Plan, errno: i32, seed: u64) -> (usize, u64) {
    within(WATCHDOG, "WAL with failing syncs", move || {
        let device = SimDevice::new(seed);
        let (wal, _) = Wal::open(Arc::clone(&device), Config::default(), SEGMENT_BYTES).unwrap();
        let wal = Arc::new(wal);
        device.set_sync_delay(Duration::from_micros(100));
        device.fail_syncs(plan, errno);
        let start = Arc::new(Barrier::new(THREADS as usize));
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (wal, start) = (Arc::clone(&wal), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut seen = Seen::default();
                    start.wait();
                    for seq in 0..RECORDS {
                        let payload = log::sample_payload(seed, thread, seq, 64);
                        // Once a flush failed, appends fail too, with its error.
                        let lsn = match wal.append(&payload) {
                            Ok(lsn) => lsn,
                            Err(error) => {
                                seen.errors.push(error);
                                break;
                            }
                        };
                        let poisoned = wal.group().failure().is_some();
                        match wal.commit(lsn) {
                            Ok(()) => {
                                seen.ok_after_failure += u64::from(poisoned);
                                let start = lsn - (log::HEADER + payload.len()) as u64;
                                seen.acked.push(Record {
                                    start,
                                    lsn,
                                    payload,
                                });
                            }
                            Err(error) => {
                                seen.errors.push(error);
                                // From now on, every call must fail.
                                for _ in 0..CALLS_AFTER {
                                    match wal.commit(lsn) {
                                        Ok(()) => seen.ok_after_failure += 1,
                                        Err(error) => seen.errors.push(error),
                                    }
                                }
                                break;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().unwrap()).collect();

        let failure = wal.group().failure().expect("the planned failure happened");
        assert_eq!(failure.raw_os_error(), Some(errno));
        assert_eq!(failure.kind(), io::Error::from_raw_os_error(errno).kind());
        for s in &seen {
            assert_eq!(
                s.ok_after_failure, 0,
                "a call returned Ok after the failure"
            );
            for error in &s.errors {
                assert_same_error(error, errno, "a committer's error");
            }
        }
        // Every thread met the failure (none could finish all its records: only the
        // planned syncs before it succeeded).
        let stats = wal.group().stats();
        assert_eq!(stats.failed_fsyncs, 1);
        let device_stats = device.stats();
        assert_eq!(device_stats.failed_syncs, 1, "{device_stats:?}");
        assert_eq!(
            device_stats.syncs_after_failure, 0,
            "an fsync ran after the failure: a later success could acknowledge lost writes"
        );

        // Later calls, for old LSNs and new ones, from many threads: all fail the same way.
        let mut acked: Vec<Record> = seen.into_iter().flat_map(|s| s.acked).collect();
        acked.sort_by_key(|r| r.lsn);
        let late: Vec<_> = (0..8)
            .map(|i| {
                let wal = Arc::clone(&wal);
                // With nothing acknowledged, the log's end: written, never durable.
                let old = acked.get(i * 7).map_or(wal.end(), |r| r.lsn);
                std::thread::spawn(move || {
                    assert_same_error(&wal.commit(old).unwrap_err(), errno, "an old LSN");
                    // The log is dead until reopened: appends fail the same way.
                    let error = wal
                        .append(b"after the failure: never acknowledged")
                        .unwrap_err();
                    assert_same_error(&error, errno, "an append");
                })
            })
            .collect();
        for thread in late {
            thread.join().unwrap();
        }

        // What the device keeps if every unsynced (or failed) write is lost.
        for (crash, seed) in [(Crash::DropAll, 0), (Crash::Random, 1), (Crash::Random, 2)] {
            let recovered =
                log::scan_image(&device.crash_image(crash, seed), SEGMENT_BYTES).records;
            for record in &acked {
                assert!(
                    recovered.contains(record),
                    "{crash:?}: acknowledged record at LSN {} lost",
                    record.lsn
                );
            }
        }
        (acked.len(), stats.fsyncs)
    })
}

fn report(what: &str, runs: &[(usize, u64)], errno: i32) {
    println!(
        "verify: faults: {what}, {THREADS} threads: {} records acknowledged before the \
         failure, all durable after a crash; {} flushes, 1 failed per run, no sync after it; \
         every later call failed with errno {errno}",
        runs.iter().map(|r| r.0).sum::<usize>(),
        runs.iter().map(|r| r.1).sum::<u64>()
    );
}

#[test]
fn fsync_eio_once() {
    let runs = [wal_with_failing_syncs(Plan::Once(40), EIO, 1)];
    report("EIO on sync #40 only", &runs, EIO);
}

#[test]
fn fsync_eio_on_the_first_fsync() {
    let runs = [wal_with_failing_syncs(Plan::Once(0), EIO, 2)];
    report("EIO on the first sync only", &runs, EIO);
}

#[test]
fn fsync_eio_always() {
    let runs = [wal_with_failing_syncs(Plan::From(30), EIO, 3)];
    report("EIO on every sync from #30", &runs, EIO);
}

#[test]
fn fsync_eio_intermittently() {
    // Later fsyncs would succeed: the manager must not let them run.
    let runs: Vec<_> = (0..5)
        .map(|seed| wal_with_failing_syncs(Plan::Percent(20), EIO, 100 + seed))
        .collect();
    report("EIO on 20% of syncs, 5 runs", &runs, EIO);
}

#[test]
fn fsync_enospc() {
    let runs = [wal_with_failing_syncs(Plan::Once(30), ENOSPC, 4)];
    report("ENOSPC on sync #30", &runs, ENOSPC);
}

/// ENOSPC on a write: the leader's flush fails with errno 28 (leaving a torn prefix), the
/// commits it was to serve fail the same way, and so does every later commit and append
/// (the log's end on the device is unknown); a crash keeps every acknowledged record.
#[test]
fn write_enospc() {
    within(WATCHDOG, "WAL with a failing write", || {
        let device = SimDevice::new(5);
        let (wal, _) = Wal::open(Arc::clone(&device), Config::default(), SEGMENT_BYTES).unwrap();
        let wal = Arc::new(wal);
        device.set_sync_delay(Duration::from_micros(50));
        device.fail_writes(Plan::Once(200), ENOSPC);
        let start = Arc::new(Barrier::new(THREADS as usize));
        let workers: Vec<_> = (0..THREADS)
            .map(|thread| {
                let (wal, start) = (Arc::clone(&wal), Arc::clone(&start));
                std::thread::spawn(move || {
                    let mut seen = Seen::default();
                    start.wait();
                    for seq in 0..RECORDS {
                        let payload = log::sample_payload(5, thread, seq, 100);
                        let outcome = wal
                            .append(&payload)
                            .and_then(|lsn| wal.commit(lsn).map(|()| lsn));
                        match outcome {
                            Ok(lsn) => {
                                let start = lsn - (log::HEADER + payload.len()) as u64;
                                seen.acked.push(Record {
                                    start,
                                    lsn,
                                    payload,
                                });
                            }
                            Err(error) => {
                                seen.errors.push(error);
                                let again = wal.append(&payload).unwrap_err();
                                seen.errors.push(again);
                                break;
                            }
                        }
                    }
                    seen
                })
            })
            .collect();
        let seen: Vec<Seen> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        let (acked, errors): (Vec<Vec<Record>>, Vec<Vec<io::Error>>) =
            seen.into_iter().map(|s| (s.acked, s.errors)).unzip();
        let acked: Vec<Record> = acked.into_iter().flatten().collect();
        let errors: Vec<io::Error> = errors.into_iter().flatten().collect();
        assert!(!errors.is_empty(), "the write failure was injected");
        for error in &errors {
            assert_same_error(error, ENOSPC, "a call after ENOSPC");
            assert_eq!(error.kind(), io::ErrorKind::StorageFull);
        }
        assert_eq!(device.stats().failed_writes, 1);
        let failure = wal
            .group()
            .failure()
            .expect("the failed write poisoned the log");
        assert_eq!(failure.raw_os_error(), Some(ENOSPC));
        let last = wal.end();

        for crash in [Crash::DropAll, Crash::Random, Crash::KeepAll] {
            let recovery = log::scan_image(&device.crash_image(crash, 9), SEGMENT_BYTES);
            for record in &acked {
                assert!(
                    recovery.records.contains(record),
                    "{crash:?}: lost {}",
                    record.lsn
                );
            }
            // The torn prefix of the failed write is never taken for a record.
            assert!(recovery.end <= last);
            for record in &recovery.records {
                assert!(log::parse_sample(&record.payload).is_some());
            }
        }
        println!(
            "verify: faults: ENOSPC on write #200: {} records acknowledged before it, all \
             durable; {} later calls failed with errno 28",
            acked.len(),
            errors.len()
        );
    });
}

/// What the panic scenarios count.
#[derive(Default)]
struct PanicSeen {
    panicked: u64,
    errors: Vec<io::Error>,
    ok_after_failure: u64,
}

impl PanicSeen {
    /// Counts one call's outcome; true if it failed. `after_failure`: the caller had
    /// seen a failure before it called, so an `Ok` is a fault.
    fn record(&mut self, result: std::thread::Result<io::Result<()>>, after_failure: bool) -> bool {
        match result {
            Err(_) => self.panicked += 1,
            Ok(Ok(())) => {
                self.ok_after_failure += u64::from(after_failure);
                return false;
            }
            Ok(Err(error)) => self.errors.push(error),
        }
        true
    }
}

/// The fsync closure of the panic scenarios: the `panic_at`-th fsync (from 0) panics.
fn fsync_panicking_at(fsyncs: &AtomicU64, panic_at: u64) -> io::Result<()> {
    let n = fsyncs.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_micros(100));
    if n == panic_at {
        panic!("injected fsync panic");
    }
    Ok(())
}

fn check_panic_errors(seen: &[PanicSeen], failure: Option<group_commit::Failure>) {
    let failure = failure.expect("poisoned by the panic");
    assert_eq!(failure.kind(), io::ErrorKind::Other);
    assert_eq!(failure.raw_os_error(), None);
    assert_eq!(
        seen.iter().map(|s| s.panicked).sum::<u64>(),
        1,
        "exactly the leader panics"
    );
    for s in seen {
        assert_eq!(s.ok_after_failure, 0, "a call returned Ok after the panic");
        for error in &s.errors {
            assert_eq!(error.kind(), io::ErrorKind::Other, "{error}");
            assert_eq!(error.raw_os_error(), None);
        }
    }
}

/// An fsync closure panics while many threads wait on it: the leader's panic goes on in
/// its own thread, every other caller gets an error, and the manager stays poisoned.
#[test]
fn panicking_fsync_closure_lsn_front_end() {
    quiet_injected_panics();
    within(WATCHDOG, "a panicking fsync (GroupCommit)", || {
        const PANIC_AT: u64 = 30;
        let log = Arc::new(GroupCommit::new(Config::default()));
        let written = Arc::new(Mutex::new(0u64));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let start = Arc::new(Barrier::new(THREADS as usize));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (log, written, fsyncs, start) = (
                    Arc::clone(&log),
                    Arc::clone(&written),
                    Arc::clone(&fsyncs),
                    Arc::clone(&start),
                );
                std::thread::spawn(move || {
                    let mut seen = PanicSeen::default();
                    start.wait();
                    let mut failed = false;
                    for _ in 0..RECORDS {
                        let lsn = {
                            let mut written = written.lock().unwrap();
                            *written += 10;
                            log.mark_written(*written).unwrap();
                            *written
                        };
                        let poisoned = log.failure().is_some();
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            log.commit(lsn, || fsync_panicking_at(&fsyncs, PANIC_AT))
                        }));
                        failed |= seen.record(result, poisoned || failed);
                        if failed && seen.errors.len() as u64 >= CALLS_AFTER {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        let seen: Vec<PanicSeen> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        check_panic_errors(&seen, log.failure());
        assert_eq!(
            fsyncs.load(Ordering::SeqCst),
            PANIC_AT + 1,
            "no fsync after the panic"
        );
        let stats = log.stats();
        assert_eq!((stats.fsyncs, stats.failed_fsyncs), (PANIC_AT + 1, 1));
        assert_eq!(stats.waiting, 0, "nobody left waiting");
        assert!(
            log.commit(0, || Ok(())).is_err(),
            "even a durable LSN fails once poisoned"
        );
        println!(
            "verify: faults: fsync closure panics at fsync #{PANIC_AT} with {THREADS} threads: \
             1 panic passed on, {} errors of kind Other, no Ok and no fsync after it",
            seen.iter().map(|s| s.errors.len()).sum::<usize>()
        );
    });
}

/// The same through the drop-in `FsyncManager`, with failures of both kinds.
#[test]
fn panicking_fsync_closure_drop_in_front_end() {
    quiet_injected_panics();
    within(WATCHDOG, "a panicking fsync (FsyncManager)", || {
        const PANIC_AT: u64 = 25;
        let manager = Arc::new(FsyncManager::new(4, 1));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let start = Arc::new(Barrier::new(THREADS as usize));
        let workers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (manager, fsyncs, start) = (
                    Arc::clone(&manager),
                    Arc::clone(&fsyncs),
                    Arc::clone(&start),
                );
                std::thread::spawn(move || {
                    let mut seen = PanicSeen::default();
                    start.wait();
                    let mut failed = false;
                    for _ in 0..RECORDS {
                        let poisoned = manager.failure().is_some();
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            manager.fsync(|| fsync_panicking_at(&fsyncs, PANIC_AT))
                        }));
                        failed |= seen.record(result, poisoned || failed);
                        if failed && seen.errors.len() as u64 >= CALLS_AFTER {
                            break;
                        }
                    }
                    seen
                })
            })
            .collect();
        let seen: Vec<PanicSeen> = workers.into_iter().map(|w| w.join().unwrap()).collect();
        check_panic_errors(&seen, manager.failure());
        assert_eq!(
            fsyncs.load(Ordering::SeqCst),
            PANIC_AT + 1,
            "no fsync after the panic"
        );
        assert!(manager.fsync(|| Ok(())).is_err());
    });
}

/// `FsyncManager` with an fsync that fails now and then: after the first failure no
/// call returns `Ok`, whatever later fsyncs would have returned, and errno survives.
#[test]
fn intermittent_eio_drop_in_front_end() {
    within(WATCHDOG, "intermittent EIO (FsyncManager)", || {
        for seed in 0..5u64 {
            let manager = Arc::new(FsyncManager::new(0, 0));
            let rng = Arc::new(Mutex::new(Rng::new(seed)));
            let after_failure = Arc::new(AtomicU64::new(0));
            let failed = Arc::new(AtomicU64::new(0));
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    let (manager, rng, after_failure, failed) = (
                        Arc::clone(&manager),
                        Arc::clone(&rng),
                        Arc::clone(&after_failure),
                        Arc::clone(&failed),
                    );
                    std::thread::spawn(move || {
                        let mut oks_after = 0u64;
                        for _ in 0..RECORDS {
                            let poisoned = manager.failure().is_some();
                            let result = manager.fsync(|| {
                                if failed.load(Ordering::SeqCst) > 0 {
                                    after_failure.fetch_add(1, Ordering::SeqCst);
                                }
                                if rng.lock().unwrap().percent(10) {
                                    failed.fetch_add(1, Ordering::SeqCst);
                                    Err(io::Error::from_raw_os_error(EIO))
                                } else {
                                    Ok(())
                                }
                            });
                            match result {
                                Ok(()) => oks_after += u64::from(poisoned),
                                Err(error) => assert_same_error(&error, EIO, "FsyncManager"),
                            }
                        }
                        oks_after
                    })
                })
                .collect();
            for worker in workers {
                assert_eq!(worker.join().unwrap(), 0, "Ok after the failure");
            }
            assert_eq!(
                failed.load(Ordering::SeqCst),
                1,
                "one failure, then no fsync"
            );
            assert_eq!(after_failure.load(Ordering::SeqCst), 0);
            assert_eq!(manager.stats().failed_fsyncs, 1);
            assert_eq!(manager.failure().unwrap().raw_os_error(), Some(EIO));
        }
    });
}
