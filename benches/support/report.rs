//! Figures per cell, the targets of issues 5 and 10, and the markdown and JSON they are
//! shown in.

use super::device::{self, DeviceSpec};
use super::run::Options;
use std::fmt::Write as _;
use std::time::Duration;

/// What one run of one cell measured.
pub struct CellRun {
    pub window: Duration,
    /// Commits acknowledged inside the measured window.
    pub in_window: u64,
    /// Commits acknowledged in all (warm-up and the tail after the window included).
    pub total: u64,
    pub flushes: u64,
    pub flush_time: Duration,
    pub longest_flush: Duration,
    /// Latency of each commit in the window, from before its append to its ack, in ns.
    pub latencies: Vec<u64>,
    /// The committers' voluntary and involuntary context switches and ns on a CPU.
    pub usage: [u64; 3],
    pub violations: u64,
    pub first_violation: Option<String>,
    /// The strategy's count of calls that waited past its timeout, if it has one.
    pub timeouts: Option<u64>,
    pub largest_group: Option<u64>,
}

/// A cell's runs over every round, added up.
pub struct Aggregate {
    pub device: DeviceSpec,
    pub n: usize,
    pub name: &'static str,
    pub baseline: bool,
    window: Duration,
    in_window: u64,
    total: u64,
    flushes: u64,
    flush_time: Duration,
    longest_flush: Duration,
    latencies: Vec<u64>,
    usage: [u64; 3],
    violations: u64,
    first_violation: Option<String>,
    timeouts: Option<u64>,
    largest_group: Option<u64>,
}

impl Aggregate {
    pub fn new(device: DeviceSpec, n: usize, name: &'static str, baseline: bool) -> Aggregate {
        Aggregate {
            device,
            n,
            name,
            baseline,
            window: Duration::ZERO,
            in_window: 0,
            total: 0,
            flushes: 0,
            flush_time: Duration::ZERO,
            longest_flush: Duration::ZERO,
            latencies: Vec::new(),
            usage: [0; 3],
            violations: 0,
            first_violation: None,
            timeouts: None,
            largest_group: None,
        }
    }

    pub fn add(&mut self, run: CellRun) {
        self.window += run.window;
        self.in_window += run.in_window;
        self.total += run.total;
        self.flushes += run.flushes;
        self.flush_time += run.flush_time;
        self.longest_flush = self.longest_flush.max(run.longest_flush);
        self.latencies.extend(run.latencies);
        for i in 0..3 {
            self.usage[i] += run.usage[i];
        }
        self.violations += run.violations;
        if self.first_violation.is_none() {
            self.first_violation = run.first_violation;
        }
        if let Some(timeouts) = run.timeouts {
            *self.timeouts.get_or_insert(0) += timeouts;
        }
        if let Some(group) = run.largest_group {
            let largest = self.largest_group.get_or_insert(0);
            *largest = (*largest).max(group);
        }
    }
}

