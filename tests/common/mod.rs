//! Scaffolding for deterministic scenarios with real threads: gates that hold an fsync
//! open until the test releases it, and watchdogs that turn a hang into a failure.
#![allow(dead_code)]

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Long enough that only a hang reaches it.
pub const WATCHDOG: Duration = Duration::from_secs(30);

/// A door an fsync closure waits at until the test opens it.
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    arrived: usize,
}

impl Gate {
    pub fn new() -> Self {
        Self::default()
    }

    /// Blocks the caller until `open`.
    pub fn pass(&self) {
        let (lock, cv) = &*self.inner;
        let mut st = lock.lock().unwrap();
        st.arrived += 1;
        cv.notify_all();
        while !st.open {
            st = cv.wait(st).unwrap();
        }
    }

    pub fn open(&self) {
        let (lock, cv) = &*self.inner;
        lock.lock().unwrap().open = true;
        cv.notify_all();
    }

    /// Waits until `n` callers have reached the gate.
    pub fn wait_arrivals(&self, n: usize) {
        let (lock, cv) = &*self.inner;
        let deadline = Instant::now() + WATCHDOG;
        let mut st = lock.lock().unwrap();
        while st.arrived < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .expect("nobody reached the gate: hung");
            st = cv.wait_timeout(st, left).unwrap().0;
        }
    }
}

/// Polls `condition` until it holds; a hang fails the test.
pub fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WATCHDOG;
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_micros(200));
    }
}

/// A thread whose result the test collects with a watchdog.
pub struct Running<T> {
    result: mpsc::Receiver<thread::Result<T>>,
    handle: thread::JoinHandle<()>,
}

pub fn run<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> Running<T> {
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
        let _ = tx.send(result);
    });
    Running { result: rx, handle }
}

impl<T> Running<T> {
    /// The thread's result; panics if it has not finished within the watchdog.
    pub fn join(self) -> thread::Result<T> {
        let result = self
            .result
            .recv_timeout(WATCHDOG)
            .expect("thread did not finish: hung");
        self.handle.join().unwrap();
        result
    }

    /// The value the thread returned; fails the test if it panicked.
    pub fn value(self) -> T {
        match self.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Whether the thread has finished (without consuming it).
    pub fn finished(&self) -> bool {
        self.handle.is_finished()
    }
}
