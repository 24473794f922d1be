//! Property tests for the invariants that are the product: never admit more than burst + rate × elapsed;
//! in-flight leases never exceed the limit nor go below zero; multi-level acquire is all-or-nothing; a
//! retried request_id never charges twice; nodes granting from slices (`local_share`) stay within the bound
//! between them. All on a fake clock, against every store: the in-memory one, a
//! Redis and a three-master Redis Cluster (each the test's own on free loopback ports; fewer cases there,
//! each a round trip per call).

mod common;

use std::{collections::HashMap, time::Duration};

use common::{Harness, acq, lease, now};
use proptest::{prelude::*, test_runner::TestCaseError};
use quotad_server::engine::{
    Acquire, LeaseId, MemoryStore, NotReleased, Outcome, RedisStore, Rules, Store,
};

fn memory(rules: &Rules) -> MemoryStore {
    MemoryStore::new(rules)
}

fn redis(_: &Rules) -> RedisStore {
    static R: std::sync::OnceLock<common::redis_server::RedisServer> = std::sync::OnceLock::new();
    let r = R.get_or_init(common::redis_server::RedisServer::start);
    common::redis_store(&[r.url()])
}

fn redis_cluster(_: &Rules) -> RedisStore {
    static C: std::sync::OnceLock<common::redis_server::RedisCluster> = std::sync::OnceLock::new();
    common::redis_store(
        &C.get_or_init(common::redis_server::RedisCluster::start)
            .urls(),
    )
}

/// Each property on each store, with `cases` random cases there.
macro_rules! on_every_store {
    ($($prop:ident($($arg:ident in $strategy:expr),+ $(,)?);)+) => {
        on_every_store!(@store memory, 200, $($prop($($arg in $strategy),+);)+);
        on_every_store!(@store redis, 24, $($prop($($arg in $strategy),+);)+);
        on_every_store!(@store redis_cluster, 8, $($prop($($arg in $strategy),+);)+);
    };
    (@store $store:ident, $cases:expr, $($prop:ident($($arg:ident in $strategy:expr),+);)+) => {
        mod $store {
            use proptest::prelude::*;
            proptest! {
                #![proptest_config(ProptestConfig { cases: $cases, failure_persistence: None, ..ProptestConfig::default() })]
                $(
                    #[test]
                    fn $prop($($arg in $strategy),+) {
                        super::$prop(&super::$store, $($arg),+)?;
                    }
                )+
            }
        }
    };
}

on_every_store! {
    admitted_never_exceeds_burst_plus_rate_times_elapsed(
        limit in 1u64..1000,
        period_ms in 1u64..5000,
        burst in 1u64..100,
        schedule in prop::collection::vec((0u64..200_000_000, 1u64..100), 1..300),
    );
    in_flight_never_exceeds_the_limit_nor_goes_negative(
        max in 1u32..6,
        ops in prop::collection::vec((0u8..5, 0usize..16, 0u64..4000), 1..200),
    );
    multi_level_acquire_is_all_or_nothing(
        requests in prop::collection::vec((0usize..2, 0usize..3, 1u64..4), 1..120),
    );
    a_retried_request_id_never_charges_twice(attempts in prop::collection::vec(0usize..6, 1..100));
    priority_classes_keep_out_of_the_reserves_and_the_bound_holds(
        limits in (1u64..200, 1u32..12, 0usize..4, 0usize..4),
        ops in prop::collection::vec((0u8..4, 0u8..3, 0u64..100_000_000, 1u64..4), 1..200),
    );
}

