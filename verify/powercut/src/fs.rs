//! The file system: pass-through operations, the volatile layer, the cut and the faults.

use crate::rng::Rng;
use fuser::{
    BackgroundSession, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    TimeOrNow, WriteFlags,
};
use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attributes and entries are never cached by the kernel: after an `EIO` from `fsync`
/// drops data, the next `stat` must see the smaller file.
const TTL: Duration = Duration::ZERO;

/// The parent of an entry moved aside by unlink, rmdir or a replacing rename, so that a
/// cut can bring it back.
const GRAVEYARD: u64 = u64::MAX;

/// The deepest directory nesting a path lookup follows (a loop guard).
const MAX_DEPTH: usize = 4096;

#[derive(Clone, Debug)]
struct Node {
    parent: u64,
    name: OsString,
}

/// A write or truncate not yet made durable, with what it replaced so that it can be
/// undone.
#[derive(Debug)]
enum DataOp {
    Write {
        offset: u64,
        data: Vec<u8>,
        old_size: u64,
        /// The bytes it overwrote inside the old size.
        old_bytes: Vec<u8>,
    },
    Truncate {
        old_size: u64,
        /// The bytes cut off, when it shrank the file.
        old_bytes: Vec<u8>,
        new_size: u64,
    },
}

impl DataOp {
    fn undo(&self, file: &File) -> io::Result<()> {
        match self {
            DataOp::Write {
                offset,
                old_size,
                old_bytes,
                ..
            } => {
                file.write_all_at(old_bytes, *offset)?;
                // The write left the file at least `old_size` long; what lies past it
                // was made by the write.
                file.set_len(*old_size)
            }
            DataOp::Truncate {
                old_size,
                old_bytes,
                new_size,
            } => {
                file.set_len(*old_size)?;
                file.write_all_at(old_bytes, *new_size)
            }
        }
    }

    fn len(&self) -> u64 {
        match self {
            DataOp::Write { data, .. } => data.len() as u64,
            DataOp::Truncate { .. } => 0,
        }
    }
}

/// A directory entry change not yet made durable.
#[derive(Clone, Debug)]
enum DirChange {
    Create {
        ino: u64,
        parent: u64,
        name: OsString,
    },
    Mkdir {
        ino: u64,
        parent: u64,
        name: OsString,
    },
    /// unlink or rmdir: the entry now lives in the graveyard as `grave`.
    Remove {
        ino: u64,
        parent: u64,
        name: OsString,
        grave: OsString,
    },
    Rename {
        ino: u64,
        from: (u64, OsString),
        to: (u64, OsString),
        /// The entry the rename replaced, moved to the graveyard as its second field.
        replaced: Option<(u64, OsString)>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Entry(u64, OsString),
    Inode(u64),
}

impl DirChange {
    /// What the change touches: a later change kept at a cut forces every earlier change
    /// that touches the same entry or inode to be kept too.
    fn keys(&self) -> Vec<Key> {
        match self {
            DirChange::Create { ino, parent, name }
            | DirChange::Mkdir { ino, parent, name }
            | DirChange::Remove {
                ino, parent, name, ..
            } => vec![Key::Entry(*parent, name.clone()), Key::Inode(*ino)],
            DirChange::Rename {
                ino,
                from,
                to,
                replaced,
            } => {
                let mut keys = vec![
                    Key::Entry(from.0, from.1.clone()),
                    Key::Entry(to.0, to.1.clone()),
                    Key::Inode(*ino),
                ];
                if let Some((replaced, _)) = replaced {
                    keys.push(Key::Inode(*replaced));
                }
                keys
            }
        }
    }
}

#[derive(Debug)]
struct DirOp {
    change: DirChange,
    /// Directories whose fsync is still missing; durable when empty.
    unsynced_dirs: Vec<u64>,
}

/// Counters of what the file system did, for reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Writes passed through.
    pub writes: u64,
    /// File fsyncs that succeeded.
    pub fsyncs: u64,
    /// Directory fsyncs that succeeded.
    pub dir_fsyncs: u64,
    /// Injected fsync failures delivered.
    pub fsync_failures: u64,
    /// Unsynced bytes dropped by those failures.
    pub bytes_dropped_by_fsync_failures: u64,
    /// Writes failed with `ENOSPC`.
    pub enospc: u64,
}

