//! Records ndjson logs of the protocol's steps (feature `trace`) for trace validation:
//! `verify/tlc` checks with TLC that each log is a behaviour of `spec/GroupCommit.tla`
//! (`spec/GroupCommitTrace.tla`).
//!
//! Real threads: the three front ends (GroupFlush's flushes report short, stale and
//! beyond-target LSNs in turn), with waiter timeouts short enough to expire, spurious
//! wake-ups sent by a helper thread, gathering, and a failing or panicking fsync.
//! Shuttle (`--features trace,shuttle`): the executions of `tests/model_harness`, with
//! deadlines passing and spurious wake-ups drawn at random.
//!
//! Logs go to `$GROUP_COMMIT_TRACE_DIR`, or `traces/` under cargo's temporary directory
//! for tests; each run replaces the logs of the same name.
//!
//! Run: `cargo test --release --features trace --test trace` (and with
//! `--features trace,shuttle`); `verify/tlc` does both.

#![cfg(feature = "trace")]

#[cfg(all(feature = "shuttle", not(feature = "loom")))]
mod model_harness;

use group_commit::{trace, Config, FsyncManager, GroupCommit, GroupFlush};
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One recorder at a time: the trace is process-wide, and tests run in parallel.
static RECORDING: Mutex<()> = Mutex::new(());

const EIO: i32 = 5;
const PLANTED: &str = "tests/trace: this fsync closure panics on purpose";

fn trace_dir() -> PathBuf {
    let dir = std::env::var_os("GROUP_COMMIT_TRACE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("traces"));
    std::fs::create_dir_all(&dir).expect("the trace directory can be created");
    dir
}

/// Writes one log: the header, then the recorded lines.
fn save(name: &str, header: String, lines: &[String]) {
    assert!(!lines.is_empty(), "{name}: no step was recorded");
    let mut text = header;
    text.push('\n');
    for line in lines {
        text.push_str(line);
        text.push('\n');
    }
    let path = trace_dir().join(format!("{name}.ndjson"));
    std::fs::write(&path, text).expect("the log can be written");
}

fn quiet_planted_panics() {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() != Some(&PLANTED) {
                previous(info);
            }
        }));
    });
}

/// What the fsyncs do: the one with this number (from 0) fails or panics. Each caller's
/// calls need an fsync each, so a number below the calls per caller always comes.
#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    Fail(u64),
    Panic(u64),
}

/// An fsync that takes a little while, so that callers pile up and waits time out.
fn slow_fsync(count: &AtomicU64, fault: Fault) -> io::Result<()> {
    let n = count.fetch_add(1, Ordering::SeqCst);
    std::thread::sleep(Duration::from_micros(300));
    match fault {
        Fault::Fail(k) if k == n => Err(io::Error::from_raw_os_error(EIO)),
        Fault::Panic(k) if k == n => std::panic::panic_any(PLANTED),
        _ => Ok(()),
    }
}

/// Sends spurious wake-ups to every sleeper until `done`.
fn poker(done: Arc<AtomicBool>, poke: impl Fn() + Send + 'static) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !done.load(Ordering::SeqCst) {
            poke();
            std::thread::sleep(Duration::from_micros(150));
        }
    })
}

/// `threads` callers make `calls` calls each through `FsyncManager::fsync`.
fn closure_run(name: &str, config: Config, threads: usize, calls: usize, fault: Fault) {
    let _one = RECORDING.lock().unwrap_or_else(|p| p.into_inner());
    quiet_planted_panics();
    trace::start();
    let manager = Arc::new(FsyncManager::with_config(config));
    let fsyncs = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let spurious = {
        let manager = Arc::clone(&manager);
        poker(Arc::clone(&done), move || {
            manager.wake_everyone_spuriously()
        })
    };
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (manager, fsyncs) = (Arc::clone(&manager), Arc::clone(&fsyncs));
            std::thread::spawn(move || {
                for _ in 0..calls {
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        manager.fsync(|| slow_fsync(&fsyncs, fault))
                    }));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("callers catch their panics");
    }
    done.store(true, Ordering::SeqCst);
    spurious.join().unwrap();
    let lines = trace::finish();
    if fault != Fault::None {
        assert!(
            manager.failure().is_some(),
            "{name}: the planted fault never fired"
        );
    }
    save(name, trace::header("closure", &config), &lines);
}