/// With priority classes: every grant leaves each class's reserve above it (tokens and slots), and the total
/// admitted still never exceeds burst + rate × elapsed, nor in flight the limit.
fn priority_classes_keep_out_of_the_reserves_and_the_bound_holds<S: Store>(
    make: &dyn Fn(&Rules) -> S,
    (burst, max, high, mid): (u64, u32, usize, usize),
    ops: Vec<(u8, u8, u64, u64)>,
) -> Result<(), TestCaseError> {
    const FRACTIONS: [(f64, u128); 4] = [(0.0, 0), (0.1, 100_000), (0.25, 250_000), (0.3, 300_000)];
    let h = Harness::new(
        &format!(
            "[[resources]]\nname = \"p\"\nrate = {{ limit = {burst}, period = \"1s\", burst = {burst} }}\n\
             concurrency = {max}\nlease_ttl = \"60s\"\npriority = {{ classes = [\"high\", \"mid\", \"low\"], \
             reserve = {{ high = {}, mid = {} }} }}",
            FRACTIONS[high].0, FRACTIONS[mid].0
        ),
        make,
    );
    // What each class is kept out of: ceil(capacity × held back / 10^6).
    let held_back = [0, FRACTIONS[high].1, FRACTIONS[high].1 + FRACTIONS[mid].1];
    let reserve =
        |n: u64, class: usize| (u128::from(n) * held_back[class]).div_ceil(1_000_000) as u64;
    let (mut elapsed, mut admitted) = (0u128, 0u128);
    let mut live: Vec<LeaseId> = Vec::new();
    for (op, class, advance, permits) in ops {
        let class = usize::from(class);
        match op {
            0 if !live.is_empty() => {
                let id = live.remove(advance as usize % live.len());
                prop_assert!(h.release(id, Outcome::Success, None).result.is_ok());
            }
            1 => {
                h.clock.advance_nanos(advance);
                elapsed += u128::from(advance);
            }
            _ => {
                let permits = 1 + (permits - 1) % burst;
                let mut req = acq("p", &[], permits);
                req.priority = Some(["high", "mid", "low"][class].to_owned());
                let Ok(d) = now(h.quota.acquire(&req)) else {
                    // Never grantable for this class (permits above its share of the burst): refused up front.
                    prop_assert!(permits + reserve(burst, class) > burst);
                    continue;
                };
                if d.granted() {
                    admitted += u128::from(permits);
                    live.push(lease(&d));
                    prop_assert!(d.remaining >= reserve(burst, class), "{d:?}");
                    prop_assert!(
                        d.in_flight as u64 + reserve(u64::from(max), class) <= u64::from(max),
                        "{d:?}"
                    );
                }
            }
        }
        prop_assert!(
            admitted * 1_000_000_000
                <= u128::from(burst) * 1_000_000_000 + u128::from(burst) * elapsed
        );
        prop_assert!(live.len() <= max as usize);
    }
    Ok(())
}

fn admitted_never_exceeds_burst_plus_rate_times_elapsed<S: Store>(
    make: &dyn Fn(&Rules) -> S,
    limit: u64,
    period_ms: u64,
    burst: u64,
    schedule: Vec<(u64, u64)>,
) -> Result<(), TestCaseError> {
    let h = Harness::new(
        &format!(
            "[[resources]]\nname = \"r\"\nrate = {{ limit = {limit}, period = \"{period_ms}ms\", burst = {burst} }}"
        ),
        make,
    );
    let period_ns = u128::from(period_ms) * 1_000_000;
    let (mut elapsed, mut admitted) = (0u128, 0u128);
    for (advance, permits) in schedule {
        let permits = 1 + (permits - 1) % burst;
        h.clock.advance_nanos(advance);
        elapsed += u128::from(advance);
        if h.acquire("r", &[], permits).granted() {
            admitted += u128::from(permits);
        }
        // admitted ≤ burst + limit × elapsed / period, in exact integer arithmetic.
        prop_assert!(
            admitted * period_ns <= u128::from(burst) * period_ns + u128::from(limit) * elapsed,
            "admitted {admitted} after {elapsed} ns"
        );
    }
    Ok(())
}

