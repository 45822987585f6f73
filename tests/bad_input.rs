//! Bad input: every invalid configuration, written LSNs that go backwards, commits
//! beyond what was written, zero, tiny and huge timeouts, and damaged log files. Each
//! gets a clear error (or, for a damaged log, the records before the damage), never a
//! panic or a hang, and none of them poisons the manager.
#![cfg(not(any(feature = "loom", feature = "shuttle")))]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;

use group_commit::{Config, ConfigError, FsyncManager, GroupCommit};
use proptest::prelude::*;
use std::collections::HashSet;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::sim::{Image, SimDevice};
use support::{within, WATCHDOG};

const MS: Duration = Duration::from_millis(1);
const NS: Duration = Duration::from_nanos(1);

/// The settings a builder can be given, for the table and the property below.
#[derive(Clone, Copy, Debug)]
struct Settings {
    threshold: usize,
    interval: Duration,
    adaptive: Duration,
    timeout: Duration,
}

impl Settings {
    fn build(self) -> Result<Config, ConfigError> {
        Config::builder()
            .group_threshold(self.threshold)
            .group_interval(self.interval)
            .adaptive_gathering(self.adaptive)
            .waiter_timeout(self.timeout)
            .build()
    }

    /// The rules, written out independently of `build`.
    fn valid(self) -> bool {
        let fixed = self.threshold > 0;
        let has_interval = !self.interval.is_zero();
        !self.timeout.is_zero()
            && fixed == has_interval
            && (!fixed || self.interval < self.timeout)
            && (self.adaptive.is_zero() || (!fixed && self.adaptive < self.timeout))
    }
}

fn settings(
    threshold: usize,
    interval: Duration,
    adaptive: Duration,
    timeout: Duration,
) -> Settings {
    Settings {
        threshold,
        interval,
        adaptive,
        timeout,
    }
}

#[test]
fn every_invalid_config_is_refused_with_its_own_error() {
    let timeout = group_commit::DEFAULT_WAITER_TIMEOUT;
    let zero = Duration::ZERO;
    let max = Duration::MAX;
    let cases = [
        (
            settings(0, zero, zero, zero),
            ConfigError::ZeroWaiterTimeout,
        ),
        (settings(4, MS, zero, zero), ConfigError::ZeroWaiterTimeout),
        (
            settings(0, MS, zero, timeout),
            ConfigError::IntervalWithoutThreshold,
        ),
        (
            settings(0, max, zero, timeout),
            ConfigError::IntervalWithoutThreshold,
        ),
        (
            settings(1, zero, zero, timeout),
            ConfigError::ThresholdWithoutInterval,
        ),
        (
            settings(usize::MAX, zero, zero, timeout),
            ConfigError::ThresholdWithoutInterval,
        ),
        (
            settings(2, timeout, zero, timeout),
            ConfigError::IntervalNotBelowTimeout,
        ),
        (
            settings(2, max, zero, timeout),
            ConfigError::IntervalNotBelowTimeout,
        ),
        (
            settings(2, 10 * MS, zero, 5 * MS),
            ConfigError::IntervalNotBelowTimeout,
        ),
        (
            settings(2, max, zero, max),
            ConfigError::IntervalNotBelowTimeout,
        ),
        (
            settings(0, zero, timeout, timeout),
            ConfigError::IntervalNotBelowTimeout,
        ),
        (
            settings(0, zero, max, timeout),
            ConfigError::IntervalNotBelowTimeout,
        ),
        (
            settings(2, MS, MS, timeout),
            ConfigError::TwoGatheringPolicies,
        ),
    ];
    let mut messages = HashSet::new();
    for (settings, expected) in cases {
        assert!(!settings.valid(), "{settings:?}");
        let error = settings.build().unwrap_err();
        assert_eq!(error, expected, "{settings:?}");
        let message = error.to_string();
        assert!(message.len() > 20, "a clear message: {message:?}");
        let _: &dyn std::error::Error = &error;
        messages.insert(message);
    }
    assert_eq!(
        messages.len(),
        5,
        "one message per kind of error: {messages:?}"
    );

    // The edges that are fine.
    for settings in [
        settings(0, zero, zero, NS),
        settings(0, zero, zero, max),
        settings(1, NS, zero, 2 * NS),
        settings(2, timeout - NS, zero, timeout),
        settings(usize::MAX, MS, zero, timeout),
        settings(0, zero, NS, timeout),
        settings(0, zero, timeout - NS, timeout),
    ] {
        assert!(settings.valid(), "{settings:?}");
        settings
            .build()
            .unwrap_or_else(|e| panic!("{settings:?}: {e}"));
    }
}

fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::MAX),
        Just(group_commit::DEFAULT_WAITER_TIMEOUT),
        (0u64..2_000_000_000).prop_map(Duration::from_nanos),
        any::<u64>().prop_map(Duration::from_nanos),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any combination of values: `build` never panics, and accepts exactly the valid
    /// ones; what it accepts reads back unchanged.
    #[test]
    fn build_accepts_exactly_the_valid_settings(
        threshold in prop_oneof![Just(0usize), Just(1), Just(usize::MAX), 0usize..64],
        interval in duration(),
        adaptive in duration(),
        timeout in duration(),
    ) {
        let s = settings(threshold, interval, adaptive, timeout);
        match s.build() {
            Ok(config) => {
                prop_assert!(s.valid(), "accepted {:?}", s);
                prop_assert_eq!(config.group_threshold(), threshold);
                prop_assert_eq!(config.group_interval(), interval);
                prop_assert_eq!(config.waiter_timeout(), timeout);
            }
            Err(error) => {
                prop_assert!(!s.valid(), "refused {:?}: {}", s, error);
            }
        }
    }
}

#[test]
fn written_lsn_going_backwards_is_refused() {
    let log = GroupCommit::new(Config::default());
    log.mark_written(100).unwrap();
    log.mark_written(100).unwrap(); // the same LSN again is fine
    let error = log.mark_written(99).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let message = error.to_string();
    assert!(
        message.contains("99") && message.contains("100"),
        "{message}"
    );
    assert_eq!(log.written_lsn(), 100, "a refused LSN changes nothing");
    log.mark_written(0).unwrap_err();
    // Not poisoned: the log goes on.
    log.commit(100, || Ok(())).unwrap();
    assert!(log.failure().is_none());
    assert_eq!(log.durable_lsn(), 100);
}

#[test]
fn commit_beyond_the_written_lsn_is_refused() {
    let log = GroupCommit::new(Config::default());
    let error = log
        .commit(1, || unreachable!("no fsync for a bad LSN"))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    log.mark_written(100).unwrap();
    let error = log
        .commit(101, || unreachable!("no fsync for a bad LSN"))
        .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("101"), "{error}");
    let error = log.commit(u64::MAX, || unreachable!()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert!(log.failure().is_none(), "bad input does not poison");
    assert_eq!(log.stats().failed_requests, 3);
    assert_eq!(log.stats().fsyncs, 0);
    log.commit(100, || Ok(())).unwrap();
    // LSN 0 names no record: refused even once something is durable.
    let error = log.commit(0, || unreachable!()).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(log.stats().fsyncs, 1);
    assert_eq!(log.stats().failed_requests, 4);
}