/// `threads` callers append records under an append lock, mark them written and commit
/// them through `GroupCommit`; every other record is committed a second time.
fn lsn_run(name: &str, config: Config, threads: usize, calls: usize, fault: Fault) {
    let _one = RECORDING.lock().unwrap_or_else(|p| p.into_inner());
    quiet_planted_panics();
    trace::start();
    let log = Arc::new(GroupCommit::new(config));
    let append = Arc::new(Mutex::new(0u64));
    let fsyncs = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let spurious = {
        let log = Arc::clone(&log);
        poker(Arc::clone(&done), move || log.wake_everyone_spuriously())
    };
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (log, append, fsyncs) =
                (Arc::clone(&log), Arc::clone(&append), Arc::clone(&fsyncs));
            std::thread::spawn(move || {
                for call in 0..calls {
                    let lsn = {
                        let mut next = append.lock().unwrap();
                        *next += 1;
                        log.mark_written(*next).expect("marked in order");
                        *next
                    };
                    let commit = || log.commit(lsn, || slow_fsync(&fsyncs, fault));
                    let first = catch_unwind(AssertUnwindSafe(commit));
                    if call % 2 == 1 && matches!(first, Ok(Ok(()))) {
                        let again = log.commit(lsn, || unreachable!("{lsn} is durable"));
                        assert!(again.is_ok() || log.failure().is_some());
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("callers catch their panics");
    }
    done.store(true, Ordering::SeqCst);
    spurious.join().unwrap();
    let lines = trace::finish();
    if fault != Fault::None {
        assert!(
            log.failure().is_some(),
            "{name}: the planted fault never fired"
        );
    }
    save(name, trace::header("lsn", &config), &lines);
}

/// A GroupFlush flush: the fault as `slow_fsync` has it, then the LSN it reports, in turn
/// its target, one short of it, everything appended so far (beyond the target when some
/// committers have not asked yet), and 0 (stale: no progress).
fn reporting_flush(
    count: &AtomicU64,
    appended: &Mutex<u64>,
    target: u64,
    fault: Fault,
) -> io::Result<u64> {
    let n = count.load(Ordering::SeqCst);
    slow_fsync(count, fault)?;
    Ok(match n % 4 {
        0 => target,
        1 => target - 1,
        2 => *appended.lock().unwrap(),
        _ => 0,
    })
}

/// `threads` callers append a record each (its LSN the count so far) and flush it
/// through `GroupFlush`; an `Ok` covers the LSN, a `WriteZero` is a flush with no
/// progress.
fn flush_run(name: &str, config: Config, threads: usize, calls: usize, fault: Fault) {
    let _one = RECORDING.lock().unwrap_or_else(|p| p.into_inner());
    quiet_planted_panics();
    trace::start();
    let log = Arc::new(GroupFlush::new(config));
    let appended = Arc::new(Mutex::new(0u64));
    let flushes = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let spurious = {
        let log = Arc::clone(&log);
        poker(Arc::clone(&done), move || log.wake_everyone_spuriously())
    };
    let callers: Vec<_> = (0..threads)
        .map(|_| {
            let (log, appended, flushes) = (
                Arc::clone(&log),
                Arc::clone(&appended),
                Arc::clone(&flushes),
            );
            std::thread::spawn(move || {
                for _ in 0..calls {
                    let lsn = {
                        let mut end = appended.lock().unwrap();
                        *end += 1;
                        *end
                    };
                    let flush = || {
                        log.flush(lsn, |target| {
                            reporting_flush(&flushes, &appended, target, fault)
                        })
                    };
                    if let Ok(Ok(durable)) = catch_unwind(AssertUnwindSafe(flush)) {
                        assert!(durable >= lsn, "{lsn} acknowledged with durable {durable}");
                    }
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("callers catch their panics");
    }
    done.store(true, Ordering::SeqCst);
    spurious.join().unwrap();
    let lines = trace::finish();
    if fault != Fault::None {
        assert!(
            log.failure().is_some(),
            "{name}: the planted fault never fired"
        );
    }
    save(name, trace::header("flush", &config), &lines);
}

fn short_timeouts() -> Config {
    Config::builder()
        .waiter_timeout(Duration::from_micros(400))
        .build()
        .unwrap()
}

fn fixed_gathering() -> Config {
    Config::builder()
        .group_threshold(2)
        .group_interval(Duration::from_micros(200))
        .waiter_timeout(Duration::from_micros(700))
        .build()
        .unwrap()
}

fn adaptive_gathering() -> Config {
    Config::builder()
        .adaptive_gathering(Duration::from_micros(200))
        .waiter_timeout(Duration::from_micros(700))
        .build()
        .unwrap()
}

#[test]
fn threads_closure() {
    closure_run("threads-closure", short_timeouts(), 4, 5, Fault::None);
    closure_run(
        "threads-closure-fixed",
        fixed_gathering(),
        4,
        6,
        Fault::None,
    );
    closure_run(
        "threads-closure-adaptive",
        adaptive_gathering(),
        3,
        6,
        Fault::None,
    );
}

#[test]
fn threads_closure_faults() {
    closure_run(
        "threads-closure-eio",
        fixed_gathering(),
        4,
        4,
        Fault::Fail(2),
    );
    closure_run(
        "threads-closure-panic",
        short_timeouts(),
        3,
        4,
        Fault::Panic(2),
    );
}

#[test]
fn threads_lsn() {
    lsn_run("threads-lsn", short_timeouts(), 4, 5, Fault::None);
    lsn_run(
        "threads-lsn-adaptive",
        adaptive_gathering(),
        4,
        6,
        Fault::None,
    );
    lsn_run("threads-lsn-eio", fixed_gathering(), 3, 5, Fault::Fail(3));
}

#[test]
fn threads_flush() {
    flush_run("threads-flush", short_timeouts(), 4, 5, Fault::None);
    flush_run("threads-flush-fixed", fixed_gathering(), 3, 6, Fault::None);
    flush_run("threads-flush-eio", fixed_gathering(), 3, 5, Fault::Fail(3));
}

/// Shuttle: the model harness's executions, three or four callers, each logged.
#[cfg(all(feature = "shuttle", not(feature = "loom")))]
mod shuttle_runs {
    use super::{save, trace, RECORDING};
    use crate::model_harness::{quiet_planted_panics, Api, Coverage, Fault, Gather, Scenario};
    use group_commit::Config;
    use shuttle::rand::{thread_rng, Rng};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// Logs per front end: each one is a TLC run in `verify/tlc`.
    const LOGS: usize = 8;

    fn config(gather: Gather) -> Config {
        let builder = Config::builder();
        match gather {
            Gather::Off => builder,
            Gather::Fixed => builder
                .group_threshold(2)
                .group_interval(Duration::from_millis(1)),
            Gather::Adaptive => builder.adaptive_gathering(Duration::from_millis(1)),
        }
        .build()
        .unwrap()
    }

    fn record(api: Api, name: &'static str) {
        let _one = RECORDING.lock().unwrap_or_else(|p| p.into_inner());
        let count = Arc::new(AtomicUsize::new(0));
        let body = move || {
            quiet_planted_panics();
            let mut rng = thread_rng();
            let mut scenario = Scenario::new(api, rng.gen_range(3..=4));
            scenario = match rng.gen_range(0..3) {
                0 => scenario.fault(Fault::Fail(rng.gen_range(0..3))),
                1 => scenario.fault(Fault::Panic(rng.gen_range(0..3))),
                _ => scenario,
            };
            scenario = scenario
                .gather([Gather::Off, Gather::Fixed, Gather::Adaptive][rng.gen_range(0..3)]);
            scenario = scenario.chances(0.3, 0.3);
            if api == Api::Lsn {
                scenario = scenario.recommit();
            }
            if api == Api::Flush {
                let n = rng.gen_range(0..3);
                scenario = scenario.coverage(
                    [Coverage::Short(n), Coverage::Stale(n), Coverage::Beyond(n)]
                        [rng.gen_range(0..3)],
                );
            }
            trace::start();
            scenario.execute();
            let lines = trace::finish();
            let n = count.fetch_add(1, Ordering::SeqCst);
            let front = match api {
                Api::Manager => "closure",
                Api::Lsn => "lsn",
                Api::Flush => "flush",
            };
            save(
                &format!("{name}-{n}"),
                trace::header(front, &config(scenario.gather)),
                &lines,
            );
        };
        shuttle::check_random(body, LOGS);
    }

    #[test]
    fn shuttle_closure() {
        record(Api::Manager, "shuttle-closure");
    }

    #[test]
    fn shuttle_lsn() {
        record(Api::Lsn, "shuttle-lsn");
    }

    #[test]
    fn shuttle_flush() {
        record(Api::Flush, "shuttle-flush");
    }
}
