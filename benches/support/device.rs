//! The devices a benchmark cell commits to: a file on the real disk, or a simulated
//! device whose flush takes a set latency. Both keep the sequence numbers the safety
//! check needs.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One record, as the issue sets it.
pub const RECORD_BYTES: usize = 128;

/// The preallocated log the `disk` device writes round and round.
const RING_BYTES: u64 = 16 << 20;

/// Which device a cell runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceSpec {
    /// `sync_data` on a file in this directory: preallocated and written round and
    /// round like a log with preallocated segments, or, with `grow`, a fresh file that
    /// every record extends (so every flush also commits the file's new size).
    Disk { dir: PathBuf, grow: bool },
    /// A flush that takes this long; one at a time.
    Simulated(Duration),
}

impl DeviceSpec {
    /// Short name for tables: `disk`, `sim-1ms`, `sim-100us`.
    pub fn name(&self) -> String {
        match self {
            DeviceSpec::Disk { grow: false, .. } => "disk".to_owned(),
            DeviceSpec::Disk { grow: true, .. } => "disk-append".to_owned(),
            DeviceSpec::Simulated(l) if l.as_micros() % 1000 == 0 => {
                format!("sim-{}ms", l.as_millis())
            }
            DeviceSpec::Simulated(l) => format!("sim-{}us", l.as_micros()),
        }
    }

    /// The nominal flush latency, for the bound N / L; none for the disk.
    pub fn latency(&self) -> Option<Duration> {
        match self {
            DeviceSpec::Disk { .. } => None,
            DeviceSpec::Simulated(l) => Some(*l),
        }
    }
}

enum Medium {
    Disk {
        file: File,
        /// Removed with the device (a grown file); the ring stays for the next cell.
        temporary: Option<PathBuf>,
    },
    Simulated {
        latency: Duration,
        /// Held across the whole flush, so flushes never overlap. Holds the current
        /// estimate of how far `thread::sleep` overshoots, to sleep that much less.
        busy: Mutex<Duration>,
    },
}

/// A log device: records are appended in order, each getting the next sequence number;
/// a flush makes durable every record fully written when it started.
///
/// `written` and `durable` are the checker's own bookkeeping, not the strategies':
/// after a commit is acknowledged, its record's number must be at most `durable`.
pub struct Device {
    medium: Medium,
    /// The last sequence number handed out; the file is written under this lock.
    append: Mutex<u64>,
    /// Every record up to this number is fully written.
    written: AtomicU64,
    /// Every record up to this number was written before a flush that has finished
    /// started.
    durable: AtomicU64,
    flushes: AtomicU64,
    flush_nanos: AtomicU64,
    longest_flush_nanos: AtomicU64,
}

impl Device {
    /// A fresh device; for the disk, a new empty file named after `tag`.
    pub fn open(spec: &DeviceSpec, tag: &str) -> io::Result<Device> {
        let medium = match spec {
            DeviceSpec::Disk { dir, grow: true } => {
                let path = dir.join(format!("gc-throughput-{}-{tag}.log", std::process::id()));
                let file = OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(&path)?;
                Medium::Disk {
                    file,
                    temporary: Some(path),
                }
            }
            DeviceSpec::Disk { dir, grow: false } => {
                let path = ring_path(dir);
                if !path.exists() {
                    let file = File::create(&path)?;
                    let zeros = vec![0u8; 1 << 20];
                    for _ in 0..RING_BYTES / zeros.len() as u64 {
                        (&file).write_all(&zeros)?;
                    }
                    file.sync_all()?;
                }
                let file = OpenOptions::new().write(true).open(&path)?;
                Medium::Disk {
                    file,
                    temporary: None,
                }
            }
            DeviceSpec::Simulated(latency) => Medium::Simulated {
                latency: *latency,
                busy: Mutex::new(Duration::from_micros(5)),
            },
        };
        Ok(Device {
            medium,
            append: Mutex::new(0),
            written: AtomicU64::new(0),
            durable: AtomicU64::new(0),
            flushes: AtomicU64::new(0),
            flush_nanos: AtomicU64::new(0),
            longest_flush_nanos: AtomicU64::new(0),
        })
    }

