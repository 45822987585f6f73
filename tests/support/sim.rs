//! A simulated device with a volatile write cache, for power-loss tests.
//!
//! Every write and truncation is kept, in order, in a list of operations above a
//! durable base image. A completed, successful `sync` marks durable every operation that
//! had completed when the sync *started* (operations that overlap it stay volatile, as
//! they may on a real disk). At a crash, each operation not yet durable is, at random,
//! kept, dropped, or (a write) kept as a torn prefix; durable ones are always kept.
//!
//! A failed sync behaves as Linux does after EIO: the writes it was flushing stay
//! readable until the crash but are never made durable by a later sync, which may well
//! succeed (the "fsyncgate" trap). At a crash they are kept or lost at random.
//!
//! Faults: syncs and writes can fail on a plan (once, from some call on, at random),
//! with any errno; a failing write leaves a torn prefix behind. The power can be cut
//! after a given number of operations, while threads are in the middle of appends and
//! syncs: the crash image is drawn at that instant, and every later call fails with EIO.
//!
//! Built for a model checker (features `loom`, `shuttle`), the device's lock is the
//! checker's: every call is a scheduling point, and so are a sync's start and its end,
//! so the checker decides which appends land while a sync runs. The device must then be
//! made inside the checker's execution.

use super::Rng;
use crate::log::Storage;
use std::io;
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "loom")]
use loom::{
    sync::{Mutex, MutexGuard},
    thread::yield_now,
};
#[cfg(all(feature = "shuttle", not(feature = "loom")))]
use shuttle::{
    sync::{Mutex, MutexGuard},
    thread::yield_now,
};
#[cfg(not(any(feature = "loom", feature = "shuttle")))]
use std::{
    sync::{Mutex, MutexGuard},
    thread::yield_now,
};

/// When calls fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Never.
    Never,
    /// Only the call numbered `n`, counting from 0 at the time the plan is set.
    Once(u64),
    /// Every call from the one numbered `n` on.
    From(u64),
    /// Each call with this probability, in percent, from the device's seeded generator.
    Percent(u64),
}

impl Plan {
    fn fails(&self, call: u64, rng: &mut Rng) -> bool {
        match *self {
            Plan::Never => false,
            Plan::Once(n) => call == n,
            Plan::From(n) => call >= n,
            Plan::Percent(p) => rng.percent(p),
        }
    }
}

/// How a crash treats the operations that are not durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crash {
    /// Each kept, dropped or torn at random.
    Random,
    /// All dropped: only what a successful sync covered survives.
    DropAll,
    /// All kept (as after a process crash: the page cache survives).
    KeepAll,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Durability {
    /// Completed, not yet covered by a sync.
    Volatile,
    /// Covered by a successful sync.
    Durable,
    /// Was being flushed by a sync that failed: never durable now.
    Lost,
}

#[derive(Clone, Debug)]
enum Change {
    Write { offset: u64, bytes: Vec<u8> },
    Truncate(u64),
}

#[derive(Clone, Debug)]
struct Op {
    change: Change,
    durability: Durability,
}

/// Counters, for the tests' reports and checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    pub writes: u64,
    pub failed_writes: u64,
    pub syncs: u64,
    pub failed_syncs: u64,
    /// Calls that arrived after the power was cut.
    pub calls_without_power: u64,
    /// Syncs started after some sync had failed (since the device was made).
    pub syncs_after_failure: u64,
    /// Calls of `sync`, whatever their outcome.
    pub sync_calls: u64,
    /// Calls of `sync` that returned an error, whatever the cause.
    pub sync_errors: u64,
}

/// What a crash did to the volatile operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub kept: u64,
    pub dropped: u64,
    pub torn: u64,
}

struct Inner {
    base: Vec<u8>,
    ops: Vec<Op>,
    /// Operations folded into `base` so far: `ops[i]` is operation number `folded + i`.
    folded: u64,
    /// Boots so far; a sync that spans a reboot never completes.
    boots: u64,
    /// What reads see while the power is on: base with every operation applied.
    cache: Vec<u8>,
    rng: Rng,
    sync_plan: Plan,
    sync_errno: i32,
    sync_calls: u64,
    write_plan: Plan,
    write_errno: i32,
    write_calls: u64,
    /// Operations (writes, truncations, syncs) left before the power goes out.
    power_left: Option<u64>,
    /// How long each sync takes between its start and its end.
    sync_delay: Duration,
    /// Set when the power is out: the image the next boot finds.
    off: Option<(Vec<u8>, CrashReport)>,
    stats: DeviceStats,
}

