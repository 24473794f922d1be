//! End-to-end: a real quotad on 127.0.0.1:0, driven over gRPC by the generated stubs. Decisions run on a
//! fake clock that the tests advance; nothing sleeps to wait for a limit.

use std::{collections::HashMap, sync::Arc, time::Duration};

use prost_types::Duration as PbDuration;
use quotad_api::v1 as pb;
use quotad_e2e::{TestServer, acquire, secs};
use quotad_server::clock::{FakeClock, MonotonicClock};
use tonic::Code;

const CONFIG: &str = r#"
[capacity]
max_leases = 1000

[[resources]]
name = "api"
rate = { limit = 10, period = "1s", burst = 5 }

[[resources]]
name = "jobs"
concurrency = 2
lease_ttl = "10s"
max_lease_ttl = "60s"

[[resources]]
name = "llm"
rate = { limit = 100, period = "1s", burst = 100 }
concurrency = 10
max_pause = "30s"
breaker = { failure_rate = 0.5, min_calls = 2, window = "10s", open_duration = "5s", half_open_probes = 1 }
adaptive = { decrease_factor = 0.5, floor = 0.1, cooldown = "1s" }

[[resources]]
name = "builds"
rate = { limit = 100, period = "1s", burst = 4 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 2 }
"#;

async fn start() -> (TestServer, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new());
    (TestServer::start(CONFIG, clock.clone()).await, clock)
}

