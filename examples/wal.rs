//! A write-ahead log in segment files, committed from many threads through group
//! commit: appends go to a log buffer, and the leader of each flush writes it out and
//! syncs it.
//!
//! ```text
//! cargo run --release --example wal                       # temp dir, 8 threads, 3 s, 1 KiB records
//! cargo run --release --example wal -- --segment-bytes 1048576   # many 1 MiB segments
//! cargo run --release --example wal -- --threads 32 --seconds 10 --dir /var/tmp/wal
//! ```
//!
//! Each thread appends a checksummed record, commits its LSN and, once `commit` returns,
//! counts the record as acknowledged. At the end the log is recovered from its segment
//! files and every acknowledged record must be there, intact. Options: `--dir PATH`
//! (kept afterwards; a temporary one is removed), `--threads N`, `--seconds S`,
//! `--record-bytes B`, `--segment-bytes N` (default 64 MiB), `--group-threshold N` with
//! `--group-interval-us U` (gathering).

// Shared with the tests, which use parts the example does not.
#[allow(dead_code)]
#[path = "wal/log.rs"]
mod log;

use group_commit::Config;
use log::{FileStorage, Stop, Storage, Wal};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

struct Options {
    dir: Option<PathBuf>,
    threads: u32,
    seconds: f64,
    record_bytes: usize,
    segment_bytes: u64,
    group_threshold: usize,
    group_interval_us: u64,
}

fn usage() -> String {
    "usage: wal [--dir PATH] [--threads N] [--seconds S] [--record-bytes B] \
     [--segment-bytes N] [--group-threshold N --group-interval-us U]"
        .to_owned()
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        dir: None,
        threads: 8,
        seconds: 3.0,
        record_bytes: 1024,
        segment_bytes: log::DEFAULT_SEGMENT_BYTES,
        group_threshold: 0,
        group_interval_us: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Err(usage());
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{arg} needs a value\n{}", usage()))?;
        let bad = |e: &dyn std::fmt::Display| format!("{arg} {value}: {e}\n{}", usage());
        match arg.as_str() {
            "--dir" => options.dir = Some(PathBuf::from(&value)),
            "--threads" => options.threads = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => options.seconds = value.parse().map_err(|e| bad(&e))?,
            "--record-bytes" => options.record_bytes = value.parse().map_err(|e| bad(&e))?,
            "--segment-bytes" => options.segment_bytes = value.parse().map_err(|e| bad(&e))?,
            "--group-threshold" => options.group_threshold = value.parse().map_err(|e| bad(&e))?,
            "--group-interval-us" => {
                options.group_interval_us = value.parse().map_err(|e| bad(&e))?
            }
            _ => return Err(format!("unknown option {arg}\n{}", usage())),
        }
    }
    if options.threads == 0 {
        return Err("--threads must be at least 1".to_owned());
    }
    if !(options.seconds > 0.0 && options.seconds.is_finite()) {
        return Err("--seconds must be a positive number".to_owned());
    }
    if !(log::MIN_SEGMENT_BYTES..=log::MAX_SEGMENT_BYTES).contains(&options.segment_bytes) {
        return Err(format!(
            "--segment-bytes must be between {} and {}",
            log::MIN_SEGMENT_BYTES,
            log::MAX_SEGMENT_BYTES
        ));
    }
    let max_payload = log::max_payload(options.segment_bytes);
    if options.record_bytes < log::SAMPLE_ID || options.record_bytes > max_payload {
        return Err(format!(
            "--record-bytes must be between {} and {max_payload} (with {}-byte segments)",
            log::SAMPLE_ID,
            options.segment_bytes
        ));
    }
    Ok(options)
}

/// What one thread did.
#[derive(Default)]
struct Work {
    /// (LSN, seq) of every acknowledged record.
    acked: Vec<(u64, u64)>,
    /// Nanoseconds from the start of each append to the return of its commit.
    latencies: Vec<u64>,
    error: Option<std::io::Error>,
}

