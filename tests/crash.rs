//! Process crash: a child process runs the WAL of `examples/wal` on real files (4 KiB
//! segments, so it rolls over every dozen records or so) with several threads and prints `ACK <lsn> <round> <thread> <seq>` once `commit` has
//! returned `Ok`. The parent kills it with SIGKILL at a random moment (before it opened
//! the log, during recovery, mid-append, mid-fsync), recovers the file, and checks that
//! every record the child ever acknowledged, in this round or an earlier one, is there
//! and intact, and that nothing but whole records the child wrote was recovered.
//!
//! The child is this test binary run again with `GC_CRASH_CHILD` set. Rounds share
//! one log (the next child recovers it and appends after what survived), in batches of
//! 20 per directory. `GC_CRASH_ROUNDS` sets the number of rounds (default 100).
//!
//! SIGKILL leaves the page cache alone, so this catches acknowledging before the write
//! and recovery bugs; losing unsynced writes is `tests/power_loss.rs`'s job.
#![cfg(all(unix, not(any(feature = "loom", feature = "shuttle"))))]

#[allow(dead_code)]
#[path = "../examples/wal/log.rs"]
mod log;
mod support;

use group_commit::Config;
use log::{FileStorage, Stop, Storage, Wal};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Rng;

const CHILD_ENV: &str = "GC_CRASH_CHILD";
const ROUND_ENV: &str = "GC_CRASH_CHILD_ROUND";
/// Set for a clean round: each child thread stops after this many records.
const RECORDS_ENV: &str = "GC_CRASH_CHILD_RECORDS";
const CHILD_THREADS: u32 = 4;
const ROUNDS_PER_LOG: u64 = 20;
/// Small segments: records of up to 331 bytes roll over every dozen or so.
const SEGMENT_BYTES: u64 = 4096;

fn log_dir(dir: &Path) -> PathBuf {
    dir.join("log")
}

/// The child: appends and commits until killed (or, if the parent is gone, for 30 s),
/// or in a clean round until each thread has committed its records.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return; // An ordinary test run: nothing to do.
    };
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let storage = FileStorage::open(&log_dir(Path::new(&dir))).unwrap();
    let (wal, _) = Wal::open(storage, Config::default(), SEGMENT_BYTES).unwrap();
    let wal = Arc::new(wal);
    let give_up = Instant::now() + Duration::from_secs(30);
    let records: u64 = std::env::var(RECORDS_ENV).map_or(u64::MAX, |n| n.parse().unwrap());
    let threads: Vec<_> = (0..CHILD_THREADS)
        .map(|thread| {
            let wal = Arc::clone(&wal);
            std::thread::spawn(move || {
                let mut seq = 0u64;
                while seq < records && Instant::now() < give_up {
                    let len = 24 + (seq as usize * 53 + thread as usize * 11) % 300;
                    let payload = log::sample_payload(round, thread, seq, len);
                    let lsn = wal.append_durably(&payload).unwrap();
                    // One write per line (well under PIPE_BUF), so lines never interleave.
                    let line = format!("ACK {lsn} {round} {thread} {seq}\n");
                    if std::io::stdout().lock().write_all(line.as_bytes()).is_err() {
                        return; // The parent is gone.
                    }
                    seq += 1;
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
}

/// One acknowledgement from a child.
#[derive(Clone, Copy, Debug)]
struct Ack {
    lsn: u64,
    round: u64,
    thread: u32,
    seq: u64,
}

fn parse_ack(line: &str) -> Option<Ack> {
    // libtest may have printed "test crash_child ... " on the same line first.
    let at = line.find("ACK ")?;
    let mut words = line[at + 4..].split(' ');
    let ack = Ack {
        lsn: words.next()?.parse().ok()?,
        round: words.next()?.parse().ok()?,
        thread: words.next()?.parse().ok()?,
        seq: words.next()?.parse().ok()?,
    };
    words.next().is_none().then_some(ack)
}

#[derive(Default)]
struct Totals {
    acked: u64,
    recovered: u64,
    torn_tails: u64,
    killed_before_first_ack: u64,
    clean_rounds: u64,
    /// The most segments a log had.
    segments: u64,
}

/// Runs one child and, unless `clean` gives its records per thread, kills it at a
/// random moment; returns what it acknowledged.
fn run_child(dir: &Path, round: u64, clean: Option<u64>, rng: &mut Rng) -> Vec<Ack> {
    let mut command = Command::new(std::env::current_exe().unwrap());
    if let Some(records) = clean {
        command.env(RECORDS_ENV, records.to_string());
    }
    let mut child = command
        .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the child");
    let stdout = child.stdout.take().unwrap();
    let (lines, acks) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line) {
                if lines.send(ack).is_err() {
                    break;
                }
            }
        }
    });

    if clean.is_some() {
        let status = child.wait().unwrap();
        assert!(
            status.success(),
            "round {round}: the child failed ({status})"
        );
        reader.join().unwrap();
        return acks.try_iter().collect();
    }

    // The kill point: after a random number of acknowledgements (0 kills it while it
    // starts or recovers), then a random pause of up to 2 ms.
    let wanted = match rng.below(4) {
        0 => 0,
        1 => rng.below(20),
        _ => rng.below(400),
    };
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while (got.len() as u64) < wanted {
        match acks.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(ack) => got.push(ack),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_micros(rng.below(2_000)));
    child.kill().expect("SIGKILL the child");
    let status = child.wait().unwrap();
    // The child must have died of the kill, not of a failure of its own.
    assert!(
        status.code().is_none(),
        "round {round}: the child exited by itself ({status}) before the kill"
    );
    reader.join().unwrap();
    // Lines the child wrote before it died are acknowledgements too.
    got.extend(acks.try_iter());
    got
}

