//! A small write-ahead log on `group_commit::GroupFlush`: a log buffer that the leader
//! writes out, in fixed-size segments.
//!
//! # Format
//!
//! The log is a directory of segment files, `segment-00000000.wal`, `segment-00000001.wal`,
//! and so on, each at most `segment_bytes` long. Positions are global: segment `k` holds
//! the log's bytes `k * segment_bytes .. (k + 1) * segment_bytes`, and a record's LSN is
//! its global end offset. Little-endian throughout.
//!
//! ```text
//! segment k:  +------------------------+--------+--------+-----+-------------------+
//!             | segment header (32 B)  | record | record | ... | unused (padding)  |
//!             +------------------------+--------+--------+-----+-------------------+
//! header:     | magic "GCW1" | crc u32 | segment_bytes u64 | index u64 | prev_end u64 |
//! record:     | len u32 | crc u32 | payload (len B) |
//! ```
//!
//! The header's `crc` is CRC-32C over the magic and the 24 bytes after the crc;
//! `prev_end` is the LSN at which the previous segment's last record ends (0 in segment
//! 0). A record's `crc` is CRC-32C over the payload, then `len`, then the record's global
//! start offset as a `u64`: bytes left over from an earlier life of a file (or zeros in a
//! hole) never pass for a record at another place. A record never spans segments: one
//! that does not fit in what is left of a segment starts the next one, and the rest of
//! the segment stays unused (the file simply ends; the next segment's `prev_end` says
//! where). The first record of a log starts at 32, after segment 0's header.
//!
//! # Appends, the buffer, the leader
//!
//! An append reserves the record's place under the append lock (that fixes its LSN),
//! encodes it with the lock released, then puts the bytes into the reserved slot of an
//! in-memory buffer. A commit calls `GroupFlush::flush(lsn, ..)`; the caller that leads
//! runs the flush: it takes from the buffer every filled record it needs to reach the
//! target it is told, stopping at the first hole (a record reserved, not yet copied), writes
//! them with one `pwrite` per segment, creates the next segment when a record starts one
//! (rollover: create the file, write and sync its header, sync the directory), then syncs
//! every segment that got bytes, and returns the end of what it wrote: the LSN it made
//! durable. The crate serves everyone at or below it and queues the rest again; a leader
//! stopped by a hole below its own record waits for the copy, then flushes again. Appends
//! do no I/O: every write, sync and file creation is the leader's.
//!
//! # Recovery
//!
//! Reads segments in order from segment 0, and stops at the first torn or corrupt record,
//! or at a segment whose header is torn or corrupt, or does not follow on (its `prev_end`
//! is not where the previous segment's records end, as when that segment's tail was lost).
//! Everything after that point is cut (the segment truncated, later segments removed),
//! and every kept segment and the directory are synced before the log takes new appends.
//! Segments written with another `segment_bytes` are refused, never cut.
//!
//! The storage is a trait so that the same log runs on a directory of real files and, in
//! the tests, on a simulated device that forgets unsynced writes and unsynced directory
//! entries at a crash. So is the append lock: `std::sync` by default, a model checker's
//! mutex and condition variable when a test explores the log's interleavings
//! (`tests/wal_shuttle.rs`, `tests/wal_loom.rs`).
//!
//! Shared by `examples/wal.rs` and the tests (`#[path]`), so the tested log is the one the
//! example runs.

use group_commit::{Config, GroupFlush, NoProgress};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::ops::DerefMut;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

/// Bytes before each payload: length and checksum.
pub const HEADER: usize = 8;

/// Bytes at the start of each segment, before its first record.
pub const SEGMENT_HEADER: usize = 32;

/// The largest payload a record may carry (less in small segments: see
/// [`max_payload`]). A length above it is corruption.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// The segment size of the example unless told otherwise.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;

/// The smallest segment the log accepts.
pub const MIN_SEGMENT_BYTES: u64 = 64;

/// The largest segment the log accepts (1 TiB).
pub const MAX_SEGMENT_BYTES: u64 = 1 << 40;

const SEGMENT_MAGIC: [u8; 4] = *b"GCW1";

