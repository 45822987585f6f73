//! ndjson traces of protocol steps, for TLA+ trace validation (`spec/GroupCommitTrace.tla`).
//! Compiled only with the `trace` feature; without it the protocol's `step!` calls
//! expand to nothing.
//!
//! Each line is one action with the state it left behind, in the spec's names:
//! `{"thread":3,"action":"StartFsync","lsn":7,"written":9,"durable":5,"phase":"Syncing",
//! "target":9,"started":2,"riders":1,"next_group":0,"failed":false}`.

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
}

static LINES: Mutex<Option<Vec<String>>> = Mutex::new(None);

/// Starts recording: steps taken from now on are kept until [`finish`].
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

pub(crate) fn record(action: &str, lsn: u64, s: &Snapshot) {
    let mut lines = LINES.lock().unwrap_or_else(|p| p.into_inner());
    let Some(lines) = lines.as_mut() else { return };
    let (phase, target) = match s.phase {
        Phase::Idle => ("Idle", 0),
        Phase::Gathering => ("Gathering", 0),
        Phase::Syncing { target } => ("Syncing", target),
    };
    lines.push(format!(
        "{{\"thread\":{},\"action\":\"{action}\",\"lsn\":{lsn},\"written\":{},\"durable\":{},\
         \"phase\":\"{phase}\",\"target\":{target},\"started\":{},\"riders\":{},\
         \"next_group\":{},\"failed\":{}}}",
        crate::sync::thread_id(),
        s.written,
        s.durable,
        s.started,
        s.riders,
        s.next_group,
        s.failed
    ));
}