fn in_flight_never_exceeds_the_limit_nor_goes_negative<S: Store>(
    make: &dyn Fn(&Rules) -> S,
    max: u32,
    ops: Vec<(u8, usize, u64)>,
) -> Result<(), TestCaseError> {
    let h = Harness::new(
        &format!("[[resources]]\nname = \"j\"\nconcurrency = {max}\nlease_ttl = \"2s\""),
        make,
    );
    // The model: live leases and their expiry, in ms of fake time.
    let mut live: Vec<(LeaseId, u64)> = Vec::new();
    let mut ended: Vec<LeaseId> = Vec::new();
    let mut t = 0u64;
    for (op, pick, ms) in ops {
        match op {
            0 | 1 => {
                // Expired leases are swept first: a store may reclaim them at the sweep or, as the Redis store
                // does, at the next acquire; swept, every store is in the same state.
                if live.iter().any(|(_, exp)| *exp <= t) {
                    let expired = now(h.quota.sweep()).unwrap().expired.len();
                    let before = live.len();
                    live.retain(|(_, exp)| *exp > t);
                    prop_assert_eq!(expired, before - live.len());
                }
                let d = h.acquire("j", &[], 1);
                prop_assert_eq!(
                    d.granted(),
                    live.len() < max as usize,
                    "model live {}",
                    live.len()
                );
                if d.granted() {
                    live.push((lease(&d), t + 2000));
                    prop_assert!(d.in_flight <= max);
                    prop_assert_eq!(d.in_flight as usize, live.len());
                }
            }
            2 if !live.is_empty() => {
                let (id, exp) = live.remove(pick % live.len());
                let r = h.release(id, Outcome::Success, None);
                let expected = if exp <= t {
                    Err(NotReleased::Expired)
                } else {
                    Ok(())
                };
                prop_assert_eq!(r.result, expected);
                ended.push(id);
            }
            2 if !ended.is_empty() => {
                // Releasing an ended lease frees nothing.
                let r = h.release(ended[pick % ended.len()], Outcome::Success, None);
                prop_assert!(r.result.is_err());
            }
            3 => {
                h.advance(Duration::from_millis(ms));
                t += ms;
            }
            _ => {
                let expired = now(h.quota.sweep()).unwrap().expired.len();
                let before = live.len();
                live.retain(|(_, exp)| *exp > t);
                prop_assert_eq!(expired, before - live.len());
            }
        }
        let usage = now(h.quota.usage()).unwrap();
        let in_flight = usage.resources.first().map_or(0, |r| r.in_flight);
        prop_assert_eq!(in_flight as usize, live.len());
    }
    Ok(())
}