/// The largest payload a record may carry in segments of `segment_bytes`: a record
/// never spans segments.
pub fn max_payload(segment_bytes: u64) -> usize {
    let room = segment_bytes.saturating_sub((SEGMENT_HEADER + HEADER) as u64);
    MAX_PAYLOAD.min(usize::try_from(room).unwrap_or(usize::MAX))
}

/// The LSN where the records of segment `index` begin (after its header).
pub fn segment_start(index: u64, segment_bytes: u64) -> u64 {
    index * segment_bytes + SEGMENT_HEADER as u64
}

/// Where a record of `record_len` bytes (header included) goes when the log ends at
/// `end`: right there if it fits in that segment, else at the start of the next one.
pub fn place(end: u64, record_len: u64, segment_bytes: u64) -> u64 {
    // `end` is a record's end or a segment's first record position, so it is never
    // inside a header; at a segment's very end the record goes to the next segment.
    let start = if end % segment_bytes == 0 {
        end + SEGMENT_HEADER as u64
    } else {
        end
    };
    let index = start / segment_bytes;
    if start + record_len <= (index + 1) * segment_bytes {
        start
    } else {
        segment_start(index + 1, segment_bytes)
    }
}

/// Where the log's bytes live: a directory of segments.
///
/// Every method takes `&self`: appends and a flush may overlap, as on real files. A
/// creation or removal is durable only after [`sync_dir`](Self::sync_dir); a write or a
/// truncation only after [`sync`](Self::sync) of its segment.
pub trait Storage: Send + Sync {
    /// The segments the directory lists, in increasing order.
    fn segments(&self) -> io::Result<Vec<u64>>;
    /// Everything segment `index` holds, as a read after a restart would see it.
    fn read(&self, index: u64) -> io::Result<Vec<u8>>;
    /// Creates segment `index`, empty (emptied if it exists).
    fn create(&self, index: u64) -> io::Result<()>;
    /// Writes `bytes` at `offset` of segment `index`.
    fn write_at(&self, index: u64, offset: u64, bytes: &[u8]) -> io::Result<()>;
    /// Cuts segment `index` at `len` bytes.
    fn truncate(&self, index: u64, len: u64) -> io::Result<()>;
    /// Removes segment `index` from the directory.
    fn remove(&self, index: u64) -> io::Result<()>;
    /// Makes durable every write and truncation of segment `index` that completed before
    /// the call started (`fdatasync`).
    fn sync(&self, index: u64) -> io::Result<()>;
    /// Makes durable every creation and removal of a segment that completed before the
    /// call started (`fsync` of the directory).
    fn sync_dir(&self) -> io::Result<()>;
}

impl<T: Storage + ?Sized> Storage for Arc<T> {
    fn segments(&self) -> io::Result<Vec<u64>> {
        (**self).segments()
    }
    fn read(&self, index: u64) -> io::Result<Vec<u8>> {
        (**self).read(index)
    }
    fn create(&self, index: u64) -> io::Result<()> {
        (**self).create(index)
    }
    fn write_at(&self, index: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        (**self).write_at(index, offset, bytes)
    }
    fn truncate(&self, index: u64, len: u64) -> io::Result<()> {
        (**self).truncate(index, len)
    }
    fn remove(&self, index: u64) -> io::Result<()> {
        (**self).remove(index)
    }
    fn sync(&self, index: u64) -> io::Result<()> {
        (**self).sync(index)
    }
    fn sync_dir(&self) -> io::Result<()> {
        (**self).sync_dir()
    }
}

