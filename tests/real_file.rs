//! Both front ends on a real shared log file with `sync_data`.

use group_commit::{Config, FsyncManager, GroupCommit};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const THREADS: usize = 8;
const RECORDS: usize = 40;
const RECORD: usize = 128;

fn scratch_file(name: &str) -> (PathBuf, File) {
    let dir = std::env::temp_dir().join(format!("group-commit-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log");
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    (path, file)
}

fn record(thread: usize, n: usize) -> [u8; RECORD] {
    let mut bytes = [b'.'; RECORD];
    let text = format!("thread {thread} record {n}");
    bytes[..text.len()].copy_from_slice(text.as_bytes());
    bytes[RECORD - 1] = b'\n';
    bytes
}

fn check_file(path: &PathBuf) {
    let mut contents = Vec::new();
    File::open(path)
        .unwrap()
        .read_to_end(&mut contents)
        .unwrap();
    assert_eq!(contents.len(), THREADS * RECORDS * RECORD);
    for thread in 0..THREADS {
        for n in 0..RECORDS {
            let wanted = record(thread, n);
            assert!(contents.chunks(RECORD).any(|chunk| chunk == wanted));
        }
    }
}

#[test]
fn closure_front_end_on_a_shared_file() {
    let (path, file) = scratch_file("closure");
    let file = Arc::new(Mutex::new(file));
    let manager = Arc::new(FsyncManager::new(0, 0));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (file, manager) = (Arc::clone(&file), Arc::clone(&manager));
            std::thread::spawn(move || {
                for n in 0..RECORDS {
                    file.lock().unwrap().write_all(&record(t, n)).unwrap();
                    let sync = file.lock().unwrap().try_clone().unwrap();
                    manager.fsync(move || sync.sync_data()).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    check_file(&path);
    let stats = manager.stats();
    assert_eq!(stats.requests, (THREADS * RECORDS) as u64);
    assert_eq!(stats.served, stats.requests);
    assert!(stats.fsyncs <= stats.requests);
    assert_eq!(stats.timeouts, 0);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}

#[test]
fn lsn_front_end_on_a_shared_file() {
    let (path, file) = scratch_file("lsn");
    let file = Arc::new(Mutex::new(file));
    let config = Config::builder()
        .adaptive_gathering(Duration::from_micros(200))
        .build()
        .unwrap();
    let log = Arc::new(GroupCommit::new(config));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (file, log) = (Arc::clone(&file), Arc::clone(&log));
            std::thread::spawn(move || {
                for n in 0..RECORDS {
                    let (lsn, sync) = {
                        let mut file = file.lock().unwrap();
                        file.write_all(&record(t, n)).unwrap();
                        let lsn = file.metadata().unwrap().len();
                        log.mark_written(lsn).unwrap();
                        (lsn, file.try_clone().unwrap())
                    };
                    log.commit(lsn, move || sync.sync_data()).unwrap();
                    assert!(log.durable_lsn() >= lsn, "Ok before {lsn} was durable");
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    check_file(&path);
    assert_eq!(log.durable_lsn(), (THREADS * RECORDS * RECORD) as u64);
    let stats = log.stats();
    assert_eq!(stats.requests, (THREADS * RECORDS) as u64);
    assert_eq!(stats.requests, stats.served + stats.already_durable);
    assert_eq!(stats.timeouts, 0);
    std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
}
