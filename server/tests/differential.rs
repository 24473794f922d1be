//! The in-memory store and the Redis store (its Lua script) hold the same policy twice: a seeded trace of
//! 100,000 mixed operations, run on both at the same fake instants, must get identical answers. Redis is the
//! test's own, on a free loopback port.

mod common;

use std::time::Duration;

use common::{Harness, now, redis_server::RedisServer};
use quotad_server::engine::{
    Acquire, BreakerTarget, Decision, EngineError, LeaseId, MemoryStore, Outcome, Release, Renew,
    Report, Rules, ThrottleKind, Verdict,
};

const RULES: &str = r#"
[[resources]]
name = "api"
rate = { limit = 50, period = "1s", burst = 20 }

[[resources]]
name = "jobs"
concurrency = 5
lease_ttl = "2s"
max_lease_ttl = "10s"

[[resources]]
name = "tenants"
rate = { limit = 100, period = "1s", burst = 30 }
concurrency = 8
lease_ttl = "3s"
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 4 }
concurrency = 3

[[resources]]
name = "down"
concurrency = 10
lease_ttl = "1s"
max_pause = "2s"
breaker = { failure_rate = 0.5, min_calls = 4, window = "10s", open_duration = "2s", half_open_probes = 2, half_open_successes = 2, consecutive_failures = 3 }

[[resources]]
name = "partner.*"
rate = { limit = 20, period = "1s", burst = 5 }
lease_ttl = "1s"
"#;

/// A successful release of `id`.
fn ok(id: LeaseId) -> Release {
    Release {
        lease_id: id,
        outcome: Outcome::Success,
        used_permits: None,
        caller: None,
    }
}

fn late(r: Result<quotad_server::engine::Released, EngineError>) -> String {
    format!("{:?}", r.map(|r| r.result))
}

/// Answers the trace must reach.
const COVERAGE: [&str; 10] = [
    "granted",
    "replayed=true",
    "RateLimited",
    "ConcurrencyLimited",
    "CircuitOpen",
    "Paused",
    "HalfOpen",
    "Err(Expired)",
    "charged=1",
    "refunded=1",
];

/// A small deterministic generator (xorshift64*), so the trace is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What a decision says, without the lease id (each store issues its own).
fn view(d: &Result<Decision, EngineError>) -> String {
    match d {
        Ok(d) => {
            let verdict = match &d.verdict {
                Verdict::Granted(g) => format!(
                    "granted exp={} ttl={:?} replayed={}",
                    g.expires_at, g.ttl, g.replayed
                ),
                Verdict::Denied {
                    reason,
                    retry_after,
                    denied_by,
                } => {
                    format!("{reason:?} after={retry_after} by={denied_by}")
                }
            };
            format!(
                "{} {verdict} rem={} limit={} reset={} inf={}/{}",
                d.resource.as_str(),
                d.remaining,
                d.limit,
                d.reset_after,
                d.in_flight,
                d.max_in_flight
            )
        }
        Err(e) => format!("error {e}"),
    }
}

fn acquire(rng: &mut Rng) -> Acquire {
    let (resource, descriptors) = match rng.below(5) {
        0 => ("api".to_owned(), vec![]),
        1 => ("jobs".to_owned(), vec![]),
        2 => (
            "tenants".to_owned(),
            vec![("tenant".to_owned(), format!("t{}", rng.below(4)))],
        ),
        3 => ("down".to_owned(), vec![]),
        _ => (format!("partner.{}", rng.below(3)), vec![]),
    };
    Acquire {
        resource,
        descriptors,
        permits: 1 + rng.below(2),
        lease_ttl: (rng.below(4) == 0).then(|| Duration::from_millis(500 + rng.below(3000))),
        request_id: (rng.below(6) == 0).then(|| format!("r{}", rng.below(50))),
        ..Default::default()
    }
}