/// The device. Share it as `Arc<SimDevice>`; the log takes that as its storage.
pub struct SimDevice {
    inner: Mutex<Inner>,
}

const EIO: i32 = 5;

impl SimDevice {
    /// An empty device whose random choices come from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(SimDevice {
            inner: Mutex::new(Inner {
                base: Vec::new(),
                ops: Vec::new(),
                folded: 0,
                boots: 0,
                cache: Vec::new(),
                rng: Rng::new(seed),
                sync_plan: Plan::Never,
                sync_errno: EIO,
                sync_calls: 0,
                write_plan: Plan::Never,
                write_errno: 28,
                write_calls: 0,
                power_left: None,
                sync_delay: Duration::ZERO,
                off: None,
                stats: DeviceStats::default(),
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, syncs fail with `errno` as `plan` says.
    pub fn fail_syncs(&self, plan: Plan, errno: i32) {
        let mut inner = self.lock();
        inner.sync_plan = plan;
        inner.sync_errno = errno;
        inner.sync_calls = 0;
    }

    /// From now on, writes fail with `errno` as `plan` says, leaving a torn prefix.
    pub fn fail_writes(&self, plan: Plan, errno: i32) {
        let mut inner = self.lock();
        inner.write_plan = plan;
        inner.write_errno = errno;
        inner.write_calls = 0;
    }

    /// Cuts the power once `ops` more operations (writes, truncations, syncs) have
    /// started: that one and all later ones fail.
    pub fn cut_power_after(&self, ops: u64) {
        self.lock().power_left = Some(ops);
    }

    /// Makes every sync take `delay` (with the device unlocked), so callers pile up.
    pub fn set_sync_delay(&self, delay: Duration) {
        self.lock().sync_delay = delay;
    }

    /// Whether the power is out.
    pub fn is_off(&self) -> bool {
        self.lock().off.is_some()
    }

    /// Counters so far.
    pub fn stats(&self) -> DeviceStats {
        self.lock().stats
    }

    /// An image the device could come back with if the power failed now, drawn with a
    /// generator seeded by `seed` (the device's own state is left untouched).
    pub fn crash_image(&self, crash: Crash, seed: u64) -> Vec<u8> {
        let inner = self.lock();
        let mut rng = Rng::new(seed);
        draw_image(&inner.base, &inner.ops, crash, &mut rng).0
    }

    /// Cuts the power now if it is on, then boots: the image drawn at the cut becomes
    /// the whole content, with nothing volatile and no faults planned.
    pub fn reboot(&self) -> CrashReport {
        let mut inner = self.lock();
        if inner.off.is_none() {
            inner.power_off();
        }
        let (image, report) = inner.off.take().expect("the power is off");
        inner.base = image.clone();
        inner.cache = image;
        inner.folded += inner.ops.len() as u64;
        inner.ops.clear();
        inner.boots += 1;
        inner.sync_plan = Plan::Never;
        inner.write_plan = Plan::Never;
        inner.power_left = None;
        report
    }

    /// What reads see now.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().cache.clone()
    }
}

impl Inner {
    /// Counts one operation against the power budget; false once the power is out.
    fn power_on(&mut self) -> bool {
        if self.off.is_some() {
            self.stats.calls_without_power += 1;
            return false;
        }
        if let Some(left) = self.power_left {
            if left == 0 {
                self.power_off();
                self.stats.calls_without_power += 1;
                return false;
            }
            self.power_left = Some(left - 1);
        }
        true
    }

    fn power_off(&mut self) {
        let drawn = draw_image(&self.base, &self.ops, Crash::Random, &mut self.rng);
        self.off = Some(drawn);
    }

    fn push(&mut self, change: Change) {
        apply(&mut self.cache, &change);
        self.ops.push(Op {
            change,
            durability: Durability::Volatile,
        });
    }