/// Segments as files in a directory: `sync` is `fdatasync`, `sync_dir` an `fsync` of the
/// directory.
#[derive(Debug)]
pub struct FileStorage {
    dir: PathBuf,
    /// Open segments. Only the leader and recovery open, create and remove them.
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl FileStorage {
    /// Opens (or creates) the log directory `dir`, keeping what it holds.
    pub fn open(dir: &Path) -> io::Result<Self> {
        let existed = dir.exists();
        std::fs::create_dir_all(dir)?;
        if !existed {
            // A new directory's own entry must be durable too, or the whole log can
            // vanish at a power loss.
            sync_parent_dir(dir)?;
        }
        Ok(FileStorage {
            dir: dir.to_owned(),
            files: Mutex::new(HashMap::new()),
        })
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The path of segment `index`.
    pub fn segment_path(&self, index: u64) -> PathBuf {
        self.dir.join(segment_name(index))
    }

    fn files(&self) -> MutexGuard<'_, HashMap<u64, Arc<File>>> {
        self.files.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn file(&self, index: u64) -> io::Result<Arc<File>> {
        let mut files = self.files();
        if let Some(file) = files.get(&index) {
            return Ok(Arc::clone(file));
        }
        let file = Arc::new(
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(self.segment_path(index))?,
        );
        files.insert(index, Arc::clone(&file));
        Ok(file)
    }
}

/// The file name of segment `index`.
pub fn segment_name(index: u64) -> String {
    format!("segment-{index:08}.wal")
}

/// The segment index a file name stands for, if it names a segment.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("segment-")?.strip_suffix(".wal")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(unix)]
fn sync_parent_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

#[cfg(not(unix))]
fn sync_parent_dir(_path: &Path) -> io::Result<()> {
    Ok(())
}

impl Storage for FileStorage {
    fn segments(&self) -> io::Result<Vec<u64>> {
        let mut found = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            if let Some(index) = entry?.file_name().to_str().and_then(parse_segment_name) {
                found.push(index);
            }
        }
        found.sort_unstable();
        Ok(found)
    }

    fn read(&self, index: u64) -> io::Result<Vec<u8>> {
        std::fs::read(self.segment_path(index))
    }

    fn create(&self, index: u64) -> io::Result<()> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(self.segment_path(index))?;
        self.files().insert(index, Arc::new(file));
        Ok(())
    }

    #[cfg(unix)]
    fn write_at(&self, index: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(&*self.file(index)?, bytes, offset)
    }

    #[cfg(not(unix))]
    fn write_at(&self, index: u64, offset: u64, bytes: &[u8]) -> io::Result<()> {
        // Only the leader writes, one flush at a time, so the shared cursor is its own.
        use std::io::{Seek, SeekFrom, Write};
        let file = self.file(index)?;
        let mut file = &*file;
        file.seek(SeekFrom::Start(offset))?;
        file.write_all(bytes)
    }

    fn truncate(&self, index: u64, len: u64) -> io::Result<()> {
        self.file(index)?.set_len(len)
    }

    fn remove(&self, index: u64) -> io::Result<()> {
        self.files().remove(&index);
        std::fs::remove_file(self.segment_path(index))
    }

    fn sync(&self, index: u64) -> io::Result<()> {
        self.file(index)?.sync_data()
    }

    #[cfg(unix)]
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }

    #[cfg(not(unix))]
    fn sync_dir(&self) -> io::Result<()> {
        Ok(())
    }
}

/// One record found by recovery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// LSN of its header (its global start offset).
    pub start: u64,
    /// Its LSN: the offset just past its payload.
    pub lsn: u64,
    /// Its payload.
    pub payload: Vec<u8>,
}

/// Why a recovery scan stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// At the end of the last segment, after a whole record (or at its first record's
    /// place).
    End,
    /// The data ends inside a record or a segment header: a write that was cut short.
    Torn,
    /// A length out of range, a checksum that does not match, or a segment that does
    /// not follow on from the one before.
    Corrupt,
}

/// What a recovery scan found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovery {
    /// Every whole, valid record from the start, in LSN order.
    pub records: Vec<Record>,
    /// The LSN where the log goes on: the end of the last valid record, or the first
    /// record's place in the last kept segment.
    pub end: u64,
    /// Why the scan stopped at `end`.
    pub stop: Stop,
    /// Bytes after `end` that the log cuts off (later segments' included).
    pub discarded: u64,
    /// Segments kept: `0..segments` (0 when not even segment 0 has a valid header).
    pub segments: u64,
}

