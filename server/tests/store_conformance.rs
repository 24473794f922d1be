//! The engine's behaviour, written once and run against every store (`for_each_store!` below): a shared
//! store must give the same answers as the in-memory one. All on a fake clock; nothing sleeps.

mod common;

use std::{sync::Arc, thread, time::Duration};

use common::{Harness, acq, denied_by, lease, now, retry_after};
use quotad_server::clock::FakeClock;
use quotad_server::engine::{
    Acquire, BreakerState, BreakerTarget, Decision, Denial, EngineError, LeaseId, MemoryStore,
    NotReleased, Outcome, RedisLayout, RedisSettings, RedisStore, Release, Renew, Report, Rules,
    Store, ThrottleKind, UsageQuery, Verdict,
};

const SEC: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;

type Make<S> = dyn Fn(&Rules) -> S;

const RATE: &str = r#"
[[resources]]
name = "api"
rate = { limit = 10, period = "1s", burst = 5 }
"#;

fn rate_limit_denies_with_exact_retry_after<S: Store>(make: &Make<S>) {
    let h = Harness::new(RATE, make);
    for i in 0..5 {
        let d = h.acquire("api", &[], 1);
        assert!(d.granted(), "grant {i}");
        assert_eq!(d.remaining, 4 - i);
        assert_eq!(d.limit, 5);
    }
    let d = h.acquire("api", &[], 1);
    assert_eq!(d.denial(), Some(Denial::RateLimited));
    assert_eq!(retry_after(&d), 100 * MS);
    assert_eq!(denied_by(&d), "resource");
    assert_eq!(d.reset_after, 500 * MS);
    h.clock.advance_nanos(100 * MS - 1);
    assert!(!h.acquire("api", &[], 1).granted());
    h.clock.advance_nanos(1);
    assert!(h.acquire("api", &[], 1).granted());
}

const WINDOWS: &str = r#"
[[resources]]
name = "fixed"
rate = { limit = 3, period = "1m", algorithm = "fixed_window" }
lease_ttl = "5m"
max_lease_ttl = "5m"
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 2, period = "10s", algorithm = "fixed_window" }

[[resources]]
name = "sliding"
rate = { limit = 10, period = "10s", algorithm = "sliding_window" }
"#;

/// A fixed window counts per window aligned to the epoch (the harness clock starts on a minute): its
/// limit, then a denial until the window's end, exact; a partition's window is its own.
fn a_fixed_window_admits_its_limit_per_aligned_window<S: Store>(make: &Make<S>) {
    let h = Harness::new(WINDOWS, make);
    h.advance(Duration::from_secs(20));
    for (i, tenant) in ["a", "a", "b"].into_iter().enumerate() {
        let d = h.acquire("fixed", &[("tenant", tenant)], 1);
        assert!(d.granted(), "grant {i}");
    }
    let d = h.acquire("fixed", &[("tenant", "b")], 1);
    assert_eq!(d.denial(), Some(Denial::RateLimited));
    assert_eq!(
        (denied_by(&d), retry_after(&d)),
        ("resource", 40 * SEC),
        "to the minute's end"
    );
    assert_eq!((d.remaining, d.limit, d.reset_after), (0, 3, 40 * SEC));
    let e = now(h.quota.explain(&acq("fixed", &[("tenant", "a")], 1))).expect("explain");
    assert_eq!(
        e.levels[0].algorithm,
        Some(quotad_server::engine::Algorithm::FixedWindow)
    );
    assert_eq!((e.levels[0].state.tokens, e.levels[0].burst), (Some(0), 3));
    assert_eq!(
        e.levels[1].state.tokens,
        Some(0),
        "tenant a's window is used up"
    );
    h.clock.advance_nanos(40 * SEC - 1);
    assert!(!h.acquire("fixed", &[("tenant", "c")], 1).granted());
    h.clock.advance_nanos(1);
    let d = h.acquire("fixed", &[("tenant", "a")], 2);
    assert!(
        d.granted(),
        "a new minute, and tenant a's 10 s window too: {d:?}"
    );
    assert_eq!(d.remaining, 0, "tenant a's window holds 2");
}

/// A sliding window weighs the previous window by the part of it still inside the period, and a denial
/// says exactly when the weight has fallen enough.
fn a_sliding_window_weighs_the_previous_window<S: Store>(make: &Make<S>) {
    let h = Harness::new(WINDOWS, make);
    h.advance(Duration::from_secs(5));
    assert!(h.acquire("sliding", &[], 10).granted());
    assert_eq!(
        retry_after(&h.acquire("sliding", &[], 1)),
        5 * SEC + 10 * SEC / 10,
        "into the next window"
    );
    // 2.5 s into the next window, 10 × 7.5 / 10 = 7.5 of the previous window still counts (8, rounded up).
    h.clock.advance_nanos(7_500 * MS);
    let d = h.acquire("sliding", &[], 3);
    assert_eq!(
        (d.denial(), retry_after(&d)),
        (Some(Denial::RateLimited), 500 * MS)
    );
    assert_eq!(d.remaining, 2);
    assert!(h.acquire("sliding", &[], 2).granted());
    h.clock.advance_nanos(500 * MS);
    let d = h.acquire("sliding", &[], 1);
    assert!(d.granted(), "the previous window weighs 7 now: {d:?}");
    assert_eq!(d.remaining, 0);
}

/// A window's refund goes back to the window it was taken from, never to a later one: a lease released
/// after its window ended gives nothing to the next.
fn a_window_refunds_only_its_own_window<S: Store>(make: &Make<S>) {
    let h = Harness::new(WINDOWS, make);
    let first = lease(&h.acquire("fixed", &[("tenant", "x")], 2));
    let r = h.release(first, Outcome::Success, Some(0));
    assert_eq!(r.refunded, 2);
    assert!(
        h.acquire("fixed", &[("tenant", "y")], 2).granted(),
        "the refund went back"
    );
    let e = now(h.quota.explain(&acq("fixed", &[("tenant", "w")], 1))).expect("explain");
    assert_eq!(e.levels[0].state.tokens, Some(1));
    let late = lease(&h.acquire("fixed", &[("tenant", "z")], 1));
    h.advance(Duration::from_secs(60));
    assert!(h.acquire("fixed", &[("tenant", "q")], 2).granted());
    assert_eq!(
        h.release(late, Outcome::Success, Some(0)).refunded,
        1,
        "the release settles"
    );
    let d = h.acquire("fixed", &[("tenant", "r")], 1);
    assert_eq!(
        d.remaining, 0,
        "the previous minute's refund is not this minute's"
    );
}

const SHADOW: &str = r#"
[[resources]]
name = "trial"
rate = { limit = 10, period = "1s" }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 2, period = "1s" }
concurrency = 1
shadow = true
"#;

/// A shadow level never denies: it is debited where it would grant and reported (not debited) where it
/// would deny; the enforced levels decide, and a denial by one of them debits nothing anywhere.
fn a_shadow_level_reports_what_it_would_deny_and_never_denies<S: Store>(make: &Make<S>) {
    let h = Harness::new(SHADOW, make);
    let first = h.acquire("trial", &[("tenant", "acme")], 1);
    assert_eq!((first.granted(), first.shadow_denied_by()), (true, None));
    assert_eq!(first.remaining, 9, "the figures are the enforced levels'");
    let second = h.acquire("trial", &[("tenant", "acme")], 1);
    assert!(second.granted());
    assert_eq!(
        second.shadow_denied_by(),
        Some("tenant=acme"),
        "the tenant's one slot is taken"
    );
    h.release(lease(&first), Outcome::Success, None);
    let third = h.acquire("trial", &[("tenant", "acme")], 1);
    assert_eq!(
        third.shadow_denied_by(),
        None,
        "its slot is free and a token is left"
    );
    let fourth = h.acquire("trial", &[("tenant", "acme")], 1);
    assert_eq!(
        fourth.shadow_denied_by(),
        Some("tenant=acme"),
        "out of tokens"
    );
    let e = now(h.quota.explain(&acq("trial", &[("tenant", "acme")], 1))).expect("explain");
    assert!(e.verdict.is_none(), "a shadow level never denies: {e:?}");
    assert_eq!(e.shadow_denied_by.as_deref(), Some("tenant=acme"));
    assert_eq!(
        e.levels[0].state.tokens,
        Some(6),
        "every grant took a token resource-wide"
    );
    // An enforced denial debits nothing, shadow levels included.
    let all = h.acquire("trial", &[("tenant", "globex")], 7);
    assert_eq!(all.denial(), Some(Denial::RateLimited));
    let e = now(h.quota.explain(&acq("trial", &[("tenant", "globex")], 1))).expect("explain");
    assert_eq!(
        (e.levels[1].state.tokens, e.levels[1].state.in_flight),
        (Some(2), 0)
    );
}

const OVERRIDES: &str = r#"
[[resources]]
name = "tiers"
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 2, period = "1s" }
concurrency = 5
overrides = [
  { value = "acme", rate = { limit = 4, period = "1s" }, concurrency = 1 },
  { value = "free", rate = { limit = 1, period = "1m", algorithm = "fixed_window" } },
]
"#;

/// An override replaces a partition's limits for its value only; Explain says which level is overridden;
/// a reload that lowers an override clamps the state it left.
fn an_override_gives_one_value_its_own_limits<S: Store>(make: &Make<S>) {
    let h = Harness::new(OVERRIDES, make);
    let acme = h.acquire("tiers", &[("tenant", "acme")], 4);
    assert!(acme.granted(), "acme's burst is 4: {acme:?}");
    let d = h.acquire("tiers", &[("tenant", "acme")], 1);
    assert_eq!(d.denial(), Some(Denial::RateLimited));
    h.clock.advance_nanos(SEC);
    let d = h.acquire("tiers", &[("tenant", "acme")], 1);
    assert_eq!(
        (d.denial(), denied_by(&d)),
        (Some(Denial::ConcurrencyLimited), "tenant=acme"),
        "acme's concurrency is 1"
    );
    assert!(
        now(h.quota.acquire(&acq("tiers", &[("tenant", "globex")], 3))).is_err(),
        "the default burst is 2"
    );
    assert!(h.acquire("tiers", &[("tenant", "globex")], 2).granted());
    assert!(h.acquire("tiers", &[("tenant", "free")], 1).granted());
    let d = h.acquire("tiers", &[("tenant", "free")], 1);
    assert_eq!(retry_after(&d), 59 * SEC, "free's window is the minute");
    let e = now(h.quota.explain(&acq("tiers", &[("tenant", "acme")], 1))).expect("explain");
    assert!(e.levels[0].overridden && e.levels[0].label == "tenant=acme");
    let e = now(h.quota.explain(&acq("tiers", &[("tenant", "globex")], 1))).expect("explain");
    assert!(!e.levels[0].overridden);
    // Lowered to a burst of 1: acme's bucket (full again after a second) is clamped, not reset.
    h.release(lease(&acme), Outcome::Success, None);
    h.clock.advance_nanos(SEC);
    let lowered = OVERRIDES.replace(
        "{ value = \"acme\", rate = { limit = 4, period = \"1s\" }, concurrency = 1 }",
        "{ value = \"acme\", rate = { limit = 1, period = \"1s\" }, concurrency = 1 }",
    );
    h.quota
        .replace_rules(common::rules(&lowered))
        .expect("reload");
    let d = h.acquire("tiers", &[("tenant", "acme")], 1);
    assert_eq!((d.granted(), d.remaining, d.limit), (true, 0, 1), "{d:?}");
}

const BYPASS: &str = r#"
[[resources]]
name = "voice"
rate = { limit = 2, period = "1s" }
concurrency = 3
breaker = { consecutive_failures = 1, open_duration = "10s" }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s" }
overrides = [{ value = "internal", bypass = true }]
"#;

