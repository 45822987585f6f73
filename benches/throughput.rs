//! Commit throughput of this crate next to its alternatives, in one process.
//!
//! ```text
//! cargo bench --bench throughput -- --quick            # smoke test, < 60 s
//! cargo bench --bench throughput -- --json out.json    # full run, a few minutes
//! cargo bench --bench throughput -- --help
//! ```
//!
//! N threads in a closed loop each append a 128-byte record to one shared device and
//! wait until a strategy says it is durable. Cells (device × N × strategy) are
//! interleaved round-robin, so the machine's noise hits every strategy alike. Every
//! acknowledgement is checked against the device's own bookkeeping: a record must have
//! been fully written before a flush that has finished started. Any violation makes the
//! run exit with status 1.

#[path = "support/device.rs"]
mod device;
#[path = "support/report.rs"]
mod report;
#[path = "support/strategies.rs"]
mod strategies;

use device::{Device, DeviceSpec};
use report::{Aggregate, CellRun};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};
use strategies::{Kind, Strategy, Tuning};

const USAGE: &str = "\
usage: cargo bench --bench throughput -- [options]
  --quick             smoke test: N = 1, 4, 64; 4 rounds of 50 ms cells (< 60 s)
  --json PATH         also write the results as JSON
  --markdown PATH     also write the tables as markdown
  --dir DIR           directory for the disk device's file (default: the temp dir)
  --devices LIST      of disk (a preallocated file written round and round),
                      disk-append (a fresh file grown by every record), sim-1ms,
                      sim-100us, sim-<n>us (default: disk,sim-1ms,sim-100us)
  --threads LIST      thread counts (default: 1,2,4,8,16,32,64)
  --strategies LIST   of closure, closure+adaptive, closure+fixed, lsn, lsn+adaptive,
                      per-thread, mutex, mutex+lsn, classic (default: all but
                      closure+fixed)
  --cell-ms MS        measured time of one cell per round (default 100)
  --rounds R          rounds; a cell's figures add up its rounds (default 10)
  --max-wait-us US    adaptive gathering's max_wait (default 1000)
  --fixed THRESHOLD,INTERVAL_US   closure+fixed's policy (default 4,1000)
  --self-test         only check that the checker catches a strategy that
                      acknowledges too early (exit 0 if it does)";

