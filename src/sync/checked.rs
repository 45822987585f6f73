//! Checker primitives (loom, or shuttle when loom is off), with std as the fallback.
//!
//! Objects built inside a checker's execution (a `loom::model` or a shuttle test, with
//! or without [`within_model`]) use the checker's primitives, so the checker explores
//! every interleaving of the protocol's own code, an adopter's tests included. Objects
//! built anywhere else (doctests, ordinary tests in a checker build) use std, so those
//! still run.
//!
//! Neither checker ever times out a wait or wakes a thread spuriously. Both are made
//! explicit here: each wait a waiter makes is numbered in execution order, and
//! [`ModelChoices`] says which numbers see their deadline pass or a spurious wake-up
//! (loom, one mode per run) or how likely each is (shuttle, from its seeded randomness).
//! A gathering leader's wait releases the lock, yields, takes the lock back and reports
//! its deadline passed: gathering must end, and a checker has no other way to end it,
//! but other threads can still run (and join the group) while the leader gathers.

use super::{Instant, WaitKind};
use std::cell::RefCell;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::Ordering;

#[cfg(feature = "loom")]
use loom as model;
#[cfg(all(feature = "shuttle", not(feature = "loom")))]
use shuttle as model;

/// What the checker decides at a waiter's wait, where the OS and real time would.
///
/// Loom reads the masks: bit `i` of `deadline_mask` makes the `i`-th wait of the
/// execution (counting from 0, every condvar together) return with its deadline passed,
/// bit `i` of `spurious_mask` makes it return as woken without a notify. Shuttle reads
/// the probabilities and draws from its seeded, replayable randomness.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ModelChoices {
    /// Loom: which waits see their deadline pass.
    pub deadline_mask: u64,
    /// Loom: which waits wake spuriously.
    pub spurious_mask: u64,
    /// Shuttle: probability that a wait sees its deadline pass.
    pub deadline_probability: f64,
    /// Shuttle: probability that a wait wakes spuriously.
    pub spurious_probability: f64,
}

struct ModelRun {
    choices: ModelChoices,
    waits: u32,
    fired: FiredChoices,
    /// Deadlines seen to pass. Time does not go back: a wait on one of them again
    /// returns at once, as a real one would (a caller that does not renew its deadline
    /// busy-waits here too, and `FiredChoices::waits` shows it).
    passed: Vec<Instant>,
}

/// How many of the [`ModelChoices`] took effect so far in the current execution.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FiredChoices {
    /// Waits that returned with their deadline passed.
    pub deadlines: u32,
    /// Waits that returned as woken without a notify.
    pub spurious: u32,
    /// Waits a waiter started, however they ended. Each call waits once, plus once
    /// after each deadline or spurious wake-up fired: a busy wait breaks that bound.
    pub waits: u32,
}

/// The choices that took effect so far in the execution running on this thread
/// (all zero outside [`within_model`]).
pub fn fired_choices() -> FiredChoices {
    RUN.with(|run| {
        run.borrow()
            .as_ref()
            .map(|run| run.fired)
            .unwrap_or_default()
    })
}

thread_local! {
    // Loom and shuttle run every model thread on the OS thread that started the model,
    // so one thread-local serves the whole execution.
    static RUN: RefCell<Option<ModelRun>> = const { RefCell::new(None) };
}

/// Runs `body` so that the primitives it builds are the checker's, resolving waits as
/// `choices` says. Call it at the start of each execution (inside `loom::model` or the
/// closure given to shuttle), and join every thread the body spawns before it returns.
/// Without it, a manager built inside an execution still uses the checker's primitives,
/// with no deadline passing and no spurious wake-up: `within_model` is for scripting
/// those.
///
/// # Examples
///
/// ```no_run
/// # #[cfg(feature = "loom")]
/// loom::model(|| {
///     group_commit::within_model(group_commit::ModelChoices::default(), || {
///         let manager = group_commit::FsyncManager::new(0, 0);
///         manager.fsync(|| Ok(())).unwrap();
///     })
/// });
/// ```
pub fn within_model<R>(choices: ModelChoices, body: impl FnOnce() -> R) -> R {
    let previous = RUN.with(|run| {
        run.borrow_mut().replace(ModelRun {
            choices,
            waits: 0,
            fired: FiredChoices::default(),
            passed: Vec::new(),
        })
    });
    struct Restore(Option<ModelRun>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            RUN.with(|run| *run.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    body()
}

/// Whether objects built now should be the checker's: inside [`within_model`], or
/// inside any execution of the checker at all. So an adopter's own loom or shuttle
/// tests that build a manager get the checker's primitives with no change: only the
/// feature. (`within_model` remains the way to script deadlines and spurious wake-ups.)
pub(crate) fn in_model() -> bool {
    RUN.with(|run| run.borrow().is_some()) || in_checker_execution()
}

/// Shuttle says whether a task is running, without panicking.
#[cfg(not(feature = "loom"))]
fn in_checker_execution() -> bool {
    shuttle::current::try_get_current_task().is_some()
}

/// Loom has no such question: its runtime panics when asked anything outside an
/// execution. Ask it something harmless and catch the panic, silenced.
#[cfg(feature = "loom")]
fn in_checker_execution() -> bool {
    use std::cell::Cell;
    use std::sync::Once;
    std::thread_local! {
        static PROBING: Cell<bool> = const { Cell::new(false) };
    }
    static SILENCE_PROBES: Once = Once::new();
    SILENCE_PROBES.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !PROBING.with(Cell::get) {
                previous(info);
            }
        }));
    });
    PROBING.with(|probing| probing.set(true));
    let inside = std::panic::catch_unwind(|| drop(model::thread::current())).is_ok();
    PROBING.with(|probing| probing.set(false));
    inside
}

