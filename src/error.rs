//! Errors: bad configuration, and the record of the failure that poisoned a manager.

use std::fmt;
use std::io;

/// A configuration value that the builder refused.
///
/// # Examples
///
/// ```
/// use group_commit::{Config, ConfigError};
/// use std::time::Duration;
///
/// let err = Config::builder().waiter_timeout(Duration::ZERO).build().unwrap_err();
/// assert_eq!(err, ConfigError::ZeroWaiterTimeout);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The waiter timeout was zero: every wait would time out at once.
    ZeroWaiterTimeout,
    /// A group interval was set without a group threshold of at least 1.
    IntervalWithoutThreshold,
    /// A group threshold was set without a group interval above zero.
    ThresholdWithoutInterval,
    /// The group interval was not shorter than the waiter timeout, so the waiters of a
    /// gathering leader would time out while it gathers.
    IntervalNotBelowTimeout,
    /// Both a group threshold and adaptive gathering were asked for.
    TwoGatheringPolicies,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ConfigError::ZeroWaiterTimeout => "the waiter timeout must be greater than zero",
            ConfigError::IntervalWithoutThreshold => {
                "a group interval needs a group threshold of at least 1"
            }
            ConfigError::ThresholdWithoutInterval => {
                "a group threshold needs a group interval greater than zero"
            }
            ConfigError::IntervalNotBelowTimeout => {
                "the group interval must be shorter than the waiter timeout"
            }
            ConfigError::TwoGatheringPolicies => {
                "a group threshold and adaptive gathering cannot both be set"
            }
        })
    }
}

impl std::error::Error for ConfigError {}

/// The first failure of an fsync, kept so that every later caller gets the same error.
///
/// An fsync that fails may have dropped dirty pages (Linux does after EIO), so a later
/// fsync that succeeds proves nothing about earlier writes: once one fails, no call on the
/// manager returns `Ok` again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    kind: io::ErrorKind,
    raw_os_error: Option<i32>,
    message: String,
}

impl Failure {
    pub(crate) fn from_error(error: &io::Error) -> Self {
        Failure {
            kind: error.kind(),
            raw_os_error: error.raw_os_error(),
            message: error.to_string(),
        }
    }

    pub(crate) fn from_panic() -> Self {
        Failure {
            kind: io::ErrorKind::Other,
            raw_os_error: None,
            message: "an fsync closure panicked".to_owned(),
        }
    }

    /// The kind of the original error.
    pub fn kind(&self) -> io::ErrorKind {
        self.kind
    }

    /// The OS error code of the original error, if it had one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.raw_os_error
    }

    /// The original error's message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// An error for a caller that this failure leaves unserved: the same OS error code
    /// where there was one (so the same kind), otherwise the same kind and message.
    pub fn to_io_error(&self) -> io::Error {
        match self.raw_os_error {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(
                self.kind,
                format!("group commit failed earlier: {}", self.message),
            ),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "fsync failed: {}", self.message)
    }
}

/// The error inside the `WriteZero` that a leader gets when its flush made no progress
/// (it reported no more than the durable LSN, say because the log buffer has a hole
/// where a record is still being copied in). Nothing is lost or poisoned; the caller may
/// try again. A device's own `WriteZero` does not carry it.
///
/// # Examples
///
/// ```
/// use group_commit::{Config, GroupFlush, NoProgress};
/// let log = GroupFlush::new(Config::default());
/// let err = log.flush(9, |_| Ok(0)).unwrap_err();
/// assert!(err.get_ref().is_some_and(|inner| inner.is::<NoProgress>()));
/// ```
#[derive(Debug)]
pub struct NoProgress(pub(crate) String);

impl fmt::Display for NoProgress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NoProgress {}

pub(crate) fn invalid_input(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}
