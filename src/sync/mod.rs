//! The primitives the protocol is written against: a mutex, condition variables, atomics
//! and a clock.
//!
//! This is the only module that chooses a backend; the protocol imports `crate::sync::*`
//! and never sees a `cfg`. Precedence when several features are on: `loom`, then
//! `shuttle`, then `parking_lot`, then `std`, so `--all-features` builds.
//!
//! Every backend offers the same surface:
//! - `Mutex::new`, `Mutex::lock` (a poisoned std mutex is entered anyway: the protocol
//!   never panics while holding it, and a caller's panic is handled by the protocol);
//! - `Condvar::wait` and `Condvar::wait_until`, which reports whether the deadline
//!   passed; callers must re-check their condition after either returns, because a
//!   wake-up may be spurious;
//! - `AtomicU64`, `AtomicBool` with the std API.

#[cfg(any(feature = "loom", feature = "shuttle"))]
mod checked;
#[cfg(any(feature = "loom", feature = "shuttle"))]
pub use checked::{fired_choices, within_model, FiredChoices, ModelChoices};
#[cfg(any(feature = "loom", feature = "shuttle"))]
pub(crate) use checked::{AtomicBool, AtomicU64, Condvar, Mutex, MutexGuard};

#[cfg(all(
    feature = "parking_lot",
    not(any(feature = "loom", feature = "shuttle"))
))]
mod parking_lot_backend;
#[cfg(all(
    feature = "parking_lot",
    not(any(feature = "loom", feature = "shuttle"))
))]
pub(crate) use parking_lot_backend::{Condvar, Mutex, MutexGuard};

#[cfg(not(any(feature = "parking_lot", feature = "loom", feature = "shuttle")))]
mod std_backend;
#[cfg(not(any(feature = "parking_lot", feature = "loom", feature = "shuttle")))]
pub(crate) use std_backend::{Condvar, Mutex, MutexGuard};

#[cfg(not(any(feature = "loom", feature = "shuttle")))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64};

/// A number for the calling thread, for traces.
#[cfg(all(feature = "trace", not(any(feature = "loom", feature = "shuttle"))))]
pub(crate) fn thread_id() -> u64 {
    id_number(&format!("{:?}", std::thread::current().id()))
}
#[cfg(all(feature = "trace", any(feature = "loom", feature = "shuttle")))]
pub(crate) use checked::thread_id;

#[cfg(feature = "trace")]
fn id_number(debug: &str) -> u64 {
    debug
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or(0)
}

pub(crate) use std::sync::atomic::Ordering;

/// What a timed wait is for. Checker backends treat the two differently: a waiter's
/// deadline passing is a fault the protocol must survive (explored as a choice), while a
/// gathering leader's deadline always passes eventually (it is how gathering ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// A waiter's safety-net timeout.
    Waiter,
    /// A leader gathering companions before its fsync.
    Gather,
}

/// The clock. Real time on every backend: under a checker, time never decides an
/// outcome (deadlines are the checker's choices); it only feeds statistics.
pub(crate) use std::time::Instant;

/// Which managers' fsync closures run on the calling thread right now, innermost last:
/// a call on one of them from inside its own closure would wait for itself.
pub(crate) mod leading {
    use std::cell::{Cell, RefCell};

    /// One thread's record. The innermost manager is kept apart, so the common case (no
    /// nesting) is one `Cell` read to check and one write to enter or leave.
    pub(crate) struct Leading {
        innermost: Cell<usize>,
        /// The managers further out, when closures nest (A's closure calls B).
        outer: RefCell<Vec<usize>>,
    }

    impl Leading {
        pub(crate) const fn new() -> Self {
            Leading {
                innermost: Cell::new(0),
                outer: RefCell::new(Vec::new()),
            }
        }
    }

    std::thread_local! {
        static STD: Leading = const { Leading::new() };
    }

    #[cfg(any(feature = "loom", feature = "shuttle"))]
    fn with<R>(f: impl FnOnce(&Leading) -> R) -> R {
        super::checked::with_leading(&STD, f)
    }
    #[cfg(not(any(feature = "loom", feature = "shuttle")))]
    fn with<R>(f: impl FnOnce(&Leading) -> R) -> R {
        STD.with(f)
    }

    /// Marks the calling thread as running the fsync closure of manager `id` (never 0)
    /// until the guard drops (on unwind too).
    pub(crate) fn enter(id: usize) -> Guard {
        with(|leading| {
            let outer = leading.innermost.replace(id);
            if outer != 0 {
                leading.outer.borrow_mut().push(outer);
            }
        });
        Guard
    }

    /// Whether the calling thread is inside the fsync closure of manager `id`.
    pub(crate) fn contains(id: usize) -> bool {
        with(|leading| {
            leading.innermost.get() == id
                || (leading.innermost.get() != 0 && leading.outer.borrow().contains(&id))
        })
    }

    /// Leaves the innermost closure. Closures nest strictly (a guard lives on the stack
    /// of the call that ran the closure), so the innermost is the one to leave.
    pub(crate) struct Guard;

    impl Drop for Guard {
        fn drop(&mut self) {
            with(|leading| {
                let outer = leading.outer.borrow_mut().pop().unwrap_or(0);
                leading.innermost.set(outer);
            });
        }
    }
}
