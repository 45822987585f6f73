//! The file system's semantics, through a real mount: what a cut keeps and drops, and the
//! faults. Each case runs over several cut seeds; every outcome is checked against what
//! a disk may hold, and the cases that must vary (lost or kept) must show both.

use powercut::{fuse_unavailable, Mounted};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

const SEEDS: u64 = 16;

/// A store and a mountpoint in a fresh temporary directory, removed on drop.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "powercut-fs-{}-{}-{}",
            std::process::id(),
            name,
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("mnt")).unwrap();
        Scratch { dir }
    }

    fn mount(&self) -> Mounted {
        Mounted::mount(&self.dir.join("store"), &self.dir.join("mnt")).expect("mount")
    }

    fn mnt(&self) -> PathBuf {
        self.dir.join("mnt")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn skip() -> bool {
    if let Some(why) = fuse_unavailable() {
        println!("powercut: skipped, {why}");
        return true;
    }
    false
}

fn sync_dir(dir: &Path) {
    File::open(dir).unwrap().sync_all().unwrap();
}

/// Runs `setup` on a fresh mount, cuts with `seed`, remounts and returns what `inspect`
/// sees there.
fn after_cut<T>(
    name: &str,
    seed: u64,
    setup: impl FnOnce(&Path),
    inspect: impl FnOnce(&Path) -> T,
) -> T {
    let scratch = Scratch::new(name);
    let mounted = scratch.mount();
    setup(&scratch.mnt());
    let report = mounted.control().cut(seed);
    assert!(report.errors.is_empty(), "cut failed: {:?}", report.errors);
    mounted.unmount().unwrap();
    let mounted = scratch.mount();
    let seen = inspect(&scratch.mnt());
    mounted.unmount().unwrap();
    seen
}

fn durable_file(dir: &Path, name: &str, data: &[u8]) -> File {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.join(name))
        .unwrap();
    file.write_all(data).unwrap();
    file.sync_data().unwrap();
    sync_dir(dir);
    file
}

#[test]
fn synced_write_survives_every_cut() {
    if skip() {
        return;
    }
    for seed in 0..SEEDS {
        let content = after_cut(
            "synced",
            seed,
            |dir| {
                durable_file(dir, "f", b"durable bytes");
            },
            |dir| fs::read(dir.join("f")).unwrap(),
        );
        assert_eq!(content, b"durable bytes", "seed {seed}");
    }
}

#[test]
fn unsynced_writes_keep_an_in_order_prefix_torn_anywhere() {
    if skip() {
        return;
    }
    let durable = b"0123456789".to_vec();
    let appended: Vec<Vec<u8>> = (0..4u8).map(|i| vec![b'a' + i; 50]).collect();
    let all: Vec<u8> = durable
        .iter()
        .chain(appended.iter().flatten())
        .copied()
        .collect();
    let (mut some_lost, mut some_kept, mut some_torn) = (false, false, false);
    for seed in 0..SEEDS * 2 {
        let content = after_cut(
            "prefix",
            seed,
            |dir| {
                let file = durable_file(dir, "f", &durable);
                let mut at = durable.len() as u64;
                for write in &appended {
                    file.write_all_at(write, at).unwrap();
                    at += write.len() as u64;
                }
            },
            |dir| fs::read(dir.join("f")).unwrap(),
        );
        assert!(content.len() <= all.len(), "seed {seed}: grew");
        // The bytes that survived are a prefix of what was written, possibly followed by
        // zeros where the size reached the disk but the data did not.
        let kept = content.iter().zip(&all).take_while(|(a, b)| a == b).count();
        assert!(kept >= durable.len(), "seed {seed}: synced bytes lost");
        assert!(
            content[kept..].iter().all(|&b| b == 0),
            "seed {seed}: not a prefix: {content:?}"
        );
        some_lost |= kept < all.len();
        some_kept |= kept > durable.len();
        some_torn |= (kept - durable.len()) % 50 != 0;
    }
    assert!(some_lost, "no cut dropped an unsynced write");
    assert!(some_kept, "no cut kept an unsynced write");
    assert!(some_torn, "no cut tore a write");
}

