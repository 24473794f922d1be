//! [`Permit`]: a granted lease that releases itself. Release it with an outcome (and optionally the cost
//! actually used); renew it, or let it auto-renew while held; drop it and it is released in the background
//! with outcome UNKNOWN, so an early return or a panic never leaks a slot until TTL.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use tokio::{sync::OwnedSemaphorePermit, task::JoinHandle};

use quotad_api::v1 as pb;

use crate::{Error, Outcome, client::Inner, types};

/// Where a permit came from.
#[derive(Debug)]
enum Source {
    /// A lease granted by quotad; `kept`: quotad stores it (false when the grant holds nothing to give
    /// back, so its release and renewal are skipped).
    Lease { id: String, kept: bool },
    /// Granted locally while quotad was unreachable (fail-open has no slot; local fallback holds one).
    Local { _slot: Option<OwnedSemaphorePermit> },
}

/// A granted permit. See the module docs.
#[derive(Debug)]
pub struct Permit {
    resource: String,
    source: Source,
    expires_at: Arc<Mutex<Option<SystemTime>>>,
    ttl: Option<Duration>,
    remaining: u64,
    replayed: bool,
    bypassed: bool,
    inner: Arc<Inner>,
    renewer: Option<JoinHandle<()>>,
    done: bool,
}

impl Permit {
    /// The permit a granting answer `r` hands out.
    pub(crate) fn lease(inner: Arc<Inner>, resource: &str, r: pb::AcquireResponse) -> Self {
        Self {
            resource: resource.to_owned(),
            source: Source::Lease {
                id: r.lease_id,
                kept: !r.nothing_to_release,
            },
            expires_at: Arc::new(Mutex::new(types::timestamp(r.lease_expires_at))),
            ttl: types::duration(r.lease_ttl),
            remaining: r.remaining,
            replayed: r.replayed,
            bypassed: r.bypassed,
            inner,
            renewer: None,
            done: false,
        }
    }

    pub(crate) fn local(
        inner: Arc<Inner>,
        resource: &str,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            resource: resource.to_owned(),
            source: Source::Local { _slot: slot },
            expires_at: Arc::new(Mutex::new(None)),
            ttl: None,
            remaining: 0,
            replayed: false,
            bypassed: false,
            inner,
            renewer: None,
            done: false,
        }
    }

    /// The resource.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The lease id (`None` for a permit granted locally while quotad was unreachable).
    pub fn lease_id(&self) -> Option<&str> {
        match &self.source {
            Source::Lease { id, .. } => Some(id),
            Source::Local { .. } => None,
        }
    }

    /// True when granted locally (fail-open or local fallback) rather than by quotad.
    pub fn is_local(&self) -> bool {
        matches!(self.source, Source::Local { .. })
    }

    /// When the lease expires unless renewed (server wall clock).
    pub fn expires_at(&self) -> Option<SystemTime> {
        *self
            .expires_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Tokens left at the tightest level when this was granted.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// True when quotad replayed an earlier grant for the same request_id (a retry after a lost reply).
    pub fn replayed(&self) -> bool {
        self.replayed
    }

    /// True when quotad granted it bypassing every limit (the caller's identity, or a descriptor value,
    /// is configured `bypass = true`): no tokens were taken.
    pub fn bypassed(&self) -> bool {
        self.bypassed
    }

    /// True when quotad kept no record of the grant: it holds nothing to give back (the resource is
    /// `settlement = false` with rate limits only, or quotad granted it `fail_open`). Releasing or renewing
    /// it then sends nothing.
    pub fn holds_nothing(&self) -> bool {
        matches!(self.source, Source::Lease { kept: false, .. })
    }

    fn finish(&mut self) {
        self.done = true;
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
    }

    /// Releases with an outcome.
    pub async fn release(mut self, outcome: Outcome) -> Result<(), Error> {
        self.finish();
        match &self.source {
            Source::Lease { id, kept: true } => self.inner.release(id, outcome, None).await,
            Source::Lease { .. } | Source::Local { .. } => Ok(()),
        }
    }

    /// Releases with an outcome, settling the cost to `used_permits` (reserve-then-settle): less than
    /// acquired refunds the difference, more charges the excess.
    pub async fn release_used(mut self, outcome: Outcome, used_permits: u64) -> Result<(), Error> {
        self.finish();
        match &self.source {
            Source::Lease { id, kept: true } => {
                self.inner.release(id, outcome, Some(used_permits)).await
            }
            Source::Lease { .. } | Source::Local { .. } => Ok(()),
        }
    }

    /// Extends the lease by its TTL (or `ttl`).
    pub async fn renew(&mut self, ttl: Option<Duration>) -> Result<(), Error> {
        let Source::Lease { id, kept: true } = &self.source else {
            return Ok(());
        };
        let expires = self.inner.renew(id, ttl.or(self.ttl)).await?;
        *self
            .expires_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = expires;
        Ok(())
    }

    /// Renews in the background at half the TTL while the permit is held; stops when it is released or
    /// dropped, or when a renewal is refused (the lease expired).
    pub fn auto_renew(&mut self) {
        let (Source::Lease { id, kept: true }, Some(ttl)) = (&self.source, self.ttl) else {
            return;
        };
        if self.renewer.is_some() {
            return;
        }
        let (inner, id, expires_at) = (self.inner.clone(), id.clone(), self.expires_at.clone());
        self.renewer = Some(tokio::spawn(async move {
            let every = (ttl / 2).max(Duration::from_millis(10));
            loop {
                tokio::time::sleep(every).await;
                match inner.renew(&id, Some(ttl)).await {
                    Ok(e) => *expires_at.lock().unwrap_or_else(PoisonError::into_inner) = e,
                    Err(e) if e.is_retryable() => {
                        tracing::warn!(lease_id = %id, error = %e, "auto-renew failed; will retry")
                    }
                    Err(e) => {
                        tracing::warn!(lease_id = %id, error = %e, "auto-renew stopped");
                        return;
                    }
                }
            }
        }));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.finish();
        if let Source::Lease { id, kept: true } = &self.source {
            let (inner, id) = (self.inner.clone(), id.clone());
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        if let Err(e) = inner.release(&id, Outcome::Unknown, None).await {
                            tracing::warn!(lease_id = %id, error = %e, "background release of a dropped permit failed");
                        }
                    });
                }
                Err(_) => {
                    tracing::warn!(lease_id = %id, "permit dropped outside a tokio runtime; it will expire at its TTL")
                }
            }
        }
    }
}
