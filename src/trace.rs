//! ndjson traces of protocol steps, for TLA+ trace validation (`spec/GroupCommitTrace.tla`,
//! run by `verify/tlc`). Compiled only with the `trace` feature; without it the
//! protocol's `step!` calls expand to nothing.
//!
//! A log file is a [`header`] line, then one line per step, recorded under the
//! protocol's lock right after the step (so the lines are in the order the steps took
//! place), with the state it left behind in the spec's names:
//!
//! ```text
//! {"api":"closure","gathering":"fixed","threshold":2}
//! {"thread":3,"action":"StartFsync","lsn":7,"written":9,"durable":5,"phase":"Syncing",
//!  "target":9,"started":2,"riders":1,"next_group":0,"failed":false,"gather_until":2,
//!  "recently_active":3}
//! ```
//!
//! The actions are those of `spec/GroupCommit.tla` that run under the lock:
//! `CommitArrival`, `MarkWritten`, `RequestFlush`, `Arrive`, `Return`, `Wait`, `Requeue`,
//! `TakeLead`, `Timeout`,
//! `BecomeLeader`, `Gather`, `StartFsync`, `FinishFsync`, `FailFsync`, `PanicFsync`.
//! The steps taken without it (`FastPath`, a group told its outcome or offered the lead,
//! a member woken and returning, the flush itself) are not logged; the trace spec fills
//! them in.

use crate::config::{Config, Gathering};
use crate::protocol::Phase;
use std::sync::Mutex;

/// The protocol state an action left behind.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Snapshot {
    pub(crate) written: u64,
    pub(crate) durable: u64,
    pub(crate) phase: Phase,
    pub(crate) started: u64,
    pub(crate) riders: u64,
    pub(crate) next_group: u64,
    pub(crate) failed: bool,
    pub(crate) gather_until: u64,
    pub(crate) recently_active: u64,
}

static LINES: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Starts recording: steps taken from now on, by any manager in this process, are kept
/// until [`finish`]. Record one manager at a time, from its creation on.
pub fn start() {
    *LINES.lock().unwrap_or_else(|p| p.into_inner()) = Some(Vec::new());
}

/// Stops recording and returns the ndjson lines, in the order the steps took place.
pub fn finish() -> Vec<String> {
    LINES
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
        .unwrap_or_default()
}

/// The first line of a log: which front end the steps came through (`"closure"` for
/// `FsyncManager`, `"lsn"` for `GroupCommit`, `"flush"` for `GroupFlush`) and the gathering policy, which the trace
/// spec needs to know.
pub fn header(api: &str, config: &Config) -> String {
    let (gathering, threshold) = match config.gathering() {
        Gathering::Fixed { threshold, .. } => ("fixed", threshold),
        Gathering::Adaptive { .. } => ("adaptive", 1),
        _ => ("off", 1),
    };
    format!("{{\"api\":\"{api}\",\"gathering\":\"{gathering}\",\"threshold\":{threshold}}}")
}

pub(crate) fn record(action: &str, lsn: u64, s: &Snapshot) {
    let mut lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(lines) = lines.as_mut() else { return };
    let (phase, target) = match s.phase {
        Phase::Idle => ("Idle", 0),
        Phase::HandingOff => ("HandingOff", 0),
        Phase::Gathering => ("Gathering", 0),
        Phase::Syncing { target } => ("Syncing", target),
    };
    lines.push(format!(
        "{{\"thread\":{},\"action\":\"{action}\",\"lsn\":{lsn},\"written\":{},\"durable\":{},\
         \"phase\":\"{phase}\",\"target\":{target},\"started\":{},\"riders\":{},\
         \"next_group\":{},\"failed\":{},\"gather_until\":{},\"recently_active\":{}}}",
        crate::sync::thread_id(),
        s.written,
        s.durable,
        s.started,
        s.riders,
        s.next_group,
        s.failed,
        s.gather_until,
        s.recently_active
    ));
}
