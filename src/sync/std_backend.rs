//! `std::sync` primitives.

use super::{Instant, WaitKind};

pub(crate) type MutexGuard<'a, T> = std::sync::MutexGuard<'a, T>;

#[derive(Debug, Default)]
pub(crate) struct Mutex<T>(std::sync::Mutex<T>);

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(std::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[derive(Debug, Default)]
pub(crate) struct Condvar(std::sync::Condvar);

impl Condvar {
    pub(crate) fn new() -> Self {
        Condvar(std::sync::Condvar::new())
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        self.0
            .wait(guard)
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Returns the guard and whether `deadline` had passed when the wait ended.
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
        _kind: WaitKind,
    ) -> (MutexGuard<'a, T>, bool) {
        // Even a deadline already passed waits (for zero time): the lock must be let go,
        // or a waiter with a tiny timeout would loop inside the critical section.
        let left = deadline.saturating_duration_since(Instant::now());
        let (guard, result) = self
            .0
            .wait_timeout(guard, left)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (guard, result.timed_out() || Instant::now() >= deadline)
    }

    pub(crate) fn notify_one(&self) {
        self.0.notify_one();
    }

    pub(crate) fn notify_all(&self) {
        self.0.notify_all();
    }
}