/// A segment's header, as [`segment_header`] encodes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment size the log was written with.
    pub segment_bytes: u64,
    /// The segment's number.
    pub index: u64,
    /// Where the previous segment's records end (0 for segment 0).
    pub prev_end: u64,
}

/// Encodes the header of segment `index`.
pub fn segment_header(index: u64, segment_bytes: u64, prev_end: u64) -> [u8; SEGMENT_HEADER] {
    let mut header = [0u8; SEGMENT_HEADER];
    header[0..4].copy_from_slice(&SEGMENT_MAGIC);
    header[8..16].copy_from_slice(&segment_bytes.to_le_bytes());
    header[16..24].copy_from_slice(&index.to_le_bytes());
    header[24..32].copy_from_slice(&prev_end.to_le_bytes());
    let crc = header_checksum(&header);
    header[4..8].copy_from_slice(&crc.to_le_bytes());
    header
}

fn header_checksum(header: &[u8]) -> u32 {
    !crc32c_update(crc32c_update(!0, &header[0..4]), &header[8..SEGMENT_HEADER])
}

/// Reads a segment header at the start of `bytes`: `Err(Torn)` if it is cut short,
/// `Err(Corrupt)` if its magic or checksum is wrong.
pub fn parse_segment_header(bytes: &[u8]) -> Result<SegmentHeader, Stop> {
    if bytes.len() < SEGMENT_HEADER {
        return Err(Stop::Torn);
    }
    let header = &bytes[..SEGMENT_HEADER];
    let word = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    if header[0..4] != SEGMENT_MAGIC || crc != header_checksum(header) {
        return Err(Stop::Corrupt);
    }
    Ok(SegmentHeader {
        segment_bytes: word(8),
        index: word(16),
        prev_end: word(24),
    })
}

/// Reads records from `bytes[from..]` up to the first torn or corrupt one; `base` is the
/// LSN of `bytes[0]`. Returns the records, the offset in `bytes` after the last one, and
/// why it stopped. Never panics, whatever `bytes` holds.
pub fn scan_records(bytes: &[u8], from: usize, base: u64) -> (Vec<Record>, usize, Stop) {
    let mut records = Vec::new();
    let mut at = from.min(bytes.len());
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
        let start = base + at as u64;
        if checksum(payload, start) != crc {
            break Stop::Corrupt;
        }
        at += HEADER + len;
        records.push(Record {
            start,
            lsn: base + at as u64,
            payload: payload.to_vec(),
        });
    };
    (records, at, stop)
}

/// A log whose segments were written with another segment size: refused, never cut.
fn other_segment_size(index: u64, found: u64, expected: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "segment {index} was written with {found}-byte segments, not {expected}: open the \
             log with the size it was written with"
        ),
    )
}

/// Scans a log: `listed` are the segments the directory lists, `read` reads one. Stops at
/// the first torn or corrupt record or segment header, or at a segment that does not
/// follow on from the one before.
///
/// # Errors
///
/// An error of `read`; `InvalidData` if segments exist but segment 0 is not one of them
/// (never the result of a crash: segment 0's entry is durable before any other segment
/// is made), or if a segment was written with another segment size.
pub fn scan_log(
    listed: &[u64],
    segment_bytes: u64,
    mut read: impl FnMut(u64) -> io::Result<Vec<u8>>,
) -> io::Result<Recovery> {
    let mut recovery = Recovery {
        records: Vec::new(),
        end: segment_start(0, segment_bytes),
        stop: Stop::End,
        discarded: 0,
        segments: 0,
    };
    if listed.first().is_some_and(|&first| first != 0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the log has segments but no segment 0 (the first is {})",
                listed[0]
            ),
        ));
    }
    let mut stopped = false;
    // For each kept segment, where the records before it end.
    let mut records_before_segment: Vec<u64> = Vec::new();
    for (expected, &index) in (0u64..).zip(listed) {
        let bytes = read(index)?;
        if stopped || index != expected {
            // After the stop, or after a missing segment: cut whole.
            recovery.discarded += bytes.len() as u64;
            stopped = true;
            continue;
        }
        let header = match parse_segment_header(&bytes) {
            Ok(header) if header.segment_bytes != segment_bytes => {
                return Err(other_segment_size(
                    index,
                    header.segment_bytes,
                    segment_bytes,
                ));
            }
            Ok(header)
                if header.index == index && (index == 0 || header.prev_end == recovery.end) =>
            {
                Ok(header)
            }
            Ok(_) => Err(Stop::Corrupt),
            Err(stop) => Err(stop),
        };
        if let Err(stop) = header {
            recovery.stop = stop;
            recovery.discarded += bytes.len() as u64;
            stopped = true;
            continue;
        }
        records_before_segment.push(recovery.end);
        let base = index * segment_bytes;
        let (records, at, stop) = scan_records(&bytes, SEGMENT_HEADER, base);
        recovery.records.extend(records);
        recovery.end = base + at as u64;
        recovery.stop = stop;
        recovery.discarded += (bytes.len() - at) as u64;
        recovery.segments = index + 1;
        if stop != Stop::End {
            stopped = true;
        }
    }
    // A last segment without a record (a rollover whose records were lost) is cut too:
    // a record's place then follows from the record before it, always.
    while recovery.segments > 1
        && recovery.end == segment_start(recovery.segments - 1, segment_bytes)
    {
        recovery.segments -= 1;
        recovery.discarded += SEGMENT_HEADER as u64;
        recovery.end = records_before_segment[recovery.segments as usize];
    }
    Ok(recovery)
}

