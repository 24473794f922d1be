//! Shared helpers for the engine's integration tests: build rules from TOML, drive a [`Quota`] on a fake
//! clock, and run store futures to completion on a per-thread runtime (a shared store's futures await).
#![allow(dead_code, missing_docs)]

use std::{future::Future, sync::Arc, time::Duration};

use quotad_server::{
    clock::FakeClock,
    config,
    engine::{
        Acquire, Decision, LeaseId, Outcome, Quota, Release, Released, Rules, Store, Verdict,
    },
};

/// Runs a store call to completion on this thread's runtime, so the same suite drives a store that
/// answers at once (the in-memory one) and one that awaits I/O (a shared store). Decisions still read the
/// fake clock: nothing here waits for time to pass.
pub fn now<F: Future>(f: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime for the store suite");
    }
    RUNTIME.with(|rt| rt.block_on(f))
}

pub fn rules(toml: &str) -> Rules {
    config::load_str(toml).expect("test config is valid").rules
}

pub struct Harness<S: Store> {
    pub quota: Quota<S>,
    pub clock: Arc<FakeClock>,
}

impl<S: Store> Harness<S> {
    pub fn new(toml: &str, make: &dyn Fn(&Rules) -> S) -> Self {
        let rules = rules(toml);
        let clock = Arc::new(FakeClock::new());
        let store = make(&rules);
        Self {
            quota: Quota::new(rules, store, clock.clone()).expect("rules held"),
            clock,
        }
    }

    pub fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    pub fn acquire_req(&self, req: &Acquire) -> Decision {
        now(self.quota.acquire(req)).expect("acquire")
    }

    pub fn acquire(&self, resource: &str, descriptors: &[(&str, &str)], permits: u64) -> Decision {
        self.acquire_req(&acq(resource, descriptors, permits))
    }

    pub fn release(&self, id: LeaseId, outcome: Outcome, used: Option<u64>) -> Released {
        now(self.quota.release(&Release {
            caller: None,
            lease_id: id,
            outcome,
            used_permits: used,
        }))
        .expect("release")
    }
}

pub fn acq(resource: &str, descriptors: &[(&str, &str)], permits: u64) -> Acquire {
    Acquire {
        resource: resource.into(),
        descriptors: descriptors
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        permits,
        ..Default::default()
    }
}

pub fn lease(d: &Decision) -> LeaseId {
    d.grant().expect("expected a grant").lease_id
}

pub fn retry_after(d: &Decision) -> u64 {
    match &d.verdict {
        Verdict::Denied { retry_after, .. } => *retry_after,
        Verdict::Granted(_) => panic!("expected a denial"),
    }
}

pub fn denied_by(d: &Decision) -> &str {
    match &d.verdict {
        Verdict::Denied { denied_by, .. } => denied_by,
        Verdict::Granted(_) => panic!("expected a denial"),
    }
}

pub mod redis_server;

use quotad_server::engine::{RedisSettings, RedisStore, TimeSource};

/// A runtime that outlives every test thread: Redis connections made on it keep their I/O driver running
/// while test threads block on their own per-thread runtimes.
pub fn background() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a background runtime")
    })
}

/// A Redis store on `urls` (one: standalone; three: a Cluster), under a prefix of its own so tests
/// sharing one Redis never see each other's keys, deciding on the caller's (fake) clock.
pub fn redis_store(urls: &[String]) -> RedisStore {
    redis_store_with(urls, &RedisSettings::default(), None)
}

/// A Redis store as [`redis_store`] makes one, with `base`'s layout, and under `prefix` when given (two
/// stores given one prefix share their state).
pub fn redis_store_with(urls: &[String], base: &RedisSettings, prefix: Option<&str>) -> RedisStore {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let settings = RedisSettings {
        url: (urls.len() == 1).then(|| urls[0].clone()),
        cluster: if urls.len() > 1 {
            urls.to_vec()
        } else {
            Vec::new()
        },
        prefix: prefix.map_or_else(|| format!("t{n}:"), str::to_owned),
        timeout: Duration::from_secs(5),
        time: TimeSource::Node,
        layout: base.layout,
        ..RedisSettings::default()
    };
    background().block_on(async {
        let store = RedisStore::connect(settings)
            .await
            .expect("connect to the test's redis");
        store.ping().await.expect("the test's redis answers");
        store
    })
}