/// What a power cut kept and dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced writes or truncates.
    pub files: u64,
    /// Unsynced writes and truncates kept whole.
    pub ops_kept: u64,
    /// Unsynced writes and truncates dropped whole.
    pub ops_dropped: u64,
    /// Writes kept torn (a prefix of their bytes).
    pub writes_torn: u64,
    /// Bytes of unsynced writes that did not survive.
    pub bytes_dropped: u64,
    /// Unsynced directory changes kept.
    pub dir_changes_kept: u64,
    /// Unsynced directory changes lost.
    pub dir_changes_lost: u64,
    /// Undo steps that failed: a bug of this file system, never expected.
    pub errors: Vec<String>,
}

impl fmt::Display for CutReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} files with unsynced data: {} ops kept, {} torn, {} dropped ({} bytes); \
             directory changes: {} kept, {} lost",
            self.files,
            self.ops_kept,
            self.writes_torn,
            self.ops_dropped,
            self.bytes_dropped,
            self.dir_changes_kept,
            self.dir_changes_lost
        )
    }
}

#[derive(Default)]
struct State {
    frozen: bool,
    nodes: HashMap<u64, Node>,
    by_backing_ino: HashMap<u64, u64>,
    next_ino: u64,
    handles: HashMap<u64, Arc<File>>,
    next_handle: u64,
    next_grave: u64,
    /// Per inode, its unsynced writes and truncates in order.
    pending: HashMap<u64, Vec<DataOp>>,
    /// Unsynced directory changes in the order they happened.
    dir_ops: Vec<DirOp>,
    fail_next_fsync: bool,
    enospc: bool,
    /// A cut armed for the n-th mutating operation from now, with its seed.
    trip: Option<(u64, u64)>,
    /// The report of the cut that `trip` made.
    tripped: Option<CutReport>,
    stats: Stats,
}

struct Shared {
    root: PathBuf,
    graveyard: PathBuf,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every step that changes the state completes or is undone before the lock is
        // released; a panic in between is a bug the tests report anyway.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Orders power cuts and faults from outside the mount. Cheap to clone.
#[derive(Clone)]
pub struct Control(Arc<Shared>);

/// The FUSE file system; mount it with [`Mounted::mount`] (or hand it to `fuser`).
pub struct PowerCutFs(Arc<Shared>);

impl PowerCutFs {
    /// A file system over `store`: the visible tree is `store/root`, entries removed but
    /// not yet durably removed wait in `store/graveyard`. Both are created if missing;
    /// the graveyard left by an earlier mount is emptied (those removals happened).
    pub fn new(store: &Path) -> io::Result<(PowerCutFs, Control)> {
        let root = store.join("root");
        let graveyard = store.join("graveyard");
        fs::create_dir_all(&root)?;
        if graveyard.exists() {
            fs::remove_dir_all(&graveyard)?;
        }
        fs::create_dir_all(&graveyard)?;
        let mut state = State {
            next_ino: 2,
            next_handle: 1,
            ..State::default()
        };
        state.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                parent: INodeNo::ROOT.0,
                name: OsString::new(),
            },
        );
        state
            .by_backing_ino
            .insert(fs::metadata(&root)?.ino(), INodeNo::ROOT.0);
        let shared = Arc::new(Shared {
            root,
            graveyard,
            state: Mutex::new(state),
        });
        Ok((PowerCutFs(shared.clone()), Control(shared)))
    }
}