/// [`scan_log`] of an image held in memory (segment number to bytes). Never panics.
pub fn scan_image(image: &BTreeMap<u64, Vec<u8>>, segment_bytes: u64) -> Recovery {
    let listed: Vec<u64> = image.keys().copied().collect();
    match scan_log(&listed, segment_bytes, |index| Ok(image[&index].clone())) {
        Ok(recovery) => recovery,
        // No segment 0, or another segment size: nothing in it is this log's.
        Err(_) => Recovery {
            records: Vec::new(),
            end: segment_start(0, segment_bytes),
            stop: Stop::Corrupt,
            discarded: image.values().map(|b| b.len() as u64).sum(),
            segments: 0,
        },
    }
}

/// Encodes one record that starts at LSN `start`.
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

/// A record in the log buffer: reserved at `start..end`, its bytes once copied in.
struct Slot {
    start: u64,
    end: u64,
    /// `None` while the appender copies it in: a hole no flush may pass.
    bytes: Option<Vec<u8>>,
}

/// The log's shared state, guarded by the append lock. Opaque outside this module.
pub struct Tail {
    /// The end of the last reserved record: where placement goes on.
    reserved: u64,
    /// Reserved records not yet written, in LSN order, back to back but for the unused
    /// end of a segment.
    buffer: VecDeque<Slot>,
    /// The end of what the leader wrote and synced: the LSN the log is durable to.
    written: u64,
    /// The last segment that exists (created, header and directory entry synced).
    last_segment: u64,
    /// Segments this life created (segment 0 of an empty log included).
    created: u64,
    /// Committers waiting for a copy to fill a hole below their record.
    waiting_for_copies: u32,
    /// Flushes run (the leader's closure), and how many failed.
    flushes: u64,
    failed_flushes: u64,
    /// Commits that met a hole and flushed again after waiting for its copy.
    hole_waits: u64,
    /// A failed write or sync leaves the log unknown past `written`: no append, no
    /// flush after it.
    failed: Option<StickyError>,
}

/// The lock that guards the log's buffer, with a condition variable to wait for a copy.
///
/// [`StdLock`] by default. A test that runs the log under a model checker gives the
/// checker's mutex and condition variable instead: a thread must not block on a std
/// primitive inside the checker, which runs every thread on one OS thread.
pub trait AppendLock: Send + Sync {
    /// What [`lock`](Self::lock) hands out.
    type Guard<'a>: DerefMut<Target = Tail>
    where
        Self: 'a;
    /// A lock around `tail`.
    fn new(tail: Tail) -> Self;
    /// Waits for the lock and takes it.
    fn lock(&self) -> Self::Guard<'_>;
    /// Releases the lock until [`notify_all`](Self::notify_all) (or a spurious wake-up),
    /// then takes it again.
    fn wait<'a>(&'a self, guard: Self::Guard<'a>) -> Self::Guard<'a>;
    /// Wakes every thread in [`wait`](Self::wait).
    fn notify_all(&self);
}