#[test]
fn unsynced_create_can_be_lost_and_keeps_synced_data_when_kept() {
    if skip() {
        return;
    }
    let (mut lost, mut kept) = (0, 0);
    for seed in 0..SEEDS {
        let content = after_cut(
            "create",
            seed,
            |dir| {
                let mut file = File::create(dir.join("new")).unwrap();
                file.write_all(b"synced data").unwrap();
                // The file's data is synced, its directory entry is not.
                file.sync_all().unwrap();
            },
            |dir| fs::read(dir.join("new")).ok(),
        );
        match content {
            None => lost += 1,
            Some(data) => {
                assert_eq!(data, b"synced data", "seed {seed}");
                kept += 1;
            }
        }
    }
    assert!(lost > 0 && kept > 0, "lost {lost}, kept {kept}");
}

#[test]
fn dir_fsync_makes_create_rename_and_unlink_durable() {
    if skip() {
        return;
    }
    for seed in 0..SEEDS {
        let names = after_cut(
            "dirsync",
            seed,
            |dir| {
                durable_file(dir, "gone", b"x");
                durable_file(dir, "a", b"renamed");
                fs::create_dir(dir.join("sub")).unwrap();
                fs::rename(dir.join("a"), dir.join("b")).unwrap();
                fs::remove_file(dir.join("gone")).unwrap();
                sync_dir(dir);
            },
            |dir| {
                let mut names: Vec<String> = fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                assert_eq!(fs::read(dir.join("b")).unwrap(), b"renamed");
                names
            },
        );
        assert_eq!(names, ["b", "sub"], "seed {seed}");
    }
}

#[test]
fn unsynced_rename_and_unlink_are_lost_or_kept_whole() {
    if skip() {
        return;
    }
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..SEEDS {
        let names = after_cut(
            "rename",
            seed,
            |dir| {
                durable_file(dir, "a", b"A");
                durable_file(dir, "c", b"C");
                fs::rename(dir.join("a"), dir.join("b")).unwrap();
                fs::remove_file(dir.join("c")).unwrap();
            },
            |dir| {
                let mut names: Vec<String> = fs::read_dir(dir)
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                names.sort();
                for name in &names {
                    let want: &[u8] = if name == "c" { b"C" } else { b"A" };
                    assert_eq!(fs::read(dir.join(name)).unwrap(), want, "seed {seed}");
                }
                names
            },
        );
        assert!(
            [vec!["a", "c"], vec!["b", "c"], vec!["a"], vec!["b"]]
                .iter()
                .any(|ok| *ok == names),
            "seed {seed}: {names:?}"
        );
        outcomes.insert(names);
    }
    assert_eq!(outcomes.len(), 4, "not every outcome seen: {outcomes:?}");
}

#[test]
fn fsync_eio_drops_the_unsynced_writes() {
    if skip() {
        return;
    }
    let scratch = Scratch::new("eio");
    let mounted = scratch.mount();
    let dir = scratch.mnt();
    let file = durable_file(&dir, "f", b"durable");
    file.write_all_at(b" and lost", 7).unwrap();
    mounted.control().fail_next_fsync();
    let error = file.sync_data().expect_err("the injected fsync failure");
    assert_eq!(error.raw_os_error(), Some(libc::EIO));
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"durable");
    // Like Linux, the error is reported once; the next fsync has nothing left to write.
    file.sync_data().unwrap();
    let stats = mounted.control().stats();
    assert_eq!(stats.fsync_failures, 1);
    assert_eq!(stats.bytes_dropped_by_fsync_failures, 9);
    drop(file);
    mounted.control().cut(1);
    mounted.unmount().unwrap();
    let mounted = scratch.mount();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"durable");
    mounted.unmount().unwrap();
}