fn main() -> ExitCode {
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("wal: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(options: &Options) -> std::io::Result<bool> {
    let temporary = options.dir.is_none();
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            std::env::temp_dir().join(format!("group-commit-wal-{}-{nanos}", std::process::id()))
        }
    };
    let result = run_in(options, &dir);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(options: &Options, dir: &std::path::Path) -> std::io::Result<bool> {
    let mut builder = Config::builder();
    if options.group_threshold > 0 || options.group_interval_us > 0 {
        builder = builder
            .group_threshold(options.group_threshold)
            .group_interval(Duration::from_micros(options.group_interval_us));
    }
    let config = builder
        .build()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;

    let (wal, recovered) = Wal::open(FileStorage::open(dir)?, config, options.segment_bytes)?;
    let segments_before = recovered.segments;
    let wal = Arc::new(wal);
    // A run tag keeps this run's records apart from any already in a kept `--dir`.
    let tag = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    println!(
        "wal: {} threads, {} s, {}-byte records, {}-byte segments, log {}",
        options.threads,
        options.seconds,
        options.record_bytes,
        options.segment_bytes,
        dir.display()
    );
    if !recovered.records.is_empty() {
        println!(
            "     (continuing after {} recovered records)",
            recovered.records.len()
        );
    }

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..options.threads)
        .map(|thread| {
            let (wal, stop, commits) = (Arc::clone(&wal), Arc::clone(&stop), Arc::clone(&commits));
            let record_bytes = options.record_bytes;
            std::thread::spawn(move || {
                let mut work = Work::default();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let payload = log::sample_payload(tag, thread, seq, record_bytes);
                    let began = Instant::now();
                    match wal.append_durably(&payload) {
                        Ok(lsn) => {
                            work.latencies.push(began.elapsed().as_nanos() as u64);
                            work.acked.push((lsn, seq));
                            commits.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => {
                            work.error = Some(error);
                            break;
                        }
                    }
                    seq += 1;
                }
                work
            })
        })
        .collect();

    let deadline = started + Duration::from_secs_f64(options.seconds);
    let mut last = (started, 0u64);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500).min(deadline - Instant::now()));
        let now = Instant::now();
        let done = commits.load(Ordering::Relaxed);
        let stats = wal.group().stats();
        println!(
            "  {:5.1} s  {:>10} commits  {:>9.0} commits/s  {:>8} flushes  segment {}",
            (now - started).as_secs_f64(),
            done,
            (done - last.1) as f64 / (now - last.0).as_secs_f64(),
            stats.fsyncs,
            wal.last_segment()
        );
        last = (now, done);
    }
    stop.store(true, Ordering::Relaxed);
    let works: Vec<Work> = workers
        .into_iter()
        .map(|w| w.join().expect("a worker panicked"))
        .collect();
    let elapsed = started.elapsed();

    let stats = wal.group().stats();
    let mut latencies: Vec<u64> = works
        .iter()
        .flat_map(|w| w.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let total = latencies.len() as u64;
    println!("summary");
    println!(
        "  commits        {total:>10}   {:.0} commits/s",
        total as f64 / elapsed.as_secs_f64()
    );
    println!(
        "  fsyncs         {:>10}   {:.3} fsyncs per commit, {:.1} commits per fsync, largest group {}",
        stats.fsyncs,
        stats.fsyncs as f64 / total.max(1) as f64,
        stats.mean_group_size(),
        stats.largest_group
    );
    println!(
        "  latency        p50 {}  p99 {}  p99.9 {}  max {}",
        ms(percentile(&latencies, 0.50)),
        ms(percentile(&latencies, 0.99)),
        ms(percentile(&latencies, 0.999)),
        ms(latencies.last().copied().unwrap_or(0))
    );
    println!(
        "  fsync time     {:.1} ms in all, {:.3} ms per fsync;  waiter timeouts {}",
        stats.fsync_time.as_secs_f64() * 1e3,
        stats.fsync_time.as_secs_f64() * 1e3 / stats.fsyncs.max(1) as f64,
        stats.timeouts
    );
    let counts = wal.flush_counts();
    println!(
        "  flushes        {:>10}   {} stopped short (a hole, or the target), {} commits waited for a copy",
        stats.fsyncs, stats.short_fsyncs, counts.hole_waits
    );
    println!(
        "  segments       {:>10}   written ({} in the log, {} recovered at the start, {} bytes each)",
        wal.segments_created(),
        wal.last_segment() + 1,
        segments_before,
        options.segment_bytes
    );
    let mut ok = true;
    for (thread, work) in works.iter().enumerate() {
        if let Some(error) = &work.error {
            println!("  thread {thread} stopped: {error}");
            ok = false;
        }
    }

    // Recover from the files alone, as after a restart.
    drop(wal);
    let files = FileStorage::open(dir)?;
    let recovery = log::scan_log(&files.segments()?, options.segment_bytes, |index| {
        files.read(index)
    })?;
    let found: HashMap<u64, &[u8]> = recovery
        .records
        .iter()
        .map(|r| (r.lsn, r.payload.as_slice()))
        .collect();
    let mut missing = 0u64;
    let mut damaged = 0u64;
    for (thread, work) in works.iter().enumerate() {
        for &(lsn, seq) in &work.acked {
            match found.get(&lsn) {
                None => missing += 1,
                Some(payload) if log::parse_sample(payload) != Some((tag, thread as u32, seq)) => {
                    damaged += 1
                }
                Some(_) => {}
            }
        }
    }
    println!("recovery");
    println!(
        "  scanned        {:>10} records in {} segments, up to LSN {}, stopped at {}",
        recovery.records.len(),
        recovery.segments,
        recovery.end,
        match recovery.stop {
            Stop::End => "the end of the log".to_owned(),
            Stop::Torn => format!("a torn record ({} bytes cut)", recovery.discarded),
            Stop::Corrupt => format!("a corrupt record ({} bytes cut)", recovery.discarded),
        }
    );
    if missing == 0 && damaged == 0 {
        println!("  acknowledged   {total:>10}   every one present and intact");
    } else {
        println!("  acknowledged   {total:>10}   MISSING {missing}, DAMAGED {damaged}");
        ok = false;
    }
    Ok(ok)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(nanos: u64) -> String {
    format!("{:.3} ms", nanos as f64 / 1e6)
}
