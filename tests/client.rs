//! The Rust client against quotad: on paused tokio time through an in-process service (no sockets, no
//! real sleeping), and against a real server on loopback for transport faults, restarts and fallbacks.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use quotad_client::{
    AcquireOptions, Classification, Client, ClientBuilder, Decision, Error, Jitter, LocalLimits,
    Outcome, ProgressEvent, RetryPolicy, RunError, RunOptions, ThrottleKind, Unreachable,
};
use quotad_e2e::{TestServer, in_process};
use quotad_server::clock::MonotonicClock;
use tokio::time::Instant;

fn fast_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(200),
        multiplier: 2.0,
        deadline: Some(Duration::from_secs(30)),
        jitter: Jitter::Full,
    }
}

fn in_process_client(
    toml: &str,
    policy: RetryPolicy,
) -> (
    Client,
    Arc<quotad_server::engine::Quota<quotad_server::engine::MemoryStore>>,
) {
    let (service, quota) = in_process(toml);
    (
        ClientBuilder::new("http://in-process")
            .retry_policy(policy)
            .build(service),
        quota,
    )
}

const RATE: &str = "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"1s\", burst = 1 }\nlease_ttl = \"10s\"";

#[tokio::test(start_paused = true)]
async fn a_denial_waits_at_least_the_servers_retry_after() {
    let (client, _) = in_process_client(RATE, fast_policy());
    let first = client.acquire("r", AcquireOptions::new()).await.unwrap();
    assert!(first.lease_id().is_some() && !first.is_local());
    let start = Instant::now();
    let second = client.acquire("r", AcquireOptions::new()).await.unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "waited {waited:?}, less than retry_after"
    );
    assert!(waited <= Duration::from_secs(2), "waited {waited:?}");
    assert_ne!(first.lease_id(), second.lease_id());
}

