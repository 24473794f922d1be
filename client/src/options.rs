//! Per-call options.

use std::time::Duration;

/// Options for one acquire.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AcquireOptions {
    /// Rate tokens to take (default 1).
    pub permits: u64,
    /// Request descriptors, e.g. `("tenant", "acme")`.
    pub descriptors: Vec<(String, String)>,
    /// Lease TTL (default: the client's default, else the server's).
    pub lease_ttl: Option<Duration>,
    /// Let the server hold the call up to this long for capacity; the client also stops retrying denials
    /// once this much time has passed.
    pub max_wait: Option<Duration>,
    /// Idempotency key for this logical acquire (default: a fresh random id, reused on every retry).
    pub request_id: Option<String>,
    /// The priority class, one of the resource's `priority.classes` (default: the resource's default class).
    pub priority: Option<String>,
}

impl AcquireOptions {
    /// Default options.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the permits.
    pub fn permits(mut self, permits: u64) -> Self {
        self.permits = permits;
        self
    }

    /// Adds a descriptor.
    pub fn descriptor(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.descriptors.push((key.into(), value.into()));
        self
    }

    /// Sets the lease TTL.
    pub fn lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = Some(ttl);
        self
    }

    /// Sets `max_wait`.
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.max_wait = Some(wait);
        self
    }

    /// Sets the priority class (e.g. `"critical"`): a class may use a level's capacity only down to what is
    /// reserved for the classes above it, and waits behind no lower class.
    pub fn priority(mut self, class: impl Into<String>) -> Self {
        self.priority = Some(class.into());
        self
    }

    /// Sets the idempotency key.
    pub fn request_id(mut self, id: impl Into<String>) -> Self {
        self.request_id = Some(id.into());
        self
    }
}