pub struct Options {
    pub mode: &'static str,
    pub devices: Vec<DeviceSpec>,
    pub threads: Vec<usize>,
    pub strategies: Vec<Kind>,
    pub cell: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    pub tuning: Tuning,
    pub dir: PathBuf,
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    self_test: bool,
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut quick = false;
    let (mut devices, mut threads, mut strategies) = (None, None, None);
    let (mut cell, mut rounds) = (None, None);
    let mut opts = Options {
        mode: "full",
        devices: Vec::new(),
        threads: Vec::new(),
        strategies: Vec::new(),
        cell: Duration::ZERO,
        warmup: Duration::ZERO,
        rounds: 0,
        tuning: Tuning {
            adaptive_max_wait: Duration::from_millis(1),
            fixed_threshold: 4,
            fixed_interval: Duration::from_millis(1),
        },
        dir: device::default_dir(),
        json: None,
        markdown: None,
        self_test: false,
    };
    fn value(args: &mut impl Iterator<Item = String>, flag: &str) -> Result<String, String> {
        args.next().ok_or_else(|| format!("{flag} needs a value"))
    }
    fn number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
        text.parse().map_err(|_| format!("not a number: {text}"))
    }
    while let Some(arg) = args.next() {
        match arg.as_str() {
            // `cargo bench` passes this to harness-less benches.
            "--bench" => {}
            "--quick" => quick = true,
            "--self-test" => opts.self_test = true,
            "--json" => opts.json = Some(value(&mut args, &arg)?.into()),
            "--markdown" => opts.markdown = Some(value(&mut args, &arg)?.into()),
            "--dir" => opts.dir = value(&mut args, &arg)?.into(),
            "--devices" => devices = Some(value(&mut args, &arg)?),
            "--threads" => threads = Some(value(&mut args, &arg)?),
            "--strategies" => strategies = Some(value(&mut args, &arg)?),
            "--cell-ms" => cell = Some(Duration::from_millis(number(&value(&mut args, &arg)?)?)),
            "--rounds" => rounds = Some(number(&value(&mut args, &arg)?)?),
            "--max-wait-us" => {
                opts.tuning.adaptive_max_wait =
                    Duration::from_micros(number(&value(&mut args, &arg)?)?)
            }
            "--fixed" => {
                let v = value(&mut args, &arg)?;
                let (t, i) = v.split_once(',').ok_or("--fixed THRESHOLD,INTERVAL_US")?;
                opts.tuning.fixed_threshold = number(t)?;
                opts.tuning.fixed_interval = Duration::from_micros(number(i)?);
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if quick {
        opts.mode = "quick";
    }
    let default_devices = "disk,sim-1ms,sim-100us";
    opts.devices = devices
        .as_deref()
        .unwrap_or(default_devices)
        .split(',')
        .map(|name| parse_device(name, &opts.dir))
        .collect::<Result<_, _>>()?;
    let default_threads = if quick { "1,4,64" } else { "1,2,4,8,16,32,64" };
    opts.threads = threads
        .as_deref()
        .unwrap_or(default_threads)
        .split(',')
        .map(|n| {
            number::<usize>(n).and_then(|n| {
                if n == 0 {
                    Err("0 threads".into())
                } else {
                    Ok(n)
                }
            })
        })
        .collect::<Result<_, _>>()?;
    opts.strategies = match strategies {
        None => Kind::DEFAULT.to_vec(),
        Some(list) => list
            .split(',')
            .map(|name| Kind::parse(name).ok_or_else(|| format!("unknown strategy: {name}")))
            .collect::<Result<_, _>>()?,
    };
    opts.cell = cell.unwrap_or(Duration::from_millis(if quick { 50 } else { 100 }));
    opts.warmup = opts.cell / 10;
    opts.rounds = rounds.unwrap_or(if quick { 4 } else { 10 }).max(1);
    Ok(opts)
}

fn parse_device(name: &str, dir: &std::path::Path) -> Result<DeviceSpec, String> {
    let bad = || format!("unknown device: {name} (disk, disk-append, sim-<n>ms, sim-<n>us)");
    if name == "disk" || name == "disk-append" {
        return Ok(DeviceSpec::Disk {
            dir: dir.to_path_buf(),
            grow: name == "disk-append",
        });
    }
    let latency = name.strip_prefix("sim-").ok_or_else(bad)?;
    let latency = if let Some(ms) = latency.strip_suffix("ms") {
        Duration::from_millis(ms.parse().map_err(|_| bad())?)
    } else if let Some(us) = latency.strip_suffix("us") {
        Duration::from_micros(us.parse().map_err(|_| bad())?)
    } else {
        return Err(bad());
    };
    if latency.is_zero() {
        return Err(bad());
    }
    Ok(DeviceSpec::Simulated(latency))
}

/// The calling thread's voluntary and involuntary context switches and its time on a
/// CPU (ns) so far. Per thread, read by the thread itself before it exits, so that no
/// exited thread is missed.
fn thread_usage() -> [u64; 3] {
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let on_cpu = std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    [
        field("voluntary_ctxt_switches:"),
        field("nonvoluntary_ctxt_switches:"),
        on_cpu,
    ]
}

/// What one committer thread saw.
#[derive(Default)]
struct ThreadRun {
    latencies: Vec<u64>,
    in_window: u64,
    total: u64,
    /// Voluntary and involuntary context switches, and ns on a CPU.
    usage: [u64; 3],
    violations: u64,
    first_violation: Option<String>,
}

/// Runs one cell: `n` threads commit on a fresh device with a fresh strategy.
fn run_cell(spec: &DeviceSpec, n: usize, kind: Kind, opts: &Options, tag: &str) -> CellRun {
    let device = Device::open(spec, tag).unwrap_or_else(|e| {
        eprintln!("cannot open the {} device: {e}", spec.name());
        std::process::exit(2)
    });
    let strategy = Strategy::new(kind, &opts.tuning);
    let start = Barrier::new(n + 1);
    let begin = OnceLock::<Instant>::new();
    let stop = AtomicBool::new(false);
    let (warmup, cell) = (opts.warmup, opts.cell);

    let runs: Vec<ThreadRun> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..n)
            .map(|_| {
                scope.spawn(|| {
                    let mut run = ThreadRun::default();
                    start.wait();
                    let begin = *begin.get().expect("set before the barrier");
                    let (from, until) = (begin + warmup, begin + warmup + cell);
                    // Read before the thread exits, so every thread's switches count.
                    let usage_before = thread_usage();
                    while !stop.load(Ordering::Relaxed) {
                        let began = Instant::now();
                        let seq = strategy.commit(&device).unwrap_or_else(|e| {
                            eprintln!("{} on {}: commit failed: {e}", kind.name(), spec.name());
                            std::process::exit(2)
                        });
                        let acked = Instant::now();
                        let durable = device.durable();
                        if durable < seq {
                            run.violations += 1;
                            run.first_violation.get_or_insert_with(|| {
                                format!(
                                    "record {seq} acknowledged when only records up to \
                                     {durable} were covered by a finished flush"
                                )
                            });
                        }
                        run.total += 1;
                        if acked >= from && acked < until {
                            run.in_window += 1;
                            run.latencies.push(
                                u64::try_from((acked - began).as_nanos()).unwrap_or(u64::MAX),
                            );
                        }
                    }
                    let usage_after = thread_usage();
                    for i in 0..3 {
                        run.usage[i] = usage_after[i] - usage_before[i];
                    }
                    run
                })
            })
            .collect();
        begin.set(Instant::now()).expect("set once");
        start.wait();
        let until = *begin.get().unwrap() + warmup + cell;
        if let Some(left) = until.checked_duration_since(Instant::now()) {
            std::thread::sleep(left);
        }
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().expect("worker panicked"))
            .collect()
    });

    let (flush_time, longest_flush) = device.flush_time();
    let mut cell_run = CellRun {
        window: cell,
        in_window: 0,
        total: 0,
        flushes: device.flushes(),
        flush_time,
        longest_flush,
        latencies: Vec::new(),
        usage: [0; 3],
        violations: 0,
        first_violation: None,
        stats: strategy.stats(),
    };
    for run in runs {
        cell_run.in_window += run.in_window;
        cell_run.total += run.total;
        cell_run.latencies.extend(run.latencies);
        for i in 0..3 {
            cell_run.usage[i] += run.usage[i];
        }
        cell_run.violations += run.violations;
        if cell_run.first_violation.is_none() {
            cell_run.first_violation = run.first_violation;
        }
    }
    cell_run
}