/// A bypassed acquire (an override with `bypass = true`, or an identity's) is granted whatever the limits,
/// the breaker or the pause say, takes no tokens, and holds a lease counted in flight (so it crowds out
/// others); its outcome counts on the breaker; Explain names what bypassed; a replay stays bypassed.
fn a_bypassed_acquire_is_granted_counted_and_takes_no_tokens<S: Store>(make: &Make<S>) {
    let h = Harness::new(BYPASS, make);
    let internal = [("tenant", "internal")];
    let a = h.acquire("voice", &internal, 1);
    assert!(a.grant().is_some_and(|g| g.bypassed), "{a:?}");
    assert_eq!(
        (a.remaining, a.in_flight, a.max_in_flight),
        (2, 1, 3),
        "no token taken, a slot held"
    );
    // More than the burst, and after the others are out of tokens: still granted.
    assert!(h.acquire("voice", &[("tenant", "acme")], 1).granted());
    assert!(h.acquire("voice", &[("tenant", "globex")], 1).granted());
    assert_eq!(
        h.acquire("voice", &[("tenant", "x")], 1).denial(),
        Some(Denial::RateLimited)
    );
    let b = h.acquire("voice", &internal, 2);
    assert!(b.grant().is_some_and(|g| g.bypassed), "{b:?}");
    assert_eq!(
        b.in_flight, 4,
        "a bypassed lease counts in flight even past the limit"
    );
    h.clock.advance_nanos(SEC);
    let d = h.acquire("voice", &[("tenant", "acme")], 1);
    assert_eq!(
        (d.denial(), denied_by(&d)),
        (Some(Denial::ConcurrencyLimited), "resource"),
        "the bypassed leases crowd the others out"
    );
    // Its failure opens the breaker; a bypassed acquire is still granted while it is open.
    h.release(lease(&a), Outcome::Failure, None);
    assert_eq!(
        h.acquire("voice", &[("tenant", "acme")], 1).denial(),
        Some(Denial::CircuitOpen)
    );
    let c = h.acquire("voice", &internal, 1);
    assert!(c.grant().is_some_and(|g| g.bypassed), "{c:?}");
    let e = now(h.quota.explain(&acq("voice", &internal, 1))).expect("explain");
    assert_eq!(
        (e.verdict.clone(), e.bypassed_by.as_deref()),
        (None, Some("tenant=internal"))
    );
    // An identity's bypass, and its replay.
    let mut req = acq("voice", &[("tenant", "acme")], 1);
    req.bypass = true;
    req.request_id = Some("once".into());
    let d = h.acquire_req(&req);
    assert!(
        d.grant().is_some_and(|g| g.bypassed && !g.replayed),
        "{d:?}"
    );
    let again = h.acquire_req(&req);
    assert!(
        again.grant().is_some_and(|g| g.bypassed && g.replayed),
        "{again:?}"
    );
    // Settled above what they asked, the bypassed leases are charged nothing (they took no tokens).
    for id in [lease(&b), lease(&c), lease(&d)] {
        assert_eq!(h.release(id, Outcome::Success, Some(5)).charged, 0);
    }
}

const PRIORITY: &str = r#"
[[resources]]
name = "bedrock.invoke"
rate = { limit = 10, period = "1s" }
concurrency = 100
concurrency_retry_after = "250ms"
priority = { classes = ["critical", "normal", "batch"], default = "normal", reserve = { critical = 0.2, normal = 0.1 } }
[[resources.partitions]]
descriptor = "tenant"
concurrency = 5
"#;

fn with_class(tenant: &str, class: &str) -> Acquire {
    let mut req = acq("bedrock.invoke", &[("tenant", tenant)], 1);
    req.priority = (!class.is_empty()).then(|| class.to_owned());
    req
}

/// Each class uses a level's capacity only down to the reserves of the classes above it: of tokens and of
/// leases in flight, at every level; a reserve's denial names it and its wait is when the class could be
/// granted; the default class is used when none is named, an unknown one is refused.
fn priority_classes_keep_out_of_the_reserves_above_them<S: Store>(make: &Make<S>) {
    let h = Harness::new(PRIORITY, make);
    // Batch may use 7 of the 10 tokens.
    for i in 0..7 {
        assert!(
            h.acquire_req(&with_class(&format!("t{i}"), "batch"))
                .granted()
        );
    }
    let d = h.acquire_req(&with_class("t7", "batch"));
    assert_eq!(
        (d.denial(), denied_by(&d), retry_after(&d)),
        (
            Some(Denial::RateLimited),
            "resource (reserved for critical, normal)",
            100 * MS
        ),
        "a token more must be left for the reserve: one refill away"
    );
    let e = now(h.quota.explain(&with_class("d", "batch"))).expect("explain");
    assert_eq!(
        (e.priority.as_deref(), e.levels[0].reserve.tokens),
        (Some("batch"), 3)
    );
    assert_eq!(
        e.verdict.as_ref().map(|v| v.2.as_str()),
        Some("resource (reserved for critical, normal)")
    );
    // Normal (the default) one more, critical the last two.
    assert!(h.acquire_req(&with_class("n", "")).granted());
    let d = h.acquire_req(&with_class("n", "normal"));
    assert_eq!(
        (d.denial(), denied_by(&d)),
        (
            Some(Denial::RateLimited),
            "resource (reserved for critical)"
        )
    );
    assert!(h.acquire_req(&with_class("c1", "critical")).granted());
    assert!(h.acquire_req(&with_class("c2", "critical")).granted());
    let d = h.acquire_req(&with_class("c3", "critical"));
    assert_eq!(
        (d.denial(), denied_by(&d)),
        (Some(Denial::RateLimited), "resource"),
        "nothing is reserved from it"
    );
    // Concurrency at the tenant level (5): batch may hold 3, normal 4, critical all 5.
    h.clock.advance_nanos(10 * SEC);
    for _ in 0..3 {
        assert!(h.acquire_req(&with_class("a", "batch")).granted());
    }
    let d = h.acquire_req(&with_class("a", "batch"));
    assert_eq!(
        (d.denial(), denied_by(&d), retry_after(&d)),
        (
            Some(Denial::ConcurrencyLimited),
            "tenant=a (reserved for critical, normal)",
            250 * MS
        )
    );
    assert!(h.acquire_req(&with_class("a", "normal")).granted());
    assert_eq!(
        h.acquire_req(&with_class("a", "normal")).denial(),
        Some(Denial::ConcurrencyLimited)
    );
    assert!(h.acquire_req(&with_class("a", "critical")).granted());
    assert_eq!(
        denied_by(&h.acquire_req(&with_class("a", "critical"))),
        "tenant=a"
    );
    assert!(matches!(
        now(h.quota.acquire(&with_class("a", "urgent"))),
        Err(EngineError::InvalidArgument { .. })
    ));
}

fn permits_above_burst_fail_fast<S: Store>(make: &Make<S>) {
    let h = Harness::new(RATE, make);
    let e = now(h.quota.acquire(&acq("api", &[], 6))).unwrap_err();
    assert!(
        matches!(e, EngineError::FailedPrecondition(ref m) if m.contains("permits") && m.contains("burst 5"))
    );
}

fn unknown_resource_is_named<S: Store>(make: &Make<S>) {
    let h = Harness::new(RATE, make);
    let e = now(h.quota.acquire(&acq("nope", &[], 1))).unwrap_err();
    assert_eq!(e, EngineError::UnknownResource("nope".into()));
}

const GLOB: &str = r#"
[[resources]]
name = "partner.*"
rate = { limit = 1, period = "1s", burst = 1 }
[[resources]]
name = "partner.special"
rate = { limit = 1, period = "1s", burst = 3 }
[[resources]]
name = "*"
concurrency = 1
"#;

fn glob_rules_give_each_name_its_own_state<S: Store>(make: &Make<S>) {
    let h = Harness::new(GLOB, make);
    assert!(h.acquire("partner.a", &[], 1).granted());
    assert!(!h.acquire("partner.a", &[], 1).granted());
    assert!(
        h.acquire("partner.b", &[], 1).granted(),
        "another concrete name has its own bucket"
    );
    // An exact name wins over a pattern.
    assert_eq!(h.acquire("partner.special", &[], 1).limit, 3);
    // The catch-all default rule answers any other name.
    let d = h.acquire("anything.else", &[], 1);
    assert!(d.granted());
    assert_eq!(&*d.resource, "anything.else");
    assert_eq!(
        h.acquire("anything.else", &[], 1).denial(),
        Some(Denial::ConcurrencyLimited)
    );
}

const THREE_LEVEL: &str = r#"
[[resources]]
name = "builds"
rate = { limit = 100, period = "1s", burst = 4 }
[[resources.partitions]]
descriptor = "endpoint"
rate = { limit = 50, period = "1s", burst = 3 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 2 }
"#;

fn multi_level_is_all_or_nothing<S: Store>(make: &Make<S>) {
    let h = Harness::new(THREE_LEVEL, make);
    let acme = [("endpoint", "start"), ("tenant", "acme")];
    assert!(h.acquire("builds", &acme, 1).granted());
    assert!(h.acquire("builds", &acme, 1).granted());
    let d = h.acquire("builds", &acme, 1);
    assert_eq!(denied_by(&d), "tenant=acme");
    assert_eq!(d.remaining, 0);
    // The tenant denial charged nothing at the endpoint or global level: globex still gets the last endpoint
    // token, then the endpoint level denies, charging neither tenant nor global.
    let globex = [("endpoint", "start"), ("tenant", "globex")];
    assert!(h.acquire("builds", &globex, 1).granted());
    let d = h.acquire("builds", &globex, 1);
    assert_eq!(denied_by(&d), "endpoint=start");
    // Global has one token left (4 - 3): another endpoint and tenant get it.
    let other = [("endpoint", "status"), ("tenant", "initech")];
    assert!(h.acquire("builds", &other, 1).granted());
    assert_eq!(denied_by(&h.acquire("builds", &other, 1)), "resource");
    // A missing descriptor is an error naming it, not a silent pass.
    let e = now(h.quota.acquire(&acq("builds", &[("endpoint", "start")], 1))).unwrap_err();
    assert!(
        matches!(e, EngineError::InvalidArgument { ref field, .. } if field == "descriptors[\"tenant\"]")
    );
}

const CONCURRENCY: &str = r#"
[[resources]]
name = "jobs"
concurrency = 2
lease_ttl = "10s"
max_lease_ttl = "60s"
concurrency_retry_after = "250ms"
"#;

fn concurrency_leases_release_and_expire<S: Store>(make: &Make<S>) {
    let h = Harness::new(CONCURRENCY, make);
    let a = h.acquire("jobs", &[], 1);
    let b = h.acquire("jobs", &[], 1);
    assert_eq!((a.in_flight, b.in_flight, b.max_in_flight), (1, 2, 2));
    let d = h.acquire("jobs", &[], 1);
    assert_eq!(d.denial(), Some(Denial::ConcurrencyLimited));
    assert_eq!(retry_after(&d), 250 * MS);
    // Release frees a slot once; a second release says so and frees nothing.
    assert_eq!(h.release(lease(&a), Outcome::Success, None).result, Ok(()));
    assert_eq!(
        h.release(lease(&a), Outcome::Success, None).result,
        Err(NotReleased::AlreadyReleased)
    );
    let c = h.acquire("jobs", &[], 1);
    assert!(c.granted());
    assert!(!h.acquire("jobs", &[], 1).granted());
    // b and c expire at 10 s: the sweep reclaims them without any request touching the key.
    h.advance(Duration::from_secs(10));
    let sweep = now(h.quota.sweep()).unwrap();
    assert_eq!(sweep.expired.len(), 2);
    assert_eq!(
        h.release(lease(&b), Outcome::Success, None).result,
        Err(NotReleased::Expired)
    );
    assert!(h.acquire("jobs", &[], 1).granted());
    assert!(h.acquire("jobs", &[], 1).granted());
    // Never-issued ids are unknown.
    let unknown = quotad_server::engine::LeaseId(42);
    assert_eq!(
        h.release(unknown, Outcome::Success, None).result,
        Err(NotReleased::UnknownLease)
    );
}

fn a_limited_sweep_reclaims_in_chunks<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        "[[resources]]\nname = \"jobs\"\nconcurrency = 100\nlease_ttl = \"10s\"\n",
        make,
    );
    for _ in 0..40 {
        assert!(h.acquire("jobs", &[], 1).granted());
    }
    h.advance(Duration::from_secs(10));
    let mut reclaimed = 0;
    let mut steps = 0;
    loop {
        let sweep = now(h.quota.sweep_some(16)).unwrap();
        assert!(sweep.expired.len() <= 16, "a step never exceeds its limit");
        reclaimed += sweep.expired.len();
        steps += 1;
        if !sweep.more {
            break;
        }
    }
    assert_eq!((reclaimed, steps), (40, 3));
    // Every slot came back.
    for _ in 0..100 {
        assert!(h.acquire("jobs", &[], 1).granted());
    }
}

fn leases_expire_in_ttl_order_whatever_order_they_were_granted<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        "[[resources]]\nname = \"jobs\"\nconcurrency = 100\nlease_ttl = \"10s\"\nmax_lease_ttl = \"1h\"\n",
        make,
    );
    let with_ttl = |secs| {
        let mut req = acq("jobs", &[], 1);
        req.lease_ttl = Some(Duration::from_secs(secs));
        lease(&now(h.quota.acquire(&req)).unwrap())
    };
    // Granted long-first, so most expire before leases granted ahead of them; one is renewed shorter.
    let long = with_ttl(300);
    let mid = with_ttl(60);
    let short = with_ttl(5);
    let renewed = with_ttl(120);
    now(h.quota.renew(&Renew {
        caller: None,
        lease_id: renewed,
        lease_ttl: Some(Duration::from_secs(2)),
    }))
    .unwrap();
    let expired_at = |secs| {
        h.advance(Duration::from_secs(secs));
        let mut ids: Vec<_> = now(h.quota.sweep_some(1000))
            .unwrap()
            .expired
            .into_iter()
            .map(|e| e.lease_id)
            .collect();
        ids.sort();
        ids
    };
    assert_eq!(expired_at(3), vec![renewed]);
    assert_eq!(expired_at(3), vec![short]);
    assert_eq!(expired_at(60), vec![mid]);
    assert_eq!(expired_at(200), Vec::<LeaseId>::new());
    assert_eq!(expired_at(40), vec![long]);
    assert_eq!(now(h.quota.usage()).unwrap().live_leases, 0);
}

