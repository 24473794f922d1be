//! End-to-end: identities from bearer tokens, roles, tenant binding and lease ownership, over gRPC against
//! a real quotad on 127.0.0.1:0 (decisions on a fake clock).

use std::{sync::Arc, time::Duration};

use prost_types::Duration as PbDuration;
use quotad_api::v1 as pb;
use quotad_e2e::{TestServer, acquire};
use quotad_server::{auth::token, clock::FakeClock};
use tonic::Code;

/// Tokens are the identity's name backwards plus a suffix: only their hashes go in the config.
fn token_of(name: &str) -> String {
    format!("{}-s3cret", name.chars().rev().collect::<String>())
}

fn identity(name: &str, roles: &str, tenant: Option<&str>) -> String {
    let tenant = tenant.map_or(String::new(), |t| format!("tenant = \"{t}\"\n"));
    format!(
        "[[auth.identities]]\nname = \"{name}\"\nroles = [{roles}]\n{tenant}token_sha256 = \"{}\"\n",
        token::hash_hex(&token_of(name))
    )
}

fn config() -> String {
    let mut c = String::from(
        r#"
[[resources]]
name = "llm"
rate = { limit = 100, period = "1s", burst = 100 }
concurrency = 10
max_pause = "30s"

[[resources]]
name = "partner"
rate = { limit = 10000, period = "1s", burst = 10000 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 10, period = "1s", burst = 50 }
"#,
    );
    c += &identity("worker-a", "\"worker\"", None);
    c += &identity("worker-b", "\"worker\"", None);
    c += &identity("acme", "\"worker\"", Some("acme"));
    c += &identity("globex", "\"worker\"", Some("globex"));
    c += &identity("ops", "\"admin\"", None);
    c
}

async fn start() -> (TestServer, Arc<FakeClock>) {
    let clock = Arc::new(FakeClock::new());
    (TestServer::start(&config(), clock.clone()).await, clock)
}

