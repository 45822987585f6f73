//! Power loss: the WAL of `examples/wal` on a simulated device that forgets, at a crash,
//! any write no completed sync of its segment covered, and any segment created or
//! removed that no completed sync of the directory covered (each kept, dropped or torn
//! at random). Segments are small (340 to 1,200 bytes for records of up to 308), so
//! flushes roll over to new segments all the time.
//!
//! Proptest generates schedules of appends, commits, concurrent committers, failing
//! syncs and writes, power cuts in the middle of concurrent work, and crashes (dirty
//! reboots, in the spirit of ShardStore's). At every crash, before the reboot, several
//! images the device could come back with are drawn, plus the one where every volatile
//! write is lost, and each must recover to:
//! - every record acknowledged by `commit` (and everything below it), intact;
//! - nothing else than a prefix of what was appended, in order, byte for byte.
//!
//! Cases: `GC_POWER_CASES` (default 256). Each schedule has up to 40 steps.
#![cfg(not(any(feature = "loom", feature = "shuttle")))]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;

use group_commit::Config;
use log::{Record, Storage, Wal};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::sim::{Crash, Image, Plan, SimDevice};

#[derive(Clone, Debug)]
enum Step {
    /// Append one record without committing it.
    Append { len: usize },
    /// Commit the record `back` places before the newest.
    Commit { back: usize },
    /// Append and commit one record.
    AppendCommit { len: usize },
    /// Threads appending and committing at the same time.
    Concurrent { threads: u32, each: u32 },
    /// The same, with the power cut after `after_ops` device operations, then a crash.
    ConcurrentCut {
        threads: u32,
        each: u32,
        after_ops: u64,
    },
    /// Syncs fail from now on, as planned.
    FailSyncs { plan: Plan, errno: i32 },
    /// Writes fail from now on, as planned (leaving torn prefixes).
    FailWrites { plan: Plan, errno: i32 },
    /// Power loss and reboot.
    Crash,
}

fn plan() -> impl Strategy<Value = Plan> {
    prop_oneof![
        (0u64..6).prop_map(Plan::Once),
        (0u64..6).prop_map(Plan::From),
        (5u64..60).prop_map(Plan::Percent),
    ]
}

fn errno() -> impl Strategy<Value = i32> {
    // EIO, ENOSPC, EDQUOT.
    prop_oneof![Just(5), Just(28), Just(122)]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1usize..300).prop_map(|len| Step::Append { len }),
        3 => (0usize..4).prop_map(|back| Step::Commit { back }),
        4 => (1usize..300).prop_map(|len| Step::AppendCommit { len }),
        3 => (1u32..8, 1u32..12).prop_map(|(threads, each)| Step::Concurrent { threads, each }),
        2 => (1u32..8, 1u32..12, 0u64..120)
            .prop_map(|(threads, each, after_ops)| Step::ConcurrentCut { threads, each, after_ops }),
        1 => (plan(), errno()).prop_map(|(plan, errno)| Step::FailSyncs { plan, errno }),
        1 => (plan(), errno()).prop_map(|(plan, errno)| Step::FailWrites { plan, errno }),
        2 => Just(Step::Crash),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    prop_oneof![
        Just(Config::default()),
        (1usize..4, 1u64..300).prop_map(|(threshold, micros)| Config::builder()
            .group_threshold(threshold)
            .group_interval(Duration::from_micros(micros))
            .build()
            .expect("valid")),
    ]
}

/// Totals over all cases, for the report.
static CRASHES: AtomicU64 = AtomicU64::new(0);
static IMAGES: AtomicU64 = AtomicU64::new(0);
static ACKED_CHECKED: AtomicU64 = AtomicU64::new(0);
static KEPT: AtomicU64 = AtomicU64::new(0);
static DROPPED: AtomicU64 = AtomicU64::new(0);
static TORN: AtomicU64 = AtomicU64::new(0);
static FAILED_CALLS: AtomicU64 = AtomicU64::new(0);
static SEGMENTS: AtomicU64 = AtomicU64::new(0);

type Log = Wal<Arc<SimDevice>>;

struct Harness {
    device: Arc<SimDevice>,
    config: Config,
    segment_bytes: u64,
    wal: Arc<Log>,
    /// Every record appended with success since the log was opened (the recovered ones
    /// first), in LSN order.
    history: Vec<Record>,
    /// `history[..acked]` must survive any crash.
    acked: usize,
    tag: u64,
    seq: u64,
    seed: u64,
}

