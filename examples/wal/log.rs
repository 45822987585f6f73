//! A small write-ahead log on `group_commit::GroupCommit`.
//!
//! Record format, little-endian, one after another in one segment:
//!
//! ```text
//! +---------+---------+-----------------+
//! | len u32 | crc u32 | payload (len B) |
//! +---------+---------+-----------------+
//! ```
//!
//! `crc` is CRC-32C over the payload, then `len`, then the record's start offset as a
//! `u64`. The offset is in the checksum so that bytes left over from an earlier life of
//! the file (or zeros in a hole) never pass for a record at another place.
//!
//! A record's LSN is its end offset. Appends happen under one lock, in LSN order, and
//! call `mark_written` before the lock is released, so an fsync whose target is `t`
//! starts only after every byte below `t` was handed to the storage. Recovery reads
//! records from offset 0 and stops at the first one that is torn or does not check out;
//! everything after it is cut off before the log takes new appends.
//!
//! The storage is a trait so that the same log runs on a real file and, in the tests, on
//! a simulated device that forgets unsynced writes at a crash. So is the append lock:
//! `std::sync::Mutex` by default, a model checker's mutex when a test explores the log's
//! interleavings (`tests/wal_shuttle.rs`).
//!
//! Shared by `examples/wal.rs` and the tests (`#[path]`), so the tested log is the one the
//! example runs.

use group_commit::{Config, GroupCommit};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::DerefMut;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes before each payload: length and checksum.
pub const HEADER: usize = 8;

/// The largest payload a record may carry. A length above it is corruption.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Where the log's bytes live.
///
/// Every method takes `&self`: appends (serialized by the log) and an fsync (run by
/// one leader at a time) may overlap, as on a real file.
pub trait Storage: Send + Sync {
    /// Everything stored, as a read after a restart would see it.
    fn read_all(&self) -> io::Result<Vec<u8>>;
    /// Writes `bytes` at `offset` (the current end, for the log).
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Cuts the data at `len` bytes.
    fn truncate(&self, len: u64) -> io::Result<()>;
    /// Makes durable every write that completed before the call started.
    fn sync(&self) -> io::Result<()>;
}

impl<T: Storage + ?Sized> Storage for Arc<T> {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        (**self).read_all()
    }
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        (**self).write_at(offset, bytes)
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        (**self).truncate(len)
    }
    fn sync(&self) -> io::Result<()> {
        (**self).sync()
    }
}

/// A segment on a real file; `sync` is `fdatasync`.
#[derive(Debug)]
pub struct FileStorage {
    file: File,
    path: PathBuf,
}

impl FileStorage {
    /// Opens (or creates) the segment at `path`, keeping what it holds.
    pub fn open(path: &Path) -> io::Result<Self> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        if !existed {
            // A new file's directory entry must be durable too, or the whole segment
            // can vanish at a power loss.
            sync_dir(path)?;
        }
        Ok(FileStorage {
            file,
            path: path.to_owned(),
        })
    }

    /// The segment's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

impl Storage for FileStorage {
    fn read_all(&self) -> io::Result<Vec<u8>> {
        std::fs::read(&self.path)
    }

    #[cfg(unix)]
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&self.file, bytes, offset)
    }

    #[cfg(not(unix))]
    fn write_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        // Only the log's append path writes, one append at a time, so the shared cursor
        // is ours.
        use std::io::{Seek, SeekFrom, Write};
        let mut file = &self.file;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// One record found by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Offset of its header.
    pub start: u64,
    /// Its LSN: the offset just past its payload.
    pub lsn: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Why a recovery scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At the end of the data, after a whole record (or at 0).
    End,
    /// The data ends inside a header or a payload: a write that was cut short.
    Torn,
    /// A length out of range, or a checksum that does not match.
    Corrupt,
}

/// What a recovery scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Every whole, valid record from the start, in LSN order.
    pub records: Vec<Record>,
    /// The LSN of the last valid record (0 for none): where the log goes on.
    pub end: u64,
    /// Why the scan stopped at `end`.
    pub stop: Stop,
    /// Bytes after `end`, which the log cuts off.
    pub discarded: u64,
}

