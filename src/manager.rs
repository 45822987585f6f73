//! The drop-in front end, for code written against the reference `FsyncManager`.

use crate::config::Config;
use crate::protocol::{covering_target, Protocol};
use std::io;

/// Coalesces fsyncs from many threads: the API of the reference `FsyncManager`, on this
/// crate's protocol.
///
/// A call to [`fsync`](Self::fsync) returns `Ok` only after an fsync that started after
/// the call began has succeeded. The first fsync to fail poisons the manager: that call
/// and every later one get the original error.
///
/// # Examples
///
/// ```
/// use group_commit::FsyncManager;
/// use std::io::Write;
/// use std::sync::{Arc, Mutex};
///
/// let dir = std::env::temp_dir().join(format!("gc-doc-{}", std::process::id()));
/// std::fs::create_dir_all(&dir)?;
/// let file = Arc::new(Mutex::new(std::fs::File::create(dir.join("log"))?));
/// let manager = Arc::new(FsyncManager::new(0, 0));
///
/// let workers: Vec<_> = (0..4)
///     .map(|i| {
///         let (file, manager) = (Arc::clone(&file), Arc::clone(&manager));
///         std::thread::spawn(move || -> std::io::Result<()> {
///             writeln!(file.lock().unwrap(), "record {i}")?;
///             manager.fsync(|| file.lock().unwrap().sync_data())
///         })
///     })
///     .collect();
/// for worker in workers {
///     worker.join().unwrap()?;
/// }
/// assert_eq!(manager.fsync_request_count(), 4);
/// assert!(manager.fsync_count() <= 4);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct FsyncManager {
    protocol: Protocol,
}

impl FsyncManager {
    /// A manager with the reference's settings: a leader waits up to
    /// `grpc_interval_ms` for `grpc_threshold` companions when both are non-zero; a
    /// waiter's safety-net timeout is 500 ms. Every value is accepted; intervals above
    /// [`MAX_REFERENCE_INTERVAL`](crate::MAX_REFERENCE_INTERVAL) (250 ms) are capped
    /// there. For validated settings use [`with_config`](Self::with_config).
    ///
    /// # Examples
    ///
    /// ```
    /// let manager = group_commit::FsyncManager::new(4, 2);
    /// assert_eq!(manager.config().group_threshold(), 4);
    /// ```
    pub fn new(grpc_threshold: usize, grpc_interval_ms: u64) -> Self {
        Self::with_config(Config::reference(grpc_threshold, grpc_interval_ms))
    }

    /// A manager with a validated [`Config`].
    ///
    /// # Examples
    ///
    /// ```
    /// use group_commit::{Config, FsyncManager};
    /// let manager = FsyncManager::with_config(Config::default());
    /// assert!(manager.fsync(|| Ok(())).is_ok());
    /// ```
    pub fn with_config(config: Config) -> Self {
        FsyncManager {
            protocol: Protocol::new(config),
        }
    }

    /// Makes the caller's earlier writes durable, sharing one fsync with the callers
    /// around it. `do_fsync` runs only if this caller leads; it must make durable
    /// everything written to the file so far (`File::sync_data`, say).
    ///
    /// # Errors
    ///
    /// The error of the fsync that served (or should have served) this call, with its
    /// `ErrorKind` and `raw_os_error`; the first failure poisons the manager for good.
    ///
    /// # Panics
    ///
    /// If `do_fsync` panics, the panic goes on in this caller after the manager is
    /// poisoned; the callers it would have served get an error.
    ///
    /// # Examples
    ///
    /// ```
    /// let manager = group_commit::FsyncManager::new(0, 0);
    /// let eio = || Err(std::io::Error::from_raw_os_error(5));
    /// assert_eq!(manager.fsync(eio).unwrap_err().raw_os_error(), Some(5));
    /// // Poisoned: even a call whose fsync would succeed fails, with the same error.
    /// assert_eq!(manager.fsync(|| Ok(())).unwrap_err().raw_os_error(), Some(5));
    /// ```
    pub fn fsync<F>(&self, do_fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()>,
    {
        self.protocol
            .commit_arrival(covering_target(|_| do_fsync()))
            .map(drop)
    }

    /// fsyncs started ([`Stats::fsyncs`](crate::Stats::fsyncs)).
    pub fn fsync_count(&self) -> u64 {
        self.stats().fsyncs
    }

    /// Calls to [`fsync`](Self::fsync) ([`Stats::requests`](crate::Stats::requests)).
    pub fn fsync_request_count(&self) -> u64 {
        self.stats().requests
    }

    /// Waiter timeouts that expired ([`Stats::timeouts`](crate::Stats::timeouts)).
    pub fn fsync_timeout_count(&self) -> u64 {
        self.stats().timeouts
    }

    /// Successful fsyncs that served at least one waiter besides their leader
    /// ([`Stats::group_commits`](crate::Stats::group_commits)).
    pub fn group_commit_count(&self) -> u64 {
        self.stats().group_commits
    }

    /// Total time in fsync closures, in whole milliseconds, summed exactly before it is
    /// rounded down (so many short fsyncs add up).
    pub fn fsync_time_ms(&self) -> u64 {
        u64::try_from(self.stats().fsync_time.as_millis()).unwrap_or(u64::MAX)
    }

    /// Waiters served by successful fsyncs, their leaders not counted.
    pub fn fsync_batch_size_sum(&self) -> u64 {
        let stats = self.stats();
        stats.served - stats.successful_fsyncs()
    }

    shared_accessors!();
}

impl std::fmt::Debug for FsyncManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FsyncManager")
            .field("config", self.config())
            .field("stats", &self.stats())
            .finish()
    }
}
