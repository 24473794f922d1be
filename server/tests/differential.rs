//! The in-memory store and the Redis store (its Lua library) hold the same policy twice: seeded traces of
//! mixed operations, run on both at the same fake instants, must get identical answers. Six seeds against a
//! standalone Redis and two against a three-master Cluster, each the test's own on free loopback ports. A
//! trace covers every kind of rule (rates, concurrency, partitions, breakers, patterns, an adaptive rate,
//! settlement debt bounded by `max_debt`), callers of three identities (and anonymous ones) releasing and
//! reporting each other's leases, and a config reload halfway (limits lowered and raised, a rule added).

mod common;

use quotad_server::clock::Clock as _;
use std::time::Duration;

use common::{Harness, now, redis_server::RedisServer};
use quotad_server::engine::{
    Acquire, BreakerTarget, Decision, EngineError, LeaseId, MemoryStore, Outcome, RedisStore,
    Release, Renew, Report, Rules, ThrottleKind, Verdict,
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
overrides = [{ value = "t1", rate = { limit = 3, period = "1s", burst = 2 }, concurrency = 1 }, { value = "t3", bypass = true }]

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
settlement = false

[[resources]]
name = "adapt"
rate = { limit = 40, period = "1s", burst = 8 }
lease_ttl = "2s"
max_pause = "1s"
max_debt = 3
adaptive = { decrease_factor = 0.5, floor = 0.2, cooldown = "300ms", increase_step = 0.1, increase_interval = "200ms" }

[[resources]]
name = "fixed"
rate = { limit = 4, period = "1s", algorithm = "fixed_window" }
lease_ttl = "2s"
max_debt = 4
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s" }
concurrency = 1
shadow = true

[[resources]]
name = "prio"
rate = { limit = 5, period = "1s", burst = 5 }
concurrency = 6
lease_ttl = "2s"
priority = { classes = ["high", "mid", "low"], default = "mid", reserve = { high = 0.3, mid = 0.2 } }

[[resources]]
name = "slide"
rate = { limit = 15, period = "2s", algorithm = "sliding_window" }
lease_ttl = "3s"
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 4, period = "500ms", algorithm = "fixed_window" }
"#;

/// The rules after the reload halfway through: lowered, raised, and one more rule.
fn reloaded() -> String {
    RULES
        .replace(
            "rate = { limit = 50, period = \"1s\", burst = 20 }",
            "rate = { limit = 30, period = \"1s\", burst = 6 }",
        )
        .replace("concurrency = 5\n", "concurrency = 7\n")
        .replace("max_debt = 3", "max_debt = 1")
        .replace(
            "rate = { limit = 15, period = \"2s\", algorithm = \"sliding_window\" }",
            "rate = { limit = 9, period = \"3s\", algorithm = \"sliding_window\" }",
        )
        + "\n[[resources]]\nname = \"late\"\nrate = { limit = 5, period = \"1s\", burst = 2 }\n"
}

