//! The in-memory store: the embedded default, needing nothing else. Sharded maps (DashMap) of small
//! mutex-guarded states; no global lock on the hot path; nothing here ever awaits.
//!
//! - [`table`]: keyed state with a live-key cap and idle eviction.
//! - [`home`]: the exact rules' direct handles on their resource-wide cells.
//! - [`pressure`]: a resource's adaptive rate and pause.
//! - [`leases`]: the lease table and its expiry index.
//! - [`idempotency`]: remembered grants by request_id.
//! - [`store`]: [`MemoryStore`] and its [`Store`](crate::engine::Store) implementation; the acquire's state
//!   steps are in [`acquire`] (the order of checks is the policy's: [`crate::engine::policy`]), ending
//!   leases in [`release`], breaker and throttle signals in [`signals`].

pub mod acquire;
pub mod home;
pub mod idempotency;
pub mod leases;
pub mod release;
pub mod signals;
pub mod store;
pub mod table;

pub use store::MemoryStore;

use std::sync::Arc;

use crate::{
    clock::Clock,
    engine::{Quota, Rules},
};

impl Quota<MemoryStore> {
    /// An engine over a fresh in-memory store, built for `rules` (a `capacity.max_leases` above what it can
    /// hold is held at [`MemoryStore::MAX_LEASES`]).
    pub fn in_memory(rules: Rules, clock: Arc<dyn Clock>) -> Self {
        let store = MemoryStore::new(&rules);
        Self::over(rules, store, clock)
    }
}

/// The hasher of every in-memory map: foldhash (randomly seeded per process, so keys chosen by clients
/// cannot be crafted to collide), several times cheaper than SipHash on these short keys.
pub type Hasher = foldhash::fast::RandomState;