fn multi_level_acquire_is_all_or_nothing<S: Store>(
    make: &dyn Fn(&Rules) -> S,
    requests: Vec<(usize, usize, u64)>,
) -> Result<(), TestCaseError> {
    let h = Harness::new(
        r#"
[[resources]]
name = "b"
rate = { limit = 1, period = "1h", burst = 30 }
[[resources.partitions]]
descriptor = "endpoint"
rate = { limit = 1, period = "1h", burst = 18 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1h", burst = 7 }
"#,
        make,
    );
    let endpoints = ["start", "status"];
    let tenants = ["acme", "globex", "initech"];
    let mut tokens: HashMap<String, u64> = HashMap::new();
    for (e, t, permits) in requests {
        let keys = [
            ("global".to_owned(), 30),
            (format!("e:{}", endpoints[e]), 18),
            (format!("t:{}", tenants[t]), 7),
        ];
        let fits = keys
            .iter()
            .all(|(k, burst)| *tokens.get(k).unwrap_or(burst) >= permits);
        let d = h.acquire(
            "b",
            &[("endpoint", endpoints[e]), ("tenant", tenants[t])],
            permits,
        );
        prop_assert_eq!(d.granted(), fits);
        if fits {
            for (k, burst) in keys {
                *tokens.entry(k).or_insert(burst) -= permits;
            }
        }
    }
    Ok(())
}

fn a_retried_request_id_never_charges_twice<S: Store>(
    make: &dyn Fn(&Rules) -> S,
    attempts: Vec<usize>,
) -> Result<(), TestCaseError> {
    let h = Harness::new(
        "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"1h\", burst = 10 }",
        make,
    );
    let mut granted: HashMap<usize, LeaseId> = HashMap::new();
    let mut used = 0u64;
    for id in attempts {
        let permits = 1 + id as u64 % 3;
        let req = Acquire {
            request_id: Some(format!("req-{id}")),
            ..acq("r", &[], permits)
        };
        let d = h.acquire_req(&req);
        match granted.get(&id) {
            Some(first) => {
                prop_assert!(d.granted());
                prop_assert_eq!(lease(&d), *first);
            }
            None => {
                prop_assert_eq!(d.granted(), used + permits <= 10);
                if d.granted() {
                    used += permits;
                    granted.insert(id, lease(&d));
                }
            }
        }
    }
    // Tokens charged equal the distinct granted requests' permits, whatever the retries.
    let probe = h.acquire("r", &[], 1);
    prop_assert_eq!(probe.remaining + u64::from(probe.granted()), 10 - used);
    Ok(())
}

/// One step of several nodes granting one bucket from slices.
#[derive(Debug, Clone)]
enum SliceOp {
    /// Node `0` acquires `1` permits (with a request_id when `2` is some, retried at once when `3`).
    Acquire(usize, u64, Option<u8>, bool),
    /// Every node's clock moves on (ms).
    Advance(u64),
    /// A node's sweep (gives back a slice whose time is up).
    Sweep(usize),
}

fn slice_op() -> impl Strategy<Value = SliceOp> {
    prop_oneof![
        6 => (0usize..3, 1u64..5, proptest::option::of(0u8..20), any::<bool>())
            .prop_map(|(n, p, id, retry)| SliceOp::Acquire(n, p, id, retry)),
        2 => (0u64..300).prop_map(SliceOp::Advance),
        1 => (0usize..3).prop_map(SliceOp::Sweep),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

    /// `local_share`: three nodes (stores sharing one Redis prefix, their clocks moved together) granting
    /// one bucket from slices, with request_ids retried on the same node, never admit more than
    /// burst + rate × elapsed between them, and a retry is never charged again.
    #[test]
    fn nodes_granting_from_slices_never_pass_the_bound(ops in proptest::collection::vec(slice_op(), 1..80)) {
        static R: std::sync::OnceLock<common::redis_server::RedisServer> = std::sync::OnceLock::new();
        static CASE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let url = R.get_or_init(common::redis_server::RedisServer::start).url();
        let prefix = format!(
            "slices{}:",
            CASE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        // 20/s (one permit per 50 ms), burst 30; slices of up to 15, held up to 100 ms.
        let toml = "[[resources]]\nname = \"hot\"\nrate = { limit = 20, period = \"1s\", burst = 30 }\n\
                    local_share = { max_fraction = 0.5, ttl = \"100ms\" }\n";
        let nodes: Vec<_> = (0..3)
            .map(|_| {
                Harness::new(toml, &|_: &Rules| {
                    common::redis_store_with(
                        std::slice::from_ref(&url),
                        &quotad_server::engine::RedisSettings::default(),
                        Some(&prefix),
                    )
                })
            })
            .collect();
        let (mut granted, mut elapsed_ms) = (0u64, 0u64);
        let mut remembered: HashMap<(usize, u8), (LeaseId, u64)> = HashMap::new();
        for op in &ops {
            match *op {
                SliceOp::Acquire(n, permits, id, retry) => {
                    let req = Acquire {
                        request_id: id.map(|i| format!("n{n}-{i}")),
                        ..acq("hot", &[], permits)
                    };
                    let tries = if retry { 2 } else { 1 };
                    for _ in 0..tries {
                        let d = match now(nodes[n].quota.acquire(&req)) {
                            Ok(d) => d,
                            Err(quotad_server::engine::EngineError::FailedPrecondition(_)) => {
                                // Only a request_id reused with other permits is refused.
                                let reused = id.and_then(|i| remembered.get(&(n, i)).copied());
                                prop_assert!(reused.is_some_and(|(_, p)| p != permits));
                                continue;
                            }
                            Err(e) => return Err(TestCaseError::fail(format!("acquire: {e}"))),
                        };
                        if !d.granted() {
                            continue;
                        }
                        match id.and_then(|i| remembered.get(&(n, i)).copied()) {
                            // A request_id granted before (with these permits): a replay, not a charge.
                            Some((first, p)) if p == permits => prop_assert_eq!(lease(&d), first),
                            // Reused with other permits: a conflict, never a grant.
                            Some(_) => prop_assert!(false, "a request_id reused with other permits was granted"),
                            None => {
                                granted += permits;
                                if let Some(i) = id {
                                    remembered.insert((n, i), (lease(&d), permits));
                                }
                            }
                        }
                    }
                }
                SliceOp::Advance(ms) => {
                    elapsed_ms += ms;
                    for h in &nodes {
                        h.advance(Duration::from_millis(ms));
                    }
                }
                SliceOp::Sweep(n) => {
                    now(nodes[n].quota.sweep_some(64)).expect("sweep");
                }
            }
            let bound = 30 + elapsed_ms / 50;
            prop_assert!(granted <= bound, "{} granted after {} ms: at most {}", granted, elapsed_ms, bound);
        }
    }
}