    /// Appends one record and returns its sequence number. `then` runs under the append
    /// lock once the record is written, so that it sees the numbers in order (the LSN
    /// front end's `mark_written` goes there).
    pub fn append(&self, then: impl FnOnce(u64) -> io::Result<()>) -> io::Result<u64> {
        let mut last = self.append.lock().unwrap();
        let seq = *last + 1;
        if let Medium::Disk { file, temporary } = &self.medium {
            let record = [b'r'; RECORD_BYTES];
            if temporary.is_some() {
                (&*file).write_all(&record)?;
            } else {
                let at = (seq - 1) * RECORD_BYTES as u64 % RING_BYTES;
                file.write_all_at(&record, at)?;
            }
        }
        *last = seq;
        self.written.store(seq, Ordering::Release);
        then(seq)?;
        Ok(seq)
    }

    /// Every record fully written so far (what a log knows as its written LSN).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Acquire)
    }

    /// The checker's view: the highest record covered by a finished flush.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Makes durable every record fully written when the flush starts.
    pub fn flush(&self) -> io::Result<()> {
        let took = match &self.medium {
            Medium::Disk { file, .. } => {
                let began = Instant::now();
                let covers = self.written();
                file.sync_data()?;
                self.durable.fetch_max(covers, Ordering::AcqRel);
                began.elapsed()
            }
            Medium::Simulated { latency, busy } => {
                let mut overshoot = busy.lock().unwrap();
                // The flush starts once it has the device.
                let began = Instant::now();
                let covers = self.written();
                wait_until(began + *latency, &mut overshoot);
                let took = began.elapsed();
                self.durable.fetch_max(covers, Ordering::AcqRel);
                took
            }
        };
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.flushes.fetch_add(1, Ordering::Relaxed);
        self.flush_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.longest_flush_nanos.fetch_max(nanos, Ordering::Relaxed);
        Ok(())
    }

    /// Flushes so far.
    pub fn flushes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    /// Total and longest time spent in flushes.
    pub fn flush_time(&self) -> (Duration, Duration) {
        (
            Duration::from_nanos(self.flush_nanos.load(Ordering::Relaxed)),
            Duration::from_nanos(self.longest_flush_nanos.load(Ordering::Relaxed)),
        )
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Medium::Disk {
            temporary: Some(path),
            ..
        } = &self.medium
        {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Waits until `deadline` without burning a core: sleeps for all but the usual
/// overshoot of `thread::sleep`, then spins the little that is left. `overshoot` learns
/// the sleep's lateness as it goes.
fn wait_until(deadline: Instant, overshoot: &mut Duration) {
    // Capped: under load a sleep can be late by milliseconds, and spinning that long
    // would steal a core from the committers.
    const LONGEST_ESTIMATE: Duration = Duration::from_micros(30);
    let now = Instant::now();
    if let Some(left) = deadline.checked_duration_since(now) {
        if left > *overshoot {
            let planned = left - *overshoot;
            std::thread::sleep(planned);
            let late = Instant::now().saturating_duration_since(now + planned);
            *overshoot = ((*overshoot * 7 + late) / 8).min(LONGEST_ESTIMATE);
        }
    }
    while Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

/// Lowers this process's timer slack to 1 ns so that `thread::sleep` is precise (the
/// default 50 µs slack is most of a 100 µs device's flush). Threads spawned later
/// inherit it. Returns whether it worked.
pub fn tighten_timer_slack() -> bool {
    std::fs::write("/proc/self/timerslack_ns", "1").is_ok()
}

fn ring_path(dir: &Path) -> PathBuf {
    dir.join(format!("gc-throughput-{}.ring", std::process::id()))
}

/// Removes the `disk` device's preallocated file, if one was made.
pub fn remove_ring(dir: &Path) {
    let _ = std::fs::remove_file(ring_path(dir));
}

/// Where the disk device's files go by default.
pub fn default_dir() -> PathBuf {
    std::env::temp_dir()
}

/// The filesystem type of `dir`, from `/proc/self/mounts` (longest matching mount).
pub fn filesystem_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, mount, kind) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(mount)
                .then(|| (mount.len(), format!("{kind} ({device} on {mount})")))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs)| fs)
        .unwrap_or_else(|| "unknown".to_owned())
}