/// A cell's figures.
pub struct Row {
    pub device: String,
    pub latency: Option<Duration>,
    pub n: usize,
    pub strategy: &'static str,
    pub baseline: bool,
    pub commits_per_s: f64,
    pub vs_best_baseline: Option<f64>,
    pub vs_bound: Option<f64>,
    pub fsyncs_per_commit: f64,
    /// Latency percentiles and maximum, in µs.
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub switches_per_commit: f64,
    pub voluntary_per_commit: f64,
    /// CPU time of the committers per commit, µs.
    pub cpu_us_per_commit: f64,
    /// Calls that waited past the strategy's safety-net timeout; none for the
    /// strategies that have no timeout.
    pub timeouts: Option<u64>,
    pub largest_group: Option<u64>,
    pub mean_flush_us: f64,
    pub longest_flush_us: f64,
    pub commits: u64,
    pub violations: u64,
    pub first_violation: Option<String>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

fn micros(nanos: u64) -> f64 {
    nanos as f64 / 1000.0
}

impl Row {
    fn from(mut agg: Aggregate) -> Row {
        agg.latencies.sort_unstable();
        let pct = |q: f64| -> f64 {
            match agg.latencies.len() {
                0 => 0.0,
                len => micros(agg.latencies[((q * len as f64) as usize).min(len - 1)]),
            }
        };
        let commits_per_s = agg.in_window as f64 / agg.window.as_secs_f64().max(1e-9);
        let latency = agg.device.latency();
        Row {
            device: agg.device.name(),
            latency,
            n: agg.n,
            strategy: agg.name,
            baseline: agg.baseline,
            commits_per_s,
            vs_best_baseline: None,
            vs_bound: latency.map(|l| commits_per_s / (agg.n as f64 / l.as_secs_f64())),
            fsyncs_per_commit: ratio(agg.flushes, agg.total),
            p50: pct(0.50),
            p99: pct(0.99),
            p999: pct(0.999),
            max: agg.latencies.last().map_or(0.0, |&ns| micros(ns)),
            switches_per_commit: ratio(agg.usage[0] + agg.usage[1], agg.total),
            voluntary_per_commit: ratio(agg.usage[0], agg.total),
            cpu_us_per_commit: ratio(agg.usage[2], agg.total) / 1000.0,
            timeouts: agg.timeouts,
            largest_group: agg.largest_group,
            mean_flush_us: micros(u64::try_from(agg.flush_time.as_nanos()).unwrap_or(u64::MAX))
                / agg.flushes.max(1) as f64,
            longest_flush_us: agg.longest_flush.as_secs_f64() * 1e6,
            commits: agg.total,
            violations: agg.violations,
            first_violation: agg.first_violation,
        }
    }
}

/// The machine and the conditions of the run.
pub struct Machine {
    nproc: usize,
    cpu: String,
    kernel: String,
    filesystem: String,
    backend: &'static str,
    precise_sleep: bool,
    load_before: String,
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

impl Machine {
    pub fn describe(opts: &Options, precise_sleep: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or("unknown".to_owned(), |(_, m)| m.trim().to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".to_owned(), |s| s.trim().to_owned()),
            filesystem: format!(
                "{} at {}",
                device::filesystem_of(&opts.dir),
                opts.dir.display()
            ),
            backend: if cfg!(feature = "parking_lot") {
                "parking_lot"
            } else {
                "std"
            },
            precise_sleep,
            load_before: load_average(),
        }
    }
}

/// One target of issue 5 in one cell.
pub struct Target {
    pub what: String,
    pub cell: String,
    pub value: f64,
    pub limit: f64,
    /// Whether `value` must be at least (`true`) or at most (`false`) `limit`.
    pub at_least: bool,
    pub met: bool,
}

pub struct Results {
    machine: Machine,
    load_after: String,
    mode: &'static str,
    cell_ms: u128,
    rounds: usize,
    max_wait_us: u128,
    elapsed: Duration,
    rows: Vec<Row>,
    targets: Vec<Target>,
}

/// A ratio within this much of 1 counts as a tie: the run-to-run noise of one cell.
const TIE: f64 = 0.02;

impl Results {
    pub fn new(
        machine: Machine,
        opts: &Options,
        cells: Vec<Aggregate>,
        elapsed: Duration,
    ) -> Results {
        let mut rows: Vec<Row> = cells.into_iter().map(Row::from).collect();
        let best: Vec<Option<f64>> = rows
            .iter()
            .map(|r| {
                rows.iter()
                    .filter(|b| b.baseline && b.device == r.device && b.n == r.n)
                    .map(|b| b.commits_per_s)
                    .reduce(f64::max)
            })
            .collect();
        for (row, best) in rows.iter_mut().zip(best) {
            row.vs_best_baseline = best.map(|b| row.commits_per_s / b);
        }
        let targets = targets(&rows);
        Results {
            machine,
            load_after: load_average(),
            mode: opts.mode,
            cell_ms: opts.cell.as_millis(),
            rounds: opts.rounds,
            max_wait_us: opts.tuning.adaptive_max_wait.as_micros(),
            elapsed,
            rows,
            targets,
        }
    }

