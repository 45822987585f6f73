//! Group commit for fsync: many threads that each need their writes made durable share
//! few fsyncs, and none is told its write is durable before it is.
//!
//! **The guarantee:** a call returns `Ok` only after an fsync that started after the
//! caller's write (and covers it) has completed successfully; once an fsync fails or
//! panics, the callers it was to serve and every call after it get the original error,
//! and no fsync runs again.
//!
//! One thread leads and runs the fsync; threads that arrive meanwhile wait and are
//! served by the next one, whose leader is handed off under the lock. The protocol is
//! in one place (`protocol.rs`), written against a small set of primitives that a
//! feature swaps: `std` by default, `parking_lot`, or the model checkers `loom` and
//! `shuttle`, which then explore the interleavings of that same code. `spec/` holds its
//! TLA+ specification.
//!
//! Two front ends share the protocol:
//! - [`FsyncManager`]: a drop-in for the reference `FsyncManager` (Berkeley DB JE's
//!   `FSyncManager`, ported by noxu-log);
//! - [`GroupCommit`]: by log sequence number, for logs that know their offsets;
//! - [`GroupFlush`]: the leader writes the log buffer out, then syncs, and says how far
//!   it got (PostgreSQL's `XLogFlush`, InnoDB's log writer, noxu-log's
//!   `flush_and_sync`).
//!
//! # Examples
//!
//! ```
//! use group_commit::{Config, GroupCommit};
//! use std::io::Write;
//! use std::sync::{Arc, Mutex};
//!
//! let path = std::env::temp_dir().join(format!("gc-crate-doc-{}", std::process::id()));
//! let file = Arc::new(Mutex::new(std::fs::File::create(&path)?));
//! let log = Arc::new(GroupCommit::new(Config::default()));
//!
//! let threads: Vec<_> = (0..4)
//!     .map(|_| {
//!         let (file, log) = (Arc::clone(&file), Arc::clone(&log));
//!         std::thread::spawn(move || -> std::io::Result<u64> {
//!             let lsn = {
//!                 let mut file = file.lock().unwrap();
//!                 file.write_all(&[b'x'; 128])?;
//!                 let lsn = file.metadata()?.len();
//!                 log.mark_written(lsn)?; // in order: under the append lock
//!                 lsn
//!             };
//!             log.commit(lsn, || file.lock().unwrap().sync_data())?;
//!             Ok(lsn)
//!         })
//!     })
//!     .collect();
//! for thread in threads {
//!     let lsn = thread.join().unwrap()?;
//!     assert!(log.durable_lsn() >= lsn);
//! }
//! # std::fs::remove_file(&path)?;
//! # Ok::<(), std::io::Error>(())
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod adaptive;
#[macro_use]
mod front_end;
mod config;
mod error;
mod flush;
mod group;
mod lsn;
mod manager;
mod protocol;
mod stats;
mod sync;
#[cfg(feature = "trace")]
pub mod trace;

pub use config::{
    Config, ConfigBuilder, Gathering, DEFAULT_WAITER_TIMEOUT, MAX_REFERENCE_INTERVAL,
};
pub use error::{ConfigError, Failure, NoProgress};
pub use flush::GroupFlush;
pub use lsn::GroupCommit;
pub use manager::FsyncManager;
pub use stats::{InFlight, Stats};
#[cfg(any(feature = "loom", feature = "shuttle"))]
pub use sync::{fired_choices, within_model, FiredChoices, ModelChoices};

/// The README's examples, compiled as doc tests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

/// The migration guide's adapter, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../docs/migration.md")]
struct MigrationExamples;