/// Reads records from the start of `bytes` up to the first torn or corrupt one. Never
/// panics, whatever `bytes` holds.
pub fn scan(bytes: &[u8]) -> Recovery {
    let mut records = Vec::new();
    let mut at = 0usize;
    let stop = loop {
        let rest = &bytes[at..];
        if rest.is_empty() {
            break Stop::End;
        }
        if rest.len() < HEADER {
            break Stop::Torn;
        }
        let len = u32::from_le_bytes(rest[0..4].try_into().expect("4 bytes")) as usize;
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        if len > MAX_PAYLOAD {
            break Stop::Corrupt;
        }
        if rest.len() - HEADER < len {
            // Too short for its length: torn, or a corrupt length. Either way it stops here.
            break Stop::Torn;
        }
        let payload = &rest[HEADER..HEADER + len];
        if checksum(payload, at as u64) != crc {
            break Stop::Corrupt;
        }
        let start = at as u64;
        at += HEADER + len;
        records.push(Record {
            start,
            lsn: at as u64,
            payload: payload.to_vec(),
        });
    };
    Recovery {
        records,
        end: at as u64,
        stop,
        discarded: (bytes.len() - at) as u64,
    }
}

/// Encodes one record that starts at `start`.
pub fn encode(payload: &[u8], start: u64) -> Vec<u8> {
    let mut record = Vec::with_capacity(HEADER + payload.len());
    record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    record.extend_from_slice(&checksum(payload, start).to_le_bytes());
    record.extend_from_slice(payload);
    record
}

/// The record checksum: CRC-32C of the payload, its length and its start offset.
pub fn checksum(payload: &[u8], start: u64) -> u32 {
    let crc = crc32c_update(!0, payload);
    let crc = crc32c_update(crc, &(payload.len() as u32).to_le_bytes());
    !crc32c_update(crc, &start.to_le_bytes())
}

/// CRC-32C (Castagnoli) of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    !crc32c_update(!0, bytes)
}

const CRC32C_TABLE: [u32; 256] = crc32c_table();

const fn crc32c_table() -> [u32; 256] {
    // Reflected polynomial of CRC-32C.
    const POLY: u32 = 0x82F6_3B78;
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

fn crc32c_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc = CRC32C_TABLE[((crc ^ byte as u32) & 0xFF) as usize] ^ (crc >> 8);
    }
    crc
}

/// An I/O error kept so that it can be handed out again, errno and all.
#[derive(Clone, Debug)]
struct StickyError {
    kind: io::ErrorKind,
    raw_os_error: Option<i32>,
    message: String,
}