/// The check must catch a strategy that acknowledges too early; returns whether it did.
fn self_test(opts: &Options) -> bool {
    let spec = DeviceSpec::Simulated(Duration::from_micros(100));
    let mut probe = Options {
        ..clone_options(opts)
    };
    probe.cell = Duration::from_millis(100);
    probe.warmup = Duration::ZERO;
    let caught = run_cell(&spec, 4, Kind::Broken, &probe, "self-test");
    let clean = run_cell(&spec, 4, Kind::Lsn, &probe, "self-test");
    eprintln!(
        "self-test: the broken strategy made {} of {} acknowledgements too early; lsn made {} of {}",
        caught.violations, caught.total, clean.violations, clean.total
    );
    caught.violations > 0 && clean.violations == 0
}

fn clone_options(opts: &Options) -> Options {
    Options {
        mode: opts.mode,
        devices: opts.devices.clone(),
        threads: opts.threads.clone(),
        strategies: opts.strategies.clone(),
        cell: opts.cell,
        warmup: opts.warmup,
        rounds: opts.rounds,
        tuning: opts.tuning,
        dir: opts.dir.clone(),
        json: None,
        markdown: None,
        self_test: opts.self_test,
    }
}

fn main() {
    let opts = match parse_args() {
        Ok(opts) => opts,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{message}\n");
            }
            eprintln!("{USAGE}");
            std::process::exit(if message.is_empty() { 0 } else { 2 });
        }
    };
    let precise_sleep = device::tighten_timer_slack();
    if !precise_sleep {
        eprintln!("note: could not lower the timer slack; simulated flushes spin more");
    }
    if opts.self_test {
        std::process::exit(if self_test(&opts) { 0 } else { 1 });
    }
    // The quick mode doubles as CI's smoke test: make sure the check can fail at all.
    if opts.mode == "quick" && !self_test(&opts) {
        eprintln!("the safety check failed to catch a planted early acknowledgement");
        std::process::exit(1);
    }

    let machine = report::Machine::describe(&opts, precise_sleep);
    let started = Instant::now();
    let mut cells: Vec<Aggregate> = Vec::new();
    for spec in &opts.devices {
        for &n in &opts.threads {
            for &kind in &opts.strategies {
                cells.push(Aggregate::new(spec.clone(), n, kind));
            }
        }
    }
    let per_group = opts.strategies.len();
    let total = cells.len() * opts.rounds;
    let mut done = 0;
    // The strategies of one device and thread count take turns in short cells, so that
    // they meet the same phases of the machine (and of the disk).
    for group in cells.chunks_mut(per_group) {
        for round in 0..opts.rounds {
            // Rotate the order each round so no strategy always runs first.
            for i in 0..per_group {
                let cell = &mut group[(i + round) % per_group];
                let tag = format!("{}-{}", cell.kind.name(), cell.n);
                let run = run_cell(&cell.device, cell.n, cell.kind, &opts, &tag);
                if run.violations > 0 {
                    eprintln!(
                        "VIOLATION: {} on {} with {} threads: {}",
                        cell.kind.name(),
                        cell.device.name(),
                        cell.n,
                        run.first_violation.as_deref().unwrap_or("?")
                    );
                }
                cell.add(run);
                done += 1;
            }
        }
        eprint!(
            "\r{done}/{total} cells, {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }
    eprintln!();
    let elapsed = started.elapsed();
    device::remove_ring(&opts.dir);

    let results = report::Results::new(machine, &opts, cells, elapsed);
    let markdown = results.markdown();
    println!("{markdown}");
    if let Some(path) = &opts.markdown {
        if let Err(e) = std::fs::write(path, &markdown) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(2);
        }
    }
    if let Some(path) = &opts.json {
        if let Err(e) = std::fs::write(path, results.json()) {
            eprintln!("cannot write {}: {e}", path.display());
            std::process::exit(2);
        }
    }
    let violations = results.violations();
    if violations > 0 {
        eprintln!("{violations} acknowledgements came before a covering flush had finished");
        std::process::exit(1);
    }
}