/// The identities callers act as (`None`: no auth).
const WHO: [Option<&str>; 4] = [None, Some("w1"), Some("w2"), Some("w3")];

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
const COVERAGE: [&str; 20] = [
    "nothing_held=true",
    "shadow=Some(\"tenant=",
    "bypassed=true",
    "(reserved for high, mid)",
    "(reserved for high)",
    "fixed RateLimited",
    "slide RateLimited",
    "decreased=true",
    "another identity",
    "late",
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

/// An error's words with lease ids masked (each store issues its own).
fn masked(e: &EngineError) -> String {
    e.to_string()
        .split(' ')
        .map(|w| {
            let id = w.len() == 16 && w.bytes().all(|b| b.is_ascii_hexdigit());
            if id { "<lease>" } else { w }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a decision says, without the lease id (each store issues its own).
fn view(d: &Result<Decision, EngineError>) -> String {
    match d {
        Ok(d) => {
            let verdict = match &d.verdict {
                Verdict::Granted(g) => format!(
                    "granted exp={} ttl={:?} replayed={} bypassed={} nothing_held={}",
                    g.expires_at, g.ttl, g.replayed, g.bypassed, g.nothing_held
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
                "{} {verdict} rem={} limit={} reset={} inf={}/{} shadow={:?}",
                d.resource.as_str(),
                d.remaining,
                d.limit,
                d.reset_after,
                d.in_flight,
                d.max_in_flight,
                d.shadow_denied_by()
            )
        }
        Err(e) => format!("error {}", masked(e)),
    }
}

fn acquire(rng: &mut Rng) -> Acquire {
    let (resource, descriptors) = match rng.below(10) {
        9 => ("prio".to_owned(), vec![]),
        7 => (
            "fixed".to_owned(),
            vec![("tenant".to_owned(), format!("t{}", rng.below(2)))],
        ),
        8 => (
            "slide".to_owned(),
            vec![("tenant".to_owned(), format!("t{}", rng.below(3)))],
        ),
        0 => ("api".to_owned(), vec![]),
        1 => ("jobs".to_owned(), vec![]),
        2 => (
            "tenants".to_owned(),
            vec![("tenant".to_owned(), format!("t{}", rng.below(4)))],
        ),
        3 => ("down".to_owned(), vec![]),
        4 => ("adapt".to_owned(), vec![]),
        5 => ("late".to_owned(), vec![]),
        _ => (format!("partner.{}", rng.below(3)), vec![]),
    };
    let owner = who(rng);
    Acquire {
        descriptors,
        permits: 1 + rng.below(2),
        lease_ttl: (rng.below(4) == 0).then(|| Duration::from_millis(500 + rng.below(3000))),
        request_id: (rng.below(6) == 0).then(|| format!("r{}", rng.below(50))),
        owner,
        // The third worker is an internal caller: its identity bypasses every limit.
        bypass: owner == Some("w3"),
        priority: [None, Some("high"), Some("mid"), Some("low")][rng.below(4) as usize]
            .map(str::to_owned)
            .filter(|_| resource == "prio"),
        resource,
        ..Default::default()
    }
}

/// A caller's identity, most often the lease's own.
fn who(rng: &mut Rng) -> Option<&'static str> {
    WHO[rng.below(WHO.len() as u64) as usize]
}

/// Time added before every step of a Cluster trace, and both stores swept. Redis expires keys on its own
/// (real) clock, with TTLs the decisions' (fake) clock computed (a level key lives a second past the moment
/// its bucket is full again): a trace whose fake clock ran slower than real time would see Redis forget state
/// the in-memory store keeps. A Cluster call takes about a millisecond here, so 20 ms of fake time a step keeps
/// the fake clock ahead; a standalone trace's own time steps are enough. Either trace adds the time a slow
/// step took beyond that.
const CLUSTER_PACE: Duration = Duration::from_millis(20);

/// Time passes for both stores, and both sweep (so no lease is expired-but-unswept at the next call): how
/// many leases each reclaimed.
fn pass_time(
    memory: &Harness<MemoryStore>,
    shared: &Harness<RedisStore>,
    by: Duration,
) -> (usize, usize) {
    memory.advance(by);
    shared.advance(by);
    let swept = |expired: Vec<_>| expired.len();
    (
        swept(now(memory.quota.sweep_some(usize::MAX)).unwrap().expired),
        swept(now(shared.quota.sweep_some(usize::MAX)).unwrap().expired),
    )
}

fn pace(memory: &Harness<MemoryStore>, shared: &Harness<RedisStore>, by: Duration) {
    let (a, b) = pass_time(memory, shared, by);
    assert_eq!(a, b, "leases expired while the clock was paced");
}

/// Runs one seeded trace of `ops` operations on the in-memory store and a Redis store on `urls`, comparing
/// every answer; returns how often each [`COVERAGE`] mark was seen.
fn trace(
    seed: u64,
    ops: usize,
    urls: &[String],
    paced: Option<Duration>,
) -> std::collections::HashMap<&'static str, usize> {
    let memory = Harness::new(RULES, &|r: &Rules| MemoryStore::new(r));
    let shared = Harness::new(RULES, &|_: &Rules| common::redis_store(urls));
    let mut rng = Rng(seed);
    // Live leases, as (memory's id, Redis's id, the identity that acquired it, whether of "down").
    let mut leases: Vec<(LeaseId, LeaseId, Option<&'static str>, bool)> = Vec::new();
    let mut seen = std::collections::HashMap::<&str, usize>::new();
    let (real, fake) = (std::time::Instant::now(), memory.clock.now());
    for step in 0..ops {
        // Never let real time run ahead of the fake clock (Redis expires keys in real time; see
        // CLUSTER_PACE): on a busy machine a step can take longer than the pace, and both stores are then
        // given the time that passed.
        // (In whole milliseconds, as every other step: the stores tell expiries apart to the microsecond.)
        let behind = real
            .elapsed()
            .saturating_sub(Duration::from_nanos(memory.clock.now() - fake));
        let behind = Duration::from_millis(u64::try_from(behind.as_millis()).unwrap_or(0));
        let by = paced.unwrap_or_default().max(behind);
        if !by.is_zero() {
            pace(&memory, &shared, by);
        }
        if step == ops / 2 {
            let rules = common::rules(&reloaded());
            memory
                .quota
                .replace_rules(rules.clone())
                .expect("reload in memory");
            shared.quota.replace_rules(rules).expect("reload on Redis");
        }
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
                leases.push((g.lease_id, h.lease_id, req.owner, req.resource == "down"));
            }
            (view(&a), view(&b))
        } else if what < 75 && !leases.is_empty() {
            let i = rng.below(leases.len() as u64) as usize;
            // Mostly its owner; now and then another identity, whose release is refused (the lease stays).
            let caller = if rng.below(8) == 0 {
                who(&mut rng)
            } else {
                leases[i].2
            };
            let (x, y, ..) = if caller == leases[i].2 {
                leases.swap_remove(i)
            } else {
                leases[i]
            };
            let outcome = [
                Outcome::Success,
                Outcome::Failure,
                Outcome::Throttled,
                Outcome::Unknown,
            ][rng.below(4) as usize];
            let used = (rng.below(4) == 0).then(|| rng.below(8));
            let rel = |id| Release {
                lease_id: id,
                outcome,
                used_permits: used,
                caller,
            };
            let a = now(memory.quota.release(&rel(x)));
            let b = now(shared.quota.release(&rel(y)));
            let show = |r: Result<quotad_server::engine::Released, EngineError>| match r {
                Ok(r) => format!(
                    "{:?} refunded={} charged={} {:?}",
                    r.result, r.refunded, r.charged, r.breaker
                ),
                Err(e) => format!("error {}", masked(&e)),
            };
            (show(a), show(b))
        } else if what < 80 && !leases.is_empty() {
            let (x, y, owner, _) = leases[rng.below(leases.len() as u64) as usize];
            let ttl = (rng.below(2) == 0).then(|| Duration::from_millis(200 + rng.below(5000)));
            let caller = if rng.below(8) == 0 {
                who(&mut rng)
            } else {
                owner
            };
            let renew = |id| Renew {
                lease_id: id,
                lease_ttl: ttl,
                caller,
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
            let resource = ["down", "api", "tenants", "adapt"][rng.below(4) as usize];
            // Now and then under a live lease of "down" (its failure then counts once). A lease of another
            // resource is refused by both stores while it lives; once it has ended the in-memory store takes
            // the report as naming none, where the Redis store refuses a lease of another shard unread.
            let lease = leases
                .iter()
                .find(|(x, .., down)| *down && rng.below(4) == 0 && x.0 % 2 == 0)
                .copied()
                .filter(|_| resource == "down");
            let (lease_a, lease_b) = (lease.map(|l| l.0), lease.map(|l| l.1));
            let caller = who(&mut rng);
            let kind = [
                ThrottleKind::Throttled,
                ThrottleKind::Error,
                ThrottleKind::Timeout,
            ][rng.below(3) as usize];
            let retry_after = (rng.below(6) == 0).then(|| Duration::from_millis(rng.below(1000)));
            let report = |lease_id| Report {
                resource: resource.to_owned(),
                descriptors: vec![("tenant".to_owned(), "t1".to_owned())],
                kind,
                retry_after,
                lease_id,
                message: None,
                client_id: None,
                caller,
            };
            let show = |r: Result<quotad_server::engine::Reported, EngineError>| match r {
                Ok(r) => format!(
                    "{:?} decreased={} paused={:?}",
                    r.breaker, r.rate_decreased, r.pressure.paused_until
                ),
                Err(e) => format!("error {}", masked(&e)),
            };
            (
                show(now(memory.quota.report(&report(lease_a)))),
                show(now(shared.quota.report(&report(lease_b)))),
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
                Err(e) => format!("error {}", masked(&e)),
            };
            (
                show(now(memory.quota.circuit(&target))),
                show(now(shared.quota.circuit(&target))),
            )
        } else {
            let (a, b) = pass_time(&memory, &shared, Duration::from_millis(1 + rng.below(400)));
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
                leases.iter().partition(|(x, ..)| live.contains(x));
            leases = kept;
            // A late release of a lease just reclaimed: both say it expired.
            let (la, lb) = ended.first().map_or_else(Default::default, |(x, y, ..)| {
                (
                    late(now(memory.quota.release(&ok(*x)))),
                    late(now(shared.quota.release(&ok(*y)))),
                )
            });
            (format!("swept {a} {la}"), format!("swept {b} {lb}"))
        };
        assert_eq!(
            a, b,
            "seed {seed:#x} step {step}: memory and Redis disagree"
        );
        for mark in COVERAGE {
            if a.contains(mark) {
                *seen.entry(mark).or_default() += 1;
            }
        }
    }
    seen
}

/// Requires every kind of answer at least `at_least` times over `traces` (so agreeing meant something).
fn covered(traces: &[std::collections::HashMap<&str, usize>], at_least: usize) {
    let mut all = std::collections::HashMap::<&str, usize>::new();
    for t in traces {
        for (mark, n) in t {
            *all.entry(mark).or_default() += n;
        }
    }
    eprintln!("{all:?}");
    for mark in COVERAGE {
        assert!(
            all.get(mark).copied().unwrap_or(0) >= at_least,
            "the traces rarely saw {mark}: {all:?}"
        );
    }
}

/// One trace at a time: each gets the machine's two cores (a trace starved of CPU stretches real time against
/// the fake clock; see [`CLUSTER_PACE`]).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn seeded_traces_get_the_same_answers_from_memory_and_redis() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let redis = RedisServer::start();
    let urls = [redis.url()];
    let seeds = [
        0x5157_4f54_4144_0013,
        0x0000_0000_0000_0001,
        0x9e37_79b9_7f4a_7c15,
        0xdead_beef_cafe_f00d,
        0x0123_4567_89ab_cdef,
        0x0bad_5eed_0000_0007,
    ];
    let traces: Vec<_> = seeds
        .iter()
        .map(|&s| trace(s, 16_000, &urls, None))
        .collect();
    covered(&traces, 10);
}

#[test]
fn seeded_traces_get_the_same_answers_from_memory_and_a_redis_cluster() {
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let cluster = common::redis_server::RedisCluster::start();
    let urls = cluster.urls();
    let traces: Vec<_> = [0x5157_4f54_4144_0013, 0x0bad_5eed_0000_0007]
        .iter()
        .map(|&s| trace(s, 5_000, &urls, Some(CLUSTER_PACE)))
        .collect();
    covered(&traces, 3);
}
