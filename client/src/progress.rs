//! What a progress hook sees: every attempt, every delay and its reason, so a CLI can show
//! "retry 2/5 in 3.4 s (rate_limited by tenant=acme)".

use std::{fmt, sync::Arc, time::Duration};

use crate::Decision;

/// Why the client is about to wait and retry.
#[derive(Debug, Clone, PartialEq)]
pub enum RetryReason {
    /// quotad denied the acquire.
    Denied {
        /// Why.
        decision: Decision,
        /// Which level.
        denied_by: String,
    },
    /// The downstream throttled the call (the classifier said so).
    Throttled {
        /// The downstream's retry-after, if it gave one.
        retry_after: Option<Duration>,
    },
    /// quotad could not be reached.
    Unavailable {
        /// The error.
        error: String,
    },
}

/// One step of a call's life.
#[derive(Debug, Clone, PartialEq)]
pub enum ProgressEvent {
    /// A permit was granted (by quotad, or locally when it was unreachable).
    Acquired {
        /// The lease, when granted by quotad.
        lease_id: Option<String>,
    },
    /// About to wait `delay`, then retry.
    Retrying {
        /// How long.
        delay: Duration,
        /// Why.
        reason: RetryReason,
    },
    /// No more retries: the policy's attempts or deadline are used up.
    GaveUp {
        /// Why.
        reason: RetryReason,
    },
}

/// A progress report.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The resource.
    pub resource: String,
    /// This attempt (from 1).
    pub attempt: u32,
    /// The policy's maximum.
    pub max_attempts: u32,
    /// What happened.
    pub event: ProgressEvent,
}

impl fmt::Display for RetryReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Denied {
                decision,
                denied_by,
            } => write!(f, "{decision:?} by {denied_by}"),
            Self::Throttled {
                retry_after: Some(d),
            } => write!(f, "throttled, retry-after {:.1} s", d.as_secs_f64()),
            Self::Throttled { retry_after: None } => write!(f, "throttled"),
            Self::Unavailable { error } => write!(f, "quotad unavailable: {error}"),
        }
    }
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.event {
            ProgressEvent::Acquired { lease_id: Some(id) } => {
                write!(
                    f,
                    "{}: attempt {}/{} acquired lease {id}",
                    self.resource, self.attempt, self.max_attempts
                )
            }
            ProgressEvent::Acquired { lease_id: None } => {
                write!(
                    f,
                    "{}: attempt {}/{} proceeding locally",
                    self.resource, self.attempt, self.max_attempts
                )
            }
            ProgressEvent::Retrying { delay, reason } => write!(
                f,
                "{}: retry {}/{} in {:.1} s ({reason})",
                self.resource,
                self.attempt + 1,
                self.max_attempts,
                delay.as_secs_f64()
            ),
            ProgressEvent::GaveUp { reason } => {
                write!(
                    f,
                    "{}: gave up after {} attempts ({reason})",
                    self.resource, self.attempt
                )
            }
        }
    }
}

/// A progress hook.
pub type ProgressHook = Arc<dyn Fn(&Progress) + Send + Sync>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_a_cli_line() {
        let p = Progress {
            resource: "bedrock.invoke".into(),
            attempt: 1,
            max_attempts: 5,
            event: ProgressEvent::Retrying {
                delay: Duration::from_millis(3400),
                reason: RetryReason::Denied {
                    decision: Decision::RateLimited,
                    denied_by: "tenant=acme".into(),
                },
            },
        };
        assert_eq!(
            p.to_string(),
            "bedrock.invoke: retry 2/5 in 3.4 s (RateLimited by tenant=acme)"
        );
    }
}
