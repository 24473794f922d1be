//! The client's one error type, with [`Error::is_retryable`].

use std::time::Duration;

use tonic::{Code, Status};

use crate::Decision;

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// quotad denied the acquire and the retry policy gave up waiting (deadline, attempts or `max_wait`).
    #[error("{resource}: {decision:?} by {denied_by}; retry after {retry_after:?}")]
    Denied {
        /// The resource.
        resource: String,
        /// Why.
        decision: Decision,
        /// Earliest time a retry could succeed.
        retry_after: Duration,
        /// Which level denied (`resource`, `tenant=acme`, `breaker`, `pause`).
        denied_by: String,
    },
    /// The request is invalid (a bad field); the message names it. Not retried.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Unknown resource or lease. Not retried.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request can never succeed as asked (e.g. permits above burst). Not retried.
    #[error("failed precondition: {0}")]
    FailedPrecondition(String),
    /// Authentication or authorisation failed. Not retried.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// quotad could not be reached or answered UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED, and the
    /// retry policy (and budget) gave up. With `Unreachable::FailClosed` this is what callers see.
    #[error("quotad unavailable: {0}")]
    Unavailable(String),
    /// The endpoint or builder settings are invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// Any other status from quotad.
    #[error("quotad error {code:?}: {message}")]
    Other {
        /// The gRPC code.
        code: Code,
        /// What quotad said (it names the field or limit at fault).
        message: String,
    },
}

impl Error {
    /// True for failures worth retrying with backoff: transport errors, UNAVAILABLE, DEADLINE_EXCEEDED,
    /// RESOURCE_EXHAUSTED, ABORTED. Bad requests are returned at once.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let message = s.message().to_owned();
        match s.code() {
            Code::InvalidArgument | Code::OutOfRange => Self::InvalidArgument(message),
            Code::NotFound => Self::NotFound(message),
            Code::FailedPrecondition => Self::FailedPrecondition(message),
            Code::PermissionDenied | Code::Unauthenticated => Self::PermissionDenied(message),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Cancelled
            | Code::Unknown => Self::Unavailable(if message.is_empty() {
                format!("{:?}", s.code())
            } else {
                message
            }),
            code => Self::Other { code, message },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_like_codes_are_retryable() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Unknown,
        ] {
            assert!(
                Error::from(Status::new(code, "x")).is_retryable(),
                "{code:?}"
            );
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::FailedPrecondition,
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::Internal,
        ] {
            assert!(
                !Error::from(Status::new(code, "x")).is_retryable(),
                "{code:?}"
            );
        }
    }
}
