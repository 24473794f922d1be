//! Several quotad nodes on one Redis (started by the test on a free loopback port): the limits are the
//! fleet's, not each node's. Real time, real gRPC; every loop is bounded and stops by itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use quotad_api::v1 as pb;
use quotad_e2e::{TestServer, acquire, redis_server::RedisServer, secs};
use quotad_server::clock::{Clock, MonotonicClock, Nanos};

fn config(url: &str) -> String {
    format!(
        r#"
store = "redis"

[redis]
url = "{url}"
prefix = "fleet:"

[[resources]]
name = "api"
rate = {{ limit = 1000, period = "1s", burst = 200 }}

[[resources]]
name = "jobs"
concurrency = 50
lease_ttl = "30s"

[[resources]]
name = "down"
concurrency = 1000
breaker = {{ failure_rate = 0.5, min_calls = 4, window = "10s", open_duration = "30s" }}
"#
    )
}

/// A node whose clock runs 500 ms ahead: with Redis's clock deciding, it cannot admit more.
#[derive(Debug)]
struct Ahead(MonotonicClock);

impl Clock for Ahead {
    fn now(&self) -> Nanos {
        self.0.now() + 500_000_000
    }
    fn wall(&self, t: Nanos) -> SystemTime {
        self.0.wall(t)
    }
}

/// One fleet at a time: each test's three nodes get the machine's two cores to themselves.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn fleet(redis: &RedisServer) -> Vec<TestServer> {
    let toml = config(&redis.url());
    vec![
        TestServer::start(&toml, Arc::new(MonotonicClock::new())).await,
        TestServer::start(&toml, Arc::new(MonotonicClock::new())).await,
        TestServer::start(&toml, Arc::new(Ahead(MonotonicClock::new()))).await,
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_admit_one_rate() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let nodes = fleet(&redis).await;
    let window = Duration::from_secs(10);
    let start = Instant::now();
    let mut workers = Vec::new();
    for i in 0..36 {
        let mut client = nodes[i % 3].quota().await;
        workers.push(tokio::spawn(async move {
            let (mut granted, mut denied) = (0u64, 0u64);
            while start.elapsed() < window {
                let r = client
                    .acquire(acquire("api"))
                    .await
                    .expect("acquire")
                    .into_inner();
                if r.granted {
                    granted += 1;
                } else {
                    denied += 1;
                }
            }
            (granted, denied)
        }));
    }
    let (mut granted, mut denied) = (0, 0);
    for w in workers {
        let (g, d) = w.await.unwrap();
        granted += g;
        denied += d;
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Never more than burst + rate × elapsed; with demand far above supply, the whole rate is used (a stall
    // shorter than the burst's 200 ms loses nothing: the bucket holds what accrues meanwhile).
    eprintln!("three nodes: {granted} granted, {denied} denied in {elapsed:.2} s");
    let most = 200.0 + 1000.0 * elapsed;
    assert!(
        denied > granted,
        "demand exceeded supply ({granted} granted, {denied} denied)"
    );
    assert!(
        (granted as f64) <= most,
        "admitted {granted} in {elapsed:.2} s, at most {most:.0}"
    );
    assert!(
        (9_900..=10_200).contains(&granted),
        "admitted {granted} in {elapsed:.2} s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_is_the_fleets() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let nodes = fleet(&redis).await;
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for i in 0..90 {
        let mut client = nodes[i % 3].quota().await;
        // Released through another node than the one that granted it.
        let mut other = nodes[(i + 1) % 3].quota().await;
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        workers.push(tokio::spawn(async move {
            let mut held = 0;
            for _ in 0..40 {
                let r = client
                    .acquire(acquire("jobs"))
                    .await
                    .expect("acquire")
                    .into_inner();
                if !r.granted {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                held += 1;
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
                let released = other
                    .release(pb::ReleaseRequest {
                        lease_id: r.lease_id,
                        outcome: pb::Outcome::Success as i32,
                        ..Default::default()
                    })
                    .await
                    .expect("release")
                    .into_inner();
                assert!(released.released, "{released:?}");
            }
            held
        }));
    }
    let mut held = 0;
    for w in workers {
        held += w.await.unwrap();
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 50, "in flight peaked at {peak}");
    assert!(peak >= 40, "the limit was contended (peak {peak})");
    assert!(held > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_opened_through_one_node_is_open_on_all() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let nodes = fleet(&redis).await;
    nodes[0]
        .admin()
        .await
        .force_open_breaker(pb::ForceOpenBreakerRequest {
            resource: "down".into(),
            duration: secs(20),
            ..Default::default()
        })
        .await
        .expect("force open");
    for node in &nodes[1..] {
        let state = node
            .quota()
            .await
            .get_circuit_state(pb::GetCircuitStateRequest {
                resource: "down".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .state;
        assert_eq!(state, pb::CircuitState::Open as i32);
        let r = node
            .quota()
            .await
            .acquire(acquire("down"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.decision, pb::Decision::CircuitOpen as i32);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_retried_on_another_node_replays_its_lease() {
    let _one = ONE_AT_A_TIME.lock().await;
    let redis = RedisServer::start();
    let nodes = fleet(&redis).await;
    let req = pb::AcquireRequest {
        request_id: "job-7".into(),
        ..acquire("jobs")
    };
    let first = nodes[0]
        .quota()
        .await
        .acquire(req.clone())
        .await
        .unwrap()
        .into_inner();
    let again = nodes[1]
        .quota()
        .await
        .acquire(req)
        .await
        .unwrap()
        .into_inner();
    assert!(first.granted && again.granted && again.replayed);
    assert_eq!(first.lease_id, again.lease_id);
    // Renewed on a third node, released on the second: one lease, fleet-wide.
    nodes[2]
        .quota()
        .await
        .renew(pb::RenewRequest {
            lease_id: first.lease_id.clone(),
            lease_ttl: secs(60),
        })
        .await
        .expect("renew on another node");
    let listed = nodes[2]
        .admin()
        .await
        .list_leases(pb::ListLeasesRequest {
            resource: "jobs".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.leases.len(), 1);
    let released = nodes[1]
        .quota()
        .await
        .release(pb::ReleaseRequest {
            lease_id: first.lease_id,
            outcome: pb::Outcome::Success as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(released.released);
}
