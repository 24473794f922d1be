//! The engine's one error type. A denial is not an error (see [`super::Decision`]); these are requests
//! that cannot be served at all. The gRPC layer maps each variant to one status code in one place.

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// A field is malformed. `field` is the request field's name as clients know it.
    #[error("{field}: {problem}")]
    InvalidArgument {
        /// The field, e.g. `resource` or `descriptors["tenant"]`.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// No rule matches the resource (and no default rule is configured).
    #[error("resource '{0}' is not configured on this server")]
    UnknownResource(String),
    /// A lease id that this server never issued (or forgot long ago).
    #[error("lease_id: no such lease '{0}'")]
    UnknownLease(String),
    /// The request is well-formed but can never succeed as asked.
    #[error("{0}")]
    FailedPrecondition(String),
    /// A memory cap is reached; not a quota denial.
    #[error("{what} limit reached ({cap}); retry later or raise the cap in config")]
    CapacityExhausted {
        /// Which cap: `live keys` or `leases`.
        what: &'static str,
        /// The cap as configured (`capacity.max_live_keys` or `capacity.max_leases`).
        cap: usize,
        /// A breaker transition the call made before the cap refused it (an OPEN breaker's admission
        /// turning HALF_OPEN): it happened, so the engine counts it.
        made: Option<super::Transition>,
    },
    /// The caller may not do this (another identity's lease, another tenant's descriptor).
    #[error("{0}")]
    PermissionDenied(String),
    /// The store could not be reached (a remote store; never the in-memory one).
    #[error("quota store unavailable: {0}")]
    Unavailable(String),
}

impl EngineError {
    /// The answer to an identity naming a live lease it does not own (which identity owns it is not said).
    pub fn not_owner(id: super::LeaseId) -> Self {
        Self::PermissionDenied(format!(
            "lease_id: lease {id} was acquired by another identity"
        ))
    }

    /// Shorthand for [`EngineError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::InvalidArgument {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// The transition a call made before failing, if any (see [`EngineError::CapacityExhausted`]).
    pub fn made(&self) -> Option<super::Transition> {
        match self {
            Self::CapacityExhausted { made, .. } => *made,
            _ => None,
        }
    }

    /// This error, carrying the transition the call made before it failed.
    #[must_use]
    pub fn after(mut self, transition: Option<super::Transition>) -> Self {
        if let Self::CapacityExhausted { made, .. } = &mut self {
            *made = made.or(transition);
        }
        self
    }

    /// A short, stable label for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::UnknownResource(_) => "unknown_resource",
            Self::UnknownLease(_) => "unknown_lease",
            Self::FailedPrecondition(_) => "failed_precondition",
            Self::CapacityExhausted { .. } => "capacity_exhausted",
            Self::PermissionDenied(_) => "permission_denied",
            Self::Unavailable(_) => "unavailable",
        }
    }
}
