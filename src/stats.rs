//! Exact statistics. Every counter is updated under the manager's lock (or, for calls
//! answered without it, by one atomic increment), so a snapshot is consistent and
//! `requests == already_durable + served + failed_requests` holds in every snapshot
//! taken while no call is in progress.

use std::time::Duration;

/// A snapshot of a manager's counters, from `stats()`.
///
/// # Examples
///
/// ```
/// use group_commit::FsyncManager;
///
/// let manager = FsyncManager::new(0, 0);
/// manager.fsync(|| Ok(()))?;
/// let stats = manager.stats();
/// assert_eq!((stats.requests, stats.fsyncs, stats.served), (1, 1, 1));
/// # Ok::<(), std::io::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Calls made, whatever their outcome.
    pub requests: u64,
    /// Calls that returned `Ok` at once because their LSN was already durable, without
    /// waiting and without an fsync.
    pub already_durable: u64,
    /// Calls answered `Ok` by an fsync: for each successful fsync, its leader and every
    /// waiter it covered (the sum of group sizes), and each requeued waiter (see
    /// `requeued`) that found its LSN durable when it decided again.
    pub served: u64,
    /// Calls answered with an error: bad input, a failed or panicked fsync (its leader
    /// included), or a manager already poisoned.
    pub failed_requests: u64,
    /// fsyncs started (each runs one caller's closure), successful or not.
    pub fsyncs: u64,
    /// fsyncs that returned an error or panicked.
    pub failed_fsyncs: u64,
    /// Successful fsyncs that served at least one waiter besides their leader.
    pub group_commits: u64,
    /// Successful fsyncs whose flush reported less than its target (leader-writes front
    /// end, or a closure that says so): the callers above it waited for a later one.
    pub short_fsyncs: u64,
    /// LSNs made durable in all: the sum over successful fsyncs of how far each raised
    /// the durable LSN. Divided by the successful fsyncs, what one fsync covers.
    pub covered: u64,
    /// The most calls one fsync served.
    pub largest_group: u64,
    /// Times a finished leader offered the lead to the next group (one member takes it,
    /// and leads unless a caller already running took the lead first).
    pub hand_offs: u64,
    /// Waiters that a flush they rode did not cover (it reported less than its target),
    /// and that decided again: each leads, waits for a later flush, or finds its LSN
    /// made durable meanwhile.
    pub requeued: u64,
    /// Times a waiter's timeout expired (it then checks on its own that somebody
    /// leads, and waits again if so: it never fsyncs outside the protocol).
    pub timeouts: u64,
    /// Total time spent inside fsync closures, in nanoseconds' precision.
    pub fsync_time: Duration,
    /// The longest time one call spent blocked: as a waiter, from its first wait until
    /// it was served or took the lead; as a leader, gathering companions.
    pub longest_wait: Duration,
    /// Calls blocked right now, waiting to be served.
    pub waiting: u64,
}

impl Stats {
    /// Successful fsyncs.
    pub fn successful_fsyncs(&self) -> u64 {
        self.fsyncs - self.failed_fsyncs
    }

    /// Calls served per successful fsync, or 0 before the first.
    pub fn mean_group_size(&self) -> f64 {
        match self.successful_fsyncs() {
            0 => 0.0,
            n => self.served as f64 / n as f64,
        }
    }
}

/// The fsync running right now, from `fsync_in_flight()`: what a watchdog needs to see
/// that a device has stopped answering.
///
/// An fsync that never returns stalls every caller it was to serve, by design: nothing
/// may be acknowledged without it. This reports it without waiting on it.
///
/// # Examples
///
/// A watchdog thread that warns once the fsync in flight has run for over a second:
///
/// ```
/// use group_commit::FsyncManager;
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// fn watch(manager: Arc<FsyncManager>, threshold: Duration) {
///     std::thread::spawn(move || loop {
///         if let Some(fsync) = manager.fsync_in_flight() {
///             if fsync.age > threshold {
///                 eprintln!("fsync stuck for {:?}; {} callers wait", fsync.age, fsync.waiting);
///             }
///         }
///         std::thread::sleep(threshold / 4);
///     });
/// }
/// watch(Arc::new(FsyncManager::new(0, 0)), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct InFlight {
    /// How long the fsync has been running.
    pub age: Duration,
    /// Callers it will serve when it succeeds (its leader not counted).
    pub riders: u64,
    /// Every caller blocked behind it: its riders and the group waiting for the next.
    pub waiting: u64,
    /// The LSN it covers (for `FsyncManager`, the number of calls that arrived before
    /// it started).
    pub target: u64,
}
