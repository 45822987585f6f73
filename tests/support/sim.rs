//! A simulated device with a volatile write cache and a directory, for power-loss tests.
//!
//! It holds the log's segments: a directory that maps segment numbers to files, and the
//! files' bytes. Every change (a segment created or removed, a write, a truncation) is
//! kept, in order, in a list of operations above a durable base. A completed, successful
//! `sync` of a segment marks durable every write and truncation *of that file* that had
//! completed when the sync *started*; a `sync_dir` does the same for every creation and
//! removal (operations that overlap a sync stay volatile, as they may on a real disk). A
//! file's sync does not make its directory entry durable: a segment created, written and
//! synced, but whose directory was not synced, can vanish at a crash with all its bytes.
//! At a crash, each operation not yet durable is, at random, kept, dropped, or (a write)
//! kept as a torn prefix; durable ones are always kept. A write to a file whose creation
//! is dropped is lost with it.
//!
//! A failed sync behaves as Linux does after EIO: the changes it was flushing stay
//! readable until the crash but are never made durable by a later sync, which may well
//! succeed (the "fsyncgate" trap). At a crash they are kept or lost at random.
//!
//! Faults: syncs (of segments and of the directory) and writes can fail on a plan (once, from some call on, at random),
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
use std::collections::{BTreeMap, HashMap};
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

/// What recovery reads: each segment's bytes, by segment number.
pub type Image = BTreeMap<u64, Vec<u8>>;

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
    /// A directory entry: segment `segment` is now the new, empty file `file`.
    Create { segment: u64, file: u64 },
    /// A directory entry removed.
    Remove { segment: u64 },
    /// Bytes written to a file (whatever its name is by then).
    Write {
        file: u64,
        offset: u64,
        bytes: Vec<u8>,
    },
    /// A file cut (or extended with zeros).
    Truncate { file: u64, len: u64 },
}

impl Change {
    /// Whether a sync of the directory covers it (else a sync of its file does).
    fn is_dir_entry(&self) -> bool {
        matches!(self, Change::Create { .. } | Change::Remove { .. })
    }

