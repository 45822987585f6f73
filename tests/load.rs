//! Load: 1,000 threads committing at once through the WAL on real files (64 KiB
//! segments: about nine of them), and a long
//! run of a million commits, each with no deadlock (a watchdog), no waiter timeout, and
//! resident memory that does not grow.
//!
//! A waiter timeout is the safety net for a lost wake-up: a correct hand-off never
//! needs it. To make "no timeout" mean "no lost wake-up" rather than "the machine was
//! fast", these runs set it to 10 s, far beyond any scheduling delay; one that still
//! expires is a waiter nobody woke.
//!
//! Sizes: the long run does 1,000,000 commits everywhere (debug builds too);
//! `GC_LOAD_COMMITS` sets another number.
#![cfg(not(any(feature = "loom", feature = "shuttle")))]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;

use group_commit::{Config, FsyncManager, GroupCommit};
use log::{FileStorage, Storage, Wal};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};
use support::{rss_kib, within, ScratchDir, WATCHDOG};

/// The tests here measure memory: run them one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn config() -> Config {
    Config::builder()
        .waiter_timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// 1,000 threads, released together by a barrier, each appending and committing
/// records through the WAL on a real file; then recovery finds every one.
#[test]
fn a_thousand_threads_commit_at_once() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const THREADS: u32 = 1_000;
    const EACH: u64 = 10;
    const SEGMENT_BYTES: u64 = 64 * 1024;
    let dir = ScratchDir::new("load-1000");
    let path = dir.path().join("log");
    let stats = within(WATCHDOG, "1,000 committing threads", {
        let path = path.clone();
        move || {
            let storage = FileStorage::open(&path).unwrap();
            let (wal, _) = Wal::open(storage, config(), SEGMENT_BYTES).unwrap();
            let wal = Arc::new(wal);
            let start = Arc::new(Barrier::new(THREADS as usize));
            let threads: Vec<_> = (0..THREADS)
                .map(|thread| {
                    let (wal, start) = (Arc::clone(&wal), Arc::clone(&start));
                    std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || {
                            start.wait();
                            (0..EACH)
                                .map(|seq| {
                                    let payload = log::sample_payload(7, thread, seq, 48);
                                    (wal.append_durably(&payload).unwrap(), seq)
                                })
                                .collect::<Vec<_>>()
                        })
                        .expect("spawn a committer")
                })
                .collect();
            let acked: Vec<Vec<(u64, u64)>> =
                threads.into_iter().map(|t| t.join().unwrap()).collect();
            let counts = wal.flush_counts();
            (wal.group().stats(), acked, wal.last_segment() + 1, counts)
        }
    });
    let (stats, acked, segments, counts) = stats;
    let total = u64::from(THREADS) * EACH;
    // The recovery's flush is a request too; a commit whose flush stopped at a hole
    // below its record got `WriteZero` and flushed again after the copy.
    assert_eq!(stats.requests, total + 1 + counts.hole_waits);
    assert_eq!(stats.failed_requests, counts.hole_waits);
    assert_eq!(stats.served + stats.already_durable, total + 1);
    assert_eq!(stats.timeouts, 0, "a waiter was never woken: {stats:?}");
    assert_eq!(stats.waiting, 0);

    let files = FileStorage::open(&path).unwrap();
    let listed = files.segments().unwrap();
    assert_eq!(listed.len() as u64, segments);
    let recovery = log::scan_log(&listed, SEGMENT_BYTES, |index| files.read(index)).unwrap();
    let found: HashMap<u64, &[u8]> = recovery
        .records
        .iter()
        .map(|r| (r.lsn, r.payload.as_slice()))
        .collect();
    for (thread, records) in acked.iter().enumerate() {
        for &(lsn, seq) in records {
            let payload = found.get(&lsn).expect("an acknowledged record is missing");
            assert_eq!(log::parse_sample(payload), Some((7, thread as u32, seq)));
        }
    }
    println!(
        "verify: load: {THREADS} threads x {EACH} commits on real files: {} flushes \
         (largest group {}, {} stopped at a hole), 0 timeouts, all {total} records \
         recovered from {segments} segments",
        stats.fsyncs, stats.largest_group, counts.hole_waits
    );
}