/// Bad commits from some threads while others commit properly: the bad ones get
/// `InvalidInput`, the good ones all succeed, nothing is poisoned, nothing hangs.
#[test]
fn bad_commits_among_good_ones_from_many_threads() {
    within(WATCHDOG, "bad commits among good ones", || {
        let log = Arc::new(GroupCommit::new(Config::default()));
        let written = Arc::new(Mutex::new(0u64));
        let threads: Vec<_> = (0..16u64)
            .map(|t| {
                let (log, written) = (Arc::clone(&log), Arc::clone(&written));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let lsn = {
                            let mut w = written.lock().unwrap();
                            *w += 10;
                            log.mark_written(*w).unwrap();
                            *w
                        };
                        if t % 2 == 0 {
                            let e = log.commit(lsn + 1_000_000, || Ok(())).unwrap_err();
                            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                            let e = log.mark_written(lsn - 1).unwrap_err();
                            assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
                        }
                        log.commit(lsn, || {
                            std::thread::sleep(Duration::from_micros(20));
                            Ok(())
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(log.failure().is_none());
        assert_eq!(log.durable_lsn(), log.written_lsn());
    });
}

/// Eight threads commit 200 times each with the given waiter timeout.
fn commit_with_waiter_timeout(timeout: Duration) {
    within(WATCHDOG, "extreme waiter timeouts", move || {
        let config = Config::builder().waiter_timeout(timeout).build().unwrap();
        let log = Arc::new(GroupCommit::new(config));
        let written = Arc::new(Mutex::new(0u64));
        let fsyncs = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (log, written, fsyncs) =
                    (Arc::clone(&log), Arc::clone(&written), Arc::clone(&fsyncs));
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        let lsn = {
                            let mut w = written.lock().unwrap();
                            *w += 1;
                            log.mark_written(*w).unwrap();
                            *w
                        };
                        log.commit(lsn, || {
                            fsyncs.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_micros(50));
                            Ok(())
                        })
                        .unwrap();
                        assert!(log.durable_lsn() >= lsn);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let stats = log.stats();
        assert_eq!(stats.fsyncs, fsyncs.load(Ordering::Relaxed));
        assert_eq!(stats.requests, 1_600);
        assert_eq!(stats.failed_requests, 0);
        println!(
            "waiter timeout {timeout:?}: {} fsyncs, {} timeouts",
            stats.fsyncs, stats.timeouts
        );
    });
}

/// A short waiter timeout (every wait may time out) and one too long to represent as
/// a deadline: both still serve every commit.
#[test]
fn short_and_huge_waiter_timeouts_still_serve_everyone() {
    for timeout in [
        Duration::from_micros(10),
        Duration::from_millis(1),
        Duration::MAX,
    ] {
        commit_with_waiter_timeout(timeout);
    }
}

/// The smallest valid timeout, 1 ns: each deadline has passed before the waiter waits.
/// The std backend once returned from such a wait without releasing the mutex, so the
/// waiter looped (timeout, recheck, wait) inside the critical section and the leader
/// could never record its fsync: every caller hung. A wait must let go of the lock even
/// when its deadline is already behind it.
#[test]
fn one_nanosecond_waiter_timeout_still_serves_everyone() {
    commit_with_waiter_timeout(NS);
}

/// The drop-in constructor accepts every value, as the reference did; with gathering
/// off or a lone caller, none of them can stall it.
#[test]
fn reference_constructor_accepts_every_value() {
    within(WATCHDOG, "reference constructor values", || {
        for (threshold, interval_ms) in [
            (0, 0),
            (0, u64::MAX),
            (usize::MAX, 0),
            (1, u64::MAX),
            (usize::MAX, u64::MAX),
        ] {
            let manager = FsyncManager::new(threshold, interval_ms);
            for _ in 0..3 {
                manager.fsync(|| Ok(())).unwrap();
            }
            assert_eq!(manager.fsync_count(), 3, "({threshold}, {interval_ms})");
        }
    });
}

/// Extreme drop-in settings under contention: a threshold that can never be met and an
/// interval of `u64::MAX` ms once made the first gathering leader wait for ever. The
/// interval is capped at `MAX_REFERENCE_INTERVAL`, so every caller is served.
#[test]
fn reference_constructor_extremes_never_stall_a_group() {
    within(WATCHDOG, "extreme reference settings, 4 threads", || {
        let manager = Arc::new(FsyncManager::new(usize::MAX, u64::MAX));
        assert_eq!(
            manager.config().group_interval(),
            group_commit::MAX_REFERENCE_INTERVAL
        );
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let manager = Arc::clone(&manager);
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        manager
                            .fsync(|| {
                                std::thread::sleep(MS);
                                Ok(())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(manager.stats().served, 20);
    });
}

/// A log of records with payloads of `lens` bytes, laid out in segments of
/// `segment_bytes` as the log lays them out (a record that does not fit starts the next
/// segment).
fn records_log(lens: &[usize], segment_bytes: u64) -> (Image, Vec<log::Record>) {
    let mut image = Image::new();
    let mut records = Vec::new();
    let mut end = log::segment_start(0, segment_bytes);
    image.insert(0, log::segment_header(0, segment_bytes, 0).to_vec());
    for (i, &len) in lens.iter().enumerate() {
        let payload = log::sample_payload(1, 0, i as u64, len);
        let start = log::place(end, (log::HEADER + payload.len()) as u64, segment_bytes);
        let segment = start / segment_bytes;
        let bytes = image
            .entry(segment)
            .or_insert_with(|| log::segment_header(segment, segment_bytes, end).to_vec());
        assert_eq!(bytes.len() as u64, start - segment * segment_bytes);
        bytes.extend(log::encode(&payload, start));
        end = start + (log::HEADER + payload.len()) as u64;
        records.push(log::Record {
            start,
            lsn: end,
            payload,
        });
    }
    (image, records)
}

/// One segment's records from offset 0, as `log::scan_records` reads them.
fn flat_log(lens: &[usize]) -> (Vec<u8>, Vec<log::Record>) {
    let mut bytes = Vec::new();
    let mut records = Vec::new();
    for (i, &len) in lens.iter().enumerate() {
        let payload = log::sample_payload(1, 0, i as u64, len);
        let start = bytes.len() as u64;
        bytes.extend(log::encode(&payload, start));
        records.push(log::Record {
            start,
            lsn: bytes.len() as u64,
            payload,
        });
    }
    (bytes, records)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// Whatever a segment holds, the record scan returns, without panicking, whole
    /// records that check out, back to back from where it started.
    #[test]
    fn recovery_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        let (records, end, _) = log::scan_records(&bytes, 0, 0);
        prop_assert!(end <= bytes.len());
        let mut at = 0;
        for record in &records {
            prop_assert_eq!(record.start, at);
            at = record.lsn;
        }
        prop_assert_eq!(at, end as u64);
    }

    /// Whatever the segments of a log hold (garbage, or a valid log with garbage put in
    /// a segment or a header), recovery returns whole records that check out, without
    /// panicking, never past a segment that does not check out.
    #[test]
    fn recovery_never_panics_on_garbage_segments(
        lens in proptest::collection::vec(0usize..120, 0..12),
        segment_bytes in 64u64..400,
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        victim in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
    ) {
        let lens: Vec<usize> = lens.into_iter().map(|l| l.min(log::max_payload(segment_bytes))).collect();
        let (mut image, records) = records_log(&lens, segment_bytes);
        let segment = victim.index(image.len()) as u64;
        let bytes = image.get_mut(&segment).expect("a segment");
        let from = at.index(bytes.len() + 1);
        bytes.truncate(from);
        bytes.extend(&garbage);
        let recovery = log::scan_image(&image, segment_bytes);
        for (got, want) in recovery.records.iter().zip(&records) {
            prop_assert_eq!(got, want);
        }
        prop_assert!(recovery.segments <= image.len() as u64);
    }

    /// A record scan of bytes cut anywhere recovers exactly the records that end before
    /// the cut.
    #[test]
    fn recovery_of_a_cut_log(lens in proptest::collection::vec(0usize..300, 0..12), cut in any::<prop::sample::Index>()) {
        let (bytes, records) = flat_log(&lens);
        let cut = cut.index(bytes.len() + 1);
        let (found, _, stop) = log::scan_records(&bytes[..cut], 0, 0);
        let whole: Vec<_> = records.iter().filter(|r| r.lsn as usize <= cut).cloned().collect();
        prop_assert_eq!(&found, &whole);
        let clean = whole.last().map_or(0, |r| r.lsn) as usize == cut;
        prop_assert_eq!(stop == log::Stop::End, clean);
    }

    /// A segmented log cut anywhere in one segment (later segments kept, or lost)
    /// recovers exactly the records before the cut, and none after it: a later segment
    /// does not follow on from a cut one.
    #[test]
    fn recovery_of_a_cut_segmented_log(
        lens in proptest::collection::vec(0usize..120, 1..16),
        segment_bytes in 64u64..400,
        victim in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
        keep_later in any::<bool>(),
    ) {
        let lens: Vec<usize> = lens.into_iter().map(|l| l.min(log::max_payload(segment_bytes))).collect();
        let (mut image, records) = records_log(&lens, segment_bytes);
        let segment = victim.index(image.len()) as u64;
        let full = image[&segment].len();
        let cut = cut.index(full + 1);
        image.get_mut(&segment).expect("a segment").truncate(cut);
        if !keep_later {
            image.retain(|&k, _| k <= segment);
        }
        let last = *image.keys().last().expect("segment 0");
        let cut_lsn = segment * segment_bytes + cut as u64;
        let expected: Vec<_> = records
            .iter()
            .filter(|r| cut == full && (keep_later || r.start / segment_bytes <= segment) || r.lsn <= cut_lsn)
            .cloned()
            .collect();
        let recovery = log::scan_image(&image, segment_bytes);
        prop_assert_eq!(&recovery.records, &expected);
        // A cut inside the segment's header tears it, even where a record of the
        // segment before ends at the same LSN.
        let boundary = cut >= log::SEGMENT_HEADER
            && (cut == log::SEGMENT_HEADER || records.iter().any(|r| r.lsn == cut_lsn));
        let clean = cut == full || (segment == last && boundary);
        prop_assert_eq!(recovery.stop == log::Stop::End, clean, "{:?}", recovery.stop);
    }

    /// Any byte changed in a segmented log (a header's or a record's) stops recovery
    /// right before the damaged record, or at the end of the segment before a damaged
    /// header.
    #[test]
    fn recovery_stops_at_a_damaged_record(
        lens in proptest::collection::vec(0usize..120, 1..16),
        segment_bytes in 64u64..400,
        victim in any::<prop::sample::Index>(),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let lens: Vec<usize> = lens.into_iter().map(|l| l.min(log::max_payload(segment_bytes))).collect();
        let (mut image, records) = records_log(&lens, segment_bytes);
        let segment = victim.index(image.len()) as u64;
        let bytes = image.get_mut(&segment).expect("a segment");
        let at = at.index(bytes.len());
        bytes[at] ^= flip;
        let damaged = segment * segment_bytes + at as u64;
        let before: Vec<_> = records
            .iter()
            .filter(|r| r.lsn <= damaged && (at >= log::SEGMENT_HEADER || r.start / segment_bytes < segment))
            .cloned()
            .collect();
        let recovery = log::scan_image(&image, segment_bytes);
        prop_assert_eq!(recovery.records, before);
        prop_assert!(recovery.stop != log::Stop::End);
    }
}

#[test]
fn crc32c_known_answers() {
    assert_eq!(log::crc32c(b""), 0);
    assert_eq!(log::crc32c(b"123456789"), 0xE306_9283);
    assert_eq!(log::crc32c(&[0u8; 32]), 0x8A91_36AA);
}

#[test]
fn wal_refuses_bad_records_and_lsns() {
    const SEGMENT_BYTES: u64 = 256;
    let device = SimDevice::new(1);
    let (wal, _) = log::Wal::open(Arc::clone(&device), Config::default(), SEGMENT_BYTES).unwrap();
    let lsn = wal.append_durably(b"a record of twenty bytes").unwrap();
    for too_long in [log::MAX_PAYLOAD + 1, log::max_payload(SEGMENT_BYTES) + 1] {
        let error = wal.append(&vec![0; too_long]).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
    assert_eq!(wal.end(), lsn, "a refused record writes nothing");
    let error = wal.commit(lsn + 1).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    // Neither poisoned anything.
    let next = wal.append_durably(b"another record").unwrap();
    assert!(next > lsn);
    // An empty payload is a record too.
    let empty = wal.append_durably(b"").unwrap();
    assert_eq!(empty, next + log::HEADER as u64);
    // The largest record a segment holds fills a segment of its own.
    let full = wal
        .append_durably(&vec![7; log::max_payload(SEGMENT_BYTES)])
        .unwrap();
    assert_eq!(full, 2 * SEGMENT_BYTES);
    let recovered = log::scan_image(&device.contents(), SEGMENT_BYTES).records;
    assert_eq!(recovered.len(), 4);
    assert_eq!(recovered[2].payload, b"");
    assert_eq!(wal.last_segment(), 1);
}

/// A log is never opened with another segment size than it was written with (its
/// records would not check out, and the cut would destroy them): refused, untouched.
#[test]
fn wal_refuses_another_segment_size() {
    let device = SimDevice::new(2);
    let (wal, _) = log::Wal::open(Arc::clone(&device), Config::default(), 256).unwrap();
    wal.append_durably(b"a record of twenty bytes").unwrap();
    drop(wal);
    let before = device.contents();
    let error = log::Wal::open(Arc::clone(&device), Config::default(), 512)
        .err()
        .expect("another segment size is refused");
    assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    assert_eq!(device.contents(), before);
    for bad in [0, log::MIN_SEGMENT_BYTES - 1, log::MAX_SEGMENT_BYTES + 1] {
        let error = log::Wal::open(Arc::clone(&device), Config::default(), bad)
            .err()
            .expect("a segment size out of range is refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}

/// How long a misuse may take to be refused: a hang without the re-entrancy check, a few
/// microseconds with it.
const REFUSED_WITHIN: Duration = Duration::from_secs(1);

/// What one misuse case did: the error the misuse got, and whether the outer call (if
/// any) still returned `Ok` with the manager unpoisoned.
struct Misused {
    error: io::Error,
    outer_ok: bool,
}

/// Re-entrant calls through the closure front end: the inner call's error, and the
/// outer call's outcome when its closure then syncs and returns `Ok`.
fn manager_within_its_own_fsync() -> Misused {
    let m = Arc::new(FsyncManager::new(0, 0));
    let mut inner = None;
    let outer = m.fsync(|| {
        inner = Some(m.fsync(|| unreachable!("a re-entrant call never runs an fsync")));
        Ok(())
    });
    Misused {
        error: inner.expect("the closure ran").unwrap_err(),
        outer_ok: outer.is_ok() && m.failure().is_none(),
    }
}

/// The issue's own example: mark a new LSN (allowed: it does not wait), then commit it.
fn group_commit_within_its_own_fsync() -> Misused {
    let g = GroupCommit::new(Config::default());
    g.mark_written(10).unwrap();
    let mut inner = None;
    let outer = g.commit(10, || {
        g.mark_written(20)?;
        inner = Some(g.commit(20, || unreachable!("a re-entrant call never runs an fsync")));
        Ok(())
    });
    Misused {
        error: inner.expect("the closure ran").unwrap_err(),
        outer_ok: outer.is_ok() && g.failure().is_none() && g.durable_lsn() == 10,
    }
}

/// Manager A's closure calls B, whose closure (on the same thread, B's leader) calls A.
fn a_calls_b_calls_a() -> Misused {
    let a = FsyncManager::new(0, 0);
    let b = FsyncManager::new(0, 0);
    let mut inner = None;
    let outer = a.fsync(|| {
        b.fsync(|| {
            inner = Some(a.fsync(|| unreachable!("a re-entrant call never runs an fsync")));
            Ok(())
        })
    });
    Misused {
        error: inner.expect("the closure ran").unwrap_err(),
        outer_ok: outer.is_ok() && a.failure().is_none() && b.failure().is_none(),
    }
}

/// A closure that passes the refusal on fails its own fsync: the manager is poisoned
/// with that error, as by any failed fsync (its waiters' data was not synced).
fn error_passed_on_fails_the_fsync() -> Misused {
    let m = FsyncManager::new(0, 0);
    let outer = m.fsync(|| m.fsync(|| Ok(())));
    let error = outer.unwrap_err();
    let poisoned_with_it = m
        .failure()
        .is_some_and(|f| f.kind() == io::ErrorKind::InvalidInput);
    Misused {
        error,
        outer_ok: !poisoned_with_it,
    }
}

fn commit_lsn_zero() -> Misused {
    let g = GroupCommit::new(Config::default());
    let error = g
        .commit(0, || unreachable!("no fsync for LSN 0"))
        .unwrap_err();
    Misused {
        error,
        outer_ok: g.failure().is_none(),
    }
}

fn mark_lsn_max() -> Misused {
    let g = GroupCommit::new(Config::default());
    let error = g.mark_written(u64::MAX).unwrap_err();
    Misused {
        error,
        outer_ok: g.failure().is_none() && g.written_lsn() == 0,
    }
}

fn commit_lsn_max() -> Misused {
    let g = GroupCommit::new(Config::default());
    g.mark_written(u64::MAX - 1).unwrap();
    let error = g.commit(u64::MAX, || unreachable!()).unwrap_err();
    Misused {
        error,
        outer_ok: g.failure().is_none(),
    }
}

/// The misuse table of docs/reliability.md: case, what it must get (an `InvalidInput`
/// whose message names the mistake), and whether the manager goes on unpoisoned
/// (`outer_ok`: for the last re-entrant case, the closure's own choice poisons it).
#[test]
fn misuse_gets_a_clear_error_never_a_hang() {
    type Case = (&'static str, fn() -> Misused, &'static str, bool);
    let table: [Case; 7] = [
        (
            "FsyncManager::fsync inside its own fsync closure",
            manager_within_its_own_fsync,
            "re-entrant call",
            true,
        ),
        (
            "GroupCommit::commit inside its own fsync closure",
            group_commit_within_its_own_fsync,
            "re-entrant call",
            true,
        ),
        (
            "A's closure calls B, whose closure calls A",
            a_calls_b_calls_a,
            "re-entrant call",
            true,
        ),
        (
            "a closure returns the refusal as its result",
            error_passed_on_fails_the_fsync,
            "re-entrant call",
            false,
        ),
        ("commit LSN 0", commit_lsn_zero, "LSN 0", true),
        ("mark_written(u64::MAX)", mark_lsn_max, "u64::MAX", true),
        ("commit u64::MAX", commit_lsn_max, "u64::MAX", true),
    ];
    for (case, run, says, goes_on) in table {
        let misused = within(REFUSED_WITHIN, case, run);
        assert_eq!(misused.error.kind(), io::ErrorKind::InvalidInput, "{case}");
        let message = misused.error.to_string();
        assert!(message.contains(says), "{case}: {message}");
        assert_eq!(misused.outer_ok, goes_on, "{case}: {message}");
    }
}

/// A call from inside a closure to a manager that is not leading on this thread is
/// fine: nesting managers is allowed, only a cycle back to one is refused.
#[test]
fn nested_different_managers_are_not_misuse() {
    let a = FsyncManager::new(0, 0);
    let b = GroupCommit::new(Config::default());
    b.mark_written(5).unwrap();
    a.fsync(|| b.commit(5, || Ok(()))).unwrap();
    assert_eq!(
        (a.stats().fsyncs, b.stats().fsyncs, b.durable_lsn()),
        (1, 1, 5)
    );
    // After the closure, the same thread may call `a` again.
    a.fsync(|| Ok(())).unwrap();
}

/// A stuck fsync is visible: while a closure blocks, `fsync_in_flight` answers at once
/// with the callers waiting on it, and its age grows.
#[test]
fn a_stuck_fsync_is_visible() {
    within(WATCHDOG, "a stuck fsync", || {
        let m = Arc::new(FsyncManager::new(0, 0));
        assert_eq!(m.fsync_in_flight(), None);
        let (entered, in_fsync) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let leader = {
            let m = Arc::clone(&m);
            std::thread::spawn(move || {
                m.fsync(|| {
                    entered.send(()).unwrap();
                    released.recv().unwrap();
                    Ok(())
                })
            })
        };
        in_fsync.recv().unwrap();
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let m = Arc::clone(&m);
                std::thread::spawn(move || m.fsync(|| Ok(())))
            })
            .collect();
        while m.stats().waiting < 3 {
            std::thread::yield_now();
        }
        let first = m.fsync_in_flight().expect("an fsync is in flight");
        assert_eq!((first.waiting, first.riders, first.target), (3, 0, 1));
        std::thread::sleep(MS);
        let later = m.fsync_in_flight().expect("still in flight");
        assert!(later.age > first.age, "{first:?} then {later:?}");
        release.send(()).unwrap();
        leader.join().unwrap().unwrap();
        for waiter in waiters {
            waiter.join().unwrap().unwrap();
        }
        assert_eq!(m.fsync_in_flight(), None);
    });
}