impl Control {
    /// The power cut. Freezes the mount (every later operation fails with `EIO`), then
    /// rewrites the backing store into what the disk may hold: each file keeps a random
    /// in-order prefix of its unsynced writes and truncates, the first write past the
    /// prefix torn at a random byte (sometimes with the file size covering all of it,
    /// the rest zeros); each unsynced directory change is lost or kept at random, except
    /// that a kept change keeps every earlier one on the same entry or inode. The same
    /// seed on the same state gives the same result.
    ///
    /// If a cut armed with [`cut_after_ops`](Self::cut_after_ops) has already happened,
    /// returns its report and changes nothing.
    pub fn cut(&self, seed: u64) -> CutReport {
        let mut state = self.0.lock();
        if let Some(report) = state.tripped.take() {
            return report;
        }
        self.cut_locked(&mut state, seed)
    }

    /// Arms a power cut at an instant inside the operation stream: as the `ops`-th
    /// mutating operation from now (write, truncate, fsync, directory change or
    /// directory fsync) arrives, the power is cut with `seed` and that operation fails
    /// with `EIO`, like everything after it. [`cut`](Self::cut) then returns its report.
    pub fn cut_after_ops(&self, ops: u64, seed: u64) {
        self.0.lock().trip = Some((ops.max(1), seed));
    }

    /// Whether a cut armed with [`cut_after_ops`](Self::cut_after_ops) has happened.
    pub fn tripped(&self) -> bool {
        self.0.lock().tripped.is_some()
    }

    fn cut_locked(&self, state: &mut State, seed: u64) -> CutReport {
        let mut rng = Rng::new(seed);
        state.frozen = true;
        state.handles.clear();
        let mut report = CutReport::default();

        let mut inos: Vec<u64> = state.pending.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let ops = state.pending.remove(&ino).unwrap_or_default();
            if ops.is_empty() {
                continue;
            }
            report.files += 1;
            let keep = rng.below(ops.len() as u64 + 1) as usize;
            let result = self.path(state, ino).and_then(|path| {
                let file = OpenOptions::new().read(true).write(true).open(path)?;
                for op in ops[keep..].iter().rev() {
                    op.undo(&file)?;
                }
                report.ops_kept += keep as u64;
                report.ops_dropped += (ops.len() - keep) as u64;
                for op in &ops[keep..] {
                    report.bytes_dropped += op.len();
                }
                if let Some(DataOp::Write { offset, data, .. }) = ops.get(keep) {
                    let torn = rng.below(data.len() as u64) as usize;
                    file.write_all_at(&data[..torn], *offset)?;
                    let end = offset + data.len() as u64;
                    if rng.one_in(4) && file.metadata()?.len() < end {
                        // The new size reached the disk, the data did not.
                        file.set_len(end)?;
                    }
                    report.bytes_dropped -= torn as u64;
                    report.ops_dropped -= 1;
                    report.writes_torn += 1;
                }
                Ok(())
            });
            if let Err(error) = result {
                report
                    .errors
                    .push(format!("undo writes of inode {ino}: {error}"));
            }
        }