    /// Folds durable operations at the front into the base image.
    fn compact(&mut self) {
        let durable = self
            .ops
            .iter()
            .take_while(|op| op.durability == Durability::Durable)
            .count();
        for op in self.ops.drain(..durable) {
            apply(&mut self.base, &op.change);
        }
        self.folded += durable as u64;
    }
}

fn apply(image: &mut Vec<u8>, change: &Change) {
    match change {
        Change::Write { offset, bytes } => {
            let offset = *offset as usize;
            let end = offset + bytes.len();
            if image.len() < end {
                // A write past the end leaves a hole of zeros, as a sparse file does.
                image.resize(end, 0);
            }
            image[offset..end].copy_from_slice(bytes);
        }
        Change::Truncate(len) => image.resize(*len as usize, 0),
    }
}

fn draw_image(base: &[u8], ops: &[Op], crash: Crash, rng: &mut Rng) -> (Vec<u8>, CrashReport) {
    let mut image = base.to_vec();
    let mut report = CrashReport::default();
    for op in ops {
        if op.durability == Durability::Durable {
            apply(&mut image, &op.change);
            continue;
        }
        let choice = match crash {
            Crash::KeepAll => 0,
            Crash::DropAll => 1,
            Crash::Random => rng.below(3),
        };
        match (choice, &op.change) {
            (0, change) => {
                apply(&mut image, change);
                report.kept += 1;
            }
            (2, Change::Write { offset, bytes }) => {
                let keep = rng.below(bytes.len() as u64 + 1) as usize;
                let torn = Change::Write {
                    offset: *offset,
                    bytes: bytes[..keep].to_vec(),
                };
                apply(&mut image, &torn);
                report.torn += 1;
            }
            _ => report.dropped += 1,
        }
    }
    (image, report)
}

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl Storage for SimDevice {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut inner = self.lock();
        if inner.off.is_some() {
            inner.stats.calls_without_power += 1;
            return Err(os_error(EIO));
        }
        Ok(inner.cache.clone())
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.power_on() {
            return Err(os_error(EIO));
        }
        let call = inner.write_calls;
        inner.write_calls += 1;
        let (plan, errno) = (inner.write_plan, inner.write_errno);
        if plan.fails(call, &mut inner.rng) {
            // Some bytes may make it before the error, as with a short write.
            let keep = inner.rng.below(bytes.len() as u64) as usize;
            if keep > 0 {
                inner.push(Change::Write {
                    offset,
                    bytes: bytes[..keep].to_vec(),
                });
            }
            inner.stats.failed_writes += 1;
            return Err(os_error(errno));
        }
        inner.push(Change::Write {
            offset,
            bytes: bytes.to_vec(),
        });
        inner.stats.writes += 1;
        Ok(())
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        if !inner.power_on() {
            return Err(os_error(EIO));
        }
        inner.push(Change::Truncate(len));
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        // Start: fix what this sync covers, and whether it will fail.
        let (covers, boot, fails, errno, delay) = {
            let mut inner = self.lock();
            inner.stats.sync_calls += 1;
            if !inner.power_on() {
                inner.stats.sync_errors += 1;
                return Err(os_error(EIO));
            }
            if inner.stats.failed_syncs > 0 {
                inner.stats.syncs_after_failure += 1;
            }
            let call = inner.sync_calls;
            inner.sync_calls += 1;
            let plan = inner.sync_plan;
            let fails = plan.fails(call, &mut inner.rng);
            let covers = inner.folded + inner.ops.len() as u64;
            (
                covers,
                inner.boots,
                fails,
                inner.sync_errno,
                inner.sync_delay,
            )
        };
        // The flush takes a while: appends may overlap it (and stay volatile).
        if delay.is_zero() {
            yield_now();
        } else {
            std::thread::sleep(delay);
        }
        // Finish.
        let mut inner = self.lock();
        inner.stats.syncs += 1;
        if inner.off.is_some() || inner.boots != boot {
            // The power went out during the flush: it never completed.
            inner.stats.failed_syncs += 1;
            inner.stats.sync_errors += 1;
            return Err(os_error(EIO));
        }
        // Operations numbered below `covers` had completed when this sync started.
        let end = (covers.saturating_sub(inner.folded) as usize).min(inner.ops.len());
        let to = if fails {
            Durability::Lost
        } else {
            Durability::Durable
        };
        for op in &mut inner.ops[..end] {
            if op.durability == Durability::Volatile {
                op.durability = to;
            }
        }
        if fails {
            inner.stats.failed_syncs += 1;
            inner.stats.sync_errors += 1;
            return Err(os_error(errno));
        }
        inner.compact();
        Ok(())
    }
}