#[test]
fn a_seeded_trace_gets_the_same_answers_from_memory_and_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let memory = Harness::new(RULES, &|r: &Rules| MemoryStore::new(r));
    let shared = Harness::new(RULES, &|_: &Rules| {
        common::redis_store(std::slice::from_ref(&url))
    });
    let mut rng = Rng(0x5157_4f54_4144_0013);
    // Live leases, as (memory's id, Redis's id).
    let mut leases: Vec<(LeaseId, LeaseId)> = Vec::new();
    let ops = 100_000;
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    for step in 0..ops {
        let what = rng.below(100);
        let (a, b) = if what < 45 {
            let req = acquire(&mut rng);
            let (a, b) = (
                now(memory.quota.acquire(&req)),
                now(shared.quota.acquire(&req)),
            );
            if let (Ok(x), Ok(y)) = (&a, &b)
                && let (Some(g), Some(h)) = (x.grant(), y.grant())
                && !g.replayed
            {
                leases.push((g.lease_id, h.lease_id));
            }
            (view(&a), view(&b))
        } else if what < 75 && !leases.is_empty() {
            let (x, y) = leases.swap_remove(rng.below(leases.len() as u64) as usize);
            let outcome = [
                Outcome::Success,
                Outcome::Failure,
                Outcome::Throttled,
                Outcome::Unknown,
            ][rng.below(4) as usize];
            let used = (rng.below(4) == 0).then(|| rng.below(4));
            let rel = |id| Release {
                lease_id: id,
                outcome,
                used_permits: used,
                caller: None,
            };
            let a = now(memory.quota.release(&rel(x)));
            let b = now(shared.quota.release(&rel(y)));
            let show = |r: Result<quotad_server::engine::Released, EngineError>| match r {
                Ok(r) => format!(
                    "{:?} refunded={} charged={} {:?}",
                    r.result, r.refunded, r.charged, r.breaker
                ),
                Err(e) => format!("error {e}"),
            };
            (show(a), show(b))
        } else if what < 80 && !leases.is_empty() {
            let (x, y) = leases[rng.below(leases.len() as u64) as usize];
            let ttl = (rng.below(2) == 0).then(|| Duration::from_millis(200 + rng.below(5000)));
            let renew = |id| Renew {
                lease_id: id,
                lease_ttl: ttl,
                caller: None,
            };
            let show = |r: Result<quotad_server::engine::Renewed, EngineError>| match r {
                Ok(r) => format!("renewed {} {:?}", r.expires_at, r.ttl),
                Err(e) => format!("error {}", e.kind()),
            };
            (
                show(now(memory.quota.renew(&renew(x)))),
                show(now(shared.quota.renew(&renew(y)))),
            )
        } else if what < 85 {
            let report = Report {
                resource: ["down", "api", "tenants"][rng.below(3) as usize].to_owned(),
                descriptors: vec![("tenant".to_owned(), "t1".to_owned())],
                kind: [
                    ThrottleKind::Throttled,
                    ThrottleKind::Error,
                    ThrottleKind::Timeout,
                ][rng.below(3) as usize],
                retry_after: (rng.below(6) == 0).then(|| Duration::from_millis(rng.below(1000))),
                lease_id: None,
                message: None,
                client_id: None,
                caller: None,
            };
            let show = |r: Result<quotad_server::engine::Reported, EngineError>| match r {
                Ok(r) => format!(
                    "{:?} decreased={} paused={:?}",
                    r.breaker, r.rate_decreased, r.pressure.paused_until
                ),
                Err(e) => format!("error {e}"),
            };
            (
                show(now(memory.quota.report(&report))),
                show(now(shared.quota.report(&report))),
            )
        } else if what < 88 {
            let target = BreakerTarget {
                resource: "down".into(),
                descriptors: vec![],
            };
            let show = |r: Result<quotad_server::engine::CircuitView, EngineError>| match r {
                // A CLOSED breaker's `since` is when its state was created, which depends on when idle state
                // was dropped (every 5 s in memory, by TTL in Redis): compared only once it has moved.
                Ok(mut c) => {
                    if c.breaker.state == quotad_server::engine::BreakerState::Closed {
                        c.breaker.since = 0;
                    }
                    format!("{:?} paused={:?}", c.breaker, c.pressure.paused_until)
                }
                Err(e) => format!("error {e}"),
            };
            (
                show(now(memory.quota.circuit(&target))),
                show(now(shared.quota.circuit(&target))),
            )
        } else {
            // Time passes, and both sweep: no lease is expired-but-unswept when the next call comes.
            let d = Duration::from_millis(1 + rng.below(400));
            memory.advance(d);
            shared.advance(d);
            let a = now(memory.quota.sweep_some(usize::MAX))
                .unwrap()
                .expired
                .len();
            let b = now(shared.quota.sweep_some(usize::MAX))
                .unwrap()
                .expired
                .len();
            let live: std::collections::HashSet<_> =
                now(memory.quota.lease_page(&quotad_server::engine::LeaseQuery {
                    resource: None,
                    prefix: "",
                    rule: None,
                    after: None,
                    limit: usize::MAX,
                }))
                .unwrap()
                .0
                .into_iter()
                .map(|l| l.lease_id)
                .collect();
            let (kept, ended): (Vec<_>, Vec<_>) =
                leases.iter().partition(|(x, _)| live.contains(x));
            leases = kept;
            // A late release of a lease just reclaimed: both say it expired.
            let (la, lb) = ended.first().map_or_else(Default::default, |(x, y)| {
                (
                    late(now(memory.quota.release(&ok(*x)))),
                    late(now(shared.quota.release(&ok(*y)))),
                )
            });
            (format!("swept {a} {la}"), format!("swept {b} {lb}"))
        };
        assert_eq!(a, b, "step {step}: memory and Redis disagree");
        for mark in COVERAGE {
            if a.contains(mark) {
                *seen.entry(mark).or_default() += 1;
            }
        }
    }
    // The trace reached every kind of answer (so agreeing meant something).
    eprintln!("{seen:?}");
    for mark in COVERAGE {
        assert!(
            seen.get(mark).copied().unwrap_or(0) >= 10,
            "the trace rarely saw {mark}: {seen:?}"
        );
    }
}
