//! This crate's front ends beside its real peers, in one process: noxu-log 7.11.2's
//! `FsyncManager::flush_and_sync` (crates.io; the reference design's successor) and the
//! `classic` baseline (the reference design at its best), on the same devices, with the
//! runner, devices, checks and tables of `benches/throughput.rs`.
//!
//! ```text
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --quick
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --markdown peers.md
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --skeleton
//! cargo run --release --manifest-path benches/peers/Cargo.toml -- --help
//! ```
//!
//! A package of its own (its own `[workspace]`), so that the crate's `cargo test`,
//! clippy and CI never build noxu-log.

// The support modules are shared with `benches/throughput.rs`, which uses all of them;
// this program leaves a few of their items unused.
#[allow(dead_code)]
#[path = "../../support/device.rs"]
mod device;
#[allow(dead_code)]
#[path = "../../support/report.rs"]
mod report;
#[allow(dead_code)]
#[path = "../../support/run.rs"]
mod run;
#[allow(dead_code)]
#[path = "../../support/strategies.rs"]
mod strategies;

use device::Device;
use run::{Committer, Entrant};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use strategies::Kind;

/// noxu-log's `FsyncManager`, driven as noxu-log's own `LogManager` drives it from
/// `flush_sync_if_needed`.
///
/// The durable watermark is an end of log: every record below it is durable (so record
/// `seq` is durable once the watermark exceeds `seq`). A committer returns at once if
/// the watermark already covers its record; otherwise it calls `flush_and_sync` with
/// its record as the target and a reader of the watermark, which a woken waiter
/// re-checks before it leads. The leader's closure notes the end of what has been
/// written, syncs, and returns that end; every caller then raises the watermark to what
/// `flush_and_sync` returned. `LogManager`'s leader also drains its log buffer with
/// `pwrite`s first; here, as for every strategy of the benchmark, each committer wrote
/// its own record before asking for durability. The manager is built with
/// `FsyncManager::new(0, 0)`, as `LogManager` builds it by default: one leader at a
/// time, gathering off.
struct Noxu {
    manager: noxu_log::fsync_manager::FsyncManager,
    /// `LogManager::last_synced_lsn`.
    synced: AtomicU64,
}

impl Noxu {
    fn new() -> Noxu {
        Noxu {
            manager: noxu_log::fsync_manager::FsyncManager::new(0, 0),
            synced: AtomicU64::new(0),
        }
    }
}

impl Committer for Noxu {
    fn commit(&self, device: &Device) -> io::Result<u64> {
        let seq = device.append(|_| Ok(()))?;
        let synced = || self.synced.load(Ordering::Acquire);
        if synced() > seq {
            return Ok(seq);
        }
        let end = self.manager.flush_and_sync(seq, synced, || {
            let end = device.written() + 1;
            device.flush()?;
            Ok(end)
        })?;
        self.synced.fetch_max(end.as_u64(), Ordering::AcqRel);
        Ok(seq)
    }

    fn timeouts(&self) -> Option<u64> {
        Some(self.manager.fsync_timeout_count())
    }
}

fn main() {
    let mut entrants = strategies::entrants(&[
        Kind::Lsn,
        Kind::Closure,
        Kind::LsnAdaptive,
        Kind::ClosureAdaptive,
        Kind::Classic,
    ]);
    entrants.push(Entrant {
        name: "noxu-log",
        baseline: true,
        make: Box::new(|_| Box::new(Noxu::new())),
    });
    run::main(run::Program {
        command: "cargo run --release --manifest-path benches/peers/Cargo.toml --",
        default_strategies: entrants.iter().map(|e| e.name).collect(),
        entrants,
        quick_threads: "1,2,4,8,16,32,64",
        quick_rounds: 3,
    });
}