    fn file(&self) -> Option<u64> {
        match self {
            Change::Write { file, .. } | Change::Truncate { file, .. } => Some(*file),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Op {
    change: Change,
    durability: Durability,
}

/// Files and the directory that names them.
#[derive(Clone, Debug, Default)]
struct State {
    /// Segment number to file.
    dir: BTreeMap<u64, u64>,
    /// File to bytes, named or not (a file whose entry is gone is simply never read).
    files: HashMap<u64, Vec<u8>>,
}

impl State {
    fn image(&self) -> Image {
        self.dir
            .iter()
            .map(|(&segment, file)| (segment, self.files.get(file).cloned().unwrap_or_default()))
            .collect()
    }

    /// The state a boot finds: the named files only.
    fn booted(&self) -> State {
        let files = self
            .dir
            .values()
            .map(|file| (*file, self.files.get(file).cloned().unwrap_or_default()))
            .collect();
        State {
            dir: self.dir.clone(),
            files,
        }
    }
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
    /// Calls of `sync` and `sync_dir`, whatever their outcome.
    pub sync_calls: u64,
    /// Calls of `sync` and `sync_dir` that returned an error, whatever the cause.
    pub sync_errors: u64,
    /// Calls of `sync_dir`.
    pub dir_syncs: u64,
    /// Segments created and removed.
    pub creates: u64,
    pub removes: u64,
    /// Calls of any kind that returned an error.
    pub errors: u64,
}

/// What a crash did to the volatile operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashReport {
    pub kept: u64,
    pub dropped: u64,
    pub torn: u64,
}

struct Inner {
    base: State,
    ops: Vec<Op>,
    /// Operations folded into `base` so far: `ops[i]` is operation number `folded + i`.
    folded: u64,
    /// Boots so far; a sync that spans a reboot never completes.
    boots: u64,
    /// What reads see while the power is on: base with every operation applied.
    cache: State,
    /// The number of the next file created.
    next_file: u64,
    rng: Rng,
    sync_plan: Plan,
    sync_errno: i32,
    sync_calls: u64,
    write_plan: Plan,
    write_errno: i32,
    write_calls: u64,
    /// Operations (creations, removals, writes, truncations, syncs) left before the
    /// power goes out.
    power_left: Option<u64>,
    /// How long each sync takes between its start and its end.
    sync_delay: Duration,
    /// Set when the power is out: the state the next boot finds.
    off: Option<(State, CrashReport)>,
    stats: DeviceStats,
}

/// The device. Share it as `Arc<SimDevice>`; the log takes that as its storage.
pub struct SimDevice {
    inner: Mutex<Inner>,
}

const EIO: i32 = 5;
const ENOENT: i32 = 2;

/// What a sync covers: one segment's file, or the directory.
#[derive(Clone, Copy)]
enum Scope {
    File(u64),
    Dir,
}

impl Scope {
    fn covers(self, change: &Change) -> bool {
        match self {
            Scope::File(file) => change.file() == Some(file),
            Scope::Dir => change.is_dir_entry(),
        }
    }
}

impl SimDevice {
    /// An empty device (no segment) whose random choices come from `seed`.
    pub fn new(seed: u64) -> Arc<Self> {
        Arc::new(SimDevice {
            inner: Mutex::new(Inner {
                base: State::default(),
                ops: Vec::new(),
                folded: 0,
                boots: 0,
                cache: State::default(),
                next_file: 0,
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

    /// From now on, syncs (of segments and of the directory) fail with `errno` as `plan`
    /// says.
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

    /// Cuts the power once `ops` more operations (creations, removals, writes,
    /// truncations, syncs) have started: that one and all later ones fail.
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
    pub fn crash_image(&self, crash: Crash, seed: u64) -> Image {
        let inner = self.lock();
        let mut rng = Rng::new(seed);
        draw(&inner.base, &inner.ops, crash, &mut rng).0.image()
    }

    /// Cuts the power now if it is on, then boots: the state drawn at the cut becomes
    /// the whole content, with nothing volatile and no faults planned.
    pub fn reboot(&self) -> CrashReport {
        let mut inner = self.lock();
        if inner.off.is_none() {
            inner.power_off();
        }
        let (state, report) = inner.off.take().expect("the power is off");
        inner.base = state.booted();
        inner.cache = inner.base.clone();
        inner.folded += inner.ops.len() as u64;
        inner.ops.clear();
        inner.boots += 1;
        inner.sync_plan = Plan::Never;
        inner.write_plan = Plan::Never;
        inner.power_left = None;
        report
    }

    /// What reads see now.
    pub fn contents(&self) -> Image {
        self.lock().cache.image()
    }

    /// Segment `segment` as reads see it now, if it exists.
    pub fn segment(&self, segment: u64) -> Option<Vec<u8>> {
        self.contents().remove(&segment)
    }

    fn sync_scope(&self, scope: impl FnOnce(&Inner) -> io::Result<Scope>) -> io::Result<()> {
        // Start: fix what this sync covers, and whether it will fail.
        let (scope, covers, boot, fails, errno, delay) = {
            let mut inner = self.lock();
            inner.stats.sync_calls += 1;
            if !inner.power_on() {
                inner.stats.sync_errors += 1;
                inner.stats.errors += 1;
                return Err(os_error(EIO));
            }
            let scope = match scope(&inner) {
                Ok(scope) => scope,
                Err(error) => {
                    inner.stats.sync_errors += 1;
                    inner.stats.errors += 1;
                    return Err(error);
                }
            };
            if matches!(scope, Scope::Dir) {
                inner.stats.dir_syncs += 1;
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
                scope,
                covers,
                inner.boots,
                fails,
                inner.sync_errno,
                inner.sync_delay,
            )
        };
        // The flush takes a while: other calls may overlap it (and stay volatile).
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
            inner.stats.errors += 1;
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
            if op.durability == Durability::Volatile && scope.covers(&op.change) {
                op.durability = to;
            }
        }
        if fails {
            inner.stats.failed_syncs += 1;
            inner.stats.sync_errors += 1;
            inner.stats.errors += 1;
            return Err(os_error(errno));
        }
        inner.compact();
        Ok(())
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
        let drawn = draw(&self.base, &self.ops, Crash::Random, &mut self.rng);
        self.off = Some(drawn);
    }

    fn push(&mut self, change: Change) {
        apply(&mut self.cache, &change);
        self.ops.push(Op {
            change,
            durability: Durability::Volatile,
        });
    }

    /// Folds durable operations at the front into the base.
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

    /// The file segment `segment` names now, as an open file descriptor would.
    fn file_of(&self, segment: u64) -> io::Result<u64> {
        self.cache
            .dir
            .get(&segment)
            .copied()
            .ok_or_else(|| os_error(ENOENT))
    }

    /// Starts a call that changes something: the power, then the segment's file.
    fn begin(&mut self, segment: Option<u64>) -> io::Result<Option<u64>> {
        let result = if !self.power_on() {
            Err(os_error(EIO))
        } else {
            segment.map(|s| self.file_of(s)).transpose()
        };
        if result.is_err() {
            self.stats.errors += 1;
        }
        result
    }
}

fn apply(state: &mut State, change: &Change) {
    match change {
        Change::Create { segment, file } => {
            state.files.insert(*file, Vec::new());
            state.dir.insert(*segment, *file);
        }
        Change::Remove { segment } => {
            if let Some(file) = state.dir.remove(segment) {
                state.files.remove(&file);
            }
        }
        Change::Write {
            file,
            offset,
            bytes,
        } => {
            // A file whose creation is not in this state is lost: nothing to write to.
            if let Some(data) = state.files.get_mut(file) {
                let offset = *offset as usize;
                let end = offset + bytes.len();
                if data.len() < end {
                    // A write past the end leaves a hole of zeros, as a sparse file does.
                    data.resize(end, 0);
                }
                data[offset..end].copy_from_slice(bytes);
            }
        }
        Change::Truncate { file, len } => {
            if let Some(data) = state.files.get_mut(file) {
                data.resize(*len as usize, 0);
            }
        }
    }
}

fn draw(base: &State, ops: &[Op], crash: Crash, rng: &mut Rng) -> (State, CrashReport) {
    let mut state = base.clone();
    let mut report = CrashReport::default();
    for op in ops {
        if op.durability == Durability::Durable {
            apply(&mut state, &op.change);
            continue;
        }
        let choice = match crash {
            Crash::KeepAll => 0,
            Crash::DropAll => 1,
            Crash::Random => rng.below(3),
        };
        match (choice, &op.change) {
            (0, change) => {
                apply(&mut state, change);
                report.kept += 1;
            }
            (
                2,
                Change::Write {
                    file,
                    offset,
                    bytes,
                },
            ) => {
                let keep = rng.below(bytes.len() as u64 + 1) as usize;
                let torn = Change::Write {
                    file: *file,
                    offset: *offset,
                    bytes: bytes[..keep].to_vec(),
                };
                apply(&mut state, &torn);
                report.torn += 1;
            }
            _ => report.dropped += 1,
        }
    }
    (state, report)
}

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl Storage for SimDevice {
    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut inner = self.lock();
        if inner.off.is_some() {
            inner.stats.calls_without_power += 1;
            inner.stats.errors += 1;
            return Err(os_error(EIO));
        }
        Ok(inner.cache.dir.keys().copied().collect())
    }

    fn read(&self, segment: u64) -> io::Result<Vec<u8>> {
        let mut inner = self.lock();
        if inner.off.is_some() {
            inner.stats.calls_without_power += 1;
            inner.stats.errors += 1;
            return Err(os_error(EIO));
        }
        match inner.file_of(segment) {
            Ok(file) => Ok(inner.cache.files.get(&file).cloned().unwrap_or_default()),
            Err(error) => {
                inner.stats.errors += 1;
                Err(error)
            }
        }
    }

    fn create(&self, segment: u64) -> io::Result<()> {
        let mut inner = self.lock();
        inner.begin(None)?;
        let file = inner.next_file;
        inner.next_file += 1;
        inner.push(Change::Create { segment, file });
        inner.stats.creates += 1;
        Ok(())
    }

    fn write_at(&self, segment: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        let file = inner.begin(Some(segment))?.expect("a segment's file");
        let call = inner.write_calls;
        inner.write_calls += 1;
        let (plan, errno) = (inner.write_plan, inner.write_errno);
        if plan.fails(call, &mut inner.rng) {
            // Some bytes may make it before the error, as with a short write.
            let keep = inner.rng.below(bytes.len() as u64) as usize;
            if keep > 0 {
                inner.push(Change::Write {
                    file,
                    offset,
                    bytes: bytes[..keep].to_vec(),
                });
            }
            inner.stats.failed_writes += 1;
            inner.stats.errors += 1;
            return Err(os_error(errno));
        }
        inner.push(Change::Write {
            file,
            offset,
            bytes: bytes.to_vec(),
        });
        inner.stats.writes += 1;
        Ok(())
    }

    fn truncate(&self, segment: u64, len: u64) -> io::Result<()> {
        let mut inner = self.lock();
        let file = inner.begin(Some(segment))?.expect("a segment's file");
        inner.push(Change::Truncate { file, len });
        Ok(())
    }

    fn remove(&self, segment: u64) -> io::Result<()> {
        let mut inner = self.lock();
        inner.begin(Some(segment))?;
        inner.push(Change::Remove { segment });
        inner.stats.removes += 1;
        Ok(())
    }

    fn sync(&self, segment: u64) -> io::Result<()> {
        self.sync_scope(|inner| inner.file_of(segment).map(Scope::File))
    }

    fn sync_dir(&self) -> io::Result<()> {
        self.sync_scope(|_| Ok(Scope::Dir))
    }
}