/// Checks the log against every acknowledgement so far.
fn check_log(dir: &Path, acks: &[Ack], totals: &mut Totals, round: u64) {
    let files = FileStorage::open(&log_dir(dir)).unwrap();
    let listed = files.segments().unwrap();
    let recovery = log::scan_log(&listed, SEGMENT_BYTES, |index| files.read(index)).unwrap();
    totals.segments = totals.segments.max(listed.len() as u64);
    let by_lsn: HashMap<u64, &log::Record> = recovery.records.iter().map(|r| (r.lsn, r)).collect();
    for ack in acks {
        let record = by_lsn.get(&ack.lsn).unwrap_or_else(|| {
            panic!(
                "round {round}: acknowledged record {ack:?} is missing; recovery stopped at {} ({:?})",
                recovery.end, recovery.stop
            )
        });
        assert_eq!(
            log::parse_sample(&record.payload),
            Some((ack.round, ack.thread, ack.seq)),
            "round {round}: record at LSN {} is not the one acknowledged ({ack:?})",
            ack.lsn
        );
    }
    // Whatever was recovered is whole records that some child wrote.
    for record in &recovery.records {
        assert!(
            log::parse_sample(&record.payload).is_some(),
            "round {round}: recovered a record no child wrote at {}",
            record.start
        );
    }
    totals.recovered = recovery.records.len() as u64;
    if recovery.stop != Stop::End {
        totals.torn_tails += 1;
    }
}

#[test]
fn every_acknowledged_record_survives_sigkill() {
    let rounds = support::env_count("GC_CRASH_ROUNDS", 100);
    let seed = support::env_count("GC_CRASH_SEED", Rng::fresh_seed());
    println!("process crash: {rounds} rounds, GC_CRASH_SEED={seed}");
    let mut rng = Rng::new(seed);
    let mut totals = Totals::default();
    let mut unacked = 0u64;
    let mut scratch = None;
    let mut acks: Vec<Ack> = Vec::new();
    for round in 0..rounds {
        if round % ROUNDS_PER_LOG == 0 {
            // A fresh log now and then keeps each recovery scan short.
            scratch = Some(support::ScratchDir::new("crash"));
            acks.clear();
        }
        let dir = scratch.as_ref().unwrap().path().to_owned();
        // One round in five ends in a clean shutdown: then every record each thread
        // wrote was acknowledged, the last one included.
        let clean = rng.percent(20).then(|| 1 + rng.below(30));
        let new = run_child(&dir, round, clean, &mut rng);
        if let Some(records) = clean {
            assert_eq!(new.len() as u64, records * u64::from(CHILD_THREADS));
            totals.clean_rounds += 1;
        } else if new.is_empty() {
            totals.killed_before_first_ack += 1;
        }
        totals.acked += new.len() as u64;
        acks.extend(new);
        check_log(&dir, &acks, &mut totals, round);
        unacked += totals.recovered.saturating_sub(acks.len() as u64);
    }
    println!(
        "verify: process crash: {rounds} rounds ({} clean shutdowns, the rest SIGKILL), {} acknowledged records all present and \
         intact; {} kills before the first acknowledgement, {} logs with a torn tail cut \
         off, {unacked} records present though never acknowledged (written, not yet \
         reported); up to {} segments of {SEGMENT_BYTES} bytes in a log",
        totals.clean_rounds,
        totals.acked,
        totals.killed_before_first_ack,
        totals.torn_tails,
        totals.segments
    );
}