/// The default [`AppendLock`]: a std mutex and condition variable.
pub struct StdLock {
    tail: Mutex<Tail>,
    copied: Condvar,
}

impl AppendLock for StdLock {
    type Guard<'a> = MutexGuard<'a, Tail>;

    fn new(tail: Tail) -> Self {
        StdLock {
            tail: Mutex::new(tail),
            copied: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Tail> {
        // The lock guards no invariant a panic could break halfway.
        self.tail
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn wait<'a>(&'a self, guard: MutexGuard<'a, Tail>) -> MutexGuard<'a, Tail> {
        self.copied
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn notify_all(&self) {
        self.copied.notify_all();
    }
}

/// The write-ahead log: append from many threads, commit by LSN, and whoever leads a
/// flush writes the buffer out and syncs it for everyone.
///
/// `L` is the append lock; leave it at its default outside model-checking tests.
pub struct Wal<S: Storage, L: AppendLock = StdLock> {
    storage: S,
    segment_bytes: u64,
    tail: L,
    flushes: GroupFlush,
}

impl<S: Storage> Wal<S> {
    /// Recovers the log on `storage` with segments of `segment_bytes`: scans it, cuts off
    /// whatever follows the last valid record, and makes that durable before anything
    /// new is appended.
    ///
    /// # Errors
    ///
    /// An error of the storage; `InvalidInput` for a segment size out of
    /// [`MIN_SEGMENT_BYTES`]..=[`MAX_SEGMENT_BYTES`]; `InvalidData` for a log written with
    /// another segment size, or one without segment 0.
    pub fn open(storage: S, config: Config, segment_bytes: u64) -> io::Result<(Self, Recovery)> {
        Self::open_with_lock(storage, config, segment_bytes)
    }
}

impl<S: Storage, L: AppendLock> Wal<S, L> {
    /// [`Wal::open`], with the append lock `L`.
    pub fn open_with_lock(
        storage: S,
        config: Config,
        segment_bytes: u64,
    ) -> io::Result<(Self, Recovery)> {
        if !(MIN_SEGMENT_BYTES..=MAX_SEGMENT_BYTES).contains(&segment_bytes) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a segment holds {MIN_SEGMENT_BYTES} to {MAX_SEGMENT_BYTES} bytes, not \
                     {segment_bytes}"
                ),
            ));
        }
        let listed = storage.segments()?;
        let recovery = scan_log(&listed, segment_bytes, |index| storage.read(index))?;
        // The cut: later segments first, so that the log never has a gap.
        for &index in listed.iter().rev() {
            if index >= recovery.segments {
                storage.remove(index)?;
            }
        }
        let mut created = 0;
        let last_segment = if recovery.segments == 0 {
            storage.create(0)?;
            storage.write_at(0, 0, &segment_header(0, segment_bytes, 0))?;
            created = 1;
            0
        } else {
            let last = recovery.segments - 1;
            if recovery.discarded > 0 {
                storage.truncate(last, recovery.end - last * segment_bytes)?;
            }
            last
        };
        let flushes = GroupFlush::new(config);
        // Recovered records may have been read from the page cache after a process
        // crash, and the cut is not durable yet: sync every kept segment and the
        // directory before new records follow them.
        flushes.flush(recovery.end, |_| {
            for index in 0..=last_segment {
                storage.sync(index)?;
            }
            storage.sync_dir()?;
            Ok(recovery.end)
        })?;
        let wal = Wal {
            storage,
            segment_bytes,
            tail: L::new(Tail {
                reserved: recovery.end,
                buffer: VecDeque::new(),
                written: recovery.end,
                last_segment,
                created,
                waiting_for_copies: 0,
                flushes: 0,
                failed_flushes: 0,
                hole_waits: 0,
                failed: None,
            }),
            flushes,
        };
        Ok((wal, recovery))
    }

