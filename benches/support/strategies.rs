//! What a committer does to make its record durable: this crate's two front ends, and
//! baselines written for the benchmark.

use super::device::Device;
use group_commit::{Config, FsyncManager, GroupCommit, Stats};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// The strategies, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `FsyncManager::fsync`, gathering off.
    Closure,
    /// `FsyncManager` with adaptive gathering.
    ClosureAdaptive,
    /// `FsyncManager` with the reference's fixed policy.
    ClosureFixed,
    /// `GroupCommit::mark_written` + `commit`, gathering off.
    Lsn,
    /// `GroupCommit` with adaptive gathering.
    LsnAdaptive,
    /// Baseline: every committer flushes for itself.
    PerThread,
    /// Baseline: every committer flushes, one at a time under one mutex.
    Mutex,
    /// Baseline: under one mutex, flush only if no finished flush covers the record
    /// (PostgreSQL's `WALWriteLock` pattern).
    MutexLsn,
    /// Baseline: Berkeley DB JE's leader/follower group commit, without LSNs.
    Classic,
    /// Deliberately wrong, for `--self-test`: rides a flush that may have started
    /// before its record was written.
    Broken,
}

impl Kind {
    /// Every strategy, in table order.
    pub const ALL: [Kind; 10] = [
        Kind::Closure,
        Kind::ClosureAdaptive,
        Kind::ClosureFixed,
        Kind::Lsn,
        Kind::LsnAdaptive,
        Kind::PerThread,
        Kind::Mutex,
        Kind::MutexLsn,
        Kind::Classic,
        Kind::Broken,
    ];

    /// What runs unless `--strategies` says otherwise.
    pub const DEFAULT: [Kind; 8] = [
        Kind::Closure,
        Kind::ClosureAdaptive,
        Kind::Lsn,
        Kind::LsnAdaptive,
        Kind::PerThread,
        Kind::Mutex,
        Kind::MutexLsn,
        Kind::Classic,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Closure => "closure",
            Kind::ClosureAdaptive => "closure+adaptive",
            Kind::ClosureFixed => "closure+fixed",
            Kind::Lsn => "lsn",
            Kind::LsnAdaptive => "lsn+adaptive",
            Kind::PerThread => "per-thread",
            Kind::Mutex => "mutex",
            Kind::MutexLsn => "mutex+lsn",
            Kind::Classic => "classic",
            Kind::Broken => "broken",
        }
    }

    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// A baseline written for the benchmark (not this crate).
    pub fn is_baseline(self) -> bool {
        matches!(
            self,
            Kind::PerThread | Kind::Mutex | Kind::MutexLsn | Kind::Classic
        )
    }
}

/// Gathering settings shared by the strategies that gather.
#[derive(Clone, Copy, Debug)]
pub struct Tuning {
    /// `Config::builder().adaptive_gathering(max_wait)`.
    pub adaptive_max_wait: Duration,
    /// The fixed policy's companions and longest wait.
    pub fixed_threshold: usize,
    pub fixed_interval: Duration,
}

/// One strategy, fresh for each cell.
pub enum Strategy {
    Closure(FsyncManager),
    Lsn(GroupCommit),
    PerThread,
    Mutex(Mutex<()>),
    MutexLsn(Mutex<u64>),
    Classic(Classic),
    Broken(Broken),
}

impl Strategy {
    pub fn new(kind: Kind, tuning: &Tuning) -> Strategy {
        let adaptive = || {
            Config::builder()
                .adaptive_gathering(tuning.adaptive_max_wait)
                .build()
                .expect("adaptive gathering settings")
        };
        match kind {
            Kind::Closure => Strategy::Closure(FsyncManager::with_config(Config::default())),
            Kind::ClosureAdaptive => Strategy::Closure(FsyncManager::with_config(adaptive())),
            Kind::ClosureFixed => Strategy::Closure(FsyncManager::with_config(
                Config::builder()
                    .group_threshold(tuning.fixed_threshold)
                    .group_interval(tuning.fixed_interval)
                    .build()
                    .expect("fixed gathering settings"),
            )),
            Kind::Lsn => Strategy::Lsn(GroupCommit::new(Config::default())),
            Kind::LsnAdaptive => Strategy::Lsn(GroupCommit::new(adaptive())),
            Kind::PerThread => Strategy::PerThread,
            Kind::Mutex => Strategy::Mutex(Mutex::new(())),
            Kind::MutexLsn => Strategy::MutexLsn(Mutex::new(0)),
            Kind::Classic => Strategy::Classic(Classic::new()),
            Kind::Broken => Strategy::Broken(Broken::default()),
        }
    }