fn a_resource_with_only_partitions_is_listed<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        "[[resources]]\nname = \"t\"\n[[resources.partitions]]\ndescriptor = \"tenant\"\nrate = { limit = 10, period = \"1s\" }\n",
        make,
    );
    let d = h.acquire("t", &[("tenant", "a")], 1);
    now(h.quota.release(&Release {
        caller: None,
        lease_id: lease(&d),
        outcome: Outcome::Success,
        used_permits: None,
    }))
    .unwrap();
    // No lease is live, the resource keeps no state of its own: its tenant's bucket still names it.
    let usage = now(h.quota.usage()).unwrap();
    let names: Vec<_> = usage.resources.iter().map(|r| &*r.resource).collect();
    assert_eq!(names, ["t"]);
}

fn usage_pages_in_name_order_with_filters<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        "[[resources]]\nname = \"p.*\"\nrate = { limit = 10 }\n[[resources]]\nname = \"solo\"\nrate = { limit = 10 }\n",
        make,
    );
    let mut want: Vec<String> = (0..20).map(|i| format!("p.{i:02}")).collect();
    for name in want.iter().rev() {
        assert!(h.acquire(name, &[], 1).granted());
    }
    let mut got = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = Vec::new();
    loop {
        let query = UsageQuery {
            prefix: "p.",
            rule: Some("p.*"),
            after: after.as_deref(),
            limit: 7,
            configured: false,
        };
        let page = now(h.quota.usage_page(&query)).unwrap();
        pages.push((page.resources.len(), page.more));
        got.extend(page.resources.iter().map(|r| r.resource.to_string()));
        after = got.last().cloned();
        if !page.more {
            break;
        }
    }
    assert_eq!(got, want, "in name order, none twice");
    assert_eq!(pages, [(7, true), (7, true), (6, false)]);
    // Configured rules without state are listed too (a used pattern is not: its names are).
    let all = UsageQuery {
        configured: true,
        ..UsageQuery::ALL
    };
    let page = now(h.quota.usage_page(&all)).unwrap();
    let names: Vec<_> = page
        .resources
        .iter()
        .map(|r| r.resource.to_string())
        .collect();
    want.push("solo".into());
    assert_eq!(names, want);
}

fn another_identitys_lease_is_refused_and_left_as_it_was<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        "[[resources]]\nname = \"jobs\"\nconcurrency = 1\nlease_ttl = \"10s\"\n",
        make,
    );
    let id = lease(&h.acquire_req(&Acquire {
        owner: Some("alice"),
        ..acq("jobs", &[], 1)
    }));
    let as_mallory = Release {
        caller: Some("mallory"),
        lease_id: id,
        outcome: Outcome::Success,
        used_permits: Some(0),
    };
    let refused = |e: Result<_, EngineError>| matches!(e, Err(EngineError::PermissionDenied(_)));
    assert!(refused(now(h.quota.release(&as_mallory)).map(|_| ())));
    let renew = Renew {
        lease_id: id,
        lease_ttl: None,
        caller: Some("mallory"),
    };
    assert!(refused(now(h.quota.renew(&renew)).map(|_| ())));
    let report = Report {
        lease_id: Some(id),
        caller: Some("mallory"),
        ..report("jobs", ThrottleKind::Throttled, None)
    };
    assert!(refused(now(h.quota.report(&report)).map(|_| ())));
    // Nothing changed: the slot is still held, and its owner releases it.
    assert_eq!(
        h.acquire("jobs", &[], 1).denial(),
        Some(Denial::ConcurrencyLimited)
    );
    let mine = Release {
        caller: Some("alice"),
        ..as_mallory
    };
    assert_eq!(now(h.quota.release(&mine)).unwrap().result, Ok(()));
    assert!(h.acquire("jobs", &[], 1).granted());
}

fn an_answer_at_once_is_the_same_answer<S: Store>(make: &Make<S>) {
    let h = Harness::new(RATE, make);
    let req = acq("api", &[], 2);
    // A store may answer without a future (`acquire_ready`) or not at all (`None`); when it does, the
    // answers and the state they leave are those of `acquire`.
    let Some(first) = h.quota.acquire_ready(&req) else {
        return;
    };
    assert!(first.unwrap().granted());
    assert!(now(h.quota.acquire(&req)).unwrap().granted());
    let denied = h.quota.acquire_ready(&req).unwrap().unwrap();
    assert_eq!(denied.denial(), Some(Denial::RateLimited));
    assert_eq!(denied.remaining, 1);
    let e = h
        .quota
        .acquire_ready(&acq("nope", &[], 1))
        .unwrap()
        .unwrap_err();
    assert_eq!(e, EngineError::UnknownResource("nope".into()));
}

fn expiry_tombstones_are_forgotten_after_a_minute<S: Store>(make: &Make<S>) {
    let h = Harness::new(CONCURRENCY, make);
    let early = lease(&h.acquire("jobs", &[], 1));
    h.advance(Duration::from_secs(5));
    let late = lease(&h.acquire("jobs", &[], 1));
    h.advance(Duration::from_secs(5));
    assert_eq!(now(h.quota.sweep()).unwrap().expired.len(), 1);
    h.advance(Duration::from_secs(5));
    assert_eq!(now(h.quota.sweep()).unwrap().expired.len(), 1);
    // Within the minute a late release says the lease expired.
    assert_eq!(
        h.release(early, Outcome::Success, None).result,
        Err(NotReleased::Expired)
    );
    // A minute after the first expiry only its tombstone goes; the second stays until its own minute.
    h.advance(Duration::from_secs(55));
    assert_eq!(now(h.quota.sweep()).unwrap().forgotten, 1);
    assert_eq!(
        h.release(late, Outcome::Success, None).result,
        Err(NotReleased::Expired)
    );
    h.advance(Duration::from_secs(5));
    assert_eq!(now(h.quota.sweep()).unwrap().forgotten, 1);
    // After that the id is still known as one this server issued, and ended.
    assert_eq!(
        h.release(early, Outcome::Success, None).result,
        Err(NotReleased::AlreadyReleased)
    );
}

fn renew_extends_and_caps_and_refuses_expired<S: Store>(make: &Make<S>) {
    let h = Harness::new(CONCURRENCY, make);
    let a = h.acquire("jobs", &[], 1);
    let id = lease(&a);
    h.advance(Duration::from_secs(9));
    let r = now(h.quota.renew(&Renew {
        caller: None,
        lease_id: id,
        lease_ttl: Some(Duration::from_secs(600)),
    }))
    .unwrap();
    assert_eq!(r.ttl, Duration::from_secs(60), "capped at max_lease_ttl");
    h.advance(Duration::from_secs(59));
    assert!(
        now(h.quota.sweep()).unwrap().expired.is_empty(),
        "renewed lease is still live"
    );
    h.advance(Duration::from_secs(1));
    let e = now(h.quota.renew(&Renew {
        caller: None,
        lease_id: id,
        lease_ttl: None,
    }))
    .unwrap_err();
    assert!(
        matches!(e, EngineError::FailedPrecondition(ref m) if m.contains("expired")),
        "{e:?}"
    );
    let e = now(h.quota.renew(&Renew {
        caller: None,
        lease_id: quotad_server::engine::LeaseId(7),
        lease_ttl: None,
    }))
    .unwrap_err();
    assert!(matches!(e, EngineError::UnknownLease(_)));
}

const FINAL: &str = r#"
[[resources]]
name = "final"
rate = { limit = 10, period = "1s", burst = 3 }
settlement = false
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s", burst = 2 }

[[resources]]
name = "final.slots"
rate = { limit = 10, period = "1s", burst = 10 }
concurrency = 1
settlement = false

[[resources]]
name = "final.one"
rate = { limit = 10, period = "1s", burst = 2 }
settlement = false
"#;

fn holds_nothing(d: &Decision) -> bool {
    d.grant().expect("granted").nothing_held
}

const SHARED: &str = r#"
[[resources]]
name = "hot"
rate = { limit = 10, period = "1s", burst = 100 }
local_share = { max_fraction = 0.5, ttl = "200ms" }