#[tokio::test(start_paused = true)]
async fn denials_stop_at_the_deadline() {
    let toml = "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"60s\", burst = 1 }";
    let policy = RetryPolicy {
        deadline: Some(Duration::from_secs(5)),
        ..fast_policy()
    };
    let (client, _) = in_process_client(toml, policy);
    let _held = client.acquire("r", AcquireOptions::new()).await.unwrap();
    let start = Instant::now();
    let e = client
        .acquire("r", AcquireOptions::new())
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Denied {
                decision: Decision::RateLimited,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "gave up at once: 60 s cannot fit in 5 s"
    );
    // max_wait bounds the client's waiting too.
    let toml = "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"2s\", burst = 1 }";
    let (client, _) = in_process_client(toml, fast_policy());
    let _held = client.acquire("r", AcquireOptions::new()).await.unwrap();
    let e = client
        .acquire("r", AcquireOptions::new().max_wait(Duration::from_secs(1)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Denied { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_reported_pause_holds_the_whole_fleet() {
    let toml =
        "[[resources]]\nname = \"r\"\nrate = { limit = 100, period = \"1s\" }\nmax_pause = \"1m\"";
    let (client, _) = in_process_client(toml, fast_policy());
    let report = client
        .report_throttle("r", ThrottleKind::Throttled, Some(Duration::from_secs(3)))
        .await
        .unwrap();
    assert!(report.paused_until.is_some());
    let start = Instant::now();
    client.acquire("r", AcquireOptions::new()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_secs(3));
}

/// A grant that holds nothing (`settlement = false`, rate only) says so; its release and renewal send
/// nothing and succeed, and the limit is still the server's.
#[tokio::test(start_paused = true)]
async fn a_permit_that_holds_nothing_is_not_released() {
    let toml = "[[resources]]\nname = \"f\"\nrate = { limit = 2, period = \"1h\" }\nsettlement = false\n\
                [[resources]]\nname = \"s\"\nrate = { limit = 2, period = \"1h\" }";
    let (client, quota) = in_process_client(toml, RetryPolicy::no_retries());
    let mut p = client.acquire("f", AcquireOptions::new()).await.unwrap();
    assert!(p.holds_nothing() && p.lease_id().is_some());
    p.renew(None).await.unwrap();
    p.auto_renew();
    p.release_used(Outcome::Success, 0).await.unwrap();
    drop(client.acquire("f", AcquireOptions::new()).await.unwrap());
    assert!(
        matches!(
            client.acquire("f", AcquireOptions::new()).await,
            Err(Error::Denied { .. })
        ),
        "two of two taken: nothing was refunded"
    );
    let kept = client.acquire("s", AcquireOptions::new()).await.unwrap();
    assert!(!kept.holds_nothing());
    assert_eq!(
        quota.usage().await.unwrap().live_leases,
        1,
        "only the settled resource's lease"
    );
    kept.release(Outcome::Success).await.unwrap();
}

/// The builder's priority reaches the server: batch keeps out of critical's reserve, critical gets it; a
/// bypassed descriptor value says so on the permit.
#[tokio::test(start_paused = true)]
async fn priority_classes_and_bypass_through_the_client() {
    let toml = "[[resources]]\nname = \"p\"\nrate = { limit = 4, period = \"1h\" }\n\
                priority = { classes = [\"critical\", \"batch\"], reserve = { critical = 0.5 } }\n\
                [[resources]]\nname = \"t\"\n[[resources.partitions]]\ndescriptor = \"tenant\"\n\
                rate = { limit = 1, period = \"1h\" }\noverrides = [{ value = \"ops\", bypass = true }]";
    let (client, _) = in_process_client(toml, RetryPolicy::no_retries());
    let batch = || AcquireOptions::new().priority("batch");
    for _ in 0..2 {
        client
            .acquire("p", batch())
            .await
            .unwrap()
            .release(Outcome::Success)
            .await
            .unwrap();
    }
    match client.acquire("p", batch()).await {
        Err(Error::Denied { denied_by, .. }) => {
            assert_eq!(denied_by, "resource (reserved for critical)");
        }
        other => panic!("expected a reserve denial, got {other:?}"),
    }
    for _ in 0..2 {
        let p = client
            .acquire("p", AcquireOptions::new().priority("critical"))
            .await
            .unwrap();
        assert!(!p.bypassed());
    }
    assert!(matches!(
        client.acquire("p", AcquireOptions::new().priority("urgent")).await,
        Err(Error::InvalidArgument(m)) if m.contains("priority")
    ));
    for _ in 0..3 {
        let ops = AcquireOptions::new().descriptor("tenant", "ops");
        assert!(client.acquire("t", ops).await.unwrap().bypassed());
    }
}

#[tokio::test(start_paused = true)]
async fn bad_requests_are_returned_at_once() {
    let (client, _) = in_process_client(RATE, fast_policy());
    let start = Instant::now();
    assert!(matches!(
        client.acquire("nope", AcquireOptions::new()).await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        client.acquire("r", AcquireOptions::new().permits(5)).await,
        Err(Error::FailedPrecondition(_))
    ));
    assert!(matches!(
        client.acquire("", AcquireOptions::new()).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(start.elapsed(), Duration::ZERO, "no retries");
}

#[tokio::test(start_paused = true)]
async fn renew_auto_renew_and_settle() {
    let toml = "[[resources]]\nname = \"j\"\nconcurrency = 1\nrate = { limit = 1, period = \"1h\", burst = 100 }\nlease_ttl = \"10s\"";
    let (client, quota) = in_process_client(toml, fast_policy());
    let mut permit = client
        .acquire("j", AcquireOptions::new().permits(10))
        .await
        .unwrap();
    let before = permit.expires_at().unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    permit.renew(None).await.unwrap();
    assert!(permit.expires_at().unwrap() > before);
    permit.auto_renew();
    // Long past several TTLs: the lease is kept alive in the background.
    tokio::time::sleep(Duration::from_secs(35)).await;
    let (leases, _) = quota.leases("j", 10).await.unwrap();
    assert_eq!(leases.len(), 1);
    permit.release_used(Outcome::Success, 4).await.unwrap();
    let usage = quota.usage().await.unwrap();
    assert_eq!(
        usage.resources[0].tokens_available,
        Some(96),
        "charged 10, settled to 4"
    );
    assert_eq!(usage.live_leases, 0);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_permit_releases_it() {
    let toml = "[[resources]]\nname = \"j\"\nconcurrency = 1\nconcurrency_retry_after = \"50ms\"";
    let (client, quota) = in_process_client(toml, fast_policy());
    {
        let _permit = client.acquire("j", AcquireOptions::new()).await.unwrap();
        // An early return: the permit goes out of scope unreleased.
    }
    let start = Instant::now();
    let again = client.acquire("j", AcquireOptions::new()).await.unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "slot came back long before any TTL"
    );
    drop(again);
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert_eq!(quota.usage().await.unwrap().live_leases, 0);
}

#[tokio::test(start_paused = true)]
async fn progress_hook_sees_every_wait() {
    let (client, _) = in_process_client(RATE, fast_policy());
    let _held = client.acquire("r", AcquireOptions::new()).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let opts =
        RunOptions::<(), ()>::new().on_progress(move |p| log.lock().unwrap().push(p.clone()));
    client.run("r", opts, |_| async { Ok(()) }).await.unwrap();
    let seen = seen.lock().unwrap();
    assert!(
        matches!(seen[0].event, ProgressEvent::Retrying { .. }),
        "{seen:?}"
    );
    assert!(seen[0].to_string().contains("retry 2/10 in"), "{}", seen[0]);
    assert!(matches!(
        seen.last().unwrap().event,
        ProgressEvent::Acquired { .. }
    ));
}

const LLM: &str = r#"
[[resources]]
name = "llm"
rate = { limit = 1000, period = "1s", burst = 1000 }
breaker = { min_calls = 100, window = "60s" }
"#;

#[tokio::test]
async fn run_retries_throttles_reports_them_and_returns_the_result() {
    let server = TestServer::start(LLM, Arc::new(MonotonicClock::new())).await;
    let client = Client::builder(server.url())
        .retry_policy(fast_policy())
        .connect()
        .await
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let running = Arc::new(AtomicU32::new(0));
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let l = lines.clone();
    let opts = RunOptions::new()
        .classify(|r: &Result<u16, String>| match r {
            Ok(429) => Classification::Throttled {
                retry_after: Some(Duration::from_millis(20)),
            },
            Ok(_) => Classification::Success,
            Err(_) => Classification::Failure,
        })
        .on_progress(move |p| {
            let what = match &p.event {
                ProgressEvent::Acquired { .. } => "acquired",
                ProgressEvent::Retrying { .. } => "retrying",
                ProgressEvent::GaveUp { .. } => "gave up",
            };
            l.lock().unwrap().push((p.attempt, p.max_attempts, what));
        });
    let (c, r) = (calls.clone(), running.clone());
    let result = client
        .run("llm", opts, move |attempt| {
            let (c, r) = (c.clone(), r.clone());
            async move {
                assert_eq!(
                    r.fetch_add(1, Ordering::SeqCst),
                    0,
                    "never two runs at once"
                );
                assert!(attempt.lease_id.is_some());
                let n = c.fetch_add(1, Ordering::SeqCst) + 1;
                assert_eq!(attempt.number, n, "attempts are numbered across retries");
                tokio::task::yield_now().await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok(if n <= 2 { 429 } else { 200 })
            }
        })
        .await
        .unwrap();
    assert_eq!((result, calls.load(Ordering::SeqCst)), (200, 3));
    assert_eq!(
        *lines.lock().unwrap(),
        [
            (1, 10, "acquired"),
            (1, 10, "retrying"),
            (2, 10, "acquired"),
            (2, 10, "retrying"),
            (3, 10, "acquired"),
        ],
        "one numbering for the whole call, as a CLI would print it"
    );
    let state = client.circuit_state("llm").await.unwrap();
    assert_eq!(
        state.failures, 2,
        "two throttles reported, each counted once"
    );
    assert_eq!(state.calls, 3);

    // A failure that is not a throttle is returned, not retried.
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let e = client
        .run("llm", RunOptions::<u16, String>::new(), move |_| {
            c.fetch_add(1, Ordering::SeqCst);
            async { Err("boom".to_owned()) }
        })
        .await
        .unwrap_err();
    assert!(matches!(e, RunError::Downstream(ref m) if m == "boom"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

/// A transport that loses every fifth reply after the server has handled the request.
#[derive(Clone)]
struct LossyReplies {
    inner: tonic::transport::Channel,
    calls: Arc<AtomicU32>,
    dropped: Arc<AtomicU32>,
}

impl tower::Service<http::Request<tonic::body::Body>> for LossyReplies {
    type Response = http::Response<tonic::body::Body>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        std::pin::Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        // The ready service is the one to call; leave a fresh clone in its place.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let dropped = self.dropped.clone();
        Box::pin(async move {
            // A unary gRPC reply's headers leave the server once the handler has decided: the charge is
            // made. Losing the reply now is exactly a reply lost on the wire.
            let response = tower::Service::call(&mut inner, req).await?;
            if n.is_multiple_of(5) {
                dropped.fetch_add(1, Ordering::SeqCst);
                drop(response);
                return Err("reply lost on the wire".into());
            }
            Ok(response)
        })
    }
}

#[tokio::test]
async fn lost_replies_never_charge_twice() {
    let toml = "[[resources]]\nname = \"r\"\nrate = { limit = 1, period = \"1h\", burst = 1000 }";
    let server = TestServer::start(toml, Arc::new(MonotonicClock::new())).await;
    let channel = server.channel().await;
    let (calls, dropped) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicU32::new(0)));
    let lossy = LossyReplies {
        inner: channel,
        calls: calls.clone(),
        dropped: dropped.clone(),
    };
    // 20% loss is far above the default retry budget's break-even (one failure per ten answers), which
    // would rightly stop retrying; this test is about charges, so give it room.
    let client = ClientBuilder::new(server.url())
        .retry_policy(fast_policy())
        .retry_budget(100.0, 1.0)
        .build(lossy);
    let logical = 40;
    let mut replayed = 0;
    for _ in 0..logical {
        let permit = client
            .acquire("r", AcquireOptions::new())
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e:?} after {} calls, {} dropped",
                    calls.load(Ordering::SeqCst),
                    dropped.load(Ordering::SeqCst)
                )
            });
        replayed += u32::from(permit.replayed());
        std::mem::forget(permit); // keep the lease; releasing would not change the rate charge anyway
    }
    assert!(
        dropped.load(Ordering::SeqCst) >= 8,
        "about 20% of replies were lost"
    );
    assert!(replayed >= 1, "some grants were replays of a lost reply");
    let usage = server.quotad.quota().usage().await.unwrap();
    let tokens = usage
        .resources
        .iter()
        .find(|r| &*r.resource == "r")
        .unwrap()
        .tokens_available;
    assert_eq!(
        tokens,
        Some(1000 - logical),
        "debits equal distinct logical acquires"
    );
}

#[tokio::test]
async fn the_client_recovers_when_the_server_restarts() {
    let toml = "[[resources]]\nname = \"r\"\nrate = { limit = 1000, period = \"1s\" }";
    let first = TestServer::start(toml, Arc::new(MonotonicClock::new())).await;
    let addr = first.addr;
    let client = Client::builder(first.url())
        .retry_policy(RetryPolicy {
            max_attempts: 100,
            deadline: Some(Duration::from_secs(20)),
            ..fast_policy()
        })
        // Generous enough to ride out the outage: the default budget stops after five failed retries.
        .retry_budget(200.0, 0.1)
        .connect_lazy()
        .unwrap();
    assert!(client.acquire("r", AcquireOptions::new()).await.is_ok());
    first.stop().await;
    let restart = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await; // the outage
        let settings = quotad_server::config::load_str(toml).unwrap();
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("rebind the same port");
        let quotad = Arc::new(
            quotad_server::server::Quotad::new(settings, None, Arc::new(MonotonicClock::new()))
                .unwrap(),
        );
        // Metrics on a port of its own (the default 127.0.0.1:9464 may be taken on a developer's machine).
        let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        quotad
            .serve_with(
                quotad_server::server::Listeners {
                    grpc: listener,
                    metrics: Some(metrics),
                    health: None,
                },
                std::future::pending(),
            )
            .await
            .unwrap();
    });
    let permit = client
        .acquire("r", AcquireOptions::new())
        .await
        .expect("recovered within the policy");
    assert!(!permit.is_local());
    restart.abort();
}

