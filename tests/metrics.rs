//! `/metrics` end-to-end: known traffic over gRPC, then a scrape whose counters, gauges and labels are
//! checked exactly. Decisions run on a fake clock; nothing sleeps.

use std::{sync::Arc, time::Duration};

use quotad_api::v1 as pb;
use quotad_e2e::TestServer;
use quotad_server::clock::FakeClock;

const CONFIG: &str = r#"
[[resources]]
name = "api"
rate = { limit = 2, period = "1s", burst = 2 }

[[resources]]
name = "jobs"
concurrency = 2
lease_ttl = "10s"
breaker = { failure_rate = 1.0, min_calls = 100, window = "10s", open_duration = "5s", half_open_probes = 1, consecutive_failures = 1 }

[[resources]]
name = "llm"
rate = { limit = 100, period = "1s", burst = 100 }
adaptive = { decrease_factor = 0.5, floor = 0.1, cooldown = "1s" }
max_pause = "30s"

[[resources]]
name = "partner.*"
rate = { limit = 1000, period = "1s", burst = 1000 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 10 }
"#;

fn acquire(resource: &str) -> pb::AcquireRequest {
    pb::AcquireRequest {
        resource: resource.into(),
        ..Default::default()
    }
}

/// The value of the sample `line_start` (name and labels exactly as exposed).
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn counters_and_gauges_after_known_traffic() {
    let clock = Arc::new(FakeClock::new());
    let server = TestServer::start(CONFIG, clock.clone()).await;
    let mut c = server.quota().await;

    // api: burst 2, so 2 grants then a rate denial; a retried request_id is replayed, not charged.
    let mut leases = Vec::new();
    for _ in 0..2 {
        let r = c.acquire(acquire("api")).await.unwrap().into_inner();
        assert!(r.granted);
        leases.push(r.lease_id);
    }
    let r = c.acquire(acquire("api")).await.unwrap().into_inner();
    assert_eq!(r.decision(), pb::Decision::RateLimited);

    // jobs: a grant replayed by request_id, a second grant, then concurrency denial.
    let with_id = pb::AcquireRequest {
        request_id: "job-1".into(),
        ..acquire("jobs")
    };
    let first = c.acquire(with_id.clone()).await.unwrap().into_inner();
    let again = c.acquire(with_id).await.unwrap().into_inner();
    assert_eq!(first.lease_id, again.lease_id);
    let second = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    let r = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    assert_eq!(r.decision(), pb::Decision::ConcurrencyLimited);

    // Releases: success with a settle refund (1 token acquired, 0 used), a failure that opens the breaker
    // (consecutive_failures = 1), and a second release of the same lease (a no-op).
    let release = |lease_id: &str, outcome: pb::Outcome, used: Option<u64>| pb::ReleaseRequest {
        lease_id: lease_id.into(),
        outcome: outcome as i32,
        used_permits: used,
    };
    c.release(release(&leases[0], pb::Outcome::Success, Some(0)))
        .await
        .unwrap();
    c.release(release(&first.lease_id, pb::Outcome::Failure, None))
        .await
        .unwrap();
    let r = c
        .release(release(&first.lease_id, pb::Outcome::Success, None))
        .await
        .unwrap()
        .into_inner();
    assert!(!r.released);
    let r = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    assert_eq!(r.decision(), pb::Decision::CircuitOpen);

    // llm: a throttle report with a retry-after lowers the rate and pauses grants.
    c.report_throttle(pb::ReportThrottleRequest {
        resource: "llm".into(),
        kind: pb::ThrottleKind::Throttled as i32,
        retry_after: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = c.acquire(acquire("llm")).await.unwrap().into_inner();
    assert_eq!(r.decision(), pb::Decision::Paused);

    // Bad requests are counted by reason and field.
    assert!(c.acquire(acquire("")).await.is_err());
    assert!(c.acquire(acquire("no.such")).await.is_err());

    // The second jobs lease expires unreleased; the sweep reclaims it.
    clock.advance(Duration::from_secs(11));
    let swept = server.quotad.quota().sweep().await.unwrap();
    assert!(
        swept
            .expired
            .iter()
            .any(|e| e.lease_id.to_string() == second.lease_id)
    );

    let m = server.scrape().await;
    let acquires = |res: &str, d: &str| {
        value(
            &m,
            &format!("quotad_acquires_total{{resource=\"{res}\",decision=\"{d}\"}}"),
        )
    };
    assert_eq!(acquires("api", "granted"), 2.0);
    assert_eq!(acquires("api", "rate_limited"), 1.0);
    assert_eq!(acquires("api", "paused"), 0.0);
    assert_eq!(
        acquires("jobs", "granted"),
        3.0,
        "the replay is an answer too"
    );
    assert_eq!(acquires("jobs", "concurrency_limited"), 1.0);
    assert_eq!(acquires("jobs", "circuit_open"), 1.0);
    assert_eq!(acquires("llm", "paused"), 1.0);
    assert_eq!(
        value(&m, "quotad_idempotent_replays_total{resource=\"jobs\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_releases_total{resource=\"api\",outcome=\"success\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_releases_total{resource=\"jobs\",outcome=\"failure\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_release_noops_total{reason=\"already_released\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "quotad_settle_refunded_tokens_total{resource=\"api\"}"),
        1.0
    );
    assert_eq!(
        value(&m, "quotad_lease_expiries_total{resource=\"jobs\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_throttle_reports_total{resource=\"llm\",kind=\"throttled\"}"
        ),
        1.0
    );
    assert_eq!(
        value(&m, "quotad_adaptive_rate_decreases_total{resource=\"llm\"}"),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_breaker_transitions_total{resource=\"jobs\",from=\"closed\",to=\"open\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_request_errors_total{rpc=\"Acquire\",reason=\"invalid_argument\",field=\"resource\"}"
        ),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_request_errors_total{rpc=\"Acquire\",reason=\"unknown_resource\",field=\"\"}"
        ),
        1.0
    );
    // Every Acquire call is timed, errors included.
    assert_eq!(
        value(&m, "quotad_request_duration_seconds_count{rpc=\"Acquire\"}"),
        11.0
    );
    assert_eq!(
        value(
            &m,
            "quotad_request_duration_seconds_bucket{rpc=\"Acquire\",le=\"+Inf\"}"
        ),
        11.0
    );
    assert_eq!(
        value(&m, "quotad_request_duration_seconds_count{rpc=\"Release\"}"),
        3.0
    );

    // Gauges. At the fake clock's now (11 s later) api's bucket has refilled to its burst.
    assert_eq!(value(&m, "quotad_leases_in_flight{resource=\"api\"}"), 1.0);
    assert_eq!(value(&m, "quotad_leases_in_flight{resource=\"jobs\"}"), 0.0);
    assert_eq!(
        value(&m, "quotad_concurrency_limit{resource=\"jobs\"}"),
        2.0
    );
    assert_eq!(value(&m, "quotad_tokens_available{resource=\"api\"}"), 2.0);
    assert_eq!(
        value(&m, "quotad_rate_configured_per_second{resource=\"llm\"}"),
        100.0
    );
    assert_eq!(
        value(&m, "quotad_rate_effective_per_second{resource=\"llm\"}"),
        50.0
    );
    assert_eq!(value(&m, "quotad_paused{resource=\"llm\"}"), 1.0);
    assert_eq!(
        value(
            &m,
            "quotad_breaker_state{resource=\"jobs\",state=\"half_open\"}"
        ),
        1.0,
        "open for 5 s, 11 s ago"
    );
    assert_eq!(
        value(&m, "quotad_breaker_state{resource=\"jobs\",state=\"open\"}"),
        0.0
    );
    assert_eq!(value(&m, "quotad_config_version"), 1.0);
    assert_eq!(value(&m, "quotad_request_ids"), 1.0, "job-1 is remembered");
    assert_eq!(value(&m, "quotad_request_ids_dropped_total"), 0.0);
    assert!(m.contains("quotad_build_info{version=\""));
    // Every family has help and a type.
    for family in [
        "quotad_acquires_total",
        "quotad_request_duration_seconds",
        "quotad_breaker_state",
        "quotad_live_keys",
    ] {
        assert!(m.contains(&format!("# HELP {family} ")), "{family}");
        assert!(m.contains(&format!("# TYPE {family} ")), "{family}");
    }
}

/// A shadow level never denies: the answer names what it would have denied, the scrape counts it by level
/// (never by value), and the status page lists the heaviest values.
#[tokio::test]
async fn shadow_denials_are_answered_counted_and_shown() {
    let config = "[[resources]]\nname = \"trial\"\nrate = { limit = 100, period = \"1s\" }\n\
                  [[resources.partitions]]\ndescriptor = \"tenant\"\n\
                  rate = { limit = 1, period = \"1m\", algorithm = \"fixed_window\" }\nshadow = true\n";
    let server = TestServer::start(config, Arc::new(FakeClock::new())).await;
    let mut c = server.quota().await;
    let mut shadowed = Vec::new();
    for _ in 0..3 {
        let r = c
            .acquire(pb::AcquireRequest {
                resource: "trial".into(),
                descriptors: [("tenant".to_owned(), "acme".to_owned())].into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.granted, "a shadow level never denies");
        shadowed.push(r.shadow_denied_by);
    }
    assert_eq!(shadowed, ["", "tenant=acme", "tenant=acme"]);
    let text = server.scrape().await;
    assert_eq!(
        value(
            &text,
            "quotad_shadow_denials_total{resource=\"trial\",rule=\"tenant\"}"
        ),
        2.0
    );
    assert!(!text.contains("acme"), "no value in a label");
    let (_, status) = server.http_get("/status.json").await;
    assert!(
        status.contains("\"shadow_denied\":[{\"by\":\"tenant=acme\",\"denials\":2}]"),
        "{status}"
    );
}

#[tokio::test]
async fn labels_never_carry_descriptor_values() {
    let clock = Arc::new(FakeClock::new());
    let server = TestServer::start(CONFIG, clock).await;
    let before = server.scrape().await;
    let series = |text: &str| text.lines().filter(|l| !l.starts_with('#')).count();

    // 10,000 distinct tenants over 20 resources of one glob rule (500 each, within its burst), from 8
    // concurrent callers.
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let mut c = server.quota().await;
        tasks.push(tokio::spawn(async move {
            for i in (worker..10_000).step_by(8) {
                let r = c
                    .acquire(pb::AcquireRequest {
                        resource: format!("partner.p{}", i % 20),
                        descriptors: [("tenant".to_owned(), format!("tenant-{i}"))].into(),
                        client_id: format!("client-{i}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert!(r.granted);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let after = server.scrape().await;
    assert_eq!(
        value(
            &after,
            "quotad_acquires_total{resource=\"partner.*\",decision=\"granted\"}"
        ),
        10_000.0
    );
    assert_eq!(
        value(&after, "quotad_leases_in_flight{resource=\"partner.*\"}"),
        10_000.0
    );
    for needle in ["tenant-", "client-", "partner.p"] {
        assert!(!after.contains(needle), "{needle} leaked into a label");
    }
    // The same series as before any traffic: the label sets are fixed by the config.
    assert_eq!(series(&after), series(&before));
}

#[tokio::test]
async fn the_endpoint_serves_only_metrics_and_can_be_turned_off() {
    let clock = Arc::new(FakeClock::new());
    let server = TestServer::start(CONFIG, clock.clone()).await;
    assert_eq!(server.http_get("/").await.0, 302, "to the status page");
    assert_eq!(server.http_get("/nope").await.0, 404);

    let off = format!("[metrics]\nenabled = false\n{CONFIG}");
    let server = TestServer::start(&off, clock).await;
    assert!(server.metrics_addr.is_none() && server.quotad.metrics().is_none());
    let r = server
        .quota()
        .await
        .acquire(acquire("api"))
        .await
        .unwrap()
        .into_inner();
    assert!(r.granted, "serving is unaffected");
}

/// The status page's JSON after known traffic (the browser test, scripts/check-status-page.sh, drives the
/// page itself), its assets, and what it refuses.
#[tokio::test]
async fn the_status_page_and_its_json() {
    let clock = Arc::new(FakeClock::new());
    let server = TestServer::start(CONFIG, clock.clone()).await;
    let mut c = server.quota().await;
    for _ in 0..3 {
        c.acquire(acquire("api")).await.unwrap();
    }
    c.report_throttle(pb::ReportThrottleRequest {
        resource: "llm".into(),
        retry_after: Some(prost_types::Duration {
            seconds: 10,
            nanos: 0,
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    let (status, body) = server.http_get("/status.json?prefix=").await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let find = |name: &str| {
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not listed: {body}"))
    };
    let api = find("api");
    assert_eq!(
        (api["tokens_available"].as_u64(), api["burst"].as_u64()),
        (Some(0), Some(2))
    );
    let llm = find("llm");
    assert_eq!(
        llm["pause_left_ms"], 10_000,
        "paused for the reported retry-after"
    );
    assert_eq!(llm["effective_rate_per_second"], 50.0);
    assert_eq!(v["config_version"], 1);
    assert_eq!(v["rules"].as_array().unwrap().len(), 4);

    // The heaviest partition values by denials, and breaker transitions with their reasons.
    let tenant = |t: &str| pb::AcquireRequest {
        resource: "partner.stripe".into(),
        descriptors: [("tenant".to_owned(), t.to_owned())].into(),
        ..Default::default()
    };
    for _ in 0..13 {
        c.acquire(tenant("acme")).await.unwrap();
    }
    for _ in 0..11 {
        c.acquire(tenant("globex")).await.unwrap();
    }
    let job = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    c.release(pb::ReleaseRequest {
        lease_id: job.lease_id,
        outcome: pb::Outcome::Failure.into(),
        used_permits: None,
    })
    .await
    .unwrap();
    let (_, body) = server.http_get("/status.json").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let partner = v["charts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule"] == "partner.*")
        .expect("a chart per rule");
    assert_eq!(
        partner["top_denied"],
        serde_json::json!([{ "by": "tenant=acme", "denials": 3 }, { "by": "tenant=globex", "denials": 1 }])
    );
    let t = &v["transitions"][0];
    assert_eq!(
        (t["resource"].as_str(), t["from"].as_str(), t["to"].as_str()),
        (Some("jobs"), Some("CLOSED"), Some("OPEN"))
    );
    assert!(
        t["reason"]
            .as_str()
            .is_some_and(|r| !r.is_empty() && r != "seen in the store"),
        "{t}"
    );

    // Filters and pages.
    let (_, body) = server.http_get("/status.json?rule=llm").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["resources"].as_array().unwrap().len(), 1);
    let (_, body) = server.http_get("/status.json?page_size=1").await;
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    let after = first["next_after"].as_str().unwrap().to_owned();
    assert!(
        !after.is_empty(),
        "a one-resource page says where the next starts"
    );
    let (_, body) = server
        .http_get(&format!("/status.json?page_size=1&after={after}"))
        .await;
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(
        second["resources"][0]["resource"],
        first["resources"][0]["resource"]
    );

    // The page and its assets come from quotad itself.
    for path in [
        "/status",
        "/status/app.js",
        "/status/app.css",
        "/status/uPlot.iife.min.js",
        "/status/uPlot.min.css",
    ] {
        let (status, body) = server.http_get(path).await;
        assert_eq!(status, 200, "{path}");
        // uPlot's licence header links its repository; nothing the page loads or fetches is remote.
        let loads = [
            "src=\"http",
            "href=\"http",
            "fetch(\"http",
            "url(http",
            "import(\"http",
        ];
        assert!(
            !loads.iter().any(|l| body.contains(l)),
            "{path} loads nothing from the internet"
        );
    }
    let (_, page) = server.http_get("/status").await;
    assert!(page.contains("/status/app.js"));
    assert_eq!(server.http_get("/status/../../etc/passwd").await.0, 404);
    assert_eq!(server.http_get("/").await.0, 302, "/ points at the page");
}