fn release(lease_id: &str) -> pb::ReleaseRequest {
    pb::ReleaseRequest {
        lease_id: lease_id.into(),
        outcome: pb::Outcome::Success.into(),
        used_permits: None,
    }
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let (server, _clock) = start().await;
    let e = server
        .quota()
        .await
        .acquire(acquire("llm"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = server
        .quota_as("not-a-token")
        .await
        .acquire(acquire("llm"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let ok = server
        .quota_as(&token_of("worker-a"))
        .await
        .acquire(acquire("llm"))
        .await
        .unwrap();
    assert!(ok.into_inner().granted);
    // A token is not a credential in the config: the hash itself is not accepted as a token.
    let hash = token::hash_hex(&token_of("worker-a"));
    let e = server
        .quota_as(&hash)
        .await
        .acquire(acquire("llm"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Refusals are counted (never with the token).
    let metrics = server.scrape().await;
    assert!(
        metrics.contains("quotad_auth_refusals_total{reason=\"unauthenticated\"} 3"),
        "{metrics}"
    );
    assert!(!metrics.contains("not-a-token"));
    // Health stays open for load balancers.
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn each_service_needs_its_role() {
    let (server, _clock) = start().await;
    let e = server
        .admin_as(&token_of("worker-a"))
        .await
        .list_resources(pb::ListResourcesRequest::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = server
        .quota_as(&token_of("ops"))
        .await
        .acquire(acquire("llm"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let mut admin = server.admin_as(&token_of("ops")).await;
    admin
        .list_resources(pb::ListResourcesRequest::default())
        .await
        .unwrap();
    // Without a token, even from loopback, QuotaAdmin is closed once identities exist.
    let e = server
        .admin()
        .await
        .reset_breaker(pb::ResetBreakerRequest {
            resource: "llm".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}

#[tokio::test]
async fn a_lease_belongs_to_whoever_acquired_it() {
    let (server, _clock) = start().await;
    let mut a = server.quota_as(&token_of("worker-a")).await;
    let mut b = server.quota_as(&token_of("worker-b")).await;
    let lease = a
        .acquire(acquire("llm"))
        .await
        .unwrap()
        .into_inner()
        .lease_id;
    let e = b.release(release(&lease)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    let e = b
        .renew(pb::RenewRequest {
            lease_id: lease.clone(),
            lease_ttl: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = b
        .report_throttle(pb::ReportThrottleRequest {
            resource: "llm".into(),
            lease_id: lease.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Nothing changed: the lease is live, in flight, and its owner's calls work.
    let leases = server
        .admin_as(&token_of("ops"))
        .await
        .list_leases(pb::ListLeasesRequest {
            resource: "llm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .leases;
    assert_eq!(leases.len(), 1);
    assert_eq!(leases[0].owner, "worker-a");
    a.renew(pb::RenewRequest {
        lease_id: lease.clone(),
        lease_ttl: None,
    })
    .await
    .unwrap();
    assert!(
        a.release(release(&lease))
            .await
            .unwrap()
            .into_inner()
            .released
    );
}

#[tokio::test]
async fn another_identity_reusing_a_request_id_gets_no_replay() {
    let (server, _clock) = start().await;
    let with_id = pb::AcquireRequest {
        request_id: "job-42".into(),
        ..acquire("llm")
    };
    let mut a = server.quota_as(&token_of("worker-a")).await;
    let first = a.acquire(with_id.clone()).await.unwrap().into_inner();
    let again = a.acquire(with_id.clone()).await.unwrap().into_inner();
    assert!(again.replayed && again.lease_id == first.lease_id);
    let e = server
        .quota_as(&token_of("worker-b"))
        .await
        .acquire(with_id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
}

#[tokio::test]
async fn ten_thousand_calls_across_tenants_have_no_cross_tenant_effect() {
    let (server, _clock) = start().await;
    let mut acme = server.quota_as(&token_of("acme")).await;
    let mut globex = server.quota_as(&token_of("globex")).await;
    let name_tenant = |tenant: &str| pb::AcquireRequest {
        descriptors: [("tenant".to_owned(), tenant.to_owned())].into(),
        ..acquire("partner")
    };
    let (mut acme_granted, mut acme_refused) = (0, 0);
    for i in 0..5_000 {
        // Half name no tenant (the server fills in acme), a quarter name acme, a quarter try globex.
        let req = match i % 4 {
            0 | 1 => acquire("partner"),
            2 => name_tenant("acme"),
            _ => name_tenant("globex"),
        };
        match acme.acquire(req).await {
            Ok(r) => acme_granted += u32::from(r.into_inner().granted),
            Err(e) => {
                assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
                acme_refused += 1;
            }
        }
    }
    assert_eq!(
        acme_refused, 1_250,
        "every attempt to name globex is refused"
    );
    assert_eq!(acme_granted, 50, "acme gets exactly its own burst");
    // Globex's bucket was never touched by acme: its first 50 are granted, then denied.
    let mut globex_granted = 0;
    for i in 0..5_000 {
        let req = if i % 2 == 0 {
            acquire("partner")
        } else {
            name_tenant("globex")
        };
        let r = globex.acquire(req).await.unwrap().into_inner();
        if r.granted {
            globex_granted += 1;
        } else {
            assert_eq!(r.denied_by, "tenant=globex");
        }
    }
    assert_eq!(globex_granted, 50);
}

#[tokio::test]
async fn one_identitys_flood_of_reports_pauses_once() {
    let (server, clock) = start().await;
    let mut a = server.quota_as(&token_of("worker-a")).await;
    let report = pb::ReportThrottleRequest {
        resource: "llm".into(),
        retry_after: Some(PbDuration {
            seconds: 30,
            nanos: 0,
        }),
        ..Default::default()
    };
    let first = a
        .report_throttle(report.clone())
        .await
        .unwrap()
        .into_inner();
    let until = first.paused_until.expect("paused");
    // The same identity keeps reporting every 5 s for a minute: the pause it started is not extended.
    for _ in 0..12 {
        clock.advance(Duration::from_secs(5));
        let r = a
            .report_throttle(report.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(r.paused_until.is_none_or(|t| t == until), "{r:?}");
    }
    // After 60 s the first pause (30 s) is long over and the flood changed nothing.
    let d = a.acquire(acquire("llm")).await.unwrap().into_inner();
    assert!(d.granted, "{d:?}");
    // Another identity's report is its own: it pauses.
    let r = server
        .quota_as(&token_of("worker-b"))
        .await
        .report_throttle(report)
        .await
        .unwrap()
        .into_inner();
    assert!(r.paused_until.is_some());
}

#[tokio::test]
async fn a_reload_revokes_a_removed_token_at_once() {
    let dir = std::env::temp_dir().join(format!("quotad-auth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("quotad.toml");
    std::fs::write(&path, config()).unwrap();
    let server = TestServer::start_file(path.clone(), Arc::new(FakeClock::new())).await;
    let mut b = server.quota_as(&token_of("worker-b")).await;
    assert!(
        b.acquire(acquire("llm"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    std::fs::write(
        &path,
        config()
            .replace("name = \"worker-b\"", "name = \"worker-b2\"")
            .replace(
                &token::hash_hex(&token_of("worker-b")),
                &token::hash_hex("a-new-token"),
            ),
    )
    .unwrap();
    server
        .admin_as(&token_of("ops"))
        .await
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .unwrap();
    let e = b.acquire(acquire("llm")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert!(
        server
            .quota_as("a-new-token")
            .await
            .acquire(acquire("llm"))
            .await
            .unwrap()
            .into_inner()
            .granted
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// An identity configured `bypass = true` is never limited: granted past the rate and the concurrency
/// limit (`bypassed`), its leases counted in flight, each grant counted in `quotad_bypassed_total`; another
/// worker on the same resource is limited as usual, and an override's bypass shows in ListResources.
#[tokio::test]
async fn a_bypass_identity_is_granted_counted_and_others_are_limited() {
    let config = format!(
        "[[resources]]\nname = \"voice\"\nrate = {{ limit = 2, period = \"1m\" }}\nconcurrency = 3\n\
         [[resources.partitions]]\ndescriptor = \"tenant\"\nconcurrency = 10\n\
         overrides = [{{ value = \"internal\", bypass = true }}]\n{}{}bypass = true\n{}",
        identity("worker-a", "\"worker\"", None),
        identity("internal", "\"worker\"", None),
        identity("ops", "\"admin\"", None),
    );
    let server = TestServer::start(&config, Arc::new(FakeClock::new())).await;
    let mut worker = server.quota_as(&token_of("worker-a")).await;
    let mut internal = server.quota_as(&token_of("internal")).await;
    let ask = || pb::AcquireRequest {
        resource: "voice".into(),
        descriptors: [("tenant".to_owned(), "acme".to_owned())].into(),
        ..Default::default()
    };
    for _ in 0..5 {
        let r = internal.acquire(ask()).await.unwrap().into_inner();
        assert!(r.granted && r.bypassed, "{r:?}");
    }
    let r = worker.acquire(ask()).await.unwrap().into_inner();
    assert!(
        !r.granted && !r.bypassed,
        "the bypassed leases fill the concurrency: {r:?}"
    );
    assert_eq!(r.denied_by, "resource");
    assert_eq!(r.in_flight, 5, "bypassed leases count in flight");
    // The worker through the bypassed tenant value is not limited either.
    let mut via = ask();
    via.descriptors = [("tenant".to_owned(), "internal".to_owned())].into();
    let r = worker.acquire(via).await.unwrap().into_inner();
    assert!(r.granted && r.bypassed, "{r:?}");
    let text = server.scrape().await;
    assert!(
        text.lines()
            .any(|l| l == "quotad_bypassed_total{resource=\"voice\"} 6"),
        "{text}"
    );
    let mut admin = server.admin_as(&token_of("ops")).await;
    let listed = admin
        .list_resources(pb::ListResourcesRequest::default())
        .await
        .unwrap()
        .into_inner();
    let limits = listed.resources[0].limits.clone().unwrap();
    assert_eq!(limits.bypassed, ["tenant=internal"]);
    // Explain as an identity: its bypass; an unknown name is refused, naming the field.
    let explain = |identity: &str| pb::ExplainRequest {
        resource: "voice".into(),
        descriptors: [("tenant".to_owned(), "acme".to_owned())].into(),
        identity: identity.into(),
        ..Default::default()
    };
    let e = admin
        .explain(explain("internal"))
        .await
        .unwrap()
        .into_inner();
    assert!(e.would_grant, "{e:?}");
    assert_eq!(e.bypassed_by, "identity 'internal'");
    let e = admin
        .explain(explain("worker-a"))
        .await
        .unwrap()
        .into_inner();
    assert!(!e.would_grant && e.bypassed_by.is_empty(), "{e:?}");
    let refused = admin.explain(explain("nobody")).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().starts_with("identity: 'nobody'"),
        "{}",
        refused.message()
    );
}

/// `bypass` is for workers only: an admin-only identity with it is refused at start-up, naming the key.
#[test]
fn bypass_on_an_identity_that_cannot_acquire_is_refused() {
    let config = format!("{}bypass = true\n", identity("ops", "\"admin\"", None));
    let e = quotad_server::config::load_str(&config)
        .unwrap_err()
        .to_string();
    assert!(e.contains("auth.identities[0].bypass"), "{e}");
}