        let ops = std::mem::take(&mut state.dir_ops);
        let mut kept_keys: HashSet<Key> = HashSet::new();
        for op in ops.iter().rev() {
            let keys = op.change.keys();
            let synced = op.unsynced_dirs.is_empty();
            if synced || keys.iter().any(|k| kept_keys.contains(k)) || rng.one_in(2) {
                if !synced {
                    report.dir_changes_kept += 1;
                }
                kept_keys.extend(keys);
                continue;
            }
            report.dir_changes_lost += 1;
            if let Err(error) = self.undo_dir_change(state, &op.change) {
                report.errors.push(format!("undo {:?}: {error}", op.change));
            }
        }
        if let Err(error) = fs::remove_dir_all(&self.0.graveyard) {
            report.errors.push(format!("empty the graveyard: {error}"));
        }
        report
    }

    fn undo_dir_change(&self, state: &mut State, change: &DirChange) -> io::Result<()> {
        match change {
            DirChange::Create { ino, parent, name } => {
                fs::remove_file(self.entry_path(state, *parent, name)?)?;
                state.nodes.remove(ino);
            }
            DirChange::Mkdir { ino, parent, name } => {
                fs::remove_dir_all(self.entry_path(state, *parent, name)?)?;
                state.nodes.remove(ino);
            }
            DirChange::Remove {
                ino,
                parent,
                name,
                grave,
            } => {
                fs::rename(
                    self.0.graveyard.join(grave),
                    self.entry_path(state, *parent, name)?,
                )?;
                state.nodes.insert(
                    *ino,
                    Node {
                        parent: *parent,
                        name: name.clone(),
                    },
                );
            }
            DirChange::Rename {
                ino,
                from,
                to,
                replaced,
            } => {
                fs::rename(
                    self.entry_path(state, to.0, &to.1)?,
                    self.entry_path(state, from.0, &from.1)?,
                )?;
                state.nodes.insert(
                    *ino,
                    Node {
                        parent: from.0,
                        name: from.1.clone(),
                    },
                );
                if let Some((replaced, grave)) = replaced {
                    fs::rename(
                        self.0.graveyard.join(grave),
                        self.entry_path(state, to.0, &to.1)?,
                    )?;
                    state.nodes.insert(
                        *replaced,
                        Node {
                            parent: to.0,
                            name: to.1.clone(),
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// The next `fsync`/`fdatasync` of a file fails with `EIO` and drops that file's
    /// unsynced writes and truncates: the file shows its durable content again (Linux
    /// keeps such pages readable in its cache until they are evicted, but never writes
    /// them; either way they are not on the disk).
    pub fn fail_next_fsync(&self) {
        self.0.lock().fail_next_fsync = true;
    }

    /// While on, every write fails with `ENOSPC` and changes nothing.
    pub fn set_enospc(&self, on: bool) {
        self.0.lock().enospc = on;
    }

    /// What the file system did so far.
    pub fn stats(&self) -> Stats {
        self.0.lock().stats
    }

    /// Bytes written but not yet synced, over every file.
    pub fn unsynced_bytes(&self) -> u64 {
        let state = self.0.lock();
        state.pending.values().flatten().map(DataOp::len).sum()
    }

    /// Directory changes not yet made durable by a directory fsync.
    pub fn unsynced_dir_changes(&self) -> usize {
        let state = self.0.lock();
        state
            .dir_ops
            .iter()
            .filter(|op| !op.unsynced_dirs.is_empty())
            .count()
    }

    fn path(&self, state: &State, ino: u64) -> io::Result<PathBuf> {
        path_of(&self.0, state, ino)
    }

    fn entry_path(&self, state: &State, parent: u64, name: &OsStr) -> io::Result<PathBuf> {
        Ok(path_of(&self.0, state, parent)?.join(name))
    }
}

fn path_of(shared: &Shared, state: &State, ino: u64) -> io::Result<PathBuf> {
    let mut names = Vec::new();
    let mut at = ino;
    while at != INodeNo::ROOT.0 {
        let node = state
            .nodes
            .get(&at)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOENT))?;
        if node.parent == GRAVEYARD {
            let mut path = shared.graveyard.join(&node.name);
            path.extend(names.iter().rev());
            return Ok(path);
        }
        names.push(node.name.clone());
        at = node.parent;
        if names.len() > MAX_DEPTH {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
    }
    let mut path = shared.root.clone();
    path.extend(names.iter().rev());
    Ok(path)
}

fn errno(error: io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(libc::EIO))
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

fn attr_of(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let time = |secs: i64, nsecs: i64| {
        if secs >= 0 {
            UNIX_EPOCH + Duration::new(secs as u64, nsecs as u32)
        } else {
            UNIX_EPOCH
        }
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn system_time(time: TimeOrNow) -> SystemTime {
    match time {
        TimeOrNow::SpecificTime(time) => time,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl PowerCutFs {
    fn state(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let state = self.0.lock();
        if state.frozen {
            return Err(Errno::EIO);
        }
        Ok(state)
    }

    fn path(&self, state: &State, ino: u64) -> Result<PathBuf, Errno> {
        path_of(&self.0, state, ino).map_err(errno)
    }

    /// The state, for an operation that changes what a cut would keep: it counts down an
    /// armed cut, and makes it when it is due.
    fn mutating(&self) -> Result<MutexGuard<'_, State>, Errno> {
        let mut state = self.state()?;
        if let Some((left, seed)) = state.trip {
            if left <= 1 {
                state.trip = None;
                let report = Control(self.0.clone()).cut_locked(&mut state, seed);
                state.tripped = Some(report);
                return Err(Errno::EIO);
            }
            state.trip = Some((left - 1, seed));
        }
        Ok(state)
    }

    /// The inode number of the backing entry `meta` at `parent`/`name`.
    fn ino_for(state: &mut State, parent: u64, name: &OsStr, meta: &fs::Metadata) -> u64 {
        let node = Node {
            parent,
            name: name.to_owned(),
        };
        if let Some(&ino) = state.by_backing_ino.get(&meta.ino()) {
            if ino != INodeNo::ROOT.0 {
                state.nodes.insert(ino, node);
            }
            return ino;
        }
        let ino = state.next_ino;
        state.next_ino += 1;
        state.by_backing_ino.insert(meta.ino(), ino);
        state.nodes.insert(ino, node);
        ino
    }

    fn new_handle(state: &mut State, file: File) -> u64 {
        let fh = state.next_handle;
        state.next_handle += 1;
        state.handles.insert(fh, Arc::new(file));
        fh
    }

    fn file_for(state: &State, path: &Path, fh: Option<FileHandle>) -> io::Result<Arc<File>> {
        if let Some(file) = fh.and_then(|fh| state.handles.get(&fh.0)) {
            return Ok(file.clone());
        }
        Ok(Arc::new(
            OpenOptions::new().read(true).write(true).open(path)?,
        ))
    }

    fn move_to_graveyard(&self, state: &mut State, path: &Path, ino: u64) -> io::Result<OsString> {
        let grave = OsString::from(format!("{}", state.next_grave));
        state.next_grave += 1;
        fs::rename(path, self.0.graveyard.join(&grave))?;
        state.nodes.insert(
            ino,
            Node {
                parent: GRAVEYARD,
                name: grave.clone(),
            },
        );
        Ok(grave)
    }

    fn lookup_inner(&self, parent: u64, name: &OsStr) -> Result<FileAttr, Errno> {
        let mut state = self.state()?;
        let path = self.path(&state, parent)?.join(name);
        let meta = fs::symlink_metadata(&path).map_err(errno)?;
        let ino = Self::ino_for(&mut state, parent, name, &meta);
        Ok(attr_of(ino, &meta))
    }

    fn create_inner(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        open: bool,
    ) -> Result<(FileAttr, u64), Errno> {
        let mut state = self.mutating()?;
        let path = self.path(&state, parent)?.join(name);
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode & 0o7777)
            .open(&path);
        let (file, new) = match created {
            Ok(file) => (file, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && flags & libc::O_EXCL == 0 => {
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(errno)?;
                (file, false)
            }
            Err(e) => return Err(errno(e)),
        };
        let meta = file.metadata().map_err(errno)?;
        let ino = Self::ino_for(&mut state, parent, name, &meta);
        if new {
            state.dir_ops.push(DirOp {
                change: DirChange::Create {
                    ino,
                    parent,
                    name: name.to_owned(),
                },
                unsynced_dirs: vec![parent],
            });
        }
        let fh = if open {
            Self::new_handle(&mut state, file)
        } else {
            0
        };
        Ok((attr_of(ino, &meta), fh))
    }

    fn remove_inner(&self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let mut state = self.mutating()?;
        let path = self.path(&state, parent)?.join(name);
        let meta = fs::symlink_metadata(&path).map_err(errno)?;
        match (dir, meta.is_dir()) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            (true, true) if fs::read_dir(&path).map_err(errno)?.next().is_some() => {
                return Err(Errno::ENOTEMPTY)
            }
            _ => {}
        }
        let ino = Self::ino_for(&mut state, parent, name, &meta);
        let grave = self
            .move_to_graveyard(&mut state, &path, ino)
            .map_err(errno)?;
        state.dir_ops.push(DirOp {
            change: DirChange::Remove {
                ino,
                parent,
                name: name.to_owned(),
                grave,
            },
            unsynced_dirs: vec![parent],
        });
        Ok(())
    }

    fn rename_inner(
        &self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        flags: RenameFlags,
    ) -> Result<(), Errno> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(Errno::EINVAL);
        }
        let mut state = self.mutating()?;
        let from = self.path(&state, parent)?.join(name);
        let to = self.path(&state, new_parent)?.join(new_name);
        let meta = fs::symlink_metadata(&from).map_err(errno)?;
        let ino = Self::ino_for(&mut state, parent, name, &meta);
        let mut replaced = None;
        match fs::symlink_metadata(&to) {
            Ok(target) => {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(Errno::EEXIST);
                }
                if target.ino() == meta.ino() {
                    return Ok(());
                }
                match (meta.is_dir(), target.is_dir()) {
                    (true, false) => return Err(Errno::ENOTDIR),
                    (false, true) => return Err(Errno::EISDIR),
                    (true, true) if fs::read_dir(&to).map_err(errno)?.next().is_some() => {
                        return Err(Errno::ENOTEMPTY)
                    }
                    _ => {}
                }
                if to.starts_with(&from) {
                    return Err(Errno::EINVAL);
                }
                let target_ino = Self::ino_for(&mut state, new_parent, new_name, &target);
                let grave = self
                    .move_to_graveyard(&mut state, &to, target_ino)
                    .map_err(errno)?;
                replaced = Some((target_ino, grave));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(errno(e)),
        }
        if let Err(e) = fs::rename(&from, &to) {
            // Put the replaced entry back: the rename did not happen.
            if let Some((target_ino, grave)) = &replaced {
                let _ = fs::rename(self.0.graveyard.join(grave), &to);
                state.nodes.insert(
                    *target_ino,
                    Node {
                        parent: new_parent,
                        name: new_name.to_owned(),
                    },
                );
            }
            return Err(errno(e));
        }
        state.nodes.insert(
            ino,
            Node {
                parent: new_parent,
                name: new_name.to_owned(),
            },
        );
        let mut unsynced_dirs = vec![parent];
        if new_parent != parent {
            unsynced_dirs.push(new_parent);
        }
        state.dir_ops.push(DirOp {
            change: DirChange::Rename {
                ino,
                from: (parent, name.to_owned()),
                to: (new_parent, new_name.to_owned()),
                replaced,
            },
            unsynced_dirs,
        });
        Ok(())
    }

    fn write_inner(
        &self,
        ino: u64,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
    ) -> Result<u32, Errno> {
        let mut state = self.mutating()?;
        if state.enospc {
            state.stats.enospc += 1;
            return Err(Errno::ENOSPC);
        }
        let path = self.path(&state, ino)?;
        let file = Self::file_for(&state, &path, Some(fh)).map_err(errno)?;
        let old_size = file.metadata().map_err(errno)?.len();
        let overwritten = old_size
            .min(offset + data.len() as u64)
            .saturating_sub(offset);
        let mut old_bytes = vec![0; overwritten as usize];
        file.read_exact_at(&mut old_bytes, offset).map_err(errno)?;
        if let Err(e) = file.write_all_at(data, offset) {
            // Leave no half-done write behind: the caller sees it failed.
            let undo = DataOp::Write {
                offset,
                data: Vec::new(),
                old_size,
                old_bytes,
            };
            let _ = undo.undo(&file);
            return Err(errno(e));
        }
        state.stats.writes += 1;
        state.pending.entry(ino).or_default().push(DataOp::Write {
            offset,
            data: data.to_vec(),
            old_size,
            old_bytes,
        });
        Ok(data.len() as u32)
    }

    fn truncate(
        &self,
        state: &mut State,
        ino: u64,
        fh: Option<FileHandle>,
        size: u64,
    ) -> io::Result<()> {
        let path = path_of(&self.0, state, ino)?;
        let file = Self::file_for(state, &path, fh)?;
        let old_size = file.metadata()?.len();
        let mut old_bytes = vec![0; old_size.saturating_sub(size) as usize];
        file.read_exact_at(&mut old_bytes, size)?;
        file.set_len(size)?;
        state
            .pending
            .entry(ino)
            .or_default()
            .push(DataOp::Truncate {
                old_size,
                old_bytes,
                new_size: size,
            });
        Ok(())
    }

    fn fsync_inner(&self, ino: u64) -> Result<(), Errno> {
        let mut state = self.mutating()?;
        let ops = state.pending.remove(&ino).unwrap_or_default();
        if !std::mem::take(&mut state.fail_next_fsync) {
            state.stats.fsyncs += 1;
            return Ok(());
        }
        state.stats.fsync_failures += 1;
        let path = self.path(&state, ino)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(errno)?;
        for op in ops.iter().rev() {
            op.undo(&file).map_err(errno)?;
            state.stats.bytes_dropped_by_fsync_failures += op.len();
        }
        Err(Errno::EIO)
    }

    fn fsyncdir_inner(&self, ino: u64) -> Result<(), Errno> {
        let mut state = self.mutating()?;
        for op in &mut state.dir_ops {
            op.unsynced_dirs.retain(|&dir| dir != ino);
        }
        // Durable changes at the front constrain nothing a cut could drop.
        let durable = state
            .dir_ops
            .iter()
            .take_while(|op| op.unsynced_dirs.is_empty())
            .count();
        state.dir_ops.drain(..durable);
        state.stats.dir_fsyncs += 1;
        Ok(())
    }

    fn readdir_inner(&self, ino: u64) -> Result<Vec<(u64, FileType, OsString)>, Errno> {
        let mut state = self.state()?;
        let path = self.path(&state, ino)?;
        let parent = state.nodes.get(&ino).map_or(ino, |n| n.parent);
        let mut entries = vec![
            (ino, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        let mut children = Vec::new();
        for entry in fs::read_dir(&path).map_err(errno)? {
            let entry = entry.map_err(errno)?;
            let meta = entry.metadata().map_err(errno)?;
            children.push((entry.file_name(), meta));
        }
        children.sort_by(|a, b| a.0.cmp(&b.0));
        for (name, meta) in children {
            let child = Self::ino_for(&mut state, ino, &name, &meta);
            entries.push((child, kind_of(&meta), name));
        }
        Ok(entries)
    }
}

impl Filesystem for PowerCutFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.lookup_inner(parent.0, name) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let result = self.state().and_then(|state| {
            let path = self.path(&state, ino.0)?;
            fs::symlink_metadata(path).map_err(errno)
        });
        match result {
            Ok(meta) => reply.attr(&TTL, &attr_of(ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // Only the size is tracked for the cut; modes, owners and times pass through.
        let result = self.mutating().and_then(|mut state| {
            let path = self.path(&state, ino.0)?;
            if let Some(size) = size {
                self.truncate(&mut state, ino.0, fh, size).map_err(errno)?;
            }
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))
                    .map_err(errno)?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid).map_err(errno)?;
            }
            if atime.is_some() || mtime.is_some() {
                let mut times = fs::FileTimes::new();
                if let Some(atime) = atime {
                    times = times.set_accessed(system_time(atime));
                }
                if let Some(mtime) = mtime {
                    times = times.set_modified(system_time(mtime));
                }
                File::options()
                    .write(!fs::metadata(&path).map_err(errno)?.is_dir())
                    .read(true)
                    .open(&path)
                    .and_then(|f| f.set_times(times))
                    .map_err(errno)?;
            }
            fs::symlink_metadata(&path).map_err(errno)
        });
        match result {
            Ok(meta) => reply.attr(&TTL, &attr_of(ino.0, &meta)),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        match self.create_inner(parent.0, name, mode & !umask, libc::O_EXCL, false) {
            Ok((attr, _)) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.mutating().and_then(|mut state| {
            let path = self.path(&state, parent.0)?.join(name);
            fs::create_dir(&path).map_err(errno)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(mode & !umask & 0o7777))
                .map_err(errno)?;
            let meta = fs::symlink_metadata(&path).map_err(errno)?;
            let ino = Self::ino_for(&mut state, parent.0, name, &meta);
            state.dir_ops.push(DirOp {
                change: DirChange::Mkdir {
                    ino,
                    parent: parent.0,
                    name: name.to_owned(),
                },
                unsynced_dirs: vec![parent.0],
            });
            Ok(attr_of(ino, &meta))
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_inner(parent.0, name, false) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        match self.remove_inner(parent.0, name, true) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        match self.rename_inner(parent.0, name, newparent.0, newname, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.state().and_then(|mut state| {
            let path = self.path(&state, ino.0)?;
            // Always read-write underneath: undoing a write needs both.
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .or_else(|_| {
                    let mut options = OpenOptions::new();
                    match flags.acc_mode() {
                        OpenAccMode::O_RDONLY => options.read(true),
                        OpenAccMode::O_WRONLY => options.write(true),
                        OpenAccMode::O_RDWR => options.read(true).write(true),
                    };
                    options.open(&path)
                })
                .map_err(errno)?;
            Ok(Self::new_handle(&mut state, file))
        });
        match result {
            // Direct I/O: every write reaches this file system as the program issued it,
            // and no page cache hides what an fsync failure dropped.
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let result = self.state().and_then(|state| {
            let path = self.path(&state, ino.0)?;
            let file = Self::file_for(&state, &path, Some(fh)).map_err(errno)?;
            let mut buf = vec![0; size as usize];
            let mut filled = 0;
            while filled < buf.len() {
                match file.read_at(&mut buf[filled..], offset + filled as u64) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(errno(e)),
                }
            }
            buf.truncate(filled);
            Ok(buf)
        });
        match result {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.write_inner(ino.0, fh, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.0.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fsync_inner(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state() {
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.readdir_inner(ino.0) {
            Ok(entries) => {
                for (i, (child, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
                    if reply.add(INodeNo(*child), i as u64 + 1, *kind, name) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(e),
        }
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        match self.fsyncdir_inner(ino.0) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        match self.create_inner(parent.0, name, mode & !umask, flags, true) {
            Ok((attr, fh)) => reply.created(
                &TTL,
                &attr,
                Generation(0),
                FileHandle(fh),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(e),
        }
    }
}

/// A [`PowerCutFs`] mounted in this process, served by `fuser`'s background threads.
/// Dropping it unmounts.
pub struct Mounted {
    session: Option<BackgroundSession>,
    control: Control,
    mountpoint: PathBuf,
}

impl Mounted {
    /// Mounts a [`PowerCutFs`] over `store` at `mountpoint` (an existing directory).
    pub fn mount(store: &Path, mountpoint: &Path) -> io::Result<Mounted> {
        let (fs, control) = PowerCutFs::new(store)?;
        let mut config = fuser::Config::default();
        config.mount_options = vec![MountOption::FSName("powercut".to_owned())];
        // Several threads, so that an fsync and writes from other threads overlap in
        // the kernel as they do on a real disk.
        config.n_threads = Some(4);
        let session = fuser::spawn_mount(fs, mountpoint, &config)?;
        Ok(Mounted {
            session: Some(session),
            control,
            mountpoint: mountpoint.to_owned(),
        })
    }

    /// Orders cuts and faults.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// Unmounts and waits for the serving threads to end.
    pub fn unmount(mut self) -> io::Result<()> {
        match self.session.take() {
            Some(session) => session.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            let _ = session.umount_and_join();
        }
    }
}
