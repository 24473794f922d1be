//! [`Client::run`]: acquire, run the caller's closure, release with its outcome; on a throttle (as the
//! caller's classifier decides: an HTTP 429, an AWS ThrottlingException), report it to quotad with the
//! downstream's retry-after and retry with backoff. The closure's own result is returned, and the closure
//! is never run twice at the same time for one call.

use std::{future::Future, sync::Arc, time::Duration};

use crate::{
    AcquireOptions, Client, Error, Outcome, RetryPolicy, ThrottleKind,
    client::Tries,
    progress::{Progress, ProgressEvent, ProgressHook, RetryReason},
    retry::Backoff,
};

/// What the closure's result means for quotad.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// The downstream answered normally: release SUCCESS, return the result.
    Success,
    /// The downstream failed: release FAILURE, return the result (not retried).
    Failure,
    /// The downstream throttled: report it, release THROTTLED, retry after at least `retry_after`.
    Throttled {
        /// The downstream's retry-after, if it gave one.
        retry_after: Option<Duration>,
    },
}

/// What one run of the closure is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    /// From 1.
    pub number: u32,
    /// The lease it runs under (`None` when granted locally).
    pub lease_id: Option<String>,
}

/// Why [`Client::run`] returned without the closure's result.
#[derive(Debug, thiserror::Error)]
pub enum RunError<E> {
    /// The closure's own error (a failure, or the last throttle once retries ran out).
    #[error("downstream: {0}")]
    Downstream(E),
    /// quotad denied beyond the policy, or could not be reached (fail-closed), or refused the request.
    #[error(transparent)]
    Quota(Error),
}

type Classifier<T, E> = Arc<dyn Fn(&Result<T, E>) -> Classification + Send + Sync>;

/// Options for [`Client::run`].
pub struct RunOptions<T, E> {
    acquire: AcquireOptions,
    classify: Classifier<T, E>,
    progress: Option<ProgressHook>,
    policy: Option<RetryPolicy>,
}

impl<T, E> std::fmt::Debug for RunOptions<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("acquire", &self.acquire)
            .field("policy", &self.policy)
            .finish()
    }
}

impl<T, E> Default for RunOptions<T, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, E> RunOptions<T, E> {
    /// Defaults: 1 permit, `Ok` is success and `Err` is failure (nothing is a throttle until a classifier
    /// says so), the client's retry policy, no progress hook.
    pub fn new() -> Self {
        Self {
            acquire: AcquireOptions::default(),
            classify: Arc::new(|r| {
                if r.is_ok() {
                    Classification::Success
                } else {
                    Classification::Failure
                }
            }),
            progress: None,
            policy: None,
        }
    }

    /// The acquire options (permits, descriptors, TTL, max_wait).
    pub fn acquire(mut self, options: AcquireOptions) -> Self {
        self.acquire = options;
        self
    }

    /// Classifies the closure's result, e.g. an HTTP 429 with its Retry-After as a throttle.
    pub fn classify(
        mut self,
        f: impl Fn(&Result<T, E>) -> Classification + Send + Sync + 'static,
    ) -> Self {
        self.classify = Arc::new(f);
        self
    }

    /// Sees every attempt, delay and reason.
    pub fn on_progress(mut self, f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        self.progress = Some(Arc::new(f));
        self
    }

    /// Overrides the client's retry policy for this call.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = Some(policy);
        self
    }
}

impl Client {
    /// Runs `f` under a permit on `resource`; see the module docs.
    ///
    /// ```no_run
    /// # async fn demo(client: quotad_client::Client) {
    /// use std::time::Duration;
    /// use quotad_client::{Classification, RunOptions};
    /// # async fn call_bedrock() -> Result<u16, std::io::Error> { Ok(200) }
    /// let opts = RunOptions::new()
    ///     .classify(|r: &Result<u16, std::io::Error>| match r {
    ///         Ok(429) => Classification::Throttled { retry_after: Some(Duration::from_secs(2)) },
    ///         Ok(_) => Classification::Success,
    ///         Err(_) => Classification::Failure,
    ///     })
    ///     .on_progress(|p| eprintln!("{p}"));
    /// let status = client.run("bedrock.invoke", opts, |_attempt| call_bedrock()).await;
    /// # }
    /// ```
    pub async fn run<T, E, F, Fut>(
        &self,
        resource: &str,
        options: RunOptions<T, E>,
        mut f: F,
    ) -> Result<T, RunError<E>>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let policy = options
            .policy
            .clone()
            .unwrap_or_else(|| self.inner.settings.policy.clone());
        let hook = options.progress.clone();
        let mut tries = Tries::new();
        let mut backoff = Backoff::new(&policy);
        loop {
            // Each attempt is a new logical acquire (a fresh request_id unless the caller fixed one); retries
            // of that acquire inside `acquire_observed` share its id.
            let permit = self
                .acquire_observed(
                    resource,
                    &options.acquire,
                    &policy,
                    hook.as_deref(),
                    &mut tries,
                )
                .await
                .map_err(RunError::Quota)?;
            let number = tries.number;
            let attempt = Attempt {
                number,
                lease_id: permit.lease_id().map(str::to_owned),
            };
            let result = f(attempt).await;
            match (options.classify)(&result) {
                Classification::Success => {
                    release(permit, Outcome::Success).await;
                    return result.map_err(RunError::Downstream);
                }
                Classification::Failure => {
                    release(permit, Outcome::Failure).await;
                    return result.map_err(RunError::Downstream);
                }
                Classification::Throttled { retry_after } => {
                    if !permit.is_local()
                        && let Err(e) = self
                            .report_throttle_for(
                                &permit,
                                ThrottleKind::Throttled,
                                retry_after,
                                "throttled",
                            )
                            .await
                    {
                        tracing::warn!(resource, error = %e, "could not report a throttle to quotad");
                    }
                    release(permit, Outcome::Throttled).await;
                    let delay = match retry_after {
                        Some(r) => backoff.after(r),
                        None => backoff.next_delay(),
                    };
                    let in_time = policy
                        .deadline
                        .is_none_or(|d| tries.start.elapsed() + delay <= d);
                    let reason = RetryReason::Throttled { retry_after };
                    let event = |event| Progress {
                        resource: resource.to_owned(),
                        attempt: number,
                        max_attempts: policy.max_attempts,
                        event,
                    };
                    if number >= policy.max_attempts || !in_time {
                        if let Some(h) = &hook {
                            h(&event(ProgressEvent::GaveUp { reason }));
                        }
                        return result.map_err(RunError::Downstream);
                    }
                    if let Some(h) = &hook {
                        h(&event(ProgressEvent::Retrying { delay, reason }));
                    }
                    tokio::time::sleep(delay).await;
                    tries.number += 1;
                }
            }
        }
    }
}

async fn release(permit: crate::Permit, outcome: Outcome) {
    if let Err(e) = permit.release(outcome).await {
        // The lease will expire at its TTL; the caller's result matters more than this.
        tracing::warn!(error = %e, "release failed");
    }
}