#[tokio::test]
async fn acquire_release_and_rate_denial_with_retry_after() {
    let (server, clock) = start().await;
    let mut c = server.quota().await;
    for i in 0..5u64 {
        let r = c.acquire(acquire("api")).await.unwrap().into_inner();
        assert!(r.granted);
        assert_eq!(r.decision(), pb::Decision::Granted);
        assert_eq!(
            r.lease_id.len(),
            16,
            "every grant gets a lease, even rate-only"
        );
        assert_eq!((r.remaining, r.limit), (4 - i, 5));
        assert!(r.lease_expires_at.is_some() && r.retry_after.is_none());
    }
    let r = c.acquire(acquire("api")).await.unwrap().into_inner();
    assert!(!r.granted, "a denial is an OK response");
    assert_eq!(r.decision(), pb::Decision::RateLimited);
    assert_eq!(
        r.retry_after,
        Some(PbDuration {
            seconds: 0,
            nanos: 100_000_000
        })
    );
    assert_eq!(r.denied_by, "resource");
    assert_eq!(
        r.reset_after,
        Some(PbDuration {
            seconds: 0,
            nanos: 500_000_000
        })
    );
    clock.advance(Duration::from_millis(100));
    let r = c.acquire(acquire("api")).await.unwrap().into_inner();
    assert!(r.granted);
    let rel = c
        .release(pb::ReleaseRequest {
            lease_id: r.lease_id.clone(),
            outcome: pb::Outcome::Success.into(),
            used_permits: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rel.released);
    let again = c
        .release(pb::ReleaseRequest {
            lease_id: r.lease_id,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (again.released, again.reason.as_str()),
        (false, "already_released")
    );
    let unknown = c
        .release(pb::ReleaseRequest {
            lease_id: "00000000000000ff".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (unknown.released, unknown.reason.as_str()),
        (false, "unknown_lease")
    );
}

#[tokio::test]
async fn multi_level_denial_names_the_level() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let req = pb::AcquireRequest {
        resource: "builds".into(),
        descriptors: HashMap::from([("tenant".into(), "acme".into())]),
        ..Default::default()
    };
    assert!(c.acquire(req.clone()).await.unwrap().into_inner().granted);
    assert!(c.acquire(req.clone()).await.unwrap().into_inner().granted);
    let r = c.acquire(req).await.unwrap().into_inner();
    assert_eq!((r.granted, r.denied_by.as_str()), (false, "tenant=acme"));
    // "Why was I denied?": the answer names the rule and the config version that decided.
    assert_eq!((r.rule.as_str(), r.config_version), ("builds", 1));
}

#[tokio::test]
async fn concurrency_renew_and_expiry_reclaimed_by_the_sweeper() {
    let (server, clock) = start().await;
    let mut c = server.quota().await;
    let a = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    let b = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    assert_eq!((a.in_flight, b.in_flight, b.max_in_flight), (1, 2, 2));
    let d = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    assert_eq!(d.decision(), pb::Decision::ConcurrencyLimited);
    assert!(d.retry_after.is_some());

    let renewed = c
        .renew(pb::RenewRequest {
            lease_id: a.lease_id.clone(),
            lease_ttl: secs(30),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(renewed.lease_ttl, secs(30));

    // b expires at 10 s; nobody releases it and no request touches the key: the sweeper reclaims it.
    clock.advance(Duration::from_secs(11));
    let mut admin = server.admin().await;
    let mut in_flight = u32::MAX;
    for _ in 0..200 {
        let list = admin
            .list_resources(pb::ListResourcesRequest {
                prefix: "jobs".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        in_flight = list.into_inner().resources[0].in_flight;
        if in_flight == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await; // waiting for the sweeper task, not for a limit
    }
    assert_eq!(
        in_flight, 1,
        "the expired lease was reclaimed; the renewed one is live"
    );
    let rel = c
        .release(pb::ReleaseRequest {
            lease_id: b.lease_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rel.into_inner().reason, "expired");
    let e = c
        .renew(pb::RenewRequest {
            lease_id: b.lease_id,
            lease_ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        c.acquire(acquire("jobs"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
}

#[tokio::test]
async fn settle_through_release_used_permits() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let r = c
        .acquire(pb::AcquireRequest {
            permits: 40,
            ..acquire("llm")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.remaining, 60);
    let rel = c
        .release(pb::ReleaseRequest {
            lease_id: r.lease_id,
            outcome: pb::Outcome::Success.into(),
            used_permits: Some(15),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((rel.refunded_permits, rel.charged_permits), (25, 0));
    let r = c.acquire(acquire("llm")).await.unwrap().into_inner();
    assert_eq!(r.remaining, 84);
}

#[tokio::test]
async fn idempotent_acquire_replays_the_grant() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let req = pb::AcquireRequest {
        request_id: "call-7".into(),
        permits: 2,
        ..acquire("api")
    };
    let first = c.acquire(req.clone()).await.unwrap().into_inner();
    let second = c.acquire(req).await.unwrap().into_inner();
    assert_eq!(first.lease_id, second.lease_id);
    assert!(!first.replayed && second.replayed);
    let r = c.acquire(acquire("api")).await.unwrap().into_inner();
    assert_eq!(r.remaining, 2, "charged 2 once");
}

#[tokio::test]
async fn report_throttle_lowers_rate_pauses_and_opens_the_breaker() {
    let (server, clock) = start().await;
    let mut c = server.quota().await;
    let report = pb::ReportThrottleRequest {
        resource: "llm".into(),
        kind: pb::ThrottleKind::Throttled.into(),
        retry_after: secs(3600),
        message: "429 Too Many Requests".into(),
        ..Default::default()
    };
    let r = c
        .report_throttle(report.clone())
        .await
        .unwrap()
        .into_inner();
    assert!(r.rate_decreased);
    assert_eq!(
        (r.effective_rate_per_second, r.configured_rate_per_second),
        (50.0, 100.0)
    );
    assert_eq!(r.pause_remaining, secs(30), "capped by max_pause");
    let d = c.acquire(acquire("llm")).await.unwrap().into_inner();
    assert_eq!(d.decision(), pb::Decision::Paused);
    assert_eq!(d.retry_after, secs(30));

    let r = c
        .report_throttle(pb::ReportThrottleRequest {
            retry_after: None,
            ..report
        })
        .await
        .unwrap();
    let r = r.into_inner();
    assert!(!r.rate_decreased, "within the cooldown");
    assert_eq!(
        r.circuit_state(),
        pb::CircuitState::Open,
        "2 failures of 2 calls ≥ 50%"
    );

    let state = c
        .get_circuit_state(pb::GetCircuitStateRequest {
            resource: "llm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.state(), pb::CircuitState::Open);
    assert_eq!(state.half_open_after, secs(5));
    assert!(state.breaker_configured && state.paused_until.is_some());
    assert_eq!(state.effective_rate_per_second, 50.0);

    clock.advance(Duration::from_secs(30));
    let probe = c.acquire(acquire("llm")).await.unwrap().into_inner();
    assert!(probe.granted, "half-open: the one probe");
    let d = c.acquire(acquire("llm")).await.unwrap().into_inner();
    assert_eq!(d.decision(), pb::Decision::CircuitOpen);
    let rel = c
        .release(pb::ReleaseRequest {
            lease_id: probe.lease_id,
            outcome: pb::Outcome::Success.into(),
            used_permits: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rel.circuit_state(), pb::CircuitState::Closed);
}

#[tokio::test]
async fn unknown_resource_is_not_found_naming_it() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let e = c.acquire(acquire("no.such")).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("'no.such'"), "{}", e.message());
    let e = c
        .get_circuit_state(pb::GetCircuitStateRequest {
            resource: "no.such".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
}

#[tokio::test]
async fn each_invalid_field_is_named() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let many: HashMap<String, String> = (0..17).map(|i| (format!("k{i}"), "v".into())).collect();
    let cases: Vec<(pb::AcquireRequest, Code, &str)> = vec![
        (acquire(""), Code::InvalidArgument, "resource"),
        (acquire(&"x".repeat(300)), Code::InvalidArgument, "resource"),
        (
            pb::AcquireRequest {
                descriptors: many,
                ..acquire("api")
            },
            Code::InvalidArgument,
            "descriptors",
        ),
        (
            pb::AcquireRequest {
                descriptors: HashMap::from([("tenant".into(), "v".repeat(300))]),
                ..acquire("builds")
            },
            Code::InvalidArgument,
            "descriptors[\"tenant\"]",
        ),
        (
            acquire("builds"),
            Code::InvalidArgument,
            "descriptors[\"tenant\"]",
        ),
        (
            pb::AcquireRequest {
                permits: 6,
                ..acquire("api")
            },
            Code::FailedPrecondition,
            "permits",
        ),
        (
            pb::AcquireRequest {
                lease_ttl: secs(-1),
                ..acquire("api")
            },
            Code::InvalidArgument,
            "lease_ttl",
        ),
        (
            pb::AcquireRequest {
                max_wait: secs(-3600),
                ..acquire("api")
            },
            Code::InvalidArgument,
            "max_wait",
        ),
        (
            pb::AcquireRequest {
                request_id: "r".repeat(200),
                ..acquire("api")
            },
            Code::InvalidArgument,
            "request_id",
        ),
    ];
    for (req, code, field) in cases {
        let e = c.acquire(req).await.unwrap_err();
        assert_eq!(e.code(), code, "{field}: {}", e.message());
        assert!(
            e.message().starts_with(field),
            "expected '{field}' first in '{}'",
            e.message()
        );
    }
    let e = c
        .release(pb::ReleaseRequest {
            lease_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message().starts_with("lease_id")),
        (Code::InvalidArgument, true)
    );
    let e = c
        .release(pb::ReleaseRequest {
            lease_id: "00000000000000ff".into(),
            outcome: 99,
            used_permits: None,
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("outcome"));
    let e = c
        .report_throttle(pb::ReportThrottleRequest {
            resource: "llm".into(),
            kind: 42,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("kind"));
    let e = c
        .report_throttle(pb::ReportThrottleRequest {
            resource: "llm".into(),
            message: "m".repeat(5000),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().starts_with("message"));
    let e = c
        .renew(pb::RenewRequest {
            lease_id: String::new(),
            lease_ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    // The server is unharmed: valid calls still work.
    assert!(
        c.acquire(acquire("api"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
}

#[tokio::test]
async fn oversized_messages_are_refused() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let e = c
        .acquire(pb::AcquireRequest {
            client_id: "x".repeat(200_000),
            ..acquire("api")
        })
        .await
        .unwrap_err();
    // The gRPC status code guide: a message over the size limit is RESOURCE_EXHAUSTED (tonic says OUT_OF_RANGE).
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
}

#[tokio::test]
async fn max_wait_holds_the_call_until_capacity_frees() {
    // Real time here: the server itself waits ~100 ms for the next token.
    let server = TestServer::start(
        "[[resources]]\nname = \"slow\"\nrate = { limit = 10, period = \"1s\", burst = 1 }",
        Arc::new(MonotonicClock::new()),
    )
    .await;
    let mut c = server.quota().await;
    assert!(
        c.acquire(acquire("slow"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let r = c
        .acquire(pb::AcquireRequest {
            max_wait: secs(5),
            ..acquire("slow")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.granted, "granted after waiting instead of denied");
    // A wait too short for the next token is answered at once with the exact retry_after.
    let r = c
        .acquire(pb::AcquireRequest {
            max_wait: Some(PbDuration {
                seconds: 0,
                nanos: 1_000_000,
            }),
            ..acquire("slow")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.decision(), pb::Decision::RateLimited);
}

#[tokio::test]
async fn shutdown_lets_in_flight_calls_finish() {
    let mut server = TestServer::start(
        "[[resources]]\nname = \"slow\"\nrate = { limit = 10, period = \"1s\", burst = 1 }",
        Arc::new(MonotonicClock::new()),
    )
    .await;
    let mut c = server.quota().await;
    assert!(
        c.acquire(acquire("slow"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    // This call is held by the server (max_wait) for the next token, ~100 ms away.
    let mut waiting = c.clone();
    let in_flight = tokio::spawn(async move {
        waiting
            .acquire(pb::AcquireRequest {
                max_wait: secs(5),
                ..acquire("slow")
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(20)).await; // let the call reach the server
    server.signal_stop();
    let reply = in_flight
        .await
        .unwrap()
        .expect("in-flight call completes during the drain")
        .into_inner();
    assert!(reply.granted);
    server.stop().await;
}

#[tokio::test]
async fn admin_lists_resets_forces_revokes() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let mut admin = server.admin().await;
    let lease = c.acquire(acquire("jobs")).await.unwrap().into_inner();
    let list = admin
        .list_resources(pb::ListResourcesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = list.resources.iter().map(|r| r.resource.as_str()).collect();
    assert!(
        names.contains(&"jobs") && names.contains(&"api") && names.contains(&"builds"),
        "{names:?}"
    );
    assert_eq!(list.live_leases, 1);
    assert_eq!(list.config_version, 1);
    let leases = admin
        .list_leases(pb::ListLeasesRequest {
            resource: "jobs".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(leases.leases[0].lease_id, lease.lease_id);
    let revoked = admin
        .revoke_lease(pb::RevokeLeaseRequest {
            lease_id: lease.lease_id,
        })
        .await
        .unwrap();
    assert!(revoked.into_inner().revoked);

    let opened = admin
        .force_open_breaker(pb::ForceOpenBreakerRequest {
            resource: "llm".into(),
            duration: secs(60),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(opened.previous_state(), pb::CircuitState::Closed);
    assert_eq!(
        c.acquire(acquire("llm"))
            .await
            .unwrap()
            .into_inner()
            .decision(),
        pb::Decision::CircuitOpen
    );
    let reset = admin
        .reset_breaker(pb::ResetBreakerRequest {
            resource: "llm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reset.previous_state(), pb::CircuitState::Open);
    assert!(
        c.acquire(acquire("llm"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let e = admin
        .force_open_breaker(pb::ForceOpenBreakerRequest {
            resource: "api".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "api has no breaker");
}

#[tokio::test]
async fn reload_config_keeps_state() {
    let dir = std::env::temp_dir().join(format!("quotad-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("quotad.toml");
    std::fs::write(
        &path,
        "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"1h\", burst = 10 }\n",
    )
    .unwrap();
    let server = TestServer::start_file(path.clone(), Arc::new(FakeClock::new())).await;
    let mut c = server.quota().await;
    let mut admin = server.admin().await;
    assert_eq!(
        c.acquire(pb::AcquireRequest {
            permits: 3,
            ..acquire("r")
        })
        .await
        .unwrap()
        .into_inner()
        .remaining,
        7
    );
    std::fs::write(
        &path,
        "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"1h\", burst = 5 }\n[[resources]]\nname = \"new\"\nconcurrency = 1\n",
    )
    .unwrap();
    let reloaded = admin
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reloaded.config_version, reloaded.resources), (2, 2));
    let after = c.acquire(acquire("r")).await.unwrap().into_inner();
    assert_eq!(after.remaining, 4, "7 clamped to 5, minus 1");
    assert_eq!(
        (after.rule.as_str(), after.config_version),
        ("r", 2),
        "answers carry the version in force"
    );
    assert!(
        c.acquire(acquire("new"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    // A broken file is refused and the old config stays.
    std::fs::write(&path, "[[resources]]\nname = \"r\"\nrate = { limit = 0 }\n").unwrap();
    let e = admin
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains("rate.limit"), "{}", e.message());
    assert!(c.acquire(acquire("new")).await.is_ok());
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn health_serves_and_goes_not_serving_on_shutdown() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let (mut server, _clock) = start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "quotad.v1.QuotaService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.message().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    server.signal_stop();
    let next = watch.message().await;
    if let Ok(Some(m)) = next {
        assert_eq!(m.status(), ServingStatus::NotServing);
    }
    // An open watch stream is an in-flight call: close it so the drain finishes at once.
    drop(watch);
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_v1_and_v1alpha() {
    let (server, _clock) = start().await;
    let channel = server.channel().await;
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel.clone());
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = resp.message_response else {
            panic!("{resp:?}")
        };
        let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
        for want in [
            "quotad.v1.QuotaService",
            "quotad.v1.QuotaAdmin",
            "grpc.health.v1.Health",
            "envoy.service.ratelimit.v3.RateLimitService",
        ] {
            assert!(names.contains(&want), "{want} missing from {names:?}");
        }
    }
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let mut client = ServerReflectionClient::new(channel);
        let req = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(
                "quotad.v1.QuotaService".into(),
            )),
        };
        let mut stream = client
            .server_reflection_info(tokio_stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let resp = stream.message().await.unwrap().unwrap();
        assert!(
            matches!(
                resp.message_response,
                Some(MessageResponse::FileDescriptorResponse(_))
            ),
            "{resp:?}"
        );
    }
}

#[tokio::test]
async fn a_glob_rule_is_named_by_its_pattern() {
    let toml =
        "[[resources]]\nname = \"partner.*\"\nrate = { limit = 1, period = \"1h\", burst = 1 }";
    let server = TestServer::start(toml, Arc::new(FakeClock::new())).await;
    let mut c = server.quota().await;
    let granted = c
        .acquire(acquire("partner.stripe"))
        .await
        .unwrap()
        .into_inner();
    let denied = c
        .acquire(acquire("partner.stripe"))
        .await
        .unwrap()
        .into_inner();
    for r in [&granted, &denied] {
        assert_eq!(
            (r.resource.as_str(), r.rule.as_str(), r.config_version),
            ("partner.stripe", "partner.*", 1)
        );
    }
    assert!(granted.granted && !denied.granted);
}

#[tokio::test]
async fn watch_sends_the_state_then_each_change_and_ends_on_shutdown() {
    let (server, _clock) = start().await;
    let mut c = server.quota().await;
    let watch = |names: &[&str]| pb::WatchCircuitStateRequest {
        resources: names
            .iter()
            .map(|n| pb::GetCircuitStateRequest {
                resource: (*n).into(),
                ..Default::default()
            })
            .collect(),
    };
    let mut events = c
        .watch_circuit_state(watch(&["llm", "api"]))
        .await
        .unwrap()
        .into_inner();
    let first = next(&mut events).await;
    let second = next(&mut events).await;
    let names: Vec<_> = [&first, &second]
        .iter()
        .map(|e| e.state.as_ref().unwrap().resource.clone())
        .collect();
    assert_eq!(names, ["llm", "api"]);
    assert!(first.initial && second.initial);
    // A throttle report through another connection: the pause and the lowered rate arrive pushed.
    server
        .quota()
        .await
        .report_throttle(pb::ReportThrottleRequest {
            resource: "llm".into(),
            retry_after: Some(prost_types::Duration {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        })
        .await
        .unwrap();
    let changed = next(&mut events).await;
    let s = changed.state.unwrap();
    assert!(!changed.initial);
    assert_eq!(s.resource, "llm");
    assert!(s.paused_until.is_some() && s.effective_rate_per_second < s.configured_rate_per_second);
    // An operator opens the breaker: OPEN arrives.
    server
        .admin()
        .await
        .force_open_breaker(pb::ForceOpenBreakerRequest {
            resource: "llm".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let opened = next(&mut events).await.state.unwrap();
    assert_eq!(opened.state, pb::CircuitState::Open as i32);
    // Bad watches are refused at once, naming the problem.
    let e = c.watch_circuit_state(watch(&[])).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let many: Vec<&str> = vec!["api"; 65];
    assert_eq!(
        c.watch_circuit_state(watch(&many))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let e = c.watch_circuit_state(watch(&["nope"])).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    assert!(e.message().contains("nope"));
    // Shutdown ends the stream rather than holding the server open.
    let stopping = tokio::spawn(server.stop());
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.message().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .expect("the stream ended");
    assert!(end.is_err() || end.unwrap().is_none());
    stopping.await.unwrap();
}

async fn next(s: &mut tonic::Streaming<pb::CircuitStateEvent>) -> pb::CircuitStateEvent {
    tokio::time::timeout(Duration::from_secs(5), s.message())
        .await
        .expect("an event within 5 s")
        .unwrap()
        .unwrap()
}
