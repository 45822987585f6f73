//! The process the power-cut test kills: the WAL example's log module on real files (a
//! directory of segments), with many committer threads.
//!
//! ```text
//! wal_child LOG_DIR SEGMENT_BYTES THREADS RECORDS_PER_THREAD TAG SEED
//! ```
//!
//! Opens (recovers) the log with `Wal::open` on `FileStorage` (segments of
//! `SEGMENT_BYTES`), then each thread appends
//! sample payloads (`log::sample_payload(TAG, thread, seq, len)`) and commits them. Lines
//! on stdout, each written only after the event it reports:
//!
//! ```text
//! open END RECORDS          recovery done
//! ack LSN THREAD SEQ LEN    commit(LSN) returned Ok
//! fail OP THREAD SEQ ERRNO  append or commit failed (ERRNO -1 when there is none)
//! done                      every thread stopped
//! ```
//!
//! A thread stops after its records, or after three failures in a row.

#![forbid(unsafe_code)]

#[allow(dead_code)]
#[path = "../../../../examples/wal/log.rs"]
mod log;

use group_commit::Config;
use log::{FileStorage, Wal};
use powercut::Rng;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Payload bytes beyond the sample's identifying header, at most.
const EXTRA_BYTES: u64 = 200;

/// Failures in a row after which a thread gives up.
const FAILURES_TO_STOP: u32 = 3;

/// Writes one whole line (stdout's lock keeps lines from threads apart).
fn say(line: &str) {
    let mut out = io::stdout().lock();
    // The parent gone means the test is over: stop at once.
    if out
        .write_all(line.as_bytes())
        .and_then(|_| out.write_all(b"\n"))
        .and_then(|_| out.flush())
        .is_err()
    {
        std::process::exit(3);
    }
}

fn errno(error: &io::Error) -> i32 {
    error.raw_os_error().unwrap_or(-1)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() != 6 {
        eprintln!("usage: wal_child LOG_DIR SEGMENT_BYTES THREADS RECORDS_PER_THREAD TAG SEED");
        return ExitCode::from(2);
    }
    let path = PathBuf::from(&args[0]);
    let numbers: Result<Vec<u64>, _> = args[1..].iter().map(|a| a.parse::<u64>()).collect();
    let Ok(numbers) = numbers else {
        eprintln!(
            "wal_child: SEGMENT_BYTES, THREADS, RECORDS_PER_THREAD, TAG and SEED are numbers"
        );
        return ExitCode::from(2);
    };
    let (segment_bytes, threads, records, tag, seed) =
        (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4]);

    let opened = FileStorage::open(&path)
        .and_then(|storage| Wal::open(storage, Config::default(), segment_bytes));
    let wal = match opened {
        Ok((wal, recovery)) => {
            say(&format!("open {} {}", recovery.end, recovery.records.len()));
            Arc::new(wal)
        }
        Err(error) => {
            say(&format!("fail open 0 0 {}", errno(&error)));
            return ExitCode::from(1);
        }
    };

    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let wal = wal.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(seed ^ thread.wrapping_mul(0x9E37_79B9));
                let mut failures = 0;
                for seq in 0..records {
                    let len = log::SAMPLE_ID + rng.below(EXTRA_BYTES + 1) as usize;
                    let payload = log::sample_payload(tag, thread as u32, seq, len);
                    let result = wal
                        .append(&payload)
                        .map_err(|e| ("append", e))
                        .and_then(|lsn| wal.commit(lsn).map(|()| lsn).map_err(|e| ("commit", e)));
                    match result {
                        Ok(lsn) => {
                            failures = 0;
                            say(&format!("ack {lsn} {thread} {seq} {len}"));
                        }
                        Err((op, error)) => {
                            say(&format!("fail {op} {thread} {seq} {}", errno(&error)));
                            failures += 1;
                            if failures == FAILURES_TO_STOP {
                                break;
                            }
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        if worker.join().is_err() {
            return ExitCode::from(1);
        }
    }
    say("done");
    ExitCode::SUCCESS
}
