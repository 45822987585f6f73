//! The leader-writes front end, for logs with an in-memory buffer.

use crate::config::Config;
use crate::protocol::Protocol;
use std::io;

/// Group commit where the leader writes the log buffer out, then syncs.
///
/// Committers append their records to the engine's own log buffer and call
/// [`flush`](Self::flush) with the LSN they need durable; there is no `mark_written`.
/// One caller at a time leads: its `flush` closure is told the target (at least every
/// LSN requested so far), writes the buffer out, syncs, and returns the LSN it actually
/// made durable. Every caller at or below that LSN gets `Ok`; the others wait for a
/// later flush.
///
/// A flush may report less than its target (say, the buffer has a hole where an
/// append is still being copied in) or more (it drained records whose committers have
/// not asked yet). If it does not reach its own leader's LSN, that leader flushes again
/// as long as each flush makes progress; a flush that makes none (it reports no more
/// than the durable LSN) gets its leader a `WriteZero` error, without poisoning anything,
/// and the next caller in line leads. An LSN is never acknowledged before a flush that
/// covers it has returned.
///
/// # Examples
///
/// ```
/// use group_commit::{Config, GroupFlush};
/// use std::io::Write;
/// use std::sync::{Arc, Mutex};
///
/// // A log buffer: records are appended in memory, the leader writes them out.
/// struct Log { buffer: Mutex<Vec<u8>>, file: Mutex<std::fs::File>, flushes: GroupFlush }
///
/// let path = std::env::temp_dir().join(format!("gc-flush-doc-{}", std::process::id()));
/// let log = Arc::new(Log {
///     buffer: Mutex::new(Vec::new()),
///     file: Mutex::new(std::fs::File::create(&path)?),
///     flushes: GroupFlush::new(Config::default()),
/// });
/// let mut written = 0u64; // the end of what reached the file (the leader's alone)
/// let lsn = {
///     let mut buffer = log.buffer.lock().unwrap();
///     buffer.extend_from_slice(b"a record\n");
///     written + buffer.len() as u64 // the record's end offset
/// };
/// let durable = log.flushes.flush(lsn, |_target| {
///     let drained = std::mem::take(&mut *log.buffer.lock().unwrap());
///     let mut file = log.file.lock().unwrap();
///     file.write_all(&drained)?;
///     file.sync_data()?;
///     written += drained.len() as u64;
///     Ok(written) // how far the log is durable now
/// })?;
/// assert!(durable >= lsn);
/// # std::fs::remove_file(&path)?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub struct GroupFlush {
    protocol: Protocol,
}

impl GroupFlush {
    /// A manager with nothing requested and nothing durable (both LSNs 0).
    pub fn new(config: Config) -> Self {
        GroupFlush {
            protocol: Protocol::new(config),
        }
    }

    /// A manager for a log recovered up to `lsn`: everything up to it is durable
    /// already (the recovery synced it), so no fsync runs for it.
    ///
    /// # Examples
    ///
    /// ```
    /// use group_commit::{Config, GroupFlush};
    /// let log = GroupFlush::recovered(Config::default(), 100);
    /// assert_eq!(log.durable_lsn(), 100);
    /// log.flush(100, |_| unreachable!())?; // durable already: no fsync
    /// assert_eq!(log.stats().fsyncs, 0);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn recovered(config: Config, lsn: u64) -> Self {
        GroupFlush {
            protocol: Protocol::recovered(config, lsn),
        }
    }

    /// Returns the durable LSN (at least `lsn`) once `lsn` is durable. `flush` runs only
    /// if this caller leads (more than once if a run covers less than `lsn` but makes
    /// progress); it is given the target, the highest LSN requested so far, and returns
    /// the LSN it made durable.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for LSN 0, `u64::MAX`, or a call from inside this manager's own
    /// flush; `WriteZero` if this caller led and its flush made no progress; otherwise
    /// the error of the flush that should have covered `lsn`, with its `ErrorKind` and
    /// `raw_os_error`. The first failed flush poisons the manager for good.
    ///
    /// # Panics
    ///
    /// If `flush` panics, the panic goes on in this caller after the manager is
    /// poisoned.
    ///
    /// # Examples
    ///
    /// ```
    /// use group_commit::{Config, GroupFlush};
    /// let log = GroupFlush::new(Config::default());
    /// // This flush gets as far as 7 (a hole at 7): the caller at 5 is served.
    /// assert_eq!(log.flush(5, |target| { assert_eq!(target, 5); Ok(7) })?, 7);
    /// // Below 7 is durable already: no flush.
    /// assert_eq!(log.flush(6, |_| unreachable!())?, 7);
    /// // A flush that gets nowhere: the leader is told, nothing is poisoned.
    /// let err = log.flush(9, |_| Ok(7)).unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::WriteZero);
    /// assert!(log.failure().is_none());
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn flush<F>(&self, lsn: u64, flush: F) -> io::Result<u64>
    where
        F: FnMut(u64) -> io::Result<u64>,
    {
        if let Some(durable) = self.protocol.already_durable(lsn) {
            return Ok(durable);
        }
        self.protocol.flush(lsn, flush)
    }

    /// The highest LSN a completed, successful flush made durable. Never decreases.
    pub fn durable_lsn(&self) -> u64 {
        self.protocol.durable_lsn()
    }

    /// The highest LSN requested so far.
    pub fn requested_lsn(&self) -> u64 {
        self.protocol.written_lsn()
    }

    shared_accessors!();
}

impl std::fmt::Debug for GroupFlush {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupFlush")
            .field("config", self.config())
            .field("durable_lsn", &self.durable_lsn())
            .field("stats", &self.stats())
            .finish()
    }
}
