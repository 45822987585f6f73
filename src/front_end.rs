//! What every front end offers beside its own calls: the same accessors, delegating to
//! the one protocol, written once.

/// Expands, inside a front end's `impl` (a type with a `protocol: Protocol` field), to
/// the accessors all front ends share.
macro_rules! shared_accessors {
    () => {
        /// A consistent snapshot of every counter.
        pub fn stats(&self) -> crate::stats::Stats {
            self.protocol.stats()
        }

        /// The fsync running right now, if any: its age and who waits on it. Answers at
        /// once, even while that fsync hangs (see [`InFlight`](crate::InFlight) for a
        /// watchdog).
        pub fn fsync_in_flight(&self) -> Option<crate::stats::InFlight> {
            self.protocol.in_flight()
        }

        /// The failure that poisoned the manager, if one has.
        pub fn failure(&self) -> Option<crate::error::Failure> {
            self.protocol.failure()
        }

        /// The settings in force.
        pub fn config(&self) -> &crate::config::Config {
            self.protocol.config()
        }

        #[doc(hidden)]
        #[cfg(any(feature = "loom", feature = "shuttle"))]
        /// Whether this manager runs on the checker's primitives: in a checker build, one
        /// built inside a loom or shuttle execution does, with or without `within_model`.
        pub fn uses_checker_primitives(&self) -> bool {
            self.protocol.uses_checker_primitives()
        }

        #[doc(hidden)]
        /// Wakes every sleeping caller without a reason, as a spurious wake-up would. For
        /// tests of the protocol; not part of the stable API.
        pub fn wake_everyone_spuriously(&self) {
            self.protocol.wake_everyone_spuriously();
        }
    };
}