/// The same 1,000 threads on the drop-in front end, with a simulated 200 µs fsync.
#[test]
fn a_thousand_threads_on_the_drop_in_front_end() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const THREADS: usize = 1_000;
    const EACH: u64 = 10;
    let stats = within(WATCHDOG, "1,000 threads, FsyncManager", || {
        let manager = Arc::new(FsyncManager::with_config(config()));
        let start = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (manager, start) = (Arc::clone(&manager), Arc::clone(&start));
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        start.wait();
                        for _ in 0..EACH {
                            manager
                                .fsync(|| {
                                    std::thread::sleep(Duration::from_micros(200));
                                    Ok(())
                                })
                                .unwrap();
                        }
                    })
                    .expect("spawn a committer")
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        manager.stats()
    });
    assert_eq!(stats.requests, THREADS as u64 * EACH);
    assert_eq!(stats.served, stats.requests);
    assert_eq!(stats.timeouts, 0, "a waiter was never woken: {stats:?}");
    println!(
        "verify: load: {THREADS} threads x {EACH} FsyncManager::fsync: {} fsyncs (largest \
         group {}), 0 timeouts",
        stats.fsyncs, stats.largest_group
    );
}

/// A long run: 8 threads share a million commits (an fsync that only yields, so the
/// protocol is what is loaded: waiters, hand-offs, groups). Resident memory at the end
/// may not exceed what it was after the first tenth by more than 16 MiB: the manager
/// keeps no per-commit state.
#[test]
fn a_million_commits_without_growing() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    const THREADS: u64 = 8;
    let total = support::env_count("GC_LOAD_COMMITS", 1_000_000);
    let result = within(WATCHDOG * 3, "a million commits", move || {
        let log = Arc::new(GroupCommit::new(config()));
        let written = Arc::new(Mutex::new(0u64));
        let done = Arc::new(AtomicU64::new(0));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let warm = Arc::new(Barrier::new(THREADS as usize + 1));
        let measured = Arc::new(Barrier::new(THREADS as usize + 1));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (log, written, done, fsyncs) = (
                    Arc::clone(&log),
                    Arc::clone(&written),
                    Arc::clone(&done),
                    Arc::clone(&fsyncs),
                );
                let (warm, measured) = (Arc::clone(&warm), Arc::clone(&measured));
                std::thread::spawn(move || {
                    let run = |n: u64| {
                        for _ in 0..n {
                            let lsn = {
                                let mut w = written.lock().unwrap();
                                *w += 100;
                                log.mark_written(*w).unwrap();
                                *w
                            };
                            log.commit(lsn, || {
                                fsyncs.fetch_add(1, Ordering::Relaxed);
                                // Long enough for others to queue up behind it.
                                std::thread::yield_now();
                                Ok(())
                            })
                            .unwrap();
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    };
                    let share = total / THREADS;
                    run(share / 10);
                    warm.wait(); // the first tenth is done: memory measured
                    measured.wait();
                    run(share - share / 10);
                })
            })
            .collect();
        let began = Instant::now();
        warm.wait();
        let rss_warm = rss_kib();
        measured.wait();
        for t in threads {
            t.join().unwrap();
        }
        let took = began.elapsed();
        let rss_end = rss_kib();
        let stats = log.stats();
        assert_eq!(done.load(Ordering::Relaxed), total);
        assert_eq!(stats.fsyncs, fsyncs.load(Ordering::Relaxed));
        (stats, rss_warm, rss_end, took)
    });
    let (stats, rss_warm, rss_end, took) = result;
    assert_eq!(stats.requests, total);
    assert_eq!(stats.failed_requests, 0);
    assert_eq!(stats.timeouts, 0, "a waiter was never woken: {stats:?}");
    assert_eq!(stats.waiting, 0);
    if let (Some(warm), Some(end)) = (rss_warm, rss_end) {
        assert!(
            end <= warm + 16 * 1024,
            "resident memory grew from {warm} KiB to {end} KiB over {total} commits"
        );
    }
    println!(
        "verify: load: {total} commits from {THREADS} threads in {:.1} s: {} fsyncs \
         (largest group {}), 0 timeouts, resident memory {} KiB after the first tenth, {} KiB at the end",
        took.as_secs_f64(),
        stats.fsyncs,
        stats.largest_group,
        rss_warm.map_or("?".to_owned(), |k| k.to_string()),
        rss_end.map_or("?".to_owned(), |k| k.to_string()),
    );
}