#[test]
fn enospc_fails_writes_and_changes_nothing() {
    if skip() {
        return;
    }
    let scratch = Scratch::new("enospc");
    let mounted = scratch.mount();
    let dir = scratch.mnt();
    let file = durable_file(&dir, "f", b"before");
    mounted.control().set_enospc(true);
    let error = file.write_all_at(b"more", 6).expect_err("ENOSPC");
    assert_eq!(error.raw_os_error(), Some(libc::ENOSPC));
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"before");
    mounted.control().set_enospc(false);
    file.write_all_at(b"more", 6).unwrap();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"beforemore");
    assert_eq!(mounted.control().stats().enospc, 1);
    drop(file);
    mounted.unmount().unwrap();
}

#[test]
fn the_mount_is_frozen_after_a_cut() {
    if skip() {
        return;
    }
    let scratch = Scratch::new("frozen");
    let mounted = scratch.mount();
    let dir = scratch.mnt();
    let file = durable_file(&dir, "f", b"data");
    mounted.control().cut(7);
    let write = file.write_all_at(b"late", 0).expect_err("frozen");
    assert_eq!(write.raw_os_error(), Some(libc::EIO));
    let sync = file.sync_data().expect_err("frozen");
    assert_eq!(sync.raw_os_error(), Some(libc::EIO));
    assert!(File::create(dir.join("g")).is_err());
    drop(file);
    mounted.unmount().unwrap();
    let mounted = scratch.mount();
    assert_eq!(fs::read(dir.join("f")).unwrap(), b"data");
    assert!(!dir.join("g").exists());
    mounted.unmount().unwrap();
}

#[test]
fn truncate_is_undone_when_unsynced() {
    if skip() {
        return;
    }
    let mut sizes = std::collections::BTreeSet::new();
    for seed in 0..SEEDS {
        let content = after_cut(
            "truncate",
            seed,
            |dir| {
                let file = durable_file(dir, "f", b"0123456789");
                file.set_len(4).unwrap();
            },
            |dir| fs::read(dir.join("f")).unwrap(),
        );
        assert!(
            content == b"0123456789" || content == b"0123",
            "seed {seed}: {content:?}"
        );
        sizes.insert(content.len());
    }
    assert_eq!(
        sizes.len(),
        2,
        "the truncate was always kept or always lost"
    );
}

#[test]
fn a_cut_armed_for_the_nth_operation_happens_there() {
    if skip() {
        return;
    }
    let (mut lost, mut kept) = (false, false);
    for seed in 0..SEEDS {
        let scratch = Scratch::new("trip");
        let mounted = scratch.mount();
        let dir = scratch.mnt();
        let file = durable_file(&dir, "f", b"durable");
        // The write is operation 1; the fsync, operation 2, meets the cut.
        mounted.control().cut_after_ops(2, seed);
        file.write_all_at(b" volatile", 7).unwrap();
        assert!(!mounted.control().tripped());
        let sync = file.sync_data().expect_err("the cut");
        assert_eq!(sync.raw_os_error(), Some(libc::EIO));
        assert!(mounted.control().tripped());
        assert!(file.write_all_at(b"late", 0).is_err());
        drop(file);
        let report = mounted.control().cut(u64::MAX);
        assert_eq!(
            report.files, 1,
            "seed {seed}: the cut saw the unsynced write"
        );
        mounted.unmount().unwrap();
        let mounted = scratch.mount();
        let content = fs::read(dir.join("f")).unwrap();
        mounted.unmount().unwrap();
        let all = b"durable volatile";
        let same = content.iter().zip(all).take_while(|(a, b)| a == b).count();
        assert!(
            same >= 7 && content[same..].iter().all(|&b| b == 0),
            "seed {seed}: {content:?}"
        );
        lost |= same < all.len();
        kept |= same > 7;
    }
    assert!(lost && kept, "lost {lost}, kept {kept}");
}