    pub fn violations(&self) -> u64 {
        self.rows.iter().map(|r| r.violations).sum()
    }

    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Machine: {} × {}, Linux {}, {}; primitives: {}; timer slack 1 ns: {}; \
             load average {} before, {} after; {} mode, {} rounds of {} ms per cell, \
             adaptive max_wait {} µs; {:.0} s.\n",
            m.nproc,
            m.cpu,
            m.kernel,
            m.filesystem,
            m.backend,
            if m.precise_sleep { "yes" } else { "no" },
            m.load_before,
            self.load_after,
            self.mode,
            self.rounds,
            self.cell_ms,
            self.max_wait_us,
            self.elapsed.as_secs_f64()
        );
        let mut devices: Vec<&str> = Vec::new();
        for row in &self.rows {
            if !devices.contains(&row.device.as_str()) {
                devices.push(&row.device);
            }
        }
        for device in devices {
            let latency = self
                .rows
                .iter()
                .find(|r| r.device == device)
                .and_then(|r| r.latency);
            let _ = writeln!(
                out,
                "#### {device}{}\n",
                match latency {
                    Some(l) => format!(" (L = {} µs; bound N / L)", l.as_micros()),
                    None => " (sync_data; no bound)".to_owned(),
                }
            );
            out.push_str(
                "| N | strategy | commits/s | ÷ best baseline | ÷ N/L | fsyncs/commit | \
                 p50 µs | p99 µs | p99.9 µs | max µs | cs/commit (vol.) | CPU µs/commit | \
                 timeouts | flush µs |\n\
                 |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for r in self.rows.iter().filter(|r| r.device == device) {
                let _ = writeln!(
                    out,
                    "| {} | {}{} | {:.0} | {} | {} | {:.3} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} ({:.2}) | {:.1} | {} | {:.0} |",
                    r.n,
                    r.strategy,
                    if r.baseline { " *(b)*" } else { "" },
                    r.commits_per_s,
                    r.vs_best_baseline.map_or("–".into(), |v| format!("{v:.2}")),
                    r.vs_bound.map_or("–".into(), |v| format!("{v:.2}")),
                    r.fsyncs_per_commit,
                    r.p50,
                    r.p99,
                    r.p999,
                    r.max,
                    r.switches_per_commit,
                    r.voluntary_per_commit,
                    r.cpu_us_per_commit,
                    r.timeouts.map_or("–".into(), |t| t.to_string()),
                    r.mean_flush_us,
                );
            }
            out.push('\n');
        }
        out.push_str(
            "*(b)*: not this crate (a baseline written for the benchmark, or a peer). cs/commit: the committers' context \
             switches per commit (voluntary in brackets). CPU µs/commit: the committers' time \
             on a CPU per commit. flush µs: mean time of one flush as measured (the simulated \
             device's precision).\n\n",
        );
        let devices: Vec<String> = {
            let mut names: Vec<String> = Vec::new();
            for row in &self.rows {
                if !names.contains(&row.device) {
                    names.push(row.device.clone());
                }
            }
            names
        };
        let mut threads: Vec<usize> = self.rows.iter().map(|r| r.n).collect();
        threads.sort_unstable();
        threads.dedup();
        out.push_str(&issue10_targets_with(
            &self.rows, &devices, &threads, m.nproc,
        ));
        out.push('\n');
        let met = self.targets.iter().filter(|t| t.met).count();
        let _ = writeln!(
            out,
            "#### Issue 5 targets: {met} of {} cells met (ratios within {TIE} of 1 count as ties, met)\n",
            self.targets.len()
        );
        out.push_str("| target | cell | value | limit | met |\n|---|---|---:|---:|---|\n");
        for t in &self.targets {
            let _ = writeln!(
                out,
                "| {} | {} | {:.3} | {} {:.3} | {} |",
                t.what,
                t.cell,
                t.value,
                if t.at_least { "≥" } else { "≤" },
                t.limit,
                if t.met { "yes" } else { "**no**" }
            );
        }
        out
    }

