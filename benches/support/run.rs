//! The benchmark runner shared by `benches/throughput.rs` and `benches/peers`: options,
//! one cell (N committer threads in a closed loop on a fresh device), the interleaving
//! of cells, the safety check, and the output.

use super::device::{self, Device, DeviceSpec};
use super::report::{self, Aggregate, CellRun};
use super::strategies::{Kind, Strategy, Tuning};
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

/// What a committer calls to make its record durable.
pub trait Committer: Sync {
    /// Appends one record and returns its number once the strategy acknowledges it.
    fn commit(&self, device: &Device) -> io::Result<u64>;
    /// Calls that waited past the strategy's safety-net timeout, if it has one.
    fn timeouts(&self) -> Option<u64> {
        None
    }
    /// The most callers one fsync served, if the strategy counts it.
    fn largest_group(&self) -> Option<u64> {
        None
    }
}

/// Makes a fresh instance of a strategy, for each cell.
pub type MakeCommitter = Box<dyn Fn(&Tuning) -> Box<dyn Committer>>;

/// A strategy a run can include.
pub struct Entrant {
    pub name: &'static str,
    /// Not this crate: the figures the crate's are divided by.
    pub baseline: bool,
    pub make: MakeCommitter,
}

/// What differs between the programs that use the runner.
pub struct Program {
    /// How to run it, for `--help` (`cargo bench --bench throughput --`).
    pub command: &'static str,
    pub entrants: Vec<Entrant>,
    /// Strategies run unless `--strategies` says otherwise.
    pub default_strategies: Vec<&'static str>,
    /// Thread counts and rounds of `--quick`.
    pub quick_threads: &'static str,
    pub quick_rounds: usize,
}

pub struct Options {
    pub mode: &'static str,
    pub devices: Vec<DeviceSpec>,
    pub threads: Vec<usize>,
    /// Indices into `Program::entrants`, in table order.
    pub strategies: Vec<usize>,
    pub cell: Duration,
    pub warmup: Duration,
    pub rounds: usize,
    pub tuning: Tuning,
    pub dir: PathBuf,
    json: Option<PathBuf>,
    markdown: Option<PathBuf>,
    self_test: bool,
    skeleton: bool,
}

fn usage(program: &Program) -> String {
    let names: Vec<&str> = program.entrants.iter().map(|e| e.name).collect();
    format!(
        "usage: {} [options]
  --quick             smoke test: N = {}; {} rounds of 50 ms cells
  --json PATH         also write the results as JSON
  --markdown PATH     also write the tables as markdown
  --skeleton          print the issue-10 targets table with empty cells for the
                      chosen devices and thread counts, and run nothing
  --dir DIR           directory for the disk device's file (default: the temp dir)
  --devices LIST      of disk (a preallocated file written round and round),
                      disk-append (a fresh file grown by every record), sim-1ms,
                      sim-100us, sim-<n>us (default: disk,sim-1ms,sim-100us)
  --threads LIST      thread counts (default: 1,2,4,8,16,32,64)
  --strategies LIST   of {} (default: {})
  --cell-ms MS        measured time of one cell per round (default 100)
  --rounds R          rounds; a cell's figures add up its rounds (default 10)
  --max-wait-us US    adaptive gathering's max_wait (default 1000)
  --fixed THRESHOLD,INTERVAL_US   closure+fixed's policy (default 4,1000)
  --self-test         only check that the checker catches a strategy that
                      acknowledges too early (exit 0 if it does)",
        program.command,
        program.quick_threads,
        program.quick_rounds,
        names.join(", "),
        program.default_strategies.join(",")
    )
}

fn parse_args(program: &Program) -> Result<Options, String> {
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
        skeleton: false,
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
            "--skeleton" => opts.skeleton = true,
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
    let default_threads = if quick {
        program.quick_threads
    } else {
        "1,2,4,8,16,32,64"
    };
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
    let chosen: Vec<&str> = match &strategies {
        None => program.default_strategies.clone(),
        Some(list) => list.split(',').collect(),
    };
    opts.strategies = chosen
        .into_iter()
        .map(|name| {
            program
                .entrants
                .iter()
                .position(|e| e.name == name)
                .ok_or_else(|| format!("unknown strategy: {name}"))
        })
        .collect::<Result<_, _>>()?;
    opts.cell = cell.unwrap_or(Duration::from_millis(if quick { 50 } else { 100 }));
    opts.warmup = opts.cell / 10;
    opts.rounds = rounds
        .unwrap_or(if quick { program.quick_rounds } else { 10 })
        .max(1);
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

/// Runs one cell: `n` threads commit through `strategy` on a fresh device.
fn run_cell(
    spec: &DeviceSpec,
    n: usize,
    name: &str,
    strategy: &dyn Committer,
    opts: &Options,
) -> CellRun {
    let tag = format!("{name}-{n}");
    let device = Device::open(spec, &tag).unwrap_or_else(|e| {
        eprintln!("cannot open the {} device: {e}", spec.name());
        std::process::exit(2)
    });
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
                            eprintln!("{name} on {}: commit failed: {e}", spec.name());
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
        timeouts: strategy.timeouts(),
        largest_group: strategy.largest_group(),
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
    let probe = Options {
        cell: Duration::from_millis(100),
        warmup: Duration::ZERO,
        devices: Vec::new(),
        threads: Vec::new(),
        strategies: Vec::new(),
        dir: opts.dir.clone(),
        json: None,
        markdown: None,
        ..*opts
    };
    let broken = Strategy::new(Kind::Broken, &opts.tuning);
    let caught = run_cell(&spec, 4, "broken", &broken, &probe);
    let lsn = Strategy::new(Kind::Lsn, &opts.tuning);
    let clean = run_cell(&spec, 4, "lsn", &lsn, &probe);
    eprintln!(
        "self-test: the broken strategy made {} of {} acknowledgements too early; lsn made {} of {}",
        caught.violations, caught.total, clean.violations, clean.total
    );
    caught.violations > 0 && clean.violations == 0
}

/// Parses the command line, runs every cell, prints and writes the tables, and exits
/// with status 1 if any acknowledgement came before a covering flush had finished.
pub fn main(program: Program) {
    let opts = match parse_args(&program) {
        Ok(opts) => opts,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("{message}\n");
            }
            eprintln!("{}", usage(&program));
            std::process::exit(if message.is_empty() { 0 } else { 2 });
        }
    };
    if opts.skeleton {
        let devices: Vec<String> = opts.devices.iter().map(DeviceSpec::name).collect();
        print!("{}", report::issue10_targets(&[], &devices, &opts.threads));
        return;
    }
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
            for &index in &opts.strategies {
                let entrant = &program.entrants[index];
                cells.push(Aggregate::new(
                    spec.clone(),
                    n,
                    entrant.name,
                    entrant.baseline,
                ));
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
                let slot = (i + round) % per_group;
                let cell = &mut group[slot];
                let entrant = &program.entrants[opts.strategies[slot]];
                let strategy = (entrant.make)(&opts.tuning);
                let run = run_cell(&cell.device, cell.n, entrant.name, &*strategy, &opts);
                if run.violations > 0 {
                    eprintln!(
                        "VIOLATION: {} on {} with {} threads: {}",
                        cell.name,
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