async fn dead_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn unreachable_policy() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 2,
        deadline: Some(Duration::from_millis(300)),
        ..fast_policy()
    }
}

#[tokio::test]
async fn unreachable_fail_closed_fail_open_and_local_fallback() {
    let url = dead_endpoint().await;
    let closed = Client::builder(&url)
        .retry_policy(unreachable_policy())
        .connect_lazy()
        .unwrap();
    assert!(matches!(
        closed.acquire("r", AcquireOptions::new()).await,
        Err(Error::Unavailable(_))
    ));

    let open = Client::builder(&url)
        .retry_policy(unreachable_policy())
        .on_unreachable(Unreachable::FailOpen)
        .connect_lazy()
        .unwrap();
    let permit = open.acquire("r", AcquireOptions::new()).await.unwrap();
    assert!(permit.is_local() && permit.lease_id().is_none());
    permit.release(Outcome::Success).await.unwrap();
    assert_eq!(open.fail_open_count(), 1);

    let local = Client::builder(&url)
        .retry_policy(unreachable_policy())
        .on_unreachable(Unreachable::LocalFallback(LocalLimits {
            rate_per_second: 1000.0,
            burst: 5,
            max_concurrent: 1,
        }))
        .connect_lazy()
        .unwrap();
    let held = local.acquire("r", AcquireOptions::new()).await.unwrap();
    assert!(held.is_local());
    let e = local.acquire("r", AcquireOptions::new()).await.unwrap_err();
    assert!(
        matches!(
            e,
            Error::Denied {
                decision: Decision::LocallyLimited,
                ..
            }
        ),
        "{e:?}"
    );
    held.release(Outcome::Success).await.unwrap();
    assert!(
        local
            .acquire("r", AcquireOptions::new())
            .await
            .unwrap()
            .is_local()
    );
    assert_eq!(local.local_fallback_count(), 2);
}