[[resources]]
name = "hot.tenants"
rate = { limit = 1000, period = "1s", burst = 1000 }
local_share = { max_fraction = 1.0 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s", burst = 3 }
"#;

/// `local_share`: grants come from slices, yet the bucket's bound is exact to the permit (a node's slice
/// is taken from it before any of it is granted), a denial's wait is the bucket's, a request_id is
/// charged once and a pause holds at once; every level bounds a slice. (With one store there is one node:
/// the in-memory store decides each request itself, the same way.)
fn a_shared_resource_admits_exactly_its_bound<S: Store>(make: &Make<S>) {
    let h = Harness::new(SHARED, make);
    // A node granting from slices asks again no sooner than its slice could refill (at most one ttl): its
    // denials say so. A store without slices answers one permit's wait exactly.
    let sliced = h.quota.store().health().is_some();
    let mut granted = 0;
    for _ in 0..130 {
        let d = h.acquire("hot", &[], 1);
        if d.granted() {
            assert!(holds_nothing(&d));
            granted += 1;
        } else {
            assert_eq!(d.denial(), Some(Denial::RateLimited));
            let wait = retry_after(&d);
            if sliced {
                assert!((100 * MS..=200 * MS).contains(&wait), "{wait}");
            } else {
                assert_eq!(wait, 100 * MS, "one permit's wait at 10/s");
            }
            assert_eq!(denied_by(&d), "resource");
        }
    }
    assert_eq!(granted, 100, "the burst, not a permit more");
    if let Some(health) = h.quota.store().health() {
        assert!(
            health.shares.local >= 60 && health.shares.slices >= 1,
            "most answers came from a slice: {:?}",
            health.shares
        );
    }
    h.advance(Duration::from_millis(250));
    let (a, b, c) = (
        h.acquire("hot", &[], 1),
        h.acquire("hot", &[], 1),
        h.acquire("hot", &[], 1),
    );
    assert!(a.granted() && b.granted(), "two permits refilled in 250 ms");
    if !sliced {
        assert_eq!(retry_after(&c), 50 * MS, "the third is 50 ms away");
    }
    assert!(retry_after(&c) >= 50 * MS && !c.granted());

    // A request_id is charged once: its retry replays the grant.
    h.advance(Duration::from_secs(1));
    let req = Acquire {
        request_id: Some("once".into()),
        ..acq("hot", &[], 2)
    };
    let first = h.acquire_req(&req);
    let again = h.acquire_req(&req);
    assert_eq!(lease(&first), lease(&again));
    assert!(again.grant().unwrap().replayed);
    let other = Acquire {
        permits: 3,
        ..req.clone()
    };
    assert!(matches!(
        now(h.quota.acquire(&other)),
        Err(EngineError::FailedPrecondition(_))
    ));
    let mut left = 0;
    while h.acquire("hot", &[], 1).granted() {
        left += 1;
    }
    assert_eq!(left, 10 - 2, "10 refilled in a second, 2 taken once");

    // A pause reported on this node holds at once, whatever its slices hold.
    h.advance(Duration::from_secs(10));
    assert!(h.acquire("hot", &[], 1).granted());
    now(h.quota.report(&report(
        "hot",
        ThrottleKind::Throttled,
        Some(Duration::from_secs(2)),
    )))
    .unwrap();
    let d = h.acquire("hot", &[], 1);
    assert_eq!(d.denial(), Some(Denial::Paused));
    assert_eq!(retry_after(&d), 2 * SEC);

    // The tighter level bounds what a slice may take: a tenant gets its burst of 3, not a permit more.
    let tenant = |t: &str| h.acquire("hot.tenants", &[("tenant", t)], 1).granted();
    assert_eq!((0..10).filter(|_| tenant("a")).count(), 3);
    assert_eq!((0..10).filter(|_| tenant("b")).count(), 3);
}

/// `settlement = false`: a rate-only grant holds nothing and is not stored (its Release and Renew answer
/// and change nothing; a replayable grant is still stored), and a stored lease's release ignores
/// `used_permits`. The limits stay exact whatever is released.
fn a_final_grant_holds_nothing_and_its_release_changes_nothing<S: Store>(make: &Make<S>) {
    let h = Harness::new(FINAL, make);
    let a = h.acquire("final", &[("tenant", "a")], 1);
    assert!(holds_nothing(&a));
    assert_eq!(
        (a.remaining, a.limit),
        (1, 2),
        "the tenant's level is the tightest"
    );
    let b = h.acquire("final", &[("tenant", "a")], 1);
    assert!(holds_nothing(&b));
    assert_ne!(lease(&a), lease(&b));
    let d = h.acquire("final", &[("tenant", "a")], 1);
    assert_eq!(d.denial(), Some(Denial::RateLimited));
    assert_eq!(denied_by(&d), "tenant=a");
    assert_eq!(retry_after(&d), SEC);
    for _ in 0..2 {
        let r = h.release(lease(&a), Outcome::Failure, Some(0));
        assert_eq!(r.result, Ok(()), "released, any number of times");
        assert_eq!((r.refunded, r.charged), (0, 0));
    }
    let r = h.release(lease(&b), Outcome::Success, Some(100));
    assert_eq!((r.refunded, r.charged), (0, 0), "used_permits is ignored");
    assert!(
        !h.acquire("final", &[("tenant", "a")], 1).granted(),
        "nothing came back"
    );
    let renewed = now(h.quota.renew(&Renew {
        caller: None,
        lease_id: lease(&a),
        lease_ttl: Some(Duration::from_secs(5)),
    }))
    .expect("renewed");
    assert_eq!(renewed.ttl, Duration::from_secs(5));
    // A request_id keeps its replay record, not a lease: a retry replays the grant, charged once; the id
    // reused with other parameters is refused.
    let req = Acquire {
        request_id: Some("once".into()),
        ..acq("final", &[("tenant", "b")], 1)
    };
    let first = h.acquire_req(&req);
    assert!(holds_nothing(&first));
    let again = h.acquire_req(&req);
    let g = again.grant().expect("replayed");
    assert!(g.replayed && g.nothing_held);
    assert_eq!(
        (g.lease_id, g.expires_at),
        (lease(&first), first.grant().unwrap().expires_at)
    );
    assert_eq!(g.ttl, first.grant().unwrap().ttl);
    assert_eq!(again.remaining, first.remaining);
    assert!(matches!(
        now(h.quota.acquire(&Acquire {
            request_id: Some("once".into()),
            ..acq("final", &[("tenant", "b")], 2)
        })),
        Err(EngineError::FailedPrecondition(_))
    ));
    assert_eq!(
        h.acquire("final", &[("tenant", "c")], 1).remaining,
        0,
        "3 taken of 3"
    );
    assert!(!h.acquire("final", &[("tenant", "d")], 1).granted());
    let usage = now(h.quota.usage()).expect("usage");
    assert_eq!(usage.live_leases, 0, "no grant of it is a lease");
    // A concurrency slot is held and freed; its release settles nothing.
    let s = h.acquire("final.slots", &[], 2);
    assert!(!holds_nothing(&s));
    assert_eq!(
        h.acquire("final.slots", &[], 1).denial(),
        Some(Denial::ConcurrencyLimited)
    );
    let r = h.release(lease(&s), Outcome::Success, Some(0));
    assert_eq!((r.result, r.refunded), (Ok(()), 0));
    assert_eq!(h.acquire("final.slots", &[], 1).remaining, 7, "10 - 2 - 1");
    // An id never issued is still unknown.
    let r = h.release(LeaseId(7), Outcome::Success, None);
    assert_eq!(r.result, Err(NotReleased::UnknownLease));
    a_final_bucket_is_exact_and_paused(&h);
}

/// One bucket of final grants (Redis decides it on its one-bucket path once the bucket exists): exact
/// figures and retry_after, and a throttle report naming such a lease pauses it like any other.
fn a_final_bucket_is_exact_and_paused<S: Store>(h: &Harness<S>) {
    for left in [1, 0] {
        let d = h.acquire("final.one", &[], 1);
        assert!(holds_nothing(&d));
        assert_eq!(
            (d.remaining, d.limit, d.reset_after),
            (left, 2, (2 - left) * 100 * MS)
        );
    }
    let d = h.acquire("final.one", &[], 1);
    assert_eq!(d.denial(), Some(Denial::RateLimited));
    assert_eq!(
        (retry_after(&d), d.remaining, d.reset_after),
        (100 * MS, 0, 200 * MS)
    );
    h.advance(Duration::from_millis(100));
    let granted = h.acquire("final.one", &[], 1);
    assert_eq!(granted.remaining, 0);
    let mut r = report(
        "final.one",
        ThrottleKind::Throttled,
        Some(Duration::from_secs(2)),
    );
    r.lease_id = Some(lease(&granted));
    now(h.quota.report(&r)).expect("reported as naming no lease");
    let d = h.acquire("final.one", &[], 1);
    assert_eq!(d.denial(), Some(Denial::Paused));
    assert_eq!((retry_after(&d), denied_by(&d)), (2 * SEC, "pause"));
    h.advance(Duration::from_secs(2));
    let d = h.acquire("final.one", &[], 2);
    assert!(holds_nothing(&d));
    assert_eq!(d.remaining, 0);
}

const SETTLE: &str = r#"
[[resources]]
name = "llm"
rate = { limit = 1, period = "1s", burst = 100 }
"#;

fn settle_refunds_and_charges<S: Store>(make: &Make<S>) {
    let h = Harness::new(SETTLE, make);
    let a = h.acquire("llm", &[], 50);
    assert_eq!(a.remaining, 50);
    let r = h.release(lease(&a), Outcome::Success, Some(20));
    assert_eq!((r.refunded, r.charged), (30, 0));
    assert_eq!(h.acquire("llm", &[], 1).remaining, 79);
    let b = h.acquire("llm", &[], 10);
    let r = h.release(lease(&b), Outcome::Success, Some(200));
    // 69 tokens left, 190 more owed: a level goes at most one burst (100) below empty, so 169 are charged.
    assert_eq!((r.refunded, r.charged), (0, 169));
    // In debt by 100 tokens; one token needs 101 s.
    let d = h.acquire("llm", &[], 1);
    assert_eq!(retry_after(&d), 101 * SEC);
    // Refunds never fill beyond burst.
    let h = Harness::new(SETTLE, make);
    let c = h.acquire("llm", &[], 10);
    h.release(lease(&c), Outcome::Success, Some(0));
    assert_eq!(h.acquire("llm", &[], 1).remaining, 99);
}

const SETTLE_LEVELS: &str = r#"
[[resources]]
name = "llm"
rate = { limit = 1, period = "1s", burst = 100 }
max_debt = 10
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s", burst = 20 }
"#;

fn one_release_cannot_lock_a_resource_for_centuries<S: Store>(make: &Make<S>) {
    let h = Harness::new(SETTLE, make);
    let a = h.acquire("llm", &[], 1);
    let r = h.release(lease(&a), Outcome::Success, Some(u64::MAX));
    // 99 left plus one burst of debt: at most 199 more.
    assert_eq!(r.charged, 199);
    assert_eq!(retry_after(&h.acquire("llm", &[], 1)), 101 * SEC);
    // An operator refills the buckets: granted at once, debt and all gone.
    let target = BreakerTarget {
        resource: "llm".into(),
        descriptors: vec![],
    };
    assert_eq!(now(h.quota.refill(&target)).unwrap(), 1);
    assert_eq!(h.acquire("llm", &[], 1).remaining, 99);
}

fn settlement_charges_every_level_the_same_bounded_amount<S: Store>(make: &Make<S>) {
    let h = Harness::new(SETTLE_LEVELS, make);
    let a = h.acquire("llm", &[("tenant", "acme")], 5);
    // Resource-wide: 95 left, may go 10 below (105 more). Tenant: 15 left, 10 below (25 more). The least wins.
    let r = h.release(lease(&a), Outcome::Success, Some(1_000_000));
    assert_eq!(r.charged, 25);
    // The resource-wide level holds 95 - 25 = 70 (another tenant takes one more).
    assert!(h.acquire("llm", &[("tenant", "other")], 1).granted());
    let usage = now(h.quota.usage()).unwrap();
    assert_eq!(usage.resources[0].tokens_available, Some(69));
    // The tenant is 10 in debt: one token needs 11 s.
    assert_eq!(
        retry_after(&h.acquire("llm", &[("tenant", "acme")], 1)),
        11 * SEC
    );
    let target = BreakerTarget {
        resource: "llm".into(),
        descriptors: vec![("tenant".into(), "acme".into())],
    };
    assert_eq!(now(h.quota.refill(&target)).unwrap(), 2);
    assert!(h.acquire("llm", &[("tenant", "acme")], 1).granted());
}

fn request_id_never_charges_twice<S: Store>(make: &Make<S>) {
    let h = Harness::new(RATE, make);
    let req = Acquire {
        request_id: Some("job-1".into()),
        ..acq("api", &[], 2)
    };
    let first = h.acquire_req(&req);
    let again = h.acquire_req(&req);
    assert_eq!(lease(&first), lease(&again));
    assert!(again.grant().unwrap().replayed);
    assert_eq!(
        h.acquire("api", &[], 1).remaining,
        2,
        "charged 2 once, then 1"
    );
    // Reusing the id with other parameters is refused.
    let other = Acquire {
        request_id: Some("job-1".into()),
        ..acq("api", &[], 1)
    };
    assert!(matches!(
        now(h.quota.acquire(&other)),
        Err(EngineError::FailedPrecondition(_))
    ));
    // A denial is not remembered: the same id succeeds once capacity returns.
    let big = Acquire {
        request_id: Some("job-2".into()),
        ..acq("api", &[], 3)
    };
    assert!(!h.acquire_req(&big).granted());
    h.advance(Duration::from_secs(1));
    assert!(h.acquire_req(&big).granted());
    // After the window (default 5 min) the same id is a new request, granted with a new lease.
    h.advance(Duration::from_secs(300));
    let fresh = h.acquire_req(&req);
    assert!(!fresh.grant().unwrap().replayed);
    assert_ne!(lease(&fresh), lease(&first));
}

fn the_sweep_forgets_request_ids_oldest_first<S: Store>(make: &Make<S>) {
    let h = Harness::new(RATE, make);
    let first = h.acquire_req(&Acquire {
        request_id: Some("job-1".into()),
        ..acq("api", &[], 1)
    });
    assert!(first.granted());
    h.advance(Duration::from_secs(1));
    assert!(
        h.acquire_req(&Acquire {
            request_id: Some("job-2".into()),
            ..acq("api", &[], 1)
        })
        .granted()
    );
    h.advance(Duration::from_secs(299));
    assert_eq!(now(h.quota.sweep()).unwrap().forgotten, 1, "job-1 lapsed");
    h.advance(Duration::from_secs(1));
    assert_eq!(now(h.quota.sweep()).unwrap().forgotten, 1, "job-2 lapsed");
}

fn request_ids_beyond_the_cap_forget_the_oldest<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        "[capacity]\nmax_request_ids = 3\n[[resources]]\nname = \"api\"\nrate = { limit = 100, period = \"1s\", burst = 100 }\n",
        make,
    );
    let with_id = |id: &str| Acquire {
        request_id: Some(id.into()),
        ..acq("api", &[], 1)
    };
    let first = h.acquire_req(&with_id("r1"));
    for id in ["r2", "r3", "r4"] {
        assert!(h.acquire_req(&with_id(id)).granted());
    }
    // r1 was the oldest when r4 came: forgotten early, so a retry of it is a new request.
    let again = h.acquire_req(&with_id("r1"));
    assert!(!again.grant().unwrap().replayed);
    assert_ne!(lease(&again), lease(&first));
    // The newest are still replayed.
    assert!(h.acquire_req(&with_id("r4")).grant().unwrap().replayed);
    let usage = now(h.quota.usage()).unwrap();
    assert_eq!((usage.request_ids, usage.request_ids_dropped), (3, 2));
}

const BREAKER: &str = r#"
[[resources]]
name = "down"
concurrency = 100
breaker = { failure_rate = 0.5, min_calls = 4, window = "10s", open_duration = "5s", open_backoff = 2.0, max_open_duration = "60s", half_open_probes = 2, half_open_successes = 2 }
"#;

fn breaker_opens_probes_and_closes<S: Store>(make: &Make<S>) {
    let h = Harness::new(BREAKER, make);
    let target = BreakerTarget {
        resource: "down".into(),
        descriptors: vec![],
    };
    for outcome in [Outcome::Success, Outcome::Failure, Outcome::Failure] {
        let d = h.acquire("down", &[], 1);
        h.release(lease(&d), outcome, None);
    }
    let d = h.acquire("down", &[], 1);
    assert_eq!(
        h.release(lease(&d), Outcome::Throttled, None).breaker,
        BreakerState::Open
    );
    let d = h.acquire("down", &[], 1);
    assert_eq!(d.denial(), Some(Denial::CircuitOpen));
    assert_eq!(retry_after(&d), 5 * SEC);
    h.advance(Duration::from_secs(5));
    let view = now(h.quota.circuit(&target)).unwrap();
    assert_eq!(view.breaker.state, BreakerState::HalfOpen);
    let p1 = h.acquire("down", &[], 1);
    let p2 = h.acquire("down", &[], 1);
    assert!(p1.granted() && p2.granted());
    assert_eq!(
        h.acquire("down", &[], 1).denial(),
        Some(Denial::CircuitOpen)
    );
    // A probe ending UNKNOWN hands its probe back to the fleet.
    h.release(lease(&p2), Outcome::Unknown, None);
    let p3 = h.acquire("down", &[], 1);
    assert!(p3.granted());
    h.release(lease(&p1), Outcome::Success, None);
    assert_eq!(
        h.release(lease(&p3), Outcome::Success, None).breaker,
        BreakerState::Closed
    );
    assert!(h.acquire("down", &[], 1).granted());
}