impl StickyError {
    fn new(error: &io::Error) -> Self {
        StickyError {
            kind: error.kind(),
            raw_os_error: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    fn to_io_error(&self) -> io::Error {
        match self.raw_os_error {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(
                self.kind,
                format!("an earlier append failed: {}", self.message),
            ),
        }
    }
}

/// The end of the log, guarded by the append lock. Opaque outside this module.
pub struct Tail {
    /// Where the next record goes: the LSN of the last record appended.
    end: u64,
    /// A failed write leaves the tail unknown (partly written?): no append after it.
    failed: Option<StickyError>,
}

/// The lock that serializes appends.
///
/// `std::sync::Mutex` by default. A test that runs the log under a model checker gives
/// the checker's mutex instead: an append calls the manager with this lock held, which
/// is a scheduling point for the checker, and a std mutex held across one blocks the
/// single OS thread the checker runs every thread on.
pub trait AppendLock: Send + Sync {
    /// What [`lock`](Self::lock) hands out.
    type Guard<'a>: DerefMut<Target = Tail>
    where
        Self: 'a;
    /// A lock around `tail`.
    fn new(tail: Tail) -> Self;
    /// Waits for the lock and takes it.
    fn lock(&self) -> Self::Guard<'_>;
}

impl AppendLock for Mutex<Tail> {
    type Guard<'a> = MutexGuard<'a, Tail>;

    fn new(tail: Tail) -> Self {
        Mutex::new(tail)
    }

    fn lock(&self) -> MutexGuard<'_, Tail> {
        // The lock guards no invariant a panic could break halfway.
        Mutex::lock(self).unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The write-ahead log: append from many threads, commit by LSN with group commit.
///
/// `L` is the append lock; leave it at its default outside model-checking tests.
pub struct Wal<S: Storage, L: AppendLock = Mutex<Tail>> {
    storage: S,
    tail: L,
    group: GroupCommit,
}

impl<S: Storage> Wal<S> {
    /// Recovers the log on `storage`: scans it, cuts off whatever follows the last valid
    /// record, and makes that durable before anything new is appended.
    pub fn open(storage: S, config: Config) -> io::Result<(Self, Recovery)> {
        Self::open_with_lock(storage, config)
    }
}

impl<S: Storage, L: AppendLock> Wal<S, L> {
    /// [`Wal::open`], with the append lock `L`.
    pub fn open_with_lock(storage: S, config: Config) -> io::Result<(Self, Recovery)> {
        let bytes = storage.read_all()?;
        let recovery = scan(&bytes);
        if recovery.discarded > 0 {
            storage.truncate(recovery.end)?;
        }
        let group = GroupCommit::new(config);
        if recovery.end > 0 {
            // Recovered records may have been read from the page cache after a process
            // crash: make them (and the cut) durable before new records follow them.
            group.mark_written(recovery.end)?;
            group.commit(recovery.end, || storage.sync())?;
        } else {
            storage.sync()?;
        }
        let wal = Wal {
            storage,
            tail: L::new(Tail {
                end: recovery.end,
                failed: None,
            }),
            group,
        };
        Ok((wal, recovery))
    }

    /// Appends one record and returns its LSN. It is not durable until
    /// [`commit`](Self::commit) returns `Ok` for that LSN (or a higher one).
    ///
    /// A failed write leaves the end of the log unknown, so every later append fails
    /// with the same error; records appended before it can still be committed.
    pub fn append(&self, payload: &[u8]) -> io::Result<u64> {
        if payload.len() > MAX_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record holds at most {MAX_PAYLOAD} bytes, not {}",
                    payload.len()
                ),
            ));
        }
        let mut tail = self.lock_tail();
        if let Some(failed) = &tail.failed {
            return Err(failed.to_io_error());
        }
        let start = tail.end;
        let record = encode(payload, start);
        if let Err(error) = self.storage.write_at(start, &record) {
            tail.failed = Some(StickyError::new(&error));
            return Err(error);
        }
        let lsn = start + record.len() as u64;
        tail.end = lsn;
        // Under the append lock, so the manager sees LSNs in order and only once their
        // bytes (and all bytes below) are written.
        self.group.mark_written(lsn)?;
        Ok(lsn)
    }

    /// Returns once every record up to `lsn` is durable, sharing fsyncs with the other
    /// threads that commit at the same time.
    pub fn commit(&self, lsn: u64) -> io::Result<()> {
        self.group.commit(lsn, || self.storage.sync())
    }

    /// [`append`](Self::append), then [`commit`](Self::commit).
    pub fn append_durably(&self, payload: &[u8]) -> io::Result<u64> {
        let lsn = self.append(payload)?;
        self.commit(lsn)?;
        Ok(lsn)
    }

    /// The LSN the next record starts at.
    pub fn end(&self) -> u64 {
        self.lock_tail().end
    }

    /// The group-commit manager, for its statistics.
    pub fn group(&self) -> &GroupCommit {
        &self.group
    }

    /// The storage underneath.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn lock_tail(&self) -> L::Guard<'_> {
        self.tail.lock()
    }
}

/// Bytes at the start of a [`sample_payload`] that name it.
pub const SAMPLE_ID: usize = 20;

/// A payload that says who wrote it and can be checked for damage: `tag` (a run or a
/// round), `thread` and `seq`, then `len - 20` bytes derived from them.
pub fn sample_payload(tag: u64, thread: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.max(SAMPLE_ID);
    let mut payload = Vec::with_capacity(len);
    payload.extend_from_slice(&tag.to_le_bytes());
    payload.extend_from_slice(&thread.to_le_bytes());
    payload.extend_from_slice(&seq.to_le_bytes());
    let mut state = tag ^ (u64::from(thread) << 40) ^ seq.rotate_left(17) ^ len as u64;
    while payload.len() < len {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        payload.push((state >> 56) as u8);
    }
    payload
}

/// Who wrote a [`sample_payload`], if `payload` is one, undamaged.
pub fn parse_sample(payload: &[u8]) -> Option<(u64, u32, u64)> {
    if payload.len() < SAMPLE_ID {
        return None;
    }
    let tag = u64::from_le_bytes(payload[0..8].try_into().ok()?);
    let thread = u32::from_le_bytes(payload[8..12].try_into().ok()?);
    let seq = u64::from_le_bytes(payload[12..20].try_into().ok()?);
    (sample_payload(tag, thread, seq, payload.len()) == payload).then_some((tag, thread, seq))
}