    /// Appends one record and returns its number once the strategy acknowledges it.
    pub fn commit(&self, device: &Device) -> io::Result<u64> {
        match self {
            Strategy::Closure(manager) => {
                let seq = device.append(|_| Ok(()))?;
                manager.fsync(|| device.flush())?;
                Ok(seq)
            }
            Strategy::Lsn(log) => {
                let seq = device.append(|seq| log.mark_written(seq))?;
                log.commit(seq, || device.flush())?;
                Ok(seq)
            }
            Strategy::PerThread => {
                let seq = device.append(|_| Ok(()))?;
                device.flush()?;
                Ok(seq)
            }
            Strategy::Mutex(lock) => {
                let seq = device.append(|_| Ok(()))?;
                let _one_at_a_time = lock.lock().unwrap();
                device.flush()?;
                Ok(seq)
            }
            Strategy::MutexLsn(flushed) => {
                let seq = device.append(|_| Ok(()))?;
                let mut flushed = flushed.lock().unwrap();
                if *flushed < seq {
                    let target = device.written();
                    device.flush()?;
                    *flushed = target;
                }
                Ok(seq)
            }
            Strategy::Classic(classic) => {
                let seq = device.append(|_| Ok(()))?;
                classic.commit(|| device.flush())?;
                Ok(seq)
            }
            Strategy::Broken(broken) => {
                let seq = device.append(|_| Ok(()))?;
                broken.commit(|| device.flush())?;
                Ok(seq)
            }
        }
    }

    /// The crate's counters, for the crate's strategies.
    pub fn stats(&self) -> Option<Stats> {
        match self {
            Strategy::Closure(manager) => Some(manager.stats()),
            Strategy::Lsn(log) => Some(log.stats()),
            _ => None,
        }
    }
}

/// A group of waiters that one fsync will serve. Its flags change only under
/// `Classic::state`'s lock (atomics only because the group is shared).
struct Group {
    wake: Condvar,
    done: AtomicBool,
    lead: AtomicBool,
}

impl Group {
    fn new() -> Arc<Group> {
        Arc::new(Group {
            wake: Condvar::new(),
            done: AtomicBool::new(false),
            lead: AtomicBool::new(false),
        })
    }
}

struct ClassicState {
    in_progress: bool,
    /// Callers that arrived during the fsync in progress: the next leader's group.
    next: Arc<Group>,
    next_count: usize,
}

/// Berkeley DB JE's `FSyncManager` design, written fresh and without its faults: the
/// first caller to find no fsync in progress leads; callers arriving during an fsync
/// join the next group; a finishing leader wakes its whole group and hands the lead to
/// one member of the next. Every wake-up is sent and checked under one lock, so none is
/// lost and a spurious one changes nothing. No LSNs: a caller can never ride an fsync
/// already running.
pub struct Classic {
    state: Mutex<ClassicState>,
}

impl Classic {
    fn new() -> Classic {
        Classic {
            state: Mutex::new(ClassicState {
                in_progress: false,
                next: Group::new(),
                next_count: 0,
            }),
        }
    }

    fn commit(&self, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        if !st.in_progress {
            return self.lead(st, fsync);
        }
        let group = Arc::clone(&st.next);
        st.next_count += 1;
        loop {
            st = group.wake.wait(st).unwrap();
            if group.done.load(Ordering::Relaxed) {
                return Ok(());
            }
            // Handed the lead, and no newcomer has taken this group along meanwhile.
            if group.lead.load(Ordering::Relaxed)
                && !st.in_progress
                && Arc::ptr_eq(&st.next, &group)
            {
                group.lead.store(false, Ordering::Relaxed);
                return self.lead(st, fsync);
            }
        }
    }

    fn lead(
        &self,
        mut st: MutexGuard<'_, ClassicState>,
        fsync: impl FnOnce() -> io::Result<()>,
    ) -> io::Result<()> {
        st.in_progress = true;
        let group = std::mem::replace(&mut st.next, Group::new());
        let riders = std::mem::take(&mut st.next_count);
        drop(st);
        let result = fsync();
        let mut st = self.state.lock().unwrap();
        // The benchmark stops at the first error, so no failure protocol is needed.
        result?;
        group.done.store(true, Ordering::Relaxed);
        if riders > 0 {
            group.wake.notify_all();
        }
        st.in_progress = false;
        if st.next_count > 0 {
            st.next.lead.store(true, Ordering::Relaxed);
            st.next.wake.notify_one();
        }
        Ok(())
    }
}

/// The bug the check must catch: a caller that finds an fsync in progress waits for it
/// and returns, although that fsync may have started before the caller's write.
#[derive(Default)]
pub struct Broken {
    /// fsyncs started and finished.
    state: Mutex<(u64, u64)>,
    finished: Condvar,
}

impl Broken {
    fn commit(&self, fsync: impl FnOnce() -> io::Result<()>) -> io::Result<()> {
        let mut st = self.state.lock().unwrap();
        let (started, finished) = *st;
        if started > finished {
            while st.1 < started {
                st = self.finished.wait(st).unwrap();
            }
            return Ok(());
        }
        st.0 += 1;
        drop(st);
        let result = fsync();
        self.state.lock().unwrap().1 += 1;
        self.finished.notify_all();
        result
    }
}
