//! Validated configuration.

use crate::error::ConfigError;
use std::time::Duration;

/// How long a waiter waits before it checks on its own whether anybody is leading.
/// The same default as the reference design; correctness never depends on it.
pub const DEFAULT_WAITER_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest group interval `FsyncManager::new` applies: half the default waiter
/// timeout, so that a gathering leader's waiters never time out while it gathers.
pub const MAX_REFERENCE_INTERVAL: Duration = Duration::from_millis(250);

/// The manager's settings. Build one with [`Config::builder`]; `Config::default()` has
/// gathering off and a 500 ms waiter timeout.
///
/// # Examples
///
/// ```
/// use group_commit::Config;
/// use std::time::Duration;
///
/// let config = Config::builder()
///     .group_threshold(4)
///     .group_interval(Duration::from_micros(200))
///     .build()?;
/// assert_eq!(config.group_threshold(), 4);
/// # Ok::<(), group_commit::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    group_threshold: usize,
    group_interval: Duration,
    adaptive_max_wait: Duration,
    waiter_timeout: Duration,
}

/// How a new leader waits for companions before its fsync.
///
/// A leader never counts itself as a companion, and stops waiting as soon as it has the
/// companions it waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Gathering {
    /// The leader starts its fsync at once.
    Off,
    /// The reference design's policy: a leader that has at least one companion waits up
    /// to `interval` for `threshold` companions. A lone leader does not wait.
    Fixed {
        /// Companions to wait for.
        threshold: usize,
        /// The longest wait.
        interval: Duration,
    },
    /// Waits for as many companions as were active around the last fsync (the callers
    /// it served and those queued behind it, less the leader), for at most half the last
    /// fsync's duration and never more than `max_wait`. A leader whose last fsync served
    /// only itself does not wait, so a lone thread pays nothing.
    Adaptive {
        /// The longest wait.
        max_wait: Duration,
    },
}

impl Default for Config {
    fn default() -> Self {
        Config {
            group_threshold: 0,
            group_interval: Duration::ZERO,
            adaptive_max_wait: Duration::ZERO,
            waiter_timeout: DEFAULT_WAITER_TIMEOUT,
        }
    }
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// The settings of the reference `FsyncManager::new(threshold, interval_ms)`:
    /// gathering is on only when both are non-zero; the waiter timeout is 500 ms. Every
    /// value is accepted, as the reference did; the interval is capped at
    /// [`MAX_REFERENCE_INTERVAL`], so that no value can stall the group (or hang it, as
    /// `u64::MAX` would).
    pub(crate) fn reference(grpc_threshold: usize, grpc_interval_ms: u64) -> Self {
        let on = grpc_threshold != 0 && grpc_interval_ms != 0;
        Config {
            group_threshold: if on { grpc_threshold } else { 0 },
            group_interval: if on {
                Duration::from_millis(grpc_interval_ms).min(MAX_REFERENCE_INTERVAL)
            } else {
                Duration::ZERO
            },
            adaptive_max_wait: Duration::ZERO,
            waiter_timeout: DEFAULT_WAITER_TIMEOUT,
        }
    }

    /// The gathering policy in force.
    pub fn gathering(&self) -> Gathering {
        if self.group_threshold > 0 {
            Gathering::Fixed {
                threshold: self.group_threshold,
                interval: self.group_interval,
            }
        } else if !self.adaptive_max_wait.is_zero() {
            Gathering::Adaptive {
                max_wait: self.adaptive_max_wait,
            }
        } else {
            Gathering::Off
        }
    }

    /// How many companions (waiting callers, the leader not counted) a leader waits for
    /// before it starts an fsync; 0 when gathering is off.
    pub fn group_threshold(&self) -> usize {
        self.group_threshold
    }

    /// The longest a leader waits for companions; zero when gathering is off.
    pub fn group_interval(&self) -> Duration {
        self.group_interval
    }

    /// How long a waiter sleeps before it wakes to check, on its own, that somebody is
    /// leading. A correct hand-off never needs it; every expiry is counted in
    /// [`Stats::timeouts`](crate::Stats::timeouts).
    pub fn waiter_timeout(&self) -> Duration {
        self.waiter_timeout
    }
}

/// Builds a [`Config`], checking every value in [`build`](ConfigBuilder::build).
#[derive(Clone, Debug)]
pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// Companions a leader waits for before its fsync (0, the default, turns gathering
    /// off). Needs a [`group_interval`](Self::group_interval).
    pub fn group_threshold(mut self, companions: usize) -> Self {
        self.config.group_threshold = companions;
        self
    }

    /// The longest a leader waits for companions. Needs a
    /// [`group_threshold`](Self::group_threshold), and must be shorter than the waiter
    /// timeout.
    pub fn group_interval(mut self, interval: Duration) -> Self {
        self.config.group_interval = interval;
        self
    }

    /// Turns on [`Gathering::Adaptive`], waiting at most `max_wait` (above zero, below
    /// the waiter timeout, and not together with a group threshold).
    pub fn adaptive_gathering(mut self, max_wait: Duration) -> Self {
        self.config.adaptive_max_wait = max_wait;
        self
    }

    /// How long a waiter sleeps before checking on its own; must be above zero.
    pub fn waiter_timeout(mut self, timeout: Duration) -> Self {
        self.config.waiter_timeout = timeout;
        self
    }

    /// Checks the values and returns the configuration.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first value that is out of range.
    pub fn build(self) -> Result<Config, ConfigError> {
        let c = self.config;
        if c.waiter_timeout.is_zero() {
            return Err(ConfigError::ZeroWaiterTimeout);
        }
        match (c.group_threshold, c.group_interval.is_zero()) {
            (0, false) => return Err(ConfigError::IntervalWithoutThreshold),
            (1.., true) => return Err(ConfigError::ThresholdWithoutInterval),
            _ => {}
        }
        if c.group_threshold > 0 && c.group_interval >= c.waiter_timeout {
            return Err(ConfigError::IntervalNotBelowTimeout);
        }
        if !c.adaptive_max_wait.is_zero() {
            if c.group_threshold > 0 {
                return Err(ConfigError::TwoGatheringPolicies);
            }
            if c.adaptive_max_wait >= c.waiter_timeout {
                return Err(ConfigError::IntervalNotBelowTimeout);
            }
        }
        Ok(c)
    }
}