enum Choice {
    Block,
    Spurious,
    DeadlinePassed,
}

/// `deadline` is `None` for an untimed wait. Outside [`within_model`] (an adopter's
/// own checker test) no deadline passes and no wake-up is spurious.
fn choose(deadline: Option<Instant>) -> Choice {
    RUN.with(|run| {
        let mut run = run.borrow_mut();
        let Some(run) = run.as_mut() else {
            return Choice::Block;
        };
        run.fired.waits = run.fired.waits.saturating_add(1);
        if deadline.is_some_and(|d| run.passed.contains(&d)) {
            return Choice::DeadlinePassed;
        }
        let index = run.waits;
        run.waits = run.waits.saturating_add(1);
        let (spurious, passes) = draw(&run.choices, index);
        if spurious {
            run.fired.spurious += 1;
            Choice::Spurious
        } else if passes && deadline.is_some() {
            run.fired.deadlines += 1;
            run.passed.extend(deadline);
            Choice::DeadlinePassed
        } else {
            Choice::Block
        }
    })
}

#[cfg(feature = "loom")]
fn draw(choices: &ModelChoices, index: u32) -> (bool, bool) {
    let bit = |mask: u64| index < 64 && mask & (1 << index) != 0;
    (bit(choices.spurious_mask), bit(choices.deadline_mask))
}

#[cfg(not(feature = "loom"))]
fn draw(choices: &ModelChoices, _index: u32) -> (bool, bool) {
    use shuttle::rand::Rng;
    let mut rng = shuttle::rand::thread_rng();
    let spurious = choices.spurious_probability > 0.0 && rng.gen_bool(choices.spurious_probability);
    let deadline = choices.deadline_probability > 0.0 && rng.gen_bool(choices.deadline_probability);
    (spurious, deadline)
}

pub(crate) enum Mutex<T> {
    Std(std::sync::Mutex<T>),
    Model(model::sync::Mutex<T>),
}

pub(crate) enum MutexGuard<'a, T> {
    Std(std::sync::MutexGuard<'a, T>),
    Model(ModelGuard<'a, T>),
}

/// A model guard that remembers its mutex, so a gathering wait can let go of it.
pub(crate) struct ModelGuard<'a, T> {
    mutex: &'a model::sync::Mutex<T>,
    guard: model::sync::MutexGuard<'a, T>,
}

impl<'a, T> ModelGuard<'a, T> {
    fn lock(mutex: &'a model::sync::Mutex<T>) -> Self {
        let guard = mutex.lock().unwrap_or_else(|p| p.into_inner());
        ModelGuard { mutex, guard }
    }

    fn wait(self, cv: &model::sync::Condvar) -> Self {
        let guard = cv.wait(self.guard).unwrap_or_else(|p| p.into_inner());
        ModelGuard { guard, ..self }
    }

    /// Lets go of the lock, lets the others run, and takes it back.
    fn release_and_retake(self) -> Self {
        let mutex = self.mutex;
        drop(self.guard);
        model::thread::yield_now();
        ModelGuard::lock(mutex)
    }
}

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        if in_model() {
            Mutex::Model(model::sync::Mutex::new(value))
        } else {
            Mutex::Std(std::sync::Mutex::new(value))
        }
    }

    /// Whether this is the checker's mutex (not std's).
    pub(crate) fn is_model(&self) -> bool {
        matches!(self, Mutex::Model(_))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        match self {
            Mutex::Std(m) => MutexGuard::Std(m.lock().unwrap_or_else(|p| p.into_inner())),
            Mutex::Model(m) => MutexGuard::Model(ModelGuard::lock(m)),
        }
    }
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        match self {
            MutexGuard::Std(g) => g,
            MutexGuard::Model(g) => &g.guard,
        }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        match self {
            MutexGuard::Std(g) => g,
            MutexGuard::Model(g) => &mut g.guard,
        }
    }
}