/// More distinct rules than the Redis script keeps parsed (its memo of 512 specs is emptied and refilled):
/// every resource keeps exactly its own burst, whatever was parsed before it.
fn many_distinct_rules_each_keep_their_own_limit<S: Store>(make: &Make<S>) {
    let n = 600u64;
    let toml: String = (1..=n)
        .map(|i| {
            format!("[[resources]]\nname = \"r{i}\"\nrate = {{ limit = {i}, period = \"1h\" }}\n")
        })
        .collect();
    let h = Harness::new(&toml, make);
    for round in 0..2 {
        for i in 1..=n {
            let name = format!("r{i}");
            if round == 0 {
                assert!(
                    h.acquire(&name, &[], i).granted(),
                    "{name}: its whole burst"
                );
            }
            let d = h.acquire(&name, &[], 1);
            assert_eq!(
                d.denial(),
                Some(Denial::RateLimited),
                "{name}, round {round}"
            );
            assert_eq!(d.limit, i, "{name}: its own burst");
        }
    }
}

const PARTITIONED: &str = r#"
[[resources]]
name = "llm"
concurrency = 100
breaker = { failure_rate = 1.0, min_calls = 100, window = "10s", consecutive_failures = 2, open_duration = "5s", half_open_probes = 1, half_open_successes = 1, partition = "tenant" }
"#;

/// Every transition a call makes is counted under the breaker it moved: a partition's own key when the
/// breaker is partitioned, on release (opened), on admission (half-open) and on a probe's success (closed).
fn transitions_are_named_by_the_partitions_breaker<S: Store>(make: &Make<S>) {
    let h = Harness::new(PARTITIONED, make);
    for _ in 0..2 {
        let d = h.acquire("llm", &[("tenant", "a:b")], 1);
        h.release(lease(&d), Outcome::Failure, None);
    }
    let other = h.acquire("llm", &[("tenant", "c")], 1);
    assert!(other.granted(), "another tenant's breaker stays closed");
    assert_eq!(
        h.acquire("llm", &[("tenant", "a:b")], 1).denial(),
        Some(Denial::CircuitOpen)
    );
    h.advance(Duration::from_secs(5));
    let probe = h.acquire("llm", &[("tenant", "a:b")], 1);
    assert!(probe.granted(), "half-open: one probe");
    h.release(lease(&probe), Outcome::Success, None);
    let made: Vec<_> = h
        .quota
        .stats()
        .recent()
        .into_iter()
        .map(|t| (t.breaker, t.from, t.to))
        .collect();
    let named = "llm/tenant/a:b".to_owned();
    assert_eq!(
        made,
        [
            (named.clone(), BreakerState::Closed, BreakerState::Open),
            (named.clone(), BreakerState::Open, BreakerState::HalfOpen),
            (named, BreakerState::HalfOpen, BreakerState::Closed),
        ]
    );
}

fn breaker_reopens_longer_on_probe_failure<S: Store>(make: &Make<S>) {
    let h = Harness::new(BREAKER, make);
    let target = BreakerTarget {
        resource: "down".into(),
        descriptors: vec![],
    };
    now(h.quota.force_open(&target, None)).unwrap();
    h.advance(Duration::from_secs(5));
    let p = h.acquire("down", &[], 1);
    assert_eq!(
        h.release(lease(&p), Outcome::Failure, None).breaker,
        BreakerState::Open
    );
    let view = now(h.quota.circuit(&target)).unwrap();
    assert_eq!(
        view.breaker.half_open_at,
        Some(FakeClock::EPOCH + 15 * SEC),
        "5 s × backoff 2 = 10 s from 5 s"
    );
    assert_eq!(
        now(h.quota.reset_breaker(&target)).unwrap(),
        BreakerState::Open
    );
    assert!(h.acquire("down", &[], 1).granted());
}

