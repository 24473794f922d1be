//! The one place engine errors become gRPC statuses. Messages are safe to show clients: they name the
//! field or resource and never carry internal detail.

use tonic::{Code, Status};

use crate::engine::EngineError;

impl From<EngineError> for Status {
    fn from(e: EngineError) -> Self {
        let code = match &e {
            EngineError::InvalidArgument { .. } => Code::InvalidArgument,
            EngineError::UnknownResource(_) | EngineError::UnknownLease(_) => Code::NotFound,
            EngineError::FailedPrecondition(_) => Code::FailedPrecondition,
            EngineError::CapacityExhausted { .. } => Code::ResourceExhausted,
            EngineError::PermissionDenied(_) => Code::PermissionDenied,
            EngineError::Unavailable(_) => Code::Unavailable,
        };
        if code == Code::Unavailable || code == Code::ResourceExhausted {
            tracing::warn!(error = %e, "request failed");
        } else {
            tracing::debug!(error = %e, "request rejected");
        }
        Status::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        let s: Status = EngineError::invalid("permits", "must be at least 1").into();
        assert_eq!(
            (s.code(), s.message()),
            (Code::InvalidArgument, "permits: must be at least 1")
        );
        let s: Status = EngineError::UnknownResource("nope".into()).into();
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().contains("'nope'"));
        let s: Status = EngineError::CapacityExhausted {
            what: "leases",
            cap: 3,
            made: None,
        }
        .into();
        assert_eq!(s.code(), Code::ResourceExhausted);
    }
}
