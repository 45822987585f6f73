//! Adaptive gathering's decision whether to gather at all, from what it measures.
//!
//! Whether a leader should wait for companions depends on the regime: on a slow device
//! with few threads, waiting a few microseconds fills the fsync; with many threads on
//! few cores, the companions are slow to come back because they wait for a CPU, and
//! every microsecond the leader waits is device time lost. Neither a rule of thumb nor a
//! per-fsync verdict tells these apart reliably (a wait can grow its own group and still
//! cost throughput: the companions it gained would have ridden the next fsync). So it
//! measures throughput itself: it runs an epoch of fsyncs with gathering on and one
//! with it off, keeps the better for 30 epochs, and measures both again. A regime
//! where gathering loses costs one probe epoch in 32.

use std::time::Duration;

/// fsyncs in an epoch, at least.
const EPOCH_FSYNCS: u32 = 16;
/// An epoch lasts at least this long, so that its rate means something.
const EPOCH_TIME: Duration = Duration::from_millis(2);
/// Epochs run with the better mode before both are measured again.
const EXPLOIT_EPOCHS: u32 = 30;
/// Gathering is chosen only if it measured this much faster: it costs latency, and a
/// tie must not flip the mode on noise.
const GATHER_MARGIN: f64 = 1.05;

/// The controller's memory, kept under the protocol's lock.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Adaptive {
    /// Whether leaders of this epoch gather.
    gathering: bool,
    fsyncs: u32,
    served: u64,
    /// Callers served per second in the last epoch with gathering off and on, once
    /// measured.
    rate: [Option<f64>; 2],
    /// Epochs left before the next probe of both modes.
    exploit_left: u32,
}

impl Default for Adaptive {
    /// Measuring gathering first: the policy was asked for.
    fn default() -> Self {
        Adaptive {
            gathering: true,
            fsyncs: 0,
            served: 0,
            rate: [None, None],
            exploit_left: 0,
        }
    }
}

impl Adaptive {
    /// Whether the leader starting now may gather.
    pub(crate) fn gathering(&self) -> bool {
        self.gathering
    }

    /// Counts a finished fsync that served `served` callers. Returns whether the epoch
    /// has enough fsyncs to end, if long enough: then call [`end_epoch`](Self::end_epoch)
    /// with its length.
    pub(crate) fn count(&mut self, served: u64) -> bool {
        self.fsyncs += 1;
        self.served += served;
        self.fsyncs >= EPOCH_FSYNCS
    }

    /// Ends the epoch if it lasted `elapsed` or more than [`EPOCH_TIME`], and picks the
    /// mode of the next: a probe of each mode (gathering first), then the faster for
    /// [`EXPLOIT_EPOCHS`]. Returns whether a new epoch starts (the caller restarts its
    /// clock).
    pub(crate) fn end_epoch(&mut self, elapsed: Duration) -> bool {
        if elapsed < EPOCH_TIME {
            return false;
        }
        if self.exploit_left > 0 {
            self.exploit_left -= 1;
            if self.exploit_left == 0 {
                // Measure both again: the regime may have changed.
                self.rate = [None, None];
                self.gathering = true;
            }
        } else {
            let rate = self.served as f64 / elapsed.as_secs_f64();
            self.rate[usize::from(self.gathering)] = Some(rate);
            self.gathering = match self.rate {
                [_, None] => true,
                [None, _] => false,
                [Some(off), Some(on)] => {
                    self.exploit_left = EXPLOIT_EPOCHS;
                    on > off * GATHER_MARGIN
                }
            };
        }
        self.fsyncs = 0;
        self.served = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs one epoch of `fsyncs` fsyncs serving `per_fsync` callers each in `elapsed`,
    /// and returns the mode of the next.
    fn epoch(a: &mut Adaptive, fsyncs: u32, per_fsync: u64, elapsed: Duration) -> bool {
        for _ in 0..fsyncs {
            a.count(per_fsync);
        }
        assert!(a.end_epoch(elapsed));
        a.gathering()
    }

    const MS: Duration = Duration::from_millis(10);

    /// Gathering that serves fewer callers per second is measured once per round and
    /// otherwise left off: one epoch in 32 gathers.
    #[test]
    fn gathering_that_loses_stays_off_but_for_probes() {
        let mut a = Adaptive::default();
        assert!(a.gathering(), "starts by measuring gathering");
        let mut modes = Vec::new();
        for _ in 0..96 {
            // Off: 30 callers per fsync, 20 fsyncs per 10 ms; on: 40 per fsync, 10.
            let per_fsync = if a.gathering() { 40 } else { 30 };
            let fsyncs = if a.gathering() { 10 } else { 20 };
            modes.push(epoch(&mut a, fsyncs, per_fsync, MS));
        }
        let on = modes.iter().filter(|&&m| m).count();
        assert_eq!(on, 3, "{modes:?}");
    }

    /// Gathering that serves more callers per second (a slow device, few threads) is
    /// kept on but for probes of gathering off.
    #[test]
    fn gathering_that_wins_stays_on() {
        let mut a = Adaptive::default();
        let mut modes = Vec::new();
        for _ in 0..96 {
            let per_fsync = if a.gathering() { 4 } else { 2 };
            modes.push(epoch(&mut a, 16, per_fsync, MS));
        }
        let off = modes.iter().filter(|&&m| !m).count();
        assert_eq!(off, 3, "{modes:?}");
    }

    /// A tie (within the margin) leaves gathering off.
    #[test]
    fn a_tie_leaves_gathering_off() {
        let mut a = Adaptive::default();
        epoch(&mut a, 16, 10, MS);
        let next = epoch(&mut a, 16, 10, MS);
        assert!(!next, "gathering chosen on a tie");
    }

    /// An epoch too short to measure goes on.
    #[test]
    fn short_epochs_go_on() {
        let mut a = Adaptive::default();
        for _ in 0..EPOCH_FSYNCS {
            a.count(1);
        }
        assert!(!a.end_epoch(Duration::from_micros(100)));
        assert!(a.end_epoch(EPOCH_TIME));
    }
}