    pub fn json(&self) -> String {
        let m = &self.machine;
        let mut out = String::new();
        let _ = write!(
            out,
            "{{\n  \"machine\": {{\"nproc\": {}, \"cpu\": {}, \"kernel\": {}, \"filesystem\": {}, \
             \"backend\": {}, \"timer_slack_1ns\": {}, \"load_before\": {}, \"load_after\": {}}},\n  \
             \"run\": {{\"mode\": {}, \"cell_ms\": {}, \"rounds\": {}, \"adaptive_max_wait_us\": {}, \
             \"seconds\": {:.1}}},\n  \"cells\": [\n",
            m.nproc,
            string(&m.cpu),
            string(&m.kernel),
            string(&m.filesystem),
            string(m.backend),
            m.precise_sleep,
            string(&m.load_before),
            string(&self.load_after),
            string(self.mode),
            self.cell_ms,
            self.rounds,
            self.max_wait_us,
            self.elapsed.as_secs_f64()
        );
        for (i, r) in self.rows.iter().enumerate() {
            let _ = writeln!(
                out,
                "    {{\"device\": {}, \"latency_us\": {}, \"threads\": {}, \"strategy\": {}, \
                 \"baseline\": {}, \"commits_per_s\": {:.1}, \"vs_best_baseline\": {}, \
                 \"vs_bound\": {}, \"fsyncs_per_commit\": {:.4}, \"p50_us\": {:.1}, \
                 \"p99_us\": {:.1}, \"p999_us\": {:.1}, \"max_us\": {:.1}, \
                 \"context_switches_per_commit\": {:.3}, \
                 \"voluntary_switches_per_commit\": {:.3}, \"cpu_us_per_commit\": {:.2}, \
                 \"timeouts\": {}, \
                 \"largest_group\": {}, \"mean_flush_us\": {:.1}, \"longest_flush_us\": {:.1}, \
                 \"commits\": {}, \"violations\": {}, \"first_violation\": {}}}{}",
                string(&r.device),
                r.latency
                    .map_or("null".into(), |l| l.as_micros().to_string()),
                r.n,
                string(r.strategy),
                r.baseline,
                r.commits_per_s,
                number(r.vs_best_baseline),
                number(r.vs_bound),
                r.fsyncs_per_commit,
                r.p50,
                r.p99,
                r.p999,
                r.max,
                r.switches_per_commit,
                r.voluntary_per_commit,
                r.cpu_us_per_commit,
                r.timeouts.map_or("null".into(), |t| t.to_string()),
                r.largest_group.map_or("null".into(), |g| g.to_string()),
                r.mean_flush_us,
                r.longest_flush_us,
                r.commits,
                r.violations,
                r.first_violation.as_deref().map_or("null".into(), string),
                if i + 1 < self.rows.len() { "," } else { "" }
            );
        }
        out.push_str("  ],\n  \"targets\": [\n");
        for (i, t) in self.targets.iter().enumerate() {
            let _ = writeln!(
                out,
                "    {{\"target\": {}, \"cell\": {}, \"value\": {:.4}, \"limit\": {:.4}, \
                 \"at_least\": {}, \"met\": {}}}{}",
                string(&t.what),
                string(&t.cell),
                t.value,
                t.limit,
                t.at_least,
                t.met,
                if i + 1 < self.targets.len() { "," } else { "" }
            );
        }
        out.push_str("  ]\n}\n");
        out
    }
}

fn number(value: Option<f64>) -> String {
    value.map_or("null".into(), |v| format!("{v:.4}"))
}

fn string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Issue 5's targets, for every cell that the run has the figures for.
fn targets(rows: &[Row]) -> Vec<Target> {
    let mut out = Vec::new();
    let find = |device: &str, n: usize, strategy: &str| {
        rows.iter()
            .find(|r| r.device == device && r.n == n && r.strategy == strategy)
    };
    let mut push = |what: &str, cell: String, value: f64, limit: f64, at_least: bool, tie: f64| {
        let met = if at_least {
            value >= limit * (1.0 - tie)
        } else {
            value <= limit * (1.0 + tie)
        };
        out.push(Target {
            what: what.to_owned(),
            cell,
            value,
            limit,
            at_least,
            met,
        });
    };
    for r in rows {
        let Some(l) = r.latency else { continue };
        let l_us = l.as_secs_f64() * 1e6;
        let cell = format!("{} N={} {}", r.device, r.n, r.strategy);
        let baselines = || {
            rows.iter()
                .filter(|b| b.baseline && b.device == r.device && b.n == r.n)
        };
        // The LSN API, in both configurations, against the baselines.
        if r.strategy.starts_with("lsn") {
            if let Some(v) = r.vs_best_baseline {
                push("commits/s ÷ best baseline", cell.clone(), v, 1.0, true, TIE);
            }
            if let Some(least) = baselines().map(|b| b.fsyncs_per_commit).reduce(f64::min) {
                push(
                    "fsyncs/commit vs fewest of the baselines",
                    cell.clone(),
                    r.fsyncs_per_commit,
                    least,
                    false,
                    TIE,
                );
            }
            push("p99 ÷ L", cell.clone(), r.p99 / l_us, 3.0, false, 0.0);
        }
        if !r.baseline {
            let timeouts = r.timeouts.unwrap_or(0) as f64;
            push("timeouts", cell.clone(), timeouts, 0.0, false, 0.0);
            if r.n == 64 {
                push(
                    "context switches/commit at 64 threads",
                    cell.clone(),
                    r.switches_per_commit,
                    1.5,
                    false,
                    0.0,
                );
            }
        }
        if r.strategy.ends_with("+adaptive") && l == Duration::from_millis(1) {
            if r.n >= 4 {
                if let Some(v) = r.vs_bound {
                    push("adaptive: ÷ N/L for N ≥ 4", cell.clone(), v, 0.8, true, 0.0);
                }
            } else if r.n == 1 {
                push(
                    "adaptive: alone, p50 ÷ L",
                    cell.clone(),
                    r.p50 / l_us,
                    1.05,
                    false,
                    0.0,
                );
            }
        }
    }
    for strategy in ["lsn", "closure"] {
        if let (Some(r), Some(direct)) = (find("disk", 1, strategy), find("disk", 1, "per-thread"))
        {
            push(
                "one thread on the disk: ÷ sync_data directly",
                format!("disk N=1 {strategy}"),
                r.commits_per_s / direct.commits_per_s,
                0.98,
                true,
                0.0,
            );
        }
    }
    out
}

