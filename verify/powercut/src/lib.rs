//! A FUSE file system that loses what was not synced when the power is cut, and the
//! helpers the power-cut tests share.
//!
//! [`PowerCutFs`] passes every operation through to a backing directory and remembers,
//! beside it, what a real disk could still lose: per file, each write and truncate not
//! yet made durable by an `fsync`/`fdatasync` of that file, and every directory entry
//! change (create, mkdir, rename, unlink, rmdir) not yet made durable by an `fsync` of
//! its directory. [`Control::cut`] is the power cut: it freezes the mount (every later
//! operation fails with `EIO`) and rewrites the backing directory into a state the disk
//! could hold after the cut. A new mount over the same store then shows that state.
//!
//! Faults on demand: [`Control::fail_next_fsync`] (the next file `fsync` returns `EIO`
//! and drops that file's unsynced writes, as Linux does) and [`Control::set_enospc`]
//! (writes fail with `ENOSPC`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fs;
mod rng;

pub use fs::{Control, CutReport, Mounted, PowerCutFs};
pub use rng::Rng;

use std::path::Path;

/// Why FUSE cannot be used here, or `None` when `/dev/fuse` and `fusermount3` are both
/// present. Tests print it and skip.
pub fn fuse_unavailable() -> Option<String> {
    if !Path::new("/dev/fuse").exists() {
        return Some("/dev/fuse is missing".to_owned());
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join("fusermount3").exists()))
        .unwrap_or(false);
    if !on_path {
        return Some("fusermount3 is missing (Debian: apt-get install fuse3)".to_owned());
    }
    None
}