fn check(condition: bool, message: impl FnOnce() -> String) -> Result<(), TestCaseError> {
    if condition {
        Ok(())
    } else {
        Err(TestCaseError::fail(message()))
    }
}

impl Harness {
    fn new(config: Config, segment_bytes: u64, seed: u64) -> Result<Self, TestCaseError> {
        let device = SimDevice::new(seed);
        let (wal, recovery) =
            Wal::open(Arc::clone(&device), config, segment_bytes).map_err(fail)?;
        Ok(Harness {
            device,
            config,
            segment_bytes,
            wal: Arc::new(wal),
            history: recovery.records,
            acked: 0,
            tag: 0,
            seq: 0,
            seed,
        })
    }

    fn payload(&mut self, len: usize) -> Vec<u8> {
        self.seq += 1;
        log::sample_payload(self.tag, 0, self.seq, len)
    }

    fn poisoned(&self) -> bool {
        self.wal.group().failure().is_some()
    }

    /// Records that `commit(lsn)` returned `Ok`: everything up to `lsn` is acknowledged.
    fn acknowledge(&mut self, lsn: u64) -> Result<(), TestCaseError> {
        let upto = self.history.partition_point(|r| r.lsn <= lsn);
        check(upto > 0 && self.history[upto - 1].lsn == lsn, || {
            format!("commit({lsn}) acknowledged an LSN that is no record's end")
        })?;
        self.acked = self.acked.max(upto);
        Ok(())
    }