/// The peers of issue 10's targets: this crate must beat the best of them.
const PEERS: [&str; 2] = ["classic", "noxu-log"];

/// Issue 10's targets table, one row per device and thread count, empty where `rows`
/// lacks a figure (so with no rows it is the skeleton a full run fills in).
pub fn issue10_targets(rows: &[Row], devices: &[String], threads: &[usize]) -> String {
    issue10_targets_with(rows, devices, threads, 0)
}

/// A figure, `·` when the run did not measure it, bold with ✗ when it misses its target.
fn figure(value: Option<f64>, decimals: usize, missed: bool) -> String {
    match value {
        None => "·".to_owned(),
        Some(v) if missed => format!("**{v:.decimals$} ✗**"),
        Some(v) => format!("{v:.decimals$}"),
    }
}

fn issue10_targets_with(
    rows: &[Row],
    devices: &[String],
    threads: &[usize],
    nproc: usize,
) -> String {
    let mut out = String::new();
    out.push_str(
        "#### Issue 10 targets, every device and N\n\n\
         \"peer\": the best of `classic` and `noxu-log` in the same run (those the run has). Crate\n\
         strategies: `lsn` and `closure` (gathering off), `+a` their adaptive gathering. Targets,\n\
         marked **✗** where missed (commits/s ratios within 2 % of 1 count as met): commits/s ÷\n\
         peer ≥ 1 and fsyncs/commit ≤ the fewest peer's, everywhere; CPU µs and context switches\n\
         per commit ≤ the best peer's, at 64 threads; adaptive ÷ off ≥ 0.97, everywhere; adaptive\n\
         ÷ N/L ≥ 0.8 on the 1 ms device for N = 4..16; p99 ≤ 3 L (the disk: L = that cell's mean\n\
         `sync_data`) where the machine is not CPU-bound (CPU busy: the crate's committers' CPU\n\
         time ÷ wall time ÷ cores, the highest of its four strategies); zero timeouts.\n\n",
    );
    out.push_str(
        "| device | N | commits/s ÷ peer: lsn, closure | fsyncs/commit: lsn, closure (peer) | \
         CPU µs/commit: lsn, closure (peer) | cs/commit: lsn, closure (peer) | \
         adaptive ÷ off: lsn+a, closure+a | adaptive ÷ N/L | p99 ÷ L (worst crate) | \
         CPU busy | timeouts (crate) |\n\
         |---|---:|---|---|---|---|---|---|---|---:|---:|\n",
    );
    let crate_names = ["lsn", "closure", "lsn+adaptive", "closure+adaptive"];
    for device in devices {
        for &n in threads {
            let find = |name: &str| {
                rows.iter()
                    .find(|r| &r.device == device && r.n == n && r.strategy == name)
            };
            let peers: Vec<&Row> = PEERS.iter().filter_map(|&p| find(p)).collect();
            let best_peer = peers.iter().map(|r| r.commits_per_s).reduce(f64::max);
            let fewest_fsyncs = peers.iter().map(|r| r.fsyncs_per_commit).reduce(f64::min);
            let least_cpu = peers.iter().map(|r| r.cpu_us_per_commit).reduce(f64::min);
            let fewest_switches = peers.iter().map(|r| r.switches_per_commit).reduce(f64::min);
            let (lsn, closure) = (find("lsn"), find("closure"));
            let pair = |name: &str,
                        get: &dyn Fn(&Row) -> Option<f64>,
                        miss: &dyn Fn(f64) -> bool,
                        decimals| {
                let v = find(name).and_then(get);
                figure(v, decimals, v.is_some_and(miss))
            };
            let vs_peer = |r: &Row| best_peer.map(|b| r.commits_per_s / b);
            let below = |limit: f64| move |v: f64| v < limit * (1.0 - TIE);
            let above = |limit: Option<f64>, tie: f64| {
                move |v: f64| limit.is_some_and(|l| v > l * (1.0 + tie))
            };
            let at_64 = n == 64;
            let commits = format!(
                "{}, {}",
                pair("lsn", &vs_peer, &below(1.0), 2),
                pair("closure", &vs_peer, &below(1.0), 2)
            );
            let fsyncs = format!(
                "{}, {} ({})",
                pair(
                    "lsn",
                    &|r| Some(r.fsyncs_per_commit),
                    &above(fewest_fsyncs, TIE),
                    3
                ),
                pair(
                    "closure",
                    &|r| Some(r.fsyncs_per_commit),
                    &above(fewest_fsyncs, TIE),
                    3
                ),
                figure(fewest_fsyncs, 3, false)
            );
            let cpu_miss = |v: f64| at_64 && least_cpu.is_some_and(|l| v > l);
            let cpu = format!(
                "{}, {} ({})",
                pair("lsn", &|r| Some(r.cpu_us_per_commit), &cpu_miss, 1),
                pair("closure", &|r| Some(r.cpu_us_per_commit), &cpu_miss, 1),
                figure(least_cpu, 1, false)
            );
            let switches_miss = |v: f64| at_64 && fewest_switches.is_some_and(|l| v > l);
            let switches = format!(
                "{}, {} ({})",
                pair("lsn", &|r| Some(r.switches_per_commit), &switches_miss, 2),
                pair(
                    "closure",
                    &|r| Some(r.switches_per_commit),
                    &switches_miss,
                    2
                ),
                figure(fewest_switches, 2, false)
            );
            let adaptive_vs_off = |adaptive: &str, off: Option<&Row>| {
                let v = find(adaptive)
                    .zip(off)
                    .map(|(a, o)| a.commits_per_s / o.commits_per_s.max(1e-9));
                figure(v, 2, v.is_some_and(|v| v < 0.97))
            };
            let adaptive = format!(
                "{}, {}",
                adaptive_vs_off("lsn+adaptive", lsn),
                adaptive_vs_off("closure+adaptive", closure)
            );
            let one_ms = device == "sim-1ms";
            let vs_bound = if one_ms && (4..=16).contains(&n) {
                format!(
                    "{}, {}",
                    pair("lsn+adaptive", &|r| r.vs_bound, &|v| v < 0.8, 2),
                    pair("closure+adaptive", &|r| r.vs_bound, &|v| v < 0.8, 2)
                )
            } else {
                "–".to_owned()
            };
            let crate_rows: Vec<&Row> = crate_names.iter().filter_map(|&c| find(c)).collect();
            let p99 = crate_rows
                .iter()
                .map(|r| {
                    let l_us = r.latency.map_or(r.mean_flush_us, |l| l.as_secs_f64() * 1e6);
                    (r.p99 / l_us.max(1e-9), r.strategy)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let p99 = match p99 {
                None => "·".to_owned(),
                Some((v, name)) => format!("{} ({name})", figure(Some(v), 2, v > 3.0)),
            };
            let busy = crate_rows
                .iter()
                .map(|r| r.cpu_us_per_commit * r.commits_per_s / 1e6 / nproc.max(1) as f64)
                .reduce(f64::max);
            let timeouts = crate_rows
                .iter()
                .map(|r| r.timeouts.unwrap_or(0))
                .reduce(|a, b| a + b);
            let timeouts = match timeouts {
                None => "·".to_owned(),
                Some(0) => "0".to_owned(),
                Some(t) => format!("**{t} ✗**"),
            };
            let _ = writeln!(
                out,
                "| {device} | {n} | {commits} | {fsyncs} | {cpu} | {switches} | {adaptive} | \
                 {vs_bound} | {p99} | {} | {timeouts} |",
                busy.map_or("·".to_owned(), |b| format!("{:.0} %", b * 100.0)),
            );
        }
    }
    out
}