    /// Appends one record to the log buffer and returns its LSN. It is not durable until
    /// [`commit`](Self::commit) returns `Ok` for that LSN (or a higher one).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a payload over [`max_payload`]; after a failed flush, the
    /// error of that flush (the log's end on storage is unknown).
    pub fn append(&self, payload: &[u8]) -> io::Result<u64> {
        let max = max_payload(self.segment_bytes);
        if payload.len() > max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a record holds at most {max} bytes in {}-byte segments, not {}",
                    self.segment_bytes,
                    payload.len()
                ),
            ));
        }
        let record_len = (HEADER + payload.len()) as u64;
        let start = {
            let mut tail = self.lock_tail();
            if let Some(failed) = &tail.failed {
                return Err(failed.to_io_error());
            }
            let start = place(tail.reserved, record_len, self.segment_bytes);
            tail.reserved = start + record_len;
            tail.buffer.push_back(Slot {
                start,
                end: start + record_len,
                bytes: None,
            });
            start
        };
        // Encoded with the lock released: other appends go on meanwhile, and a flush
        // that starts now stops before this record (a hole).
        let record = encode(payload, start);
        let mut tail = self.lock_tail();
        let at = tail.buffer.partition_point(|slot| slot.start < start);
        let slot = tail
            .buffer
            .get_mut(at)
            .filter(|slot| slot.start == start)
            .expect("a flush never takes a record that is not copied in");
        slot.bytes = Some(record);
        if tail.waiting_for_copies > 0 {
            self.tail.notify_all();
        }
        Ok(start + record_len)
    }

    /// Returns once every record up to `lsn` is durable, sharing flushes with the other
    /// threads that commit at the same time.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for an LSN beyond the last append; otherwise the error of the
    /// flush that should have covered `lsn` (the first failure is final).
    pub fn commit(&self, lsn: u64) -> io::Result<()> {
        let reserved = self.lock_tail().reserved;
        if lsn > reserved {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LSN {lsn} is beyond the end of the log ({reserved})"),
            ));
        }
        loop {
            match self.flushes.flush(lsn, |target| self.flush_to(target)) {
                Ok(_) => return Ok(()),
                // This caller led, and its flush stopped at a hole below `lsn`: wait
                // for the copy, then flush again.
                Err(error) if error.get_ref().is_some_and(|e| e.is::<NoProgress>()) => {
                    self.wait_for_copies(lsn)
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// [`append`](Self::append), then [`commit`](Self::commit).
    pub fn append_durably(&self, payload: &[u8]) -> io::Result<u64> {
        let lsn = self.append(payload)?;
        self.commit(lsn)?;
        Ok(lsn)
    }

    /// The leader's flush: takes the records it needs to reach `target` from the buffer
    /// (up to the first hole), writes them out, syncs every segment that got bytes, and
    /// returns how far the log is durable.
    fn flush_to(&self, target: u64) -> io::Result<u64> {
        let (batch, written, last_segment) = {
            let mut tail = self.lock_tail();
            tail.flushes += 1;
            if let Some(error) = tail.failed.as_ref().map(StickyError::to_io_error) {
                tail.failed_flushes += 1;
                return Err(error);
            }
            let mut batch = Vec::new();
            let mut end = tail.written;
            while end < target {
                match tail.buffer.front() {
                    Some(slot) if slot.bytes.is_some() => {
                        end = slot.end;
                        batch.extend(tail.buffer.pop_front());
                    }
                    // A hole, or nothing more: durable up to here.
                    _ => break,
                }
            }
            (batch, tail.written, tail.last_segment)
        };
        if batch.is_empty() {
            return Ok(written);
        }
        let mut last = last_segment;
        let outcome = self.write_out(&batch, written, &mut last);
        let mut tail = self.lock_tail();
        tail.created += last - tail.last_segment;
        tail.last_segment = last;
        match outcome {
            Ok(end) => {
                tail.written = end;
                Ok(end)
            }
            Err(error) => {
                tail.failed_flushes += 1;
                tail.failed = Some(StickyError::new(&error));
                Err(error)
            }
        }
    }

    /// Writes `batch` (records back to back from `written`, but for segment ends), one
    /// write per segment, rolling over to new segments as the records say, then syncs
    /// every segment that got bytes. Returns the end of the batch.
    fn write_out(&self, batch: &[Slot], written: u64, last_segment: &mut u64) -> io::Result<u64> {
        let bytes = self.segment_bytes;
        let first_dirty = batch[0].start / bytes;
        let mut end = written;
        let mut run: Vec<u8> = Vec::new();
        let mut run_start = batch[0].start;
        for slot in batch {
            let index = slot.start / bytes;
            if slot.start != run_start + run.len() as u64 {
                // This record starts a segment: the run of the one before is complete.
                self.storage
                    .write_at(run_start / bytes, run_start % bytes, &run)?;
                run.clear();
                run_start = slot.start;
            }
            while *last_segment < index {
                self.roll_over(*last_segment + 1, end)?;
                *last_segment += 1;
            }
            run.extend_from_slice(slot.bytes.as_deref().expect("only copied records"));
            end = slot.end;
        }
        self.storage
            .write_at(run_start / bytes, run_start % bytes, &run)?;
        for index in first_dirty..=*last_segment {
            self.storage.sync(index)?;
        }
        Ok(end)
    }

    /// Creates segment `index` after a segment whose records end at `prev_end`: the file,
    /// its header synced, its directory entry synced. Only then may records in it be
    /// acknowledged: an entry that is not durable loses the whole segment at a crash.
    fn roll_over(&self, index: u64, prev_end: u64) -> io::Result<()> {
        self.storage.create(index)?;
        self.storage.write_at(
            index,
            0,
            &segment_header(index, self.segment_bytes, prev_end),
        )?;
        self.storage.sync(index)?;
        self.storage.sync_dir()?;
        Ok(())
    }

    /// Waits until every buffered record a flush needs to reach `lsn` is copied in.
    fn wait_for_copies(&self, lsn: u64) {
        let mut tail = self.lock_tail();
        tail.hole_waits += 1;
        tail.waiting_for_copies += 1;
        while has_hole_below(&tail, lsn) {
            tail = self.tail.wait(tail);
        }
        tail.waiting_for_copies -= 1;
    }

    /// The end of the last record appended: the LSN the log reaches once everything
    /// appended is durable (where recovery left it, before the first append).
    pub fn end(&self) -> u64 {
        self.lock_tail().reserved
    }

    /// The segment size.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The last segment that exists.
    pub fn last_segment(&self) -> u64 {
        self.lock_tail().last_segment
    }

    /// Segments this life created: by rollover, and segment 0 of a new log.
    pub fn segments_created(&self) -> u64 {
        self.lock_tail().created
    }

    /// The log's own counters: flushes run, flushes failed, and commits that met a hole
    /// and flushed again after the copy.
    pub fn flush_counts(&self) -> FlushCounts {
        let tail = self.lock_tail();
        FlushCounts {
            flushes: tail.flushes,
            failed_flushes: tail.failed_flushes,
            hole_waits: tail.hole_waits,
        }
    }

    /// The group-commit manager, for its statistics.
    pub fn group(&self) -> &GroupFlush {
        &self.flushes
    }

    /// The storage underneath.
    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn lock_tail(&self) -> L::Guard<'_> {
        self.tail.lock()
    }
}

/// Whether a flush to `lsn` would stop at a hole: the walk of `flush_to`'s drain.
fn has_hole_below(tail: &Tail, lsn: u64) -> bool {
    let mut end = tail.written;
    for slot in &tail.buffer {
        if end >= lsn {
            return false;
        }
        if slot.bytes.is_none() {
            return true;
        }
        end = slot.end;
    }
    false
}

/// The log's own counters, from [`Wal::flush_counts`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlushCounts {
    /// Runs of the leader's flush (the recovery's not counted).
    pub flushes: u64,
    /// Of those, runs that failed.
    pub failed_flushes: u64,
    /// Commits that met a hole below their record, waited for the copy and flushed
    /// again.
    pub hole_waits: u64,
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