/// More acquires held under `max_wait` than one connection carries streams (the server allows 256): on one
/// connection the releases that would free slots queued behind them until `max_wait` ran out. The client
/// sends acquires and everything else on two connections.
#[tokio::test]
async fn releases_are_not_stuck_behind_acquires_held_by_max_wait() {
    let toml = "[[resources]]\nname = \"c\"\nconcurrency = 10";
    let server = TestServer::start(toml, Arc::new(MonotonicClock::new())).await;
    let client = Client::builder(server.url())
        .retry_policy(RetryPolicy {
            max_attempts: 1000,
            deadline: Some(Duration::from_secs(60)),
            ..fast_policy()
        })
        .connect_lazy()
        .unwrap();
    let started = Instant::now();
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                // Longer than the 5 s call timeout: the client waits out the server's hold.
                let opts = AcquireOptions::new().max_wait(Duration::from_secs(20));
                let permit = client.acquire("c", opts).await.expect("granted in time");
                tokio::time::sleep(Duration::from_millis(2)).await;
                permit.release(Outcome::Success).await.unwrap();
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("every task finished")
            .unwrap();
    }
    // 300 holds of 2 ms, 10 at a time, take well under the 20 s max_wait they would otherwise wait out.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

/// A watched pause or OPEN breaker is refused by the client itself, without a round trip.
#[tokio::test]
async fn a_watched_pause_is_refused_locally() {
    let toml = "[[resources]]\nname = \"llm\"\nrate = { limit = 100, period = \"1s\" }\nmax_pause = \"30s\"\nbreaker = { min_calls = 100 }";
    let server = TestServer::start(toml, Arc::new(MonotonicClock::new())).await;
    let client = Client::builder(server.url())
        .retry_policy(RetryPolicy::no_retries())
        .connect_lazy()
        .unwrap();
    let watch = client.watch(["llm"]);
    assert!(client.acquire("llm", AcquireOptions::new()).await.is_ok());
    client
        .report_throttle("llm", ThrottleKind::Throttled, Some(Duration::from_secs(5)))
        .await
        .unwrap();
    let started = Instant::now();
    let denied_by = loop {
        match client.acquire("llm", AcquireOptions::new()).await {
            Err(Error::Denied {
                denied_by,
                decision,
                ..
            }) if denied_by.ends_with("(watched)") => {
                assert_eq!(decision, Decision::Paused);
                break denied_by;
            }
            Err(Error::Denied { .. }) => {} // the server's own answer, until the watch delivers
            other => panic!("{other:?}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "the watch never delivered the pause"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(denied_by, "pause (watched)");
    drop(watch); // unwatched: the server decides again
    match client.acquire("llm", AcquireOptions::new()).await {
        Err(Error::Denied { denied_by, .. }) => assert_eq!(denied_by, "pause"),
        other => panic!("{other:?}"),
    }
}

/// Once quotad is found unreachable, the next calls fail at once instead of each trying to connect.
#[tokio::test]
async fn an_unreachable_quotad_is_not_retried_by_every_call() {
    let client = Client::builder(dead_endpoint().await)
        .retry_policy(RetryPolicy::no_retries())
        .connect_lazy()
        .unwrap();
    // On a busy machine this task may be descheduled past the 100 ms interval between two calls; a few
    // rounds make sure at least one pair lands inside it.
    let mut short_circuited = 0;
    for _ in 0..5 {
        let acquire = || client.acquire("r", AcquireOptions::new());
        let first = acquire().await.unwrap_err();
        assert!(matches!(first, Error::Unavailable(_)), "{first:?}");
        let second = acquire().await.unwrap_err();
        if second.to_string().contains("unreachable a moment ago") {
            short_circuited += 1;
        }
        tokio::time::sleep(quotad_client::watch::DOWN_FOR.1).await;
        let third = acquire().await.unwrap_err();
        assert!(
            !third.to_string().contains("a moment ago"),
            "tried again after the interval: {third}"
        );
        tokio::time::sleep(quotad_client::watch::DOWN_FOR.1).await;
    }
    assert!(
        short_circuited > 0,
        "the call right after a failure never short-circuited"
    );
}
