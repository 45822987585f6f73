//! The LSN front end, for logs that know the offsets of their records.

use crate::config::Config;
use crate::protocol::{covering_target, Protocol};
use std::io;

/// Group commit by log sequence number (LSN: the end offset of a record).
///
/// The log reports how far it has written with [`mark_written`](Self::mark_written);
/// a committer calls [`commit`](Self::commit) with its record's LSN. The call returns at
/// once if that LSN is already durable, rides an fsync already in flight if that
/// fsync's target (read before it started) covers the LSN, and otherwise is served by the
/// next fsync. [`durable_lsn`](Self::durable_lsn) never decreases.
///
/// # Examples
///
/// ```
/// use group_commit::{Config, GroupCommit};
/// use std::io::Write;
///
/// let path = std::env::temp_dir().join(format!("gc-lsn-doc-{}", std::process::id()));
/// let mut file = std::fs::File::create(&path)?;
/// let log = GroupCommit::new(Config::default());
///
/// file.write_all(b"first record\n")?;
/// log.mark_written(13)?;
/// log.commit(13, || file.sync_data())?;
/// assert_eq!(log.durable_lsn(), 13);
///
/// // Already durable: no fsync.
/// log.commit(13, || unreachable!())?;
/// assert_eq!(log.stats().already_durable, 1);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct GroupCommit {
    protocol: Protocol,
}

impl GroupCommit {
    /// A manager with nothing written and nothing durable (both LSNs 0).
    pub fn new(config: Config) -> Self {
        GroupCommit {
            protocol: Protocol::new(config),
        }
    }

    /// A manager for a log recovered up to `lsn`: everything up to it is durable
    /// already (the recovery synced it), so no fsync runs for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use group_commit::{Config, GroupCommit};
    /// let log = GroupCommit::recovered(Config::default(), 100);
    /// assert_eq!(log.durable_lsn(), 100);
    /// log.commit(100, || unreachable!())?; // durable already: no fsync
    /// assert_eq!(log.stats().fsyncs, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recovered(config: Config, lsn: u64) -> Self {
        GroupCommit {
            protocol: Protocol::recovered(config, lsn),
        }
    }

    /// Tells the manager that every byte up to `lsn` has been written to the file, so
    /// the next fsync to start will cover it. Call it in LSN order once the bytes below
    /// `lsn` are all written.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `lsn` is below an LSN marked before.
    pub fn mark_written(&self, lsn: u64) -> io::Result<()> {
        self.protocol.mark_written(lsn)
    }

    /// Returns once `lsn` is durable. `do_fsync` runs only if this caller leads; it must
    /// make durable everything written so far.
    ///
    /// # Errors
    ///
    /// `InvalidInput` if `lsn` is beyond the written LSN; otherwise the error of the
    /// fsync that should have covered `lsn`, with its `ErrorKind` and `raw_os_error`.
    /// The first failure poisons the manager for good.
    ///
    /// # Panics
    ///
    /// If `do_fsync` panics, the panic goes on in this caller after the manager is
    /// poisoned.
    ///
    /// # Examples
    ///
    /// ```
    /// use group_commit::{Config, GroupCommit};
    /// let log = GroupCommit::new(Config::default());
    /// let err = log.commit(10, || Ok(())).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn commit<F>(&self, lsn: u64, do_fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> io::Result<()>,
    {
        if self.protocol.already_durable(lsn).is_some() {
            return Ok(());
        }
        self.commit_to(lsn, |_| do_fsync())
    }

    /// [`commit`](Self::commit), with a closure that is told the target of its fsync:
    /// the written LSN when it started, which it must make durable (and which covers
    /// `lsn`). A segmented log uses it to sync only the segments that hold bytes up to
    /// the target.
    ///
    /// # Errors
    ///
    /// As [`commit`](Self::commit).
    ///
    /// # Examples
    ///
    /// ```
    /// use group_commit::{Config, GroupCommit};
    /// let log = GroupCommit::new(Config::default());
    /// log.mark_written(300)?;
    /// let mut synced_up_to = 0;
    /// log.commit_to(100, |target| {
    ///     synced_up_to = target; // sync every segment holding bytes below `target`
    ///     Ok(())
    /// })?;
    /// assert_eq!((synced_up_to, log.durable_lsn()), (300, 300));
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn commit_to<F>(&self, lsn: u64, sync: F) -> io::Result<()>
    where
        F: FnOnce(u64) -> io::Result<()>,
    {
        if self.protocol.already_durable(lsn).is_some() {
            return Ok(());
        }
        self.protocol.commit(lsn, covering_target(sync)).map(drop)
    }

    /// The highest LSN covered by a completed, successful fsync. Never decreases.
    pub fn durable_lsn(&self) -> u64 {
        self.protocol.durable_lsn()
    }

    /// The highest LSN marked written.
    pub fn written_lsn(&self) -> u64 {
        self.protocol.written_lsn()
    }

    shared_accessors!();
}

impl std::fmt::Debug for GroupCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit")
            .field("config", self.config())
            .field("durable_lsn", &self.durable_lsn())
            .field("stats", &self.stats())
            .finish()
    }
}