pub(crate) enum Condvar {
    Std(std::sync::Condvar),
    Model(model::sync::Condvar),
}

const MIXED: &str = "a condvar and a mutex from different backends";

impl Condvar {
    pub(crate) fn new() -> Self {
        if in_model() {
            Condvar::Model(model::sync::Condvar::new())
        } else {
            Condvar::Std(std::sync::Condvar::new())
        }
    }

    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        match (self, guard) {
            (Condvar::Std(cv), MutexGuard::Std(g)) => {
                MutexGuard::Std(cv.wait(g).unwrap_or_else(|p| p.into_inner()))
            }
            (Condvar::Model(cv), MutexGuard::Model(g)) => match choose(None) {
                Choice::Spurious | Choice::DeadlinePassed => MutexGuard::Model(g),
                Choice::Block => MutexGuard::Model(g.wait(cv)),
            },
            _ => unreachable!("{MIXED}"),
        }
    }

    /// Returns the guard and whether `deadline` had passed when the wait ended.
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Instant,
        kind: WaitKind,
    ) -> (MutexGuard<'a, T>, bool) {
        match (self, guard) {
            (Condvar::Std(cv), MutexGuard::Std(g)) => {
                // As in std_backend: a passed deadline still lets go of the lock.
                let left = deadline.saturating_duration_since(Instant::now());
                let (g, result) = cv.wait_timeout(g, left).unwrap_or_else(|p| p.into_inner());
                (
                    MutexGuard::Std(g),
                    result.timed_out() || Instant::now() >= deadline,
                )
            }
            (Condvar::Model(_), MutexGuard::Model(g)) if kind == WaitKind::Gather => {
                (MutexGuard::Model(g.release_and_retake()), true)
            }
            (Condvar::Model(cv), MutexGuard::Model(g)) => match choose(Some(deadline)) {
                Choice::Spurious => (MutexGuard::Model(g), false),
                Choice::DeadlinePassed => (MutexGuard::Model(g), true),
                Choice::Block => (MutexGuard::Model(g.wait(cv)), false),
            },
            _ => unreachable!("{MIXED}"),
        }
    }

    pub(crate) fn notify_one(&self) {
        match self {
            Condvar::Std(cv) => cv.notify_one(),
            Condvar::Model(cv) => cv.notify_one(),
        }
    }

    pub(crate) fn notify_all(&self) {
        match self {
            Condvar::Std(cv) => cv.notify_all(),
            Condvar::Model(cv) => cv.notify_all(),
        }
    }
}

macro_rules! atomic {
    ($name:ident, $value:ty) => {
        pub(crate) enum $name {
            Std(std::sync::atomic::$name),
            Model(model::sync::atomic::$name),
        }

        impl $name {
            pub(crate) fn new(value: $value) -> Self {
                if in_model() {
                    $name::Model(model::sync::atomic::$name::new(value))
                } else {
                    $name::Std(std::sync::atomic::$name::new(value))
                }
            }

            pub(crate) fn load(&self, order: Ordering) -> $value {
                match self {
                    $name::Std(a) => a.load(order),
                    $name::Model(a) => a.load(order),
                }
            }

            pub(crate) fn store(&self, value: $value, order: Ordering) {
                match self {
                    $name::Std(a) => a.store(value, order),
                    $name::Model(a) => a.store(value, order),
                }
            }
        }
    };
}

atomic!(AtomicU64, u64);
atomic!(AtomicBool, bool);

impl AtomicU64 {
    pub(crate) fn fetch_add(&self, value: u64, order: Ordering) -> u64 {
        match self {
            AtomicU64::Std(a) => a.fetch_add(value, order),
            AtomicU64::Model(a) => a.fetch_add(value, order),
        }
    }
}

/// A number for the calling thread (the model's thread inside a model), for traces.
#[cfg(feature = "trace")]
pub(crate) fn thread_id() -> u64 {
    let debug = if in_model() {
        format!("{:?}", model::thread::current().id())
    } else {
        format!("{:?}", std::thread::current().id())
    };
    super::id_number(&debug)
}

model::thread_local! {
    // Model threads share one OS thread, so each needs the checker's thread-local.
    static MODEL_LEADING: super::leading::Leading = super::leading::Leading::new();
}

/// The calling thread's list of managers it leads: the model thread's inside
/// [`within_model`], the OS thread's (`std`) elsewhere.
pub(crate) fn with_leading<R>(
    std: &'static std::thread::LocalKey<super::leading::Leading>,
    f: impl FnOnce(&super::leading::Leading) -> R,
) -> R {
    if in_model() {
        MODEL_LEADING.with(f)
    } else {
        std.with(f)
    }
}
