//! The cost of one uncontended call around a no-op fsync, for both front ends, and of a
//! call that returns at once because its LSN is already durable.
//!
//! The primitives backend is chosen by feature, so run it once per backend:
//!
//! ```text
//! cargo bench --bench call_overhead
//! cargo bench --bench call_overhead --features parking_lot
//! ```
//!
//! Benchmark names carry the backend (`std/...`, `parking_lot/...`). `direct/no_op` calls
//! the same closure without the crate: the floor the other figures sit on.

use criterion::{criterion_group, criterion_main, Criterion};
use group_commit::{Config, FsyncManager, GroupCommit};
use std::hint::black_box;
use std::io;
use std::time::Duration;

const BACKEND: &str = if cfg!(feature = "loom") {
    "loom"
} else if cfg!(feature = "shuttle") {
    "shuttle"
} else if cfg!(feature = "parking_lot") {
    "parking_lot"
} else {
    "std"
};

fn no_op() -> io::Result<()> {
    black_box(Ok(()))
}

fn call_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group(BACKEND);

    group.bench_function("direct/no_op", |b| b.iter(|| no_op().unwrap()));

    let manager = FsyncManager::new(0, 0);
    group.bench_function("FsyncManager::fsync/no_op", |b| {
        b.iter(|| manager.fsync(no_op).unwrap())
    });

    let log = GroupCommit::new(Config::default());
    let mut lsn = 0u64;
    group.bench_function("GroupCommit::mark_written+commit/no_op", |b| {
        b.iter(|| {
            lsn += 1;
            log.mark_written(black_box(lsn)).unwrap();
            log.commit(black_box(lsn), no_op).unwrap();
        })
    });

    // Everything up to `lsn` is durable now: these calls never reach the lock.
    let durable = log.durable_lsn();
    group.bench_function("GroupCommit::commit/already_durable", |b| {
        b.iter(|| {
            log.commit(black_box(durable), || unreachable!("already durable"))
                .unwrap()
        })
    });

    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the whole file takes well under a minute per backend.
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = call_overhead
}
criterion_main!(benches);