    fn commit(&mut self, lsn: u64) -> Result<(), TestCaseError> {
        let poisoned = self.poisoned();
        match self.wal.commit(lsn) {
            Ok(()) => {
                check(!poisoned, || {
                    format!("commit({lsn}) returned Ok after a failure")
                })?;
                self.acknowledge(lsn)
            }
            Err(_) => {
                FAILED_CALLS.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn append(&mut self, len: usize) -> Option<u64> {
        let payload = self.payload(len);
        match self.wal.append(&payload) {
            Ok(lsn) => {
                let start = lsn - (log::HEADER + payload.len()) as u64;
                self.history.push(Record {
                    start,
                    lsn,
                    payload,
                });
                Some(lsn)
            }
            Err(_) => {
                FAILED_CALLS.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    fn concurrent(&mut self, threads: u32, each: u32) -> Result<(), TestCaseError> {
        self.tag += 1;
        let workers: Vec<_> = (0..threads)
            .map(|thread| {
                let wal = Arc::clone(&self.wal);
                let tag = self.tag;
                std::thread::spawn(move || {
                    // (record, acknowledged, Ok after a failure was visible)
                    let mut done: Vec<(Record, bool)> = Vec::new();
                    let mut ok_after_failure = None;
                    for seq in 0..u64::from(each) {
                        let payload =
                            log::sample_payload(tag, thread, seq, 24 + (seq as usize * 37) % 200);
                        let Ok(lsn) = wal.append(&payload) else { break };
                        let start = lsn - (log::HEADER + payload.len()) as u64;
                        done.push((
                            Record {
                                start,
                                lsn,
                                payload,
                            },
                            false,
                        ));
                        let poisoned = wal.group().failure().is_some();
                        match wal.commit(lsn) {
                            Ok(()) if poisoned => ok_after_failure = Some(lsn),
                            Ok(()) => done.last_mut().expect("pushed").1 = true,
                            Err(_) => break,
                        }
                    }
                    (done, ok_after_failure)
                })
            })
            .collect();
        let mut records = Vec::new();
        for worker in workers {
            let (done, ok_after_failure) =
                worker.join().map_err(|_| fail("a committer panicked"))?;
            check(ok_after_failure.is_none(), || {
                format!("commit({ok_after_failure:?}) returned Ok after a failure")
            })?;
            records.extend(done);
        }
        records.sort_by_key(|(r, _)| r.lsn);
        let acked: Vec<u64> = records
            .iter()
            .filter(|(_, a)| *a)
            .map(|(r, _)| r.lsn)
            .collect();
        self.history.extend(records.into_iter().map(|(r, _)| r));
        check(contiguous(&self.history, self.segment_bytes), || {
            format!(
                "concurrent appends left a gap or an overlap, or a record spans segments: \
                 {:?} ({}-byte segments)",
                self.history
                    .iter()
                    .map(|r| (r.start, r.lsn))
                    .collect::<Vec<_>>(),
                self.segment_bytes
            )
        })?;
        for lsn in acked {
            self.acknowledge(lsn)?;
        }
        Ok(())
    }

    /// Checks one image the device could come back with.
    fn check_image(&self, image: &Image, what: &str) -> Result<(), TestCaseError> {
        IMAGES.fetch_add(1, Ordering::Relaxed);
        let recovery = log::scan_image(image, self.segment_bytes);
        let found = recovery.records.len();
        check(found >= self.acked, || {
            format!(
                "{what}: {} acknowledged records, only {found} recovered (stopped: {:?}); first lost: {:?}",
                self.acked,
                recovery.stop,
                self.history.get(found).map(|r| (r.start, r.lsn))
            )
        })?;
        check(found <= self.history.len(), || {
            format!(
                "{what}: {found} records recovered, only {} appended",
                self.history.len()
            )
        })?;
        for (got, want) in recovery.records.iter().zip(&self.history) {
            check(got == want, || {
                format!("{what}: recovered {got:?}, appended {want:?}")
            })?;
        }
        ACKED_CHECKED.fetch_add(self.acked as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Power loss: check alternative images, reboot, reopen, check what the log found.
    fn crash(&mut self) -> Result<(), TestCaseError> {
        CRASHES.fetch_add(1, Ordering::Relaxed);
        SEGMENTS.fetch_add(self.wal.segments_created(), Ordering::Relaxed);
        self.seed = self.seed.wrapping_add(0x9E37_79B9);
        for k in 0..4 {
            let image = self.device.crash_image(Crash::Random, self.seed ^ k);
            self.check_image(&image, "random crash image")?;
        }
        let image = self.device.crash_image(Crash::DropAll, 0);
        self.check_image(&image, "every volatile write lost")?;
        let image = self.device.crash_image(Crash::KeepAll, 0);
        self.check_image(&image, "every volatile write kept")?;

        let report = self.device.reboot();
        KEPT.fetch_add(report.kept, Ordering::Relaxed);
        DROPPED.fetch_add(report.dropped, Ordering::Relaxed);
        TORN.fetch_add(report.torn, Ordering::Relaxed);
        self.check_image(&self.device.contents(), "the image rebooted into")?;
        let (wal, recovery) =
            Wal::open(Arc::clone(&self.device), self.config, self.segment_bytes).map_err(fail)?;
        self.wal = Arc::new(wal);
        let found = recovery.records.len();
        self.history.truncate(found);
        check(recovery.records == self.history, || {
            "reopen recovered other records".to_owned()
        })?;
        // Reopening made the recovered records durable: they must outlive later crashes.
        self.acked = found;
        Ok(())
    }

    fn run(&mut self, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Append { len } => {
                self.append(len);
            }
            Step::Commit { back } => {
                if let Some(record) = self.history.iter().rev().nth(back) {
                    let lsn = record.lsn;
                    self.commit(lsn)?;
                }
            }
            Step::AppendCommit { len } => {
                if let Some(lsn) = self.append(len) {
                    self.commit(lsn)?;
                }
            }
            Step::Concurrent { threads, each } => self.concurrent(threads, each)?,
            Step::ConcurrentCut {
                threads,
                each,
                after_ops,
            } => {
                self.device.cut_power_after(after_ops);
                self.concurrent(threads, each)?;
                self.crash()?;
            }
            Step::FailSyncs { plan, errno } => self.device.fail_syncs(plan, errno),
            Step::FailWrites { plan, errno } => self.device.fail_writes(plan, errno),
            Step::Crash => self.crash()?,
        }
        Ok(())
    }
}

fn fail(error: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(error.to_string())
}

/// Records back to back from segment 0's first record, but where the next record did
/// not fit in a segment and starts the next; none spans segments.
fn contiguous(history: &[Record], segment_bytes: u64) -> bool {
    let inside = |r: &Record| {
        let segment = r.start / segment_bytes;
        r.start >= log::segment_start(segment, segment_bytes)
            && r.lsn <= (segment + 1) * segment_bytes
    };
    let follows = |a: &Record, b: &Record| {
        let segment_end = (a.start / segment_bytes + 1) * segment_bytes;
        b.start == a.lsn
            || (b.start == segment_end + log::SEGMENT_HEADER as u64
                && a.lsn + (b.lsn - b.start) > segment_end)
    };
    history
        .first()
        .map_or(true, |r| r.start == log::segment_start(0, segment_bytes))
        && history.iter().all(inside)
        && history.windows(2).all(|w| follows(&w[0], &w[1]))
}

#[test]
fn every_acknowledged_record_survives_power_loss() {
    let cases = support::env_count("GC_POWER_CASES", 256) as u32;
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let strategy = (
        config(),
        340u64..1_200,
        any::<u64>(),
        proptest::collection::vec(step(), 1..40),
    );
    support::within(support::WATCHDOG * 5, "power-loss schedules", move || {
        runner
            .run(&strategy, |(config, segment_bytes, seed, steps)| {
                let mut harness = Harness::new(config, segment_bytes, seed)?;
                for step in &steps {
                    harness.run(step)?;
                }
                harness.crash()
            })
            .unwrap();
    });
    println!(
        "verify: power loss: {cases} schedules, {} crashes, {} segments created, {} crash \
         images checked, {} acknowledged records checked present; volatile operations kept \
         {} / dropped {} / torn {}; {} calls failed as injected",
        CRASHES.load(Ordering::Relaxed),
        SEGMENTS.load(Ordering::Relaxed),
        IMAGES.load(Ordering::Relaxed),
        ACKED_CHECKED.load(Ordering::Relaxed),
        KEPT.load(Ordering::Relaxed),
        DROPPED.load(Ordering::Relaxed),
        TORN.load(Ordering::Relaxed),
        FAILED_CALLS.load(Ordering::Relaxed),
    );
}

/// The device model itself: a sync of a segment covers the writes to it that completed
/// before the sync, a failed sync's writes never become durable, a crash can drop
/// anything volatile, and a segment whose directory entry was not synced is lost whole.
#[test]
fn the_simulated_device_forgets_what_no_sync_covered() {
    let image =
        |pairs: &[(u64, &[u8])]| -> Image { pairs.iter().map(|(k, v)| (*k, v.to_vec())).collect() };
    let device = SimDevice::new(7);
    device.create(0).unwrap();
    device.sync_dir().unwrap();
    device.write_at(0, 0, b"durable").unwrap();
    device.sync(0).unwrap();
    device.write_at(0, 7, b"volatile").unwrap();
    assert_eq!(device.contents(), image(&[(0, b"durablevolatile")]));
    assert_eq!(
        device.crash_image(Crash::DropAll, 0),
        image(&[(0, b"durable")])
    );
    assert_eq!(
        device.crash_image(Crash::KeepAll, 0),
        image(&[(0, b"durablevolatile")])
    );

    device.fail_syncs(Plan::Once(0), 5);
    assert_eq!(device.sync(0).unwrap_err().raw_os_error(), Some(5));
    // A later sync succeeds, but the write the failed one was flushing stays lost.
    device.write_at(0, 15, b"!").unwrap();
    device.sync(0).unwrap();
    assert_eq!(
        device.crash_image(Crash::DropAll, 0),
        image(&[(0, b"durable\0\0\0\0\0\0\0\0!")])
    );

    // A segment created, written and synced, but its directory not synced: lost whole.
    device.create(1).unwrap();
    device.write_at(1, 0, b"in segment 1").unwrap();
    device.sync(1).unwrap();
    assert_eq!(device.segments().unwrap(), [0, 1]);
    assert!(!device.crash_image(Crash::DropAll, 0).contains_key(&1));
    // A sync of another segment does not help either; a sync of the directory does.
    device.sync(0).unwrap();
    assert!(!device.crash_image(Crash::DropAll, 0).contains_key(&1));
    device.sync_dir().unwrap();
    assert_eq!(
        device
            .crash_image(Crash::DropAll, 0)
            .get(&1)
            .map(Vec::as_slice),
        Some(&b"in segment 1"[..])
    );
    // The same for a removal: undone at a crash until the directory is synced.
    device.remove(1).unwrap();
    assert!(device.crash_image(Crash::DropAll, 0).contains_key(&1));
    device.sync_dir().unwrap();
    assert!(!device.crash_image(Crash::DropAll, 0).contains_key(&1));
    // A segment created again is a new file: the old bytes do not come back.
    device.create(1).unwrap();
    device.sync_dir().unwrap();
    assert_eq!(
        device.crash_image(Crash::KeepAll, 0).get(&1),
        Some(&Vec::new())
    );

    device.cut_power_after(0);
    assert!(device.write_at(0, 16, b"x").is_err());
    assert!(device.is_off());
    device.reboot();
    assert!(device.read(0).unwrap().starts_with(b"durable"));
}