fn exactly_n_half_open_probes_across_threads<S: Store>(make: &Make<S>) {
    let h = Arc::new(Harness::new(BREAKER, make));
    let target = BreakerTarget {
        resource: "down".into(),
        descriptors: vec![],
    };
    now(h.quota.force_open(&target, None)).unwrap();
    h.advance(Duration::from_secs(5));
    let granted: usize = thread::scope(|s| {
        let handles: Vec<_> = (0..64)
            .map(|_| {
                let h = h.clone();
                s.spawn(move || {
                    (0..4)
                        .filter(|_| h.acquire("down", &[], 1).granted())
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|t| t.join().unwrap()).sum()
    });
    assert_eq!(
        granted, 2,
        "exactly half_open_probes leases across 64 concurrent callers"
    );
}

const ADAPTIVE: &str = r#"
[[resources]]
name = "llm"
rate = { limit = 100, period = "1s", burst = 100 }
max_pause = "30s"
breaker = { min_calls = 1000, consecutive_failures = 3 }
adaptive = { decrease_factor = 0.5, floor = 0.1, cooldown = "1s", increase_step = 0.1, increase_interval = "1s" }
"#;

fn report(resource: &str, kind: ThrottleKind, retry_after: Option<Duration>) -> Report {
    Report {
        caller: None,
        resource: resource.into(),
        descriptors: vec![],
        kind,
        retry_after,
        lease_id: None,
        message: None,
        client_id: None,
    }
}

fn throttle_reports_lower_rate_once_per_cooldown_and_recover<S: Store>(make: &Make<S>) {
    let h = Harness::new(ADAPTIVE, make);
    let mut decreased = 0;
    for _ in 0..100 {
        let r = now(h
            .quota
            .report(&report("llm", ThrottleKind::Throttled, None)))
        .unwrap();
        decreased += usize::from(r.rate_decreased);
        assert_eq!(r.pressure.configured_rate, 100.0);
    }
    assert_eq!(
        decreased, 1,
        "a burst of 100 reports in the same second is one decrease"
    );
    let view = now(h.quota.circuit(&BreakerTarget {
        resource: "llm".into(),
        descriptors: vec![],
    }))
    .unwrap();
    assert_eq!(view.pressure.effective_rate, 50.0);
    // The three first reports were failures in a row: the breaker opened.
    assert_eq!(view.breaker.state, BreakerState::Open);
    now(h.quota.reset_breaker(&BreakerTarget {
        resource: "llm".into(),
        descriptors: vec![],
    }))
    .unwrap();
    now(h
        .quota
        .report(&report("llm", ThrottleKind::Throttled, None)))
    .unwrap();
    // Drain the bucket: at half rate a token takes 20 ms instead of 10 ms.
    while h.acquire("llm", &[], 1).granted() {}
    assert_eq!(retry_after(&h.acquire("llm", &[], 1)), 20 * MS);
    // Traffic over five intervals recovers the rate additively.
    for _ in 0..5 {
        h.advance(Duration::from_secs(1));
        h.acquire("llm", &[], 1);
    }
    let view = now(h.quota.circuit(&BreakerTarget {
        resource: "llm".into(),
        descriptors: vec![],
    }))
    .unwrap();
    assert!(
        (view.pressure.effective_rate - 100.0).abs() < 1e-6,
        "{}",
        view.pressure.effective_rate
    );
    // Errors and timeouts count for the breaker but do not lower the rate.
    let r = now(h.quota.report(&report("llm", ThrottleKind::Error, None))).unwrap();
    assert!(!r.rate_decreased);
}

fn retry_after_pauses_the_fleet_capped<S: Store>(make: &Make<S>) {
    let h = Harness::new(ADAPTIVE, make);
    let r = now(h.quota.report(&report(
        "llm",
        ThrottleKind::Throttled,
        Some(Duration::from_secs(3600)),
    )))
    .unwrap();
    assert_eq!(
        r.pressure.paused_until,
        Some(FakeClock::EPOCH + 30 * SEC),
        "capped by max_pause"
    );
    let d = h.acquire("llm", &[], 1);
    assert_eq!(d.denial(), Some(Denial::Paused));
    assert_eq!(retry_after(&d), 30 * SEC);
    assert_eq!(denied_by(&d), "pause");
    h.advance(Duration::from_secs(30));
    assert!(h.acquire("llm", &[], 1).granted());
}

fn a_reported_lease_is_counted_once<S: Store>(make: &Make<S>) {
    let h = Harness::new(ADAPTIVE, make);
    let target = BreakerTarget {
        resource: "llm".into(),
        descriptors: vec![],
    };
    for _ in 0..2 {
        let d = h.acquire("llm", &[], 1);
        let mut r = report("llm", ThrottleKind::Throttled, None);
        r.lease_id = Some(lease(&d));
        now(h.quota.report(&r)).unwrap();
        now(h.quota.report(&r)).unwrap();
        h.release(lease(&d), Outcome::Throttled, None);
    }
    let view = now(h.quota.circuit(&target)).unwrap();
    assert_eq!(view.breaker.failures, 2);
    assert_eq!(
        view.breaker.state,
        BreakerState::Closed,
        "2 failures, not 6: below consecutive_failures 3"
    );
}

const CAPPED: &str = r#"
[capacity]
max_live_keys = 4
max_leases = 2
[[resources]]
name = "t"
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s" }
"#;

fn caps_answer_resource_exhausted<S: Store>(make: &Make<S>) {
    let h = Harness::new(CAPPED, make);
    assert!(h.acquire("t", &[("tenant", "a")], 1).granted());
    assert!(h.acquire("t", &[("tenant", "b")], 1).granted());
    let e = now(h.quota.acquire(&acq("t", &[("tenant", "c")], 1))).unwrap_err();
    assert_eq!(
        e,
        EngineError::CapacityExhausted {
            what: "leases",
            cap: 2,
            made: None,
        }
    );
    let h = Harness::new(&CAPPED.replace("max_leases = 2", "max_leases = 100"), make);
    for t in ["a", "b", "c", "d"] {
        assert!(h.acquire("t", &[("tenant", t)], 1).granted());
    }
    // 4 tenant keys (a resource without pauses or an adaptive rate keeps no state of its own): a fifth
    // key is refused, with nothing charged.
    let e = now(h.quota.acquire(&acq("t", &[("tenant", "e")], 1))).unwrap_err();
    assert!(matches!(
        e,
        EngineError::CapacityExhausted {
            what: "live keys",
            ..
        }
    ));
    assert_eq!(now(h.quota.usage()).unwrap().live_keys, 4);
    // Idle keys are evicted by the sweep (full buckets, no leases held), freeing room.
    h.advance(Duration::from_secs(120));
    let sweep = now(h.quota.sweep()).unwrap();
    assert_eq!(sweep.expired.len(), 4);
    assert_eq!(sweep.evicted_keys, 4);
    assert!(h.acquire("t", &[("tenant", "e")], 1).granted());
}

const CAPPED_BREAKER: &str = r#"
[capacity]
max_leases = 2
[[resources]]
name = "down"
concurrency = 100
breaker = { failure_rate = 1.0, min_calls = 100, window = "10s", consecutive_failures = 2, open_duration = "5s", half_open_probes = 1, half_open_successes = 1 }
[[resources]]
name = "hold"
concurrency = 100
"#;

/// An admission that turns an OPEN breaker HALF_OPEN and is then refused by a cap: the transition
/// happened and is counted once; the probe goes back and the next acquire takes it without another.
fn a_transition_before_a_cap_refusal_is_counted<S: Store>(make: &Make<S>) {
    let h = Harness::new(CAPPED_BREAKER, make);
    for _ in 0..2 {
        let d = h.acquire("down", &[], 1);
        h.release(lease(&d), Outcome::Failure, None);
    }
    let held = [h.acquire("hold", &[], 1), h.acquire("hold", &[], 1)];
    h.advance(Duration::from_secs(5));
    let e = now(h.quota.acquire(&acq("down", &[], 1))).unwrap_err();
    assert!(
        matches!(e, EngineError::CapacityExhausted { what: "leases", .. }),
        "{e:?}"
    );
    let halves = || {
        let recent = h.quota.stats().recent();
        recent
            .iter()
            .filter(|t| t.to == BreakerState::HalfOpen)
            .count()
    };
    assert_eq!(halves(), 1, "{:?}", h.quota.stats().recent());
    h.release(lease(&held[0]), Outcome::Success, None);
    assert!(
        h.acquire("down", &[], 1).granted(),
        "the probe was handed back"
    );
    assert_eq!(halves(), 1, "no second transition");
}

fn reload_keeps_tokens_clamped_and_leases<S: Store>(make: &Make<S>) {
    let h = Harness::new(
        r#"
[[resources]]
name = "r"
rate = { limit = 1, period = "1s", burst = 10 }
concurrency = 5
"#,
        make,
    );
    let held = h.acquire("r", &[], 2);
    assert_eq!(held.remaining, 8);
    h.quota
        .replace_rules(common::rules(
            r#"
[[resources]]
name = "r"
rate = { limit = 1, period = "1s", burst = 4 }
concurrency = 1
"#,
        ))
        .expect("rules held");
    let d = h.acquire("r", &[], 1);
    assert_eq!(
        d.denial(),
        Some(Denial::ConcurrencyLimited),
        "the held lease counts against the new max"
    );
    assert_eq!(d.remaining, 4, "8 tokens clamped to the new burst");
    assert_eq!(
        h.release(lease(&held), Outcome::Success, None).result,
        Ok(())
    );
    assert_eq!(h.acquire("r", &[], 1).remaining, 3);
}

fn revoke_frees_the_slot<S: Store>(make: &Make<S>) {
    let h = Harness::new(CONCURRENCY, make);
    let a = h.acquire("jobs", &[], 1);
    h.acquire("jobs", &[], 1);
    assert!(now(h.quota.revoke(lease(&a))).unwrap());
    assert!(!now(h.quota.revoke(lease(&a))).unwrap());
    assert!(h.acquire("jobs", &[], 1).granted());
    let (leases, truncated) = now(h.quota.leases("jobs", 10)).unwrap();
    assert_eq!((leases.len(), truncated), (2, false));
    let usage = now(h.quota.usage()).unwrap();
    assert_eq!(usage.live_leases, 2);
    assert_eq!(usage.resources[0].in_flight, 2);
}

fn sixty_four_threads_on_one_key_admit_exactly_the_bound<S: Store>(make: &Make<S>) {
    // rate 100/s burst 50 over 10 s of fake time: at most 50 + 100 × 10 = 1050.
    let h = Arc::new(Harness::new(
        r#"
[[resources]]
name = "hot"
rate = { limit = 100, period = "1s", burst = 50 }
"#,
        make,
    ));
    let rounds = 1000; // 10 ms of fake time each
    let barrier = Arc::new(std::sync::Barrier::new(65));
    let admitted: usize = thread::scope(|s| {
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let (h, barrier) = (h.clone(), barrier.clone());
                s.spawn(move || {
                    let mut mine = 0;
                    for _ in 0..=rounds {
                        barrier.wait();
                        // Two tries each per round: far more demand than supply.
                        mine += (0..2)
                            .filter(|_| h.acquire("hot", &[], 1).granted())
                            .count();
                        barrier.wait();
                    }
                    mine
                })
            })
            .collect();
        for round in 0..=rounds {
            if round > 0 {
                h.advance(Duration::from_millis(10));
            }
            barrier.wait();
            barrier.wait();
        }
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!((1040..=1050).contains(&admitted), "admitted {admitted}");
}

fn denial_carries_level_figures<S: Store>(make: &Make<S>) {
    let h = Harness::new(BREAKER, make);
    let d = h.acquire("down", &[], 1);
    assert!(matches!(d.verdict, Verdict::Granted(_)));
    assert_eq!((d.in_flight, d.max_in_flight), (1, 100));
    assert_eq!(d.limit, 0, "no rate level");
}

/// One Redis for the whole test process (each store has a key prefix of its own), and one Cluster.
fn redis() -> &'static common::redis_server::RedisServer {
    static R: std::sync::OnceLock<common::redis_server::RedisServer> = std::sync::OnceLock::new();
    R.get_or_init(common::redis_server::RedisServer::start)
}

fn cluster() -> &'static common::redis_server::RedisCluster {
    static C: std::sync::OnceLock<common::redis_server::RedisCluster> = std::sync::OnceLock::new();
    C.get_or_init(common::redis_server::RedisCluster::start)
}

macro_rules! for_each_store {
    (shared: [$($test:ident),* $(,)?], memory: [$($memory:ident),* $(,)?] $(,)?) => {
        mod memory {
            use super::*;
            fn make(rules: &Rules) -> MemoryStore {
                MemoryStore::new(rules)
            }
            $( #[test] fn $test() { super::$test(&make); } )*
            // Housekeeping only the in-memory store has: caps on keys and request ids, chunked sweeps,
            // answers without a future, tombstones on the engine's clock (Redis expires them on its own).
            $( #[test] fn $memory() { super::$memory(&make); } )*
        }
        mod redis {
            use super::*;
            fn make(_: &Rules) -> RedisStore {
                common::redis_store(&[redis().url()])
            }
            $( #[test] fn $test() { super::$test(&make); } )*
        }
        mod redis_cluster {
            use super::*;
            fn make(_: &Rules) -> RedisStore {
                common::redis_store(&cluster().urls())
            }
            $( #[test] fn $test() { super::$test(&make); } )*
        }
    };
}

/// A gateway's request (Envoy's rate limit service): counters and a resource's own bucket checked and
/// debited in one step, all or none; on a Cluster every key of the request shares the routed resource's
/// slot.
fn hits_are_counted_all_or_none_with_a_resource_bucket<S: Store>(make: &Make<S>) {
    use std::borrow::Cow;

    use quotad_server::engine::{
        Algorithm, LevelSpec, RateSpec,
        policy::{Hit, HitMode, HitPlan},
    };
    let h = Harness::new(RATE, make);
    let window = |limit: u64, mode: HitMode, key: &str| Hit {
        key: Cow::Owned(quotad_server::rls::counter_key(
            "api",
            "edge",
            &[("user", key)],
            &[None],
        )),
        spec: LevelSpec {
            rate: Some(
                RateSpec::new(limit, Duration::from_secs(60), limit)
                    .with_algorithm(Algorithm::FixedWindow),
            ),
            max_in_flight: None,
            shadow: mode == HitMode::Shadow,
            bypass: false,
        },
        permits: 1,
        mode,
        negative: false,
    };
    let bucket = Hit {
        key: Cow::Borrowed("api"),
        spec: LevelSpec {
            rate: Some(RateSpec::new(10, Duration::from_secs(1), 5)),
            max_in_flight: None,
            shadow: false,
            bypass: false,
        },
        permits: 1,
        mode: HitMode::Enforced,
        negative: false,
    };
    let plan = HitPlan {
        hits: [
            window(2, HitMode::Enforced, "a"),
            window(1, HitMode::Shadow, "s"),
            bucket.clone(),
        ]
        .into_iter()
        .collect(),
    };
    let hits = |p: &HitPlan<'_>| now(h.quota.hits(p)).expect("hits");
    let first = hits(&plan);
    assert!(!first.over);
    assert_eq!(
        first
            .statuses
            .iter()
            .map(|s| s.remaining)
            .collect::<Vec<_>>(),
        [1, 0, 4]
    );
    assert_eq!(first.statuses[0].reset_after, 60 * SEC);
    // The shadow counter is now over: it says so, and never refuses.
    let second = hits(&plan);
    assert!(!second.over && second.statuses[1].over);
    // The window is spent: the request is over, and the bucket is not debited.
    let third = hits(&plan);
    assert!(third.over && third.statuses[0].over);
    assert_eq!(third.statuses[2].remaining, 3);
    // The bucket is the resource's own: an Acquire sees what the hits took.
    let d = h.acquire("api", &[], 1);
    assert!(d.granted());
    assert_eq!(d.remaining, 2);
    let quota_plan = HitPlan {
        hits: [
            window(1, HitMode::Quota, "q1"),
            window(2, HitMode::Quota, "q2"),
        ]
        .into_iter()
        .map(|mut hit| {
            hit.permits = 2;
            hit
        })
        .collect(),
    };
    let q = hits(&quota_plan);
    assert!(!q.over, "q2 has room");
    assert_eq!((q.statuses[0].over, q.statuses[1].remaining), (true, 0));
    assert!(hits(&quota_plan).over, "every quota counter is over");
}

const EXPLAINED: &str = r#"
[[resources]]
name = "x"
rate = { limit = 10, period = "1s", burst = 3 }
concurrency = 2
lease_ttl = "60s"
max_pause = "30s"
breaker = { failure_rate = 1.0, min_calls = 100, window = "60s", open_duration = "5s", half_open_probes = 1, consecutive_failures = 2 }
adaptive = { decrease_factor = 0.5, floor = 0.1, cooldown = "1s" }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1, period = "1s", burst = 1 }
"#;

/// Explains an acquire twice (nothing may change between), then acquires: the acquire answers as explained.
fn explained_then_acquired<S: Store>(
    h: &Harness<S>,
    tenant: &str,
) -> (quotad_server::engine::Explanation, Decision) {
    let req = acq("x", &[("tenant", tenant)], 1);
    let e = now(h.quota.explain(&req)).expect("explain");
    assert_eq!(
        now(h.quota.explain(&req)).expect("explain"),
        e,
        "an explanation changes nothing"
    );
    let d = h.acquire_req(&req);
    match (&e.verdict, &d.verdict) {
        (None, Verdict::Granted(_)) => {}
        (
            Some((reason, wait, by)),
            Verdict::Denied {
                reason: r,
                retry_after,
                denied_by,
            },
        ) => {
            assert_eq!(
                (reason, wait, by),
                (r, retry_after, denied_by),
                "explained {e:?}"
            );
        }
        (v, _) => panic!("explained {v:?}, acquire answered {d:?}"),
    }
    (e, d)
}

fn explain_says_what_acquire_then_answers<S: Store>(make: &Make<S>) {
    let h = Harness::new(EXPLAINED, make);
    let (e, a) = explained_then_acquired(&h, "acme");
    assert_eq!((e.rule, e.levels.len()), ("x", 2));
    assert_eq!(
        (
            e.levels[0].label.as_str(),
            e.levels[0].state.tokens,
            e.levels[0].state.in_flight
        ),
        ("resource", Some(3), 0)
    );
    assert_eq!(
        (e.levels[1].label.as_str(), e.levels[1].state.tokens),
        ("tenant=acme", Some(1))
    );
    // The tenant's one token is gone: its level denies, for a second.
    let (e, _) = explained_then_acquired(&h, "acme");
    assert_eq!(
        e.verdict.as_ref().map(|v| (v.0, v.1)),
        Some((Denial::RateLimited, SEC))
    );
    assert_eq!(
        e.levels[0].denies, None,
        "the resource level alone would grant"
    );
    let (_, b) = explained_then_acquired(&h, "globex");
    // Two leases in flight: the concurrency limit denies a third tenant.
    let (e, _) = explained_then_acquired(&h, "initech");
    assert_eq!(
        e.verdict.as_ref().map(|v| (v.0, v.2.as_str())),
        Some((Denial::ConcurrencyLimited, "resource"))
    );
    assert_eq!(e.levels[0].state.in_flight, 2);
    // Two failures in a row open the breaker.
    h.release(lease(&a), Outcome::Failure, None);
    h.release(lease(&b), Outcome::Failure, None);
    h.advance(Duration::from_secs(1));
    let (e, _) = explained_then_acquired(&h, "hooli");
    assert_eq!(
        e.verdict.as_ref().map(|v| (v.0, v.1)),
        Some((Denial::CircuitOpen, 4 * SEC))
    );
    assert_eq!(e.circuit.breaker.state, BreakerState::Open);
    // A throttle report pauses it and halves the rate: the pause is checked first.
    let pause = report("x", ThrottleKind::Throttled, Some(Duration::from_secs(10)));
    now(h.quota.report(&Report {
        descriptors: vec![("tenant".into(), "hooli".into())],
        ..pause
    }))
    .expect("report");
    let (e, _) = explained_then_acquired(&h, "hooli");
    assert_eq!(
        e.verdict.as_ref().map(|v| (v.0, v.1, v.2.as_str())),
        Some((Denial::Paused, 10 * SEC, "pause"))
    );
    assert_eq!(
        e.levels[0].rate_per_second, 5.0,
        "the adaptive rate in force"
    );
    // After the pause the breaker is HALF_OPEN with one probe: granted, then the next is refused.
    h.advance(Duration::from_secs(11));
    let (e, probe) = explained_then_acquired(&h, "umbrella");
    assert!(e.verdict.is_none() && probe.granted());
    assert_eq!(e.circuit.breaker.state, BreakerState::HalfOpen);
    let (e, _) = explained_then_acquired(&h, "tyrell");
    assert_eq!(
        e.verdict.as_ref().map(|v| (v.0, v.2.as_str())),
        Some((Denial::CircuitOpen, "breaker"))
    );
    // Asking for more than a level can ever hold is refused as the acquire would refuse it.
    let too_many = now(h.quota.explain(&acq("x", &[("tenant", "acme")], 4)));
    assert!(
        matches!(too_many, Err(EngineError::FailedPrecondition(_))),
        "{too_many:?}"
    );
}

for_each_store!(
    shared: [
        a_shared_resource_admits_exactly_its_bound,
        a_final_grant_holds_nothing_and_its_release_changes_nothing,
        hits_are_counted_all_or_none_with_a_resource_bucket,
        a_bypassed_acquire_is_granted_counted_and_takes_no_tokens,
        priority_classes_keep_out_of_the_reserves_above_them,
        an_override_gives_one_value_its_own_limits,
        a_shadow_level_reports_what_it_would_deny_and_never_denies,
        a_fixed_window_admits_its_limit_per_aligned_window,
        a_sliding_window_weighs_the_previous_window,
        a_window_refunds_only_its_own_window,
        explain_says_what_acquire_then_answers,
        another_identitys_lease_is_refused_and_left_as_it_was,
        usage_pages_in_name_order_with_filters,
        one_release_cannot_lock_a_resource_for_centuries,
        settlement_charges_every_level_the_same_bounded_amount,
        rate_limit_denies_with_exact_retry_after,
        permits_above_burst_fail_fast,
        unknown_resource_is_named,
        glob_rules_give_each_name_its_own_state,
        multi_level_is_all_or_nothing,
        concurrency_leases_release_and_expire,
        leases_expire_in_ttl_order_whatever_order_they_were_granted,
        a_resource_with_only_partitions_is_listed,
        renew_extends_and_caps_and_refuses_expired,
        settle_refunds_and_charges,
        request_id_never_charges_twice,
        breaker_opens_probes_and_closes,
        breaker_reopens_longer_on_probe_failure,
        transitions_are_named_by_the_partitions_breaker,
        many_distinct_rules_each_keep_their_own_limit,
        exactly_n_half_open_probes_across_threads,
        throttle_reports_lower_rate_once_per_cooldown_and_recover,
        retry_after_pauses_the_fleet_capped,
        a_reported_lease_is_counted_once,
        reload_keeps_tokens_clamped_and_leases,
        revoke_frees_the_slot,
        sixty_four_threads_on_one_key_admit_exactly_the_bound,
        denial_carries_level_figures,
    ],
    memory: [
        the_sweep_forgets_request_ids_oldest_first,
        a_limited_sweep_reclaims_in_chunks,
        an_answer_at_once_is_the_same_answer,
        request_ids_beyond_the_cap_forget_the_oldest,
        caps_answer_resource_exhausted,
        a_transition_before_a_cap_refusal_is_counted,
        expiry_tombstones_are_forgotten_after_a_minute,
    ],
);

/// A fixed window's level key expires a second after its window ends: set by the window's first write, left
/// alone by the writes after it in the same window (which write the count alone), set again by the next
/// window's.
#[test]
fn redis_a_fixed_window_key_expires_after_its_window() {
    let h = Harness::new(
        "[[resources]]\nname = \"win\"\nrate = { limit = 100, period = \"1m\", algorithm = \"fixed_window\" }\n",
        &|_: &Rules| common::redis_store(&[redis().url()]),
    );
    let key = || {
        let keys = redis().cli(&["KEYS", "*}L3:win"]);
        assert_eq!(keys.lines().count(), 1, "one level: {keys}");
        keys.trim().to_owned()
    };
    let ttl = || -> u64 { redis().cli(&["PTTL", &key()]).trim().parse().unwrap() };
    h.advance(Duration::from_secs(10));
    assert!(h.acquire("win", &[], 1).granted());
    let first = ttl();
    assert!(
        (45_000..=51_000).contains(&first),
        "50 s left in the window, and a second: {first} ms"
    );
    assert!(h.acquire("win", &[], 2).granted());
    assert_eq!(redis().cli(&["HGET", &key(), "count"]).trim(), "3");
    assert!(ttl() <= first, "not pushed within the window");
    h.advance(Duration::from_secs(60));
    assert!(h.acquire("win", &[], 1).granted());
    assert_eq!(redis().cli(&["HGET", &key(), "count"]).trim(), "1");
    let next = ttl();
    assert!(
        (45_000..=51_000).contains(&next),
        "the next window's: {next} ms"
    );
}

/// A bucket of final grants keeps a TTL (pushed a minute ahead at a time, not on every grant) and no lease
/// key: what expires it is the same as for any bucket, a second past full, give or take that minute.
#[test]
fn redis_a_final_bucket_keeps_a_ttl_and_no_lease() {
    let h = Harness::new(
        "[[resources]]\nname = \"lean\"\nrate = { limit = 1, period = \"1s\", burst = 100 }\nsettlement = false\n",
        &|_: &Rules| {
            common::redis_store_with(&[redis().url()], &RedisSettings::default(), Some("lean:"))
        },
    );
    for _ in 0..50 {
        assert!(h.acquire("lean", &[], 1).granted());
    }
    let keys = redis().cli(&["KEYS", "lean:*}L4:lean"]);
    let key = keys.trim();
    let ttl: u64 = redis().cli(&["PTTL", key]).trim().parse().unwrap();
    assert!(
        (51_000..=111_000).contains(&ttl),
        "50 s to full, a second, and up to a minute ahead: {ttl} ms"
    );
    assert!(!redis().cli(&["HGET", key, "kept"]).trim().is_empty());
    assert_eq!(
        redis().cli(&["KEYS", "lean:*}l:*"]).trim(),
        "",
        "no lease stored"
    );
}

/// Calls of one shard made while one is in flight go to Redis together: 64 threads acquiring and releasing
/// at once take fewer Redis calls than decisions, and every answer is each call's own (the bound is exact,
/// every grant's lease releases once).
#[test]
fn redis_concurrent_calls_share_batches_and_stay_exact() {
    let h = Arc::new(Harness::new(
        "[[resources]]\nname = \"busy\"\nrate = { limit = 1, period = \"1h\", burst = 1000 }\n\
         [[resources]]\nname = \"busy.final\"\nrate = { limit = 1, period = \"1h\", burst = 1000 }\n\
         settlement = false\n",
        &|_: &Rules| common::redis_store(&[redis().url()]),
    ));
    let before = h.quota.store().health().unwrap().calls;
    let (granted, released) = thread::scope(|s| {
        let workers: Vec<_> = (0..64)
            .map(|_| {
                let h = h.clone();
                s.spawn(move || {
                    let (mut granted, mut released) = (0, 0);
                    for i in 0..40 {
                        let resource = if i % 2 == 0 { "busy" } else { "busy.final" };
                        let d = h.acquire(resource, &[], 1);
                        if let Some(g) = d.grant() {
                            granted += 1;
                            let r = h.release(g.lease_id, Outcome::Success, None);
                            released += usize::from(r.result.is_ok());
                        }
                    }
                    (granted, released)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    assert_eq!(granted, 2000, "1,000 of each: every burst taken, none more");
    assert_eq!(released, granted, "each grant's own lease, released once");
    let calls = h.quota.store().health().unwrap().calls - before;
    // 2,560 acquires and 2,000 releases (a release of a final grant asks nothing of Redis).
    assert!(
        calls < 2560 + 1000,
        "{calls} Redis calls for 3,560 that needed one"
    );
}

/// One call of a batch that fails answers its error in its place; the others run and answer as alone.
#[test]
fn redis_a_failing_call_in_a_batch_fails_alone() {
    let h = Harness::new(RATE, &|_: &Rules| {
        common::redis_store_with(&[redis().url()], &RedisSettings::default(), Some("batch:"))
    });
    assert!(h.acquire("api", &[], 1).granted(), "loads the library");
    let list = redis().cli(&["FUNCTION", "LIST"]);
    let function = list
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("quotad_") && !l.ends_with("_end"))
        .expect("the library's function")
        .to_owned();
    let key = redis().cli(&["KEYS", "batch:*L3:api"]);
    // A step the library does not have between two `ref` steps (which read the shard's levels), then one
    // the `_end` function would refuse: each answers on its own.
    let out = redis().cli(&[
        "FCALL",
        &function,
        "1",
        &key,
        "batch",
        "3",
        "0",
        "3",
        "0",
        "3",
        "1",
        "3",
        "ref",
        "",
        "batch:{q0}",
        "nope",
        "",
        "batch:{q0}",
        "ref",
        "",
        "batch:{q0}",
    ]);
    let lines: Vec<&str> = out.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        lines.iter().any(|l| l.contains("unknown step nope")),
        "the failing call's error: {out}"
    );
    assert_eq!(
        lines,
        ["0", "quotad: unknown step nope", "1"],
        "three answers: {out}"
    );
    let end = redis().cli(&[
        "FCALL",
        &format!("{function}_end"),
        "0",
        "batch",
        "1",
        "0",
        "3",
        "acq",
        "",
        "batch:{q0}",
    ]);
    assert!(end.contains("may grow memory"), "{end}");
}

/// A resource's live-lease count (its Redis hash, what listings show) outlives leases that stay live for
/// days: each Acquire keeps the hash at least a day, re-extending it when less than 23 hours are left (a
/// day after its first lease it used to expire, however many leases were still live).
#[test]
fn redis_a_resource_lease_count_outlives_its_leases() {
    let h = Harness::new(
        "[[resources]]\nname = \"count-ttl\"\nconcurrency = 10\nlease_ttl = \"40h\"\n",
        &|_: &Rules| common::redis_store(&[redis().url()]),
    );
    let live = || {
        let query = UsageQuery {
            prefix: "count-ttl",
            ..UsageQuery::ALL
        };
        let page = now(h.quota.usage_page(&query)).unwrap();
        page.resources.first().map_or(0, |r| r.live_leases)
    };
    let key = || {
        let keys = redis().cli(&["KEYS", "*}R9:count-ttl"]);
        assert_eq!(keys.lines().count(), 1, "one count hash: {keys}");
        keys
    };
    let ttl = || -> u64 { redis().cli(&["PTTL", &key()]).parse().unwrap() };
    let kept = || redis().cli(&["HGET", &key(), "kept"]);
    let first = h.acquire("count-ttl", &[], 1);
    assert!(first.granted());
    assert!(
        ttl() > 39 * 3_600_000,
        "kept past the lease's hold: {} ms",
        ttl()
    );
    // An hour later the TTL still covers the next lease: it is not pushed again (one PEXPIRE a day).
    let pushed = kept();
    h.advance(Duration::from_secs(3600));
    let second = h.acquire("count-ttl", &[], 1);
    assert!(second.granted());
    assert_eq!(kept(), pushed, "not pushed again within the day");
    for d in [&first, &second] {
        h.release(lease(d), Outcome::Success, None);
    }
    assert_eq!(
        redis().cli(&["KEYS", "*}R9:count-ttl"]).trim(),
        "",
        "with no lease live the count hash goes"
    );
    assert!(h.acquire("count-ttl", &[], 1).granted());
    // 39 hours later (Redis told so by cutting the TTL to what would be left), the lease still live:
    // the next Acquire extends the hash again, so the count is still there when the second lease ends.
    h.advance(Duration::from_secs(39 * 3600));
    assert_eq!(redis().cli(&["PEXPIRE", &key(), "3600000"]), "1");
    assert!(h.acquire("count-ttl", &[], 1).granted());
    assert!(ttl() > 39 * 3_600_000, "extended again: {} ms", ttl());
    assert_eq!(live(), 2);
}

/// A burst of one resource's leases expiring lands in one shard (a resource's keys share one): the sweep
/// then reads that shard alone, 32 leases a call, instead of all 64 shards for every 8 leases it gives back;
/// and every shard is still read at least every 500 ms, so one flooded shard cannot hold up the others.
#[test]
fn redis_a_backlog_of_expired_leases_is_swept_in_few_calls() {
    let toml = "[[resources]]\nname = \"burst\"\nconcurrency = 5000\nlease_ttl = \"1s\"\n\
                [[resources]]\nname = \"other.*\"\nconcurrency = 5\nlease_ttl = \"1s\"\n";
    for urls in [vec![redis().url()], cluster().urls()] {
        let h = Harness::new(toml, &|_: &Rules| common::redis_store(&urls));
        let mut leases = std::collections::HashSet::new();
        for _ in 0..1000 {
            leases.insert(lease(&h.acquire("burst", &[], 1)));
        }
        h.advance(Duration::from_secs(2));
        let (mut calls, mut swept) = (0, std::collections::HashSet::new());
        let mut others = std::collections::HashSet::new();
        loop {
            let sweep = now(h.quota.sweep_some(512)).unwrap();
            calls += 1;
            swept.extend(sweep.expired.iter().map(|e| e.lease_id));
            if calls == 2 {
                // Mid-backlog, leases of other resources (other shards) expire, and 500 ms pass.
                for i in 0..8 {
                    others.insert(lease(&h.acquire(&format!("other.{i}"), &[], 1)));
                }
                h.advance(Duration::from_secs(2));
            }
            if calls == 3 {
                let other: std::collections::HashSet<_> =
                    sweep.expired.iter().map(|e| e.lease_id).collect();
                assert!(others.is_subset(&other), "the next call read every shard");
                assert!(sweep.more, "while the burst's backlog was still there");
            }
            if !sweep.more {
                break;
            }
            assert!(calls < 100, "the sweep does not end");
        }
        leases.extend(others);
        assert_eq!(swept, leases, "every expired lease reclaimed once");
        // Every shard read on the first and third calls (8 or 16 leases from each); else 32 a call.
        assert!(
            calls <= 3 + 1000 / 32,
            "{calls} calls for 1,000 leases in one shard"
        );
        assert!(h.acquire("burst", &[], 1).granted());
    }
}

const LAYOUT: &str = r#"
[[resources]]
name = "layout"
rate = { limit = 10, period = "1s" }
concurrency = 5
breaker = { min_calls = 1000, consecutive_failures = 2, open_duration = "5s" }
"#;

/// The field names of the hash at `key`.
fn stored_fields(key: &str) -> Vec<String> {
    let flat = redis().cli(&["HGETALL", key]);
    let mut fields: Vec<String> = flat.lines().step_by(2).map(str::to_owned).collect();
    fields.sort();
    fields
}

/// A store of this version with `layout = "compact"` writes the field names earlier versions wrote and read
/// (a rolling upgrade from one runs with it); the default store reads that state as it stands (a lease, a
/// level, a breaker) and rewrites what it changes with readable names.
#[test]
fn redis_state_written_in_the_compact_layout_is_read_by_the_readable_one() {
    let (url, prefix) = ([redis().url()], "layout-upgrade:");
    let keys = quotad_server::engine::redis::Keys::new(prefix);
    let compact = RedisSettings {
        layout: RedisLayout::Compact,
        ..RedisSettings::default()
    };
    let old = Harness::new(LAYOUT, &|_: &Rules| {
        common::redis_store_with(&url, &compact, Some(prefix))
    });
    let leases: Vec<_> = (0..3)
        .map(|_| lease(&old.acquire("layout", &[], 2)))
        .collect();
    old.release(leases[0], Outcome::Failure, None);
    old.release(leases[1], Outcome::Failure, None);
    let as_before = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        stored_fields(&keys.level("layout")),
        as_before(&["b", "f", "i", "t"])
    );
    let lease_fields = stored_fields(&keys.lease(leases[2]));
    for needed in [
        "res", "rule", "dt", "mt", "cid", "own", "p", "x", "lv", "rk", "bk", "bs",
    ] {
        assert!(
            lease_fields.iter().any(|f| f == needed),
            "{needed} missing from {lease_fields:?}"
        );
    }
    assert!(stored_fields(&keys.breaker("layout")).contains(&"ph".to_owned()));

    let new = Harness::new(LAYOUT, &|_: &Rules| {
        common::redis_store_with(&url, &RedisSettings::default(), Some(prefix))
    });
    let e = now(new.quota.explain(&acq("layout", &[], 1))).expect("explain");
    assert_eq!(
        (e.levels[0].state.tokens, e.levels[0].state.in_flight),
        (Some(4), 1)
    );
    assert_eq!(
        e.circuit.breaker.state,
        BreakerState::Open,
        "two failures in a row"
    );
    assert_eq!(e.verdict.as_ref().map(|v| v.0), Some(Denial::CircuitOpen));
    let released = new.release(leases[2], Outcome::Success, Some(1));
    assert_eq!(
        (released.result, released.refunded),
        (Ok(()), 1),
        "the lease read as granted"
    );
    assert_eq!(
        stored_fields(&keys.level("layout")),
        as_before(&["burst", "in_flight", "interval", "tat"])
    );
    new.advance(Duration::from_secs(5));
    assert!(
        new.acquire("layout", &[], 1).granted(),
        "the breaker's open period read as written"
    );
}

/// Both layouts' field names, of every hash, are distinct: the script reads a stored name back to one field.
#[test]
fn stored_field_names_are_unambiguous() {
    use quotad_server::engine::redis::protocol::stored;
    let mut seen = std::collections::HashMap::new();
    for (_, fields) in stored::ALL {
        for &(name, old) in fields {
            for stored in [name, old] {
                let before = seen.insert(stored, name);
                assert!(
                    before.is_none_or(|b| b == name),
                    "{stored} names {before:?} and {name}"
                );
            }
        }
    }
}

/// A Redis at its `maxmemory` (policy noeviction) refuses every step that could grow it: an Acquire is
/// answered as `on_store_error` says (here the default, fail_closed: UNAVAILABLE naming maxmemory) and
/// counted as a `full` store error. The leases it already holds can still be released, renewed, revoked
/// and swept (the library's `allow-oom` function), so their slots are free the moment Redis has room again
/// instead of held until each expires and a sweep can run.
#[test]
fn redis_a_full_redis_still_ends_leases() {
    let server = common::redis_server::RedisServer::start();
    let h = Harness::new(
        "[[resources]]\nname = \"full\"\nconcurrency = 4\nlease_ttl = \"10s\"\n",
        &|_: &Rules| common::redis_store(&[server.url()]),
    );
    let ids: Vec<_> = (0..4).map(|_| lease(&h.acquire("full", &[], 1))).collect();
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1"]), "OK");
    let refused = now(h.quota.acquire(&acq("full", &[], 1)));
    assert!(
        matches!(refused, Err(EngineError::Unavailable(ref m)) if m.contains("maxmemory")),
        "{refused:?}"
    );
    let health = h
        .quota
        .store()
        .health()
        .expect("the Redis store reports health");
    assert!(health.errors.contains(&("full", 1)), "{:?}", health.errors);
    // Each ending step runs on the full Redis.
    assert_eq!(h.release(ids[0], Outcome::Success, None).result, Ok(()));
    now(h.quota.renew(&Renew {
        caller: None,
        lease_id: ids[1],
        lease_ttl: Some(Duration::from_secs(60)),
    }))
    .expect("renewed on a full Redis");
    assert!(now(h.quota.revoke(ids[2])).expect("revoked on a full Redis"));
    // That function runs nothing else (nothing that could grow a full Redis).
    let functions = server.cli(&["FUNCTION", "LIST"]);
    let ending = functions
        .lines()
        .find(|l| l.starts_with("quotad_") && l.ends_with("_end"))
        .unwrap_or_else(|| panic!("no _end function: {functions}"));
    let acq_there = server.cli(&["FCALL", ending, "0", "acq"]);
    assert!(acq_there.contains("may grow memory"), "{acq_there}");
    h.advance(Duration::from_secs(11));
    let swept = now(h.quota.sweep_some(100)).expect("swept on a full Redis");
    let swept: Vec<_> = swept.expired.iter().map(|e| e.lease_id).collect();
    assert_eq!(swept, vec![ids[3]], "the one lease left to expire");
    assert_eq!(
        server.cli(&["CONFIG", "GET", "maxmemory"]).lines().nth(1),
        Some("1"),
        "still full"
    );
    // Room again: once the node tries Redis again (a failed call marks it down for a second), three slots
    // are free (the renewed lease holds the fourth).
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "0"]), "OK");
    std::thread::sleep(Duration::from_millis(1100));
    for i in 0..3 {
        assert!(h.acquire("full", &[], 1).granted(), "slot {i}");
    }
    assert_eq!(
        h.acquire("full", &[], 1).denial(),
        Some(Denial::ConcurrencyLimited)
    );
}

/// A Redis with a memory limit and an evicting policy would drop quotad's keys when full, silently: the store
/// reads the policy (at start and every minute) and says so in its health (`quotad_store_evicting`).
#[test]
fn redis_an_evicting_policy_is_noticed() {
    let server = common::redis_server::RedisServer::start();
    let store = common::redis_store(&[server.url()]);
    let check = |store: &RedisStore| {
        common::background().block_on(store.check_eviction(true));
        let health = store.health().expect("the Redis store reports health");
        assert_eq!(health.evicting, store.is_evicting());
        store.is_evicting()
    };
    assert!(!check(&store), "no maxmemory: nothing is evicted");
    assert_eq!(
        server.cli(&["CONFIG", "SET", "maxmemory-policy", "volatile-lru"]),
        "OK"
    );
    assert!(!check(&store), "a policy without a limit evicts nothing");
    assert_eq!(server.cli(&["CONFIG", "SET", "maxmemory", "1gb"]), "OK");
    assert!(
        check(&store),
        "volatile-lru with a limit evicts quotad's keys (all have a TTL)"
    );
    assert_eq!(
        server.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]),
        "OK"
    );
    assert!(!check(&store));
    // In a Cluster, any primary that would evict counts (a limit of 1 GB: these tests never reach it).
    let store = common::redis_store(&cluster().urls());
    assert!(!check(&store));
    let node = &cluster().nodes[2];
    node.cli(&["CONFIG", "SET", "maxmemory", "1gb"]);
    node.cli(&["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let seen = check(&store);
    node.cli(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    node.cli(&["CONFIG", "SET", "maxmemory", "0"]);
    assert!(seen, "one primary of three evicts");
}

/// Three nodes (stores) granting one bucket from slices at once admit exactly its burst between them: a
/// slice is taken before it is granted, and what a node still holds when its time is up goes back (here
/// by the sweep), so nothing is lost either.
#[test]
fn redis_nodes_sharing_one_bucket_admit_exactly_its_burst_and_give_back_the_rest() {
    const TOML: &str = "[[resources]]\nname = \"hot\"\nrate = { limit = 1, period = \"1h\", burst = 600 }\n\
                        local_share = { max_fraction = 0.1, ttl = \"100ms\" }\n";
    let nodes: Vec<_> = (0..3)
        .map(|_| {
            Arc::new(Harness::new(TOML, &|_: &Rules| {
                common::redis_store_with(
                    &[redis().url()],
                    &RedisSettings::default(),
                    Some("share:"),
                )
            }))
        })
        .collect();
    let granted: usize = thread::scope(|s| {
        let workers: Vec<_> = (0..12)
            .map(|i| {
                let h = nodes[i % 3].clone();
                // Uneven: node 0 has six workers, node 1 four, node 2 two.
                let n = [6, 4, 2][i % 3];
                s.spawn(move || {
                    if i / 3 >= n / 2 {
                        return 0;
                    }
                    (0..150)
                        .filter(|_| h.acquire("hot", &[], 1).granted())
                        .count()
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert!(granted <= 600, "never past the burst: {granted}");
    // Each node's slice, its time up, goes back with the sweep (a fraction of a permit refills meanwhile).
    let mut given = 0;
    for h in &nodes {
        h.advance(Duration::from_millis(200));
        now(h.quota.sweep_some(512)).unwrap();
        given += h.quota.store().health().unwrap().shares.given_back;
    }
    let after = (0..700)
        .filter(|_| nodes[0].acquire("hot", &[], 1).granted())
        .count();
    assert_eq!(
        granted + after,
        600,
        "exactly the burst: {granted} + {after}; given back {given}"
    );
    let slices: u64 = nodes
        .iter()
        .map(|h| h.quota.store().health().unwrap().shares.slices)
        .sum();
    assert!(slices >= 3, "the nodes took slices: {slices}");
}

/// A node remembers the request_ids it granted from slices up to `capacity.max_request_ids`; past that, a
/// request is one Redis step and Redis remembers it: every retry replays its grant, none is charged twice.
#[test]
fn redis_request_ids_past_a_nodes_cap_are_remembered_by_redis() {
    let h = Harness::new(
        "[capacity]\nmax_request_ids = 2\n[[resources]]\nname = \"hot\"\n\
         rate = { limit = 1, period = \"1h\", burst = 10 }\nlocal_share = { max_fraction = 0.5 }\n",
        &|_: &Rules| common::redis_store(&[redis().url()]),
    );
    let req = |id: &str| Acquire {
        request_id: Some(id.into()),
        ..acq("hot", &[], 1)
    };
    let first: Vec<_> = ["a", "b", "c", "d"]
        .iter()
        .map(|id| lease(&h.acquire_req(&req(id))))
        .collect();
    for (id, lease_id) in ["a", "b", "c", "d"].iter().zip(&first) {
        let again = h.acquire_req(&req(id));
        assert_eq!(lease(&again), *lease_id, "{id}");
        assert!(again.grant().unwrap().replayed, "{id}");
    }
    let mut left = 0;
    while h.acquire("hot", &[], 1).granted() {
        left += 1;
    }
    assert_eq!(left, 10 - 4, "four charged once each");
}

/// The same request_id sent by many callers at once to one node granting from slices (a client retrying
/// while its first try still waits for the node's take): one grant, replayed to all, charged once.
#[test]
fn redis_one_request_id_at_once_on_a_sliced_node_is_charged_once() {
    let h = Arc::new(Harness::new(
        "[[resources]]\nname = \"hot\"\nrate = { limit = 1, period = \"1h\", burst = 100 }\n\
         local_share = { max_fraction = 0.5 }\n",
        &|_: &Rules| common::redis_store(&[redis().url()]),
    ));
    for round in 0..8 {
        let req = Acquire {
            request_id: Some(format!("same-{round}")),
            ..acq("hot", &[], 2)
        };
        let leases: Vec<LeaseId> = thread::scope(|s| {
            let callers: Vec<_> = (0..16)
                .map(|_| {
                    let (h, req) = (h.clone(), req.clone());
                    s.spawn(move || lease(&h.acquire_req(&req)))
                })
                .collect();
            callers.into_iter().map(|c| c.join().unwrap()).collect()
        });
        assert!(
            leases.iter().all(|l| *l == leases[0]),
            "one grant: {leases:?}"
        );
    }
    let mut left = 0;
    while h.acquire("hot", &[], 1).granted() {
        left += 1;
    }
    assert_eq!(left, 100 - 8 * 2, "each request_id charged once");
}
