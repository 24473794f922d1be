//! Envoy's rate limit service, end to end: a real quotad reading envoyproxy/ratelimit's own config files,
//! called over gRPC with the generated RLS client, on the in-memory store and on Redis (started by the
//! test). The cases port upstream's `examples/ratelimit/config/example.yaml` and its README's examples,
//! from their documented behaviour. Time is a fake clock (Redis takes the node's time), so windows are
//! exact and every loop is bounded.

use std::{path::PathBuf, sync::Arc, time::Duration};

use quotad_api::envoy::{
    extensions::common::ratelimit::v3::{
        RateLimitDescriptor,
        rate_limit_descriptor::{Entry, RateLimitOverride},
    },
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus},
        rate_limit_service_client::RateLimitServiceClient,
    },
};
use quotad_e2e::{Bearer, TestServer, redis_server::RedisServer};
use quotad_server::clock::FakeClock;
use tonic::{Code as Status, transport::Channel};

/// Every shape of upstream's example config (`tests/rls/example.yaml`, names of our own).
const EXAMPLE: &str = include_str!("rls/example.yaml");

/// Wildcards, share_threshold and every unit (`tests/rls/readme.yaml`).
const PATHS: &str = include_str!("rls/paths.yaml");

struct Rls {
    server: TestServer,
    clock: Arc<FakeClock>,
    dir: PathBuf,
    redis: Option<RedisServer>,
}

impl Rls {
    async fn start(store: Store, extra: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "quotad-rls-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(dir.join("ratelimit")).unwrap();
        std::fs::write(dir.join("ratelimit/edge.yaml"), EXAMPLE).unwrap();
        std::fs::write(dir.join("ratelimit/paths.yaml"), PATHS).unwrap();
        let (redis, store_toml) = match store {
            Store::Memory => (None, String::new()),
            Store::Redis => {
                let r = RedisServer::start();
                let toml = format!(
                    "store = \"redis\"\n[redis]\nurl = \"{}\"\nprefix = \"rls:\"\ntime = \"node\"\n",
                    r.url()
                );
                (Some(r), toml)
            }
        };
        let toml = format!(
            "{store_toml}\n[rls]\nconfig = [\"ratelimit\"]\nresponse_headers = true\n{extra}\n"
        );
        std::fs::write(dir.join("quotad.toml"), toml).unwrap();
        let clock = Arc::new(FakeClock::new());
        let server = TestServer::start_file(dir.join("quotad.toml"), clock.clone()).await;
        Self {
            server,
            clock,
            dir,
            redis,
        }
    }

    async fn client(&self) -> RateLimitServiceClient<Channel> {
        RateLimitServiceClient::new(self.server.channel().await)
    }

    async fn ask(&self, domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitResponse {
        self.ask_req(request(domain, descriptors)).await
    }

    async fn ask_req(&self, req: RateLimitRequest) -> RateLimitResponse {
        self.client()
            .await
            .should_rate_limit(req)
            .await
            .expect("answered")
            .into_inner()
    }
}

#[derive(Clone, Copy)]
enum Store {
    Memory,
    Redis,
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now())
}

fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).to_owned(),
                value: (*v).to_owned(),
            })
            .collect(),
        ..RateLimitDescriptor::default()
    }
}

fn request(domain: &str, descriptors: &[&[(&str, &str)]]) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.to_owned(),
        descriptors: descriptors.iter().map(|d| descriptor(d)).collect(),
        hits_addend: 0,
    }
}

fn over(r: &RateLimitResponse) -> bool {
    r.overall_code == Code::OverLimit as i32
}

fn codes(r: &RateLimitResponse) -> Vec<i32> {
    r.statuses.iter().map(|s| s.code).collect()
}

const OK: i32 = Code::Ok as i32;
const OVER: i32 = Code::OverLimit as i32;

fn limit_of(s: &DescriptorStatus) -> Option<u32> {
    s.current_limit.as_ref().map(|l| l.requests_per_unit)
}

/// Every case, on one store.
async fn every_case(store: Store) {
    let rls = Rls::start(store, "").await;
    nested_and_value_less_keys(&rls).await;
    replaces(&rls).await;
    shadow_and_unlimited(&rls).await;
    quota_mode_and_metadata(&rls).await;
    multi_descriptor_all_or_nothing(&rls).await;
    wildcards_and_share_threshold(&rls).await;
    units_and_reset(&rls).await;
    own_limit_and_hits(&rls).await;
    bad_input(&rls).await;
}

#[tokio::test]
async fn every_case_on_the_memory_store() {
    every_case(Store::Memory).await;
}

#[tokio::test]
async fn every_case_on_redis() {
    every_case(Store::Redis).await;
}

/// `user` (value-less: each value counts alone) at 2/min; `user` then `route` at 3/min; `user`+`route_vip`
/// at 1/min; a descriptor deeper than the tree, or one that stops above any limit, has none.
async fn nested_and_value_less_keys(rls: &Rls) {
    for _ in 0..2 {
        assert!(!over(&rls.ask("edge", &[&[("user", "a")]]).await));
    }
    let r = rls.ask("edge", &[&[("user", "a")]]).await;
    assert!(over(&r));
    assert_eq!(limit_of(&r.statuses[0]), Some(2));
    assert!(
        !over(&rls.ask("edge", &[&[("user", "b")]]).await),
        "each value counts on its own"
    );
    for _ in 0..3 {
        assert!(!over(
            &rls.ask("edge", &[&[("user", "x"), ("route", "y")]]).await
        ));
    }
    assert!(over(
        &rls.ask("edge", &[&[("user", "x"), ("route", "y")]]).await
    ));
    assert!(!over(
        &rls.ask("edge", &[&[("user", "x"), ("route", "vip")]]).await
    ));
    assert!(over(
        &rls.ask("edge", &[&[("user", "x"), ("route", "vip")]]).await
    ));
    let r = rls.ask("edge", &[&[("client", "gateway")]]).await;
    assert_eq!(limit_of(&r.statuses[0]), None, "stops above any limit");
    let r = rls
        .ask("edge", &[&[("plan", "enterprise"), ("deeper", "x")]])
        .await;
    assert_eq!(limit_of(&r.statuses[0]), None, "deeper than the config");
    let r = rls.ask("no_such_domain", &[&[("user", "a")]]).await;
    assert!(
        !over(&r) && limit_of(&r.statuses[0]).is_none(),
        "an unknown domain is OK with no limits"
    );
}

/// `plan_enterprise` replaces `vip` and `legacy_name`: those are not counted while it matches too.
async fn replaces(rls: &Rls) {
    let both: &[&[(&str, &str)]] = &[
        &[("client", "gateway"), ("upstream", "legacy")],
        &[("plan", "enterprise")],
    ];
    for _ in 0..4 {
        let r = rls.ask("edge", both).await;
        assert!(!over(&r), "{r:?}");
        assert_eq!(limit_of(&r.statuses[0]), None, "replaced: no limit");
        assert_eq!(r.statuses[0].code, OK);
    }
    let r = rls.ask("edge", both).await;
    assert_eq!(codes(&r), [OK, OVER]);
    // Alone, fake_name is counted (2/min) and untouched by the replaced requests.
    let alone: &[&[(&str, &str)]] = &[&[("client", "gateway"), ("upstream", "legacy")]];
    assert!(!over(&rls.ask("edge", alone).await));
    assert!(!over(&rls.ask("edge", alone).await));
    assert!(over(&rls.ask("edge", alone).await));
}

/// `region_trial` is shadow: never over, though its status reports the limit and remaining 0 once past it;
/// `tier` and `free` are unlimited.
async fn shadow_and_unlimited(rls: &Rls) {
    let shady: &[&[(&str, &str)]] = &[&[("user", "s"), ("region", "trial")]];
    for _ in 0..5 {
        let r = rls.ask("edge", shady).await;
        assert!(!over(&r));
        assert_eq!(r.statuses[0].code, OK);
    }
    let r = rls.ask("edge", shady).await;
    assert_eq!(r.statuses[0].limit_remaining, 0);
    let r = rls
        .ask(
            "edge",
            &[&[("free", "anything")], &[("user", "u"), ("tier", "v")]],
        )
        .await;
    assert!(!over(&r));
    for s in &r.statuses {
        assert_eq!(
            (s.code, s.limit_remaining, limit_of(s)),
            (OK, u32::MAX, None)
        );
    }
}

/// `tenant_t1` (1/min) and `tenant_t2` (2/min) are quota-mode: the request is over only when both are.
/// The metadata of a passed descriptor comes back in `dynamic_metadata`.
async fn quota_mode_and_metadata(rls: &Rls) {
    let both: &[&[(&str, &str)]] = &[&[("tenant", "t1")], &[("tenant", "t2")]];
    let r = rls.ask("edge", both).await;
    assert!(!over(&r));
    let meta = r.dynamic_metadata.expect("metadata of the passed limits");
    let inner = format!("{:?}", meta.fields["metadata"]);
    assert!(inner.contains("t1") || inner.contains("t2"), "{inner}");
    let r = rls.ask("edge", both).await;
    assert!(!over(&r), "service_2 still has room");
    assert_eq!(
        codes(&r),
        [OVER, OK],
        "a quota descriptor over its limit still says so"
    );
    let r = rls.ask("edge", both).await;
    assert!(over(&r), "every quota descriptor is over");
}

/// Two descriptors, one over: the request is over and the other is not debited (quotad counts a request
/// all or none; upstream would count it).
async fn multi_descriptor_all_or_nothing(rls: &Rls) {
    let mock: &[(&str, &str)] = &[("client", "gateway"), ("upstream", "mock")];
    assert!(!over(&rls.ask("edge", &[mock]).await));
    let r = rls.ask("edge", &[&[("anon", "m")], mock]).await;
    assert!(over(&r));
    assert_eq!(codes(&r), [OK, OVER]);
    assert_eq!(
        r.statuses[0].limit_remaining, 2,
        "not debited: the request was over"
    );
    let r = rls.ask("edge", &[&[("anon", "m")]]).await;
    assert_eq!(r.statuses[0].limit_remaining, 1);
}

/// Wildcards at the end, in the middle and several; `share_threshold` makes every value one counter.
async fn wildcards_and_share_threshold(rls: &Rls) {
    let r = rls.ask("paths", &[&[("path", "/files/a.txt")]]).await;
    assert_eq!(limit_of(&r.statuses[0]), Some(2));
    // Each value its own counter without share_threshold.
    for file in ["/files/a.txt", "/files/b.txt"] {
        assert!(!over(&rls.ask("paths", &[&[("path", file)]]).await));
    }
    assert!(over(
        &rls.ask("paths", &[&[("path", "/files/a.txt")]]).await
    ));
    let r = rls.ask("paths", &[&[("path", "/api/v1/action")]]).await;
    assert_eq!(limit_of(&r.statuses[0]), Some(5), "middle wildcard");
    let r = rls.ask("paths", &[&[("path", "/api/v1/other")]]).await;
    assert_eq!(
        limit_of(&r.statuses[0]),
        Some(100),
        "the key alone, after no wildcard matched"
    );
    let r = rls.ask("paths", &[&[("path", "/a/x/b/y/c")]]).await;
    assert_eq!(limit_of(&r.statuses[0]), Some(4), "several wildcards");
    // share_threshold: 3 for every /shared/* value together.
    for v in ["/shared/1", "/shared/2", "/shared/3"] {
        assert!(!over(&rls.ask("paths", &[&[("path", v)]]).await));
    }
    assert!(over(&rls.ask("paths", &[&[("path", "/shared/4")]]).await));
}

/// Windows are aligned to the unit: the fake clock starts on a minute, so a minute's limit comes back at
/// the next minute, and `duration_until_reset` says when.
async fn units_and_reset(rls: &Rls) {
    let r = rls.ask("paths", &[&[("per", "second")]]).await;
    let reset = r.statuses[0].duration_until_reset.unwrap();
    assert!(reset.seconds <= 1);
    assert!(over(&rls.ask("paths", &[&[("per", "second")]]).await));
    let r = rls.ask("paths", &[&[("per", "day")]]).await;
    assert_eq!(r.statuses[0].current_limit.as_ref().unwrap().unit, 4);
    let week = rls.ask("paths", &[&[("per", "week")]]).await;
    assert_eq!(week.statuses[0].current_limit.as_ref().unwrap().unit, 7);
    let headers: Vec<_> = week
        .response_headers_to_add
        .iter()
        .map(|h| (h.key.as_str(), h.value.as_str()))
        .collect();
    assert_eq!(headers[0], ("x-ratelimit-limit", "1"));
    assert_eq!(headers[1], ("x-ratelimit-remaining", "0"));
    rls.clock.advance(Duration::from_secs(1));
    assert!(
        !over(&rls.ask("paths", &[&[("per", "second")]]).await),
        "a new second"
    );
    // foo_a was over for the minute; a minute later it is not.
    rls.clock.advance(Duration::from_secs(60));
    assert!(!over(&rls.ask("edge", &[&[("user", "a")]]).await));
}

/// A descriptor's own limit wins over the config's; `hits_addend` (0 means 1) and a descriptor's own.
async fn own_limit_and_hits(rls: &Rls) {
    let mut req = request("edge", &[&[("user", "own")]]);
    req.descriptors[0].limit = Some(RateLimitOverride {
        requests_per_unit: 10,
        unit: 2,
    });
    req.hits_addend = 6;
    let r = rls.ask_req(req.clone()).await;
    assert_eq!(
        (limit_of(&r.statuses[0]), r.statuses[0].limit_remaining),
        (Some(10), 4)
    );
    let r = rls.ask_req(req.clone()).await;
    assert!(over(&r), "6 more would pass 10");
    req.descriptors[0].hits_addend = Some(0);
    let r = rls.ask_req(req.clone()).await;
    assert!(!over(&r), "a descriptor's 0 only checks");
    req.descriptors[0].hits_addend = Some(u64::MAX);
    assert!(
        over(&rls.ask_req(req.clone()).await),
        "a huge hits_addend is over, nothing breaks"
    );
    req.descriptors[0].hits_addend = Some(2);
    req.descriptors[0].is_negative_hits = true;
    let r = rls.ask_req(req).await;
    assert_eq!(r.statuses[0].limit_remaining, 6, "negative hits give back");
}

async fn bad_input(rls: &Rls) {
    let mut c = rls.client().await;
    let e = c
        .should_rate_limit(request("", &[&[("a", "b")]]))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Status::InvalidArgument, "domain: must not be empty")
    );
    let e = c.should_rate_limit(request("edge", &[])).await.unwrap_err();
    assert_eq!(e.code(), Status::InvalidArgument);
    assert!(e.message().starts_with("descriptors"));
    let many: Vec<(String, String)> = (0..1000)
        .map(|i| (format!("k{i}"), "v".to_owned()))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let e = c
        .should_rate_limit(request("edge", &[&many]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Status::InvalidArgument);
    assert!(e.message().contains("1000 entries"), "{}", e.message());
    let lots: Vec<&[(&str, &str)]> = vec![&[("user", "a")]; 1000];
    let e = c
        .should_rate_limit(request("edge", &lots))
        .await
        .unwrap_err();
    assert!(e.message().contains("1000 descriptors"), "{}", e.message());
    let long = "v".repeat(1025);
    let e = c
        .should_rate_limit(request("edge", &[&[("user", &long)]]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Status::InvalidArgument);
    assert!(
        e.message().starts_with("descriptors[0].entries[0]"),
        "{}",
        e.message()
    );
    let e = c
        .should_rate_limit(request(
            "edge",
            &[&[("user", "hostile")], &[("user", "a"), ("", "b")]],
        ))
        .await
        .unwrap_err();
    assert_eq!(
        e.message(),
        "descriptors[1].entries[1].key: must not be empty"
    );
    let e = c
        .should_rate_limit(request(&"d".repeat(1025), &[&[("user", "a")]]))
        .await
        .unwrap_err();
    assert!(e.message().starts_with("domain:"), "{}", e.message());
    let mut empty = request("edge", &[&[("user", "a")]]);
    empty.descriptors[0].entries.clear();
    let e = c.should_rate_limit(empty).await.unwrap_err();
    assert_eq!(e.message(), "descriptors[0].entries: must not be empty");
    // Nothing of a refused request is counted: user=hostile, in the one above, has its whole 2 a minute.
    let r = rls.ask("edge", &[&[("user", "hostile")]]).await;
    assert_eq!(r.statuses[0].limit_remaining, 1);
    let mut req = request("edge", &[&[("user", "a")]]);
    req.descriptors[0].limit = Some(RateLimitOverride {
        requests_per_unit: 1,
        unit: 99,
    });
    let e = c.should_rate_limit(req).await.unwrap_err();
    assert!(
        e.message().starts_with("descriptors[0].limit.unit"),
        "{}",
        e.message()
    );
}

/// A reload re-reads the files and keeps the counts; a broken file is refused and the old config stays.
#[tokio::test]
async fn the_files_reload_with_counts_kept() {
    let rls = Rls::start(Store::Memory, "").await;
    assert!(!over(&rls.ask("edge", &[&[("user", "r")]]).await));
    let raised = EXAMPLE.replacen(
        "requests_per_unit: 2\n    descriptors:",
        "requests_per_unit: 3\n    descriptors:",
        1,
    );
    assert_ne!(raised, EXAMPLE);
    std::fs::write(rls.dir.join("ratelimit/edge.yaml"), &raised).unwrap();
    rls.server.quotad.reload().expect("reloaded");
    let r = rls.ask("edge", &[&[("user", "r")]]).await;
    assert_eq!(
        (limit_of(&r.statuses[0]), r.statuses[0].limit_remaining),
        (Some(3), 1),
        "count kept"
    );
    std::fs::write(
        rls.dir.join("ratelimit/edge.yaml"),
        "domain: rl\nbogus: 1\n",
    )
    .unwrap();
    let e = rls.server.quotad.reload().unwrap_err().to_string();
    assert!(e.contains("edge.yaml") && e.contains("bogus"), "{e}");
    let r = rls.ask("edge", &[&[("user", "r")]]).await;
    assert_eq!(limit_of(&r.statuses[0]), Some(3), "the old config stays");
}

/// The service sits behind the same auth as QuotaService: the worker role.
#[tokio::test]
async fn the_service_needs_the_worker_role() {
    let auth = r#"
[[auth.identities]]
name = "envoy"
roles = ["worker"]
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[[auth.identities]]
name = "ops"
roles = ["admin"]
token_sha256 = "60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"
"#;
    let rls = Rls::start(Store::Memory, auth).await;
    let channel = rls.server.channel().await;
    let mut anonymous = RateLimitServiceClient::new(channel.clone());
    let e = anonymous
        .should_rate_limit(request("edge", &[&[("user", "a")]]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Status::Unauthenticated);
    let mut ops = RateLimitServiceClient::with_interceptor(channel.clone(), Bearer::new("test2"));
    let e = ops
        .should_rate_limit(request("edge", &[&[("user", "a")]]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Status::PermissionDenied);
    let mut envoy = RateLimitServiceClient::with_interceptor(channel, Bearer::new("test"));
    let r = envoy
        .should_rate_limit(request("edge", &[&[("user", "a")]]))
        .await
        .unwrap();
    assert_eq!(r.into_inner().overall_code, OK);
}

/// The metrics count answers by domain and descriptors by limit (detailed: with the values).
#[tokio::test]
async fn the_metrics_count_domains_and_limits() {
    let rls = Rls::start(Store::Memory, "[metrics]\nlisten = \"127.0.0.1:0\"\n").await;
    for _ in 0..3 {
        rls.ask("edge", &[&[("anon", "detailed")], &[("user", "m")]])
            .await;
    }
    let text = rls.server.scrape().await;
    assert!(
        text.contains("quotad_rls_requests_total{domain=\"edge\",code=\"over_limit\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("quotad_rls_descriptors_total{limit=\"edge.anon_detailed\",result=\"ok\"} 2")
    );
    assert!(
        text.contains("quotad_rls_descriptors_total{limit=\"edge.user\",result=\"over_limit\"} 1")
    );
    // The status page shows the same.
    let (code, body) = rls.server.http_get("/status.json").await;
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&body).unwrap();
    let domains = &status["rls"]["domains"];
    assert_eq!(domains[0]["domain"], "edge");
    assert_eq!(
        (domains[0]["ok"].as_u64(), domains[0]["over_limit"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(status["rls"]["limits"].as_array().unwrap().len(), 2);
}

/// A route sends a gateway's descriptor to a quotad resource: its hits and workers' Acquires draw on one
/// bucket, on both stores.
async fn one_bucket_for_the_edge_and_the_workers(store: Store) {
    let routes = r#"
[[rls.routes]]
domain = "edge"
entries = [{ key = "upstream", value = "partner" }, { key = "user" }]
resource = "partner.api"

[[resources]]
name = "partner.api"
rate = { limit = 5, period = "1s" }
"#;
    let rls = Rls::start(store, routes).await;
    let mut quota = rls.server.quota().await;
    for _ in 0..3 {
        let a = quota
            .acquire(quotad_e2e::acquire("partner.api"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(a.decision, quotad_api::v1::Decision::Granted as i32);
    }
    let partner: &[&[(&str, &str)]] = &[&[("upstream", "partner"), ("user", "u1")]];
    for left in [1, 0] {
        let r = rls.ask("edge", partner).await;
        assert!(!over(&r));
        assert_eq!(
            (limit_of(&r.statuses[0]), r.statuses[0].limit_remaining),
            (Some(5), left)
        );
    }
    assert!(
        over(&rls.ask("edge", partner).await),
        "the bucket is the workers' too"
    );
    let a = quota
        .acquire(quotad_e2e::acquire("partner.api"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(a.decision, quotad_api::v1::Decision::RateLimited as i32);
    // Another user's descriptor takes the same route (a route entry without a value matches any).
    assert!(over(
        &rls.ask("edge", &[&[("upstream", "partner"), ("user", "u2")]])
            .await
    ));
    rls.clock.advance(Duration::from_millis(400));
    let r = rls
        .ask(
            "edge",
            &[&[("upstream", "partner"), ("user", "u2")], &[("user", "x")]],
        )
        .await;
    assert!(!over(&r), "two tokens back after 400 ms");
}

#[tokio::test]
async fn one_bucket_for_the_edge_and_the_workers_in_memory() {
    one_bucket_for_the_edge_and_the_workers(Store::Memory).await;
}

#[tokio::test]
async fn one_bucket_for_the_edge_and_the_workers_on_redis() {
    one_bucket_for_the_edge_and_the_workers(Store::Redis).await;
}

#[test]
fn a_route_names_a_resource_with_a_rate() {
    let err = |toml: &str| {
        quotad_server::config::load_str(toml)
            .unwrap_err()
            .to_string()
    };
    let e =
        err("[[rls.routes]]\ndomain = \"d\"\nentries = [{ key = \"k\" }]\nresource = \"nope\"\n");
    assert!(
        e.contains("rls.routes[0].resource") && e.contains("nope"),
        "{e}"
    );
    let e = err(
        "[[rls.routes]]\ndomain = \"d\"\nentries = []\nresource = \"r\"\n[[resources]]\nname = \"r\"\nconcurrency = 2\n",
    );
    assert!(e.contains("rls.routes[0].entries"), "{e}");
}

/// Redis stopped: ShouldRateLimit answers UNAVAILABLE (Envoy's `failure_mode_deny` decides what the gateway
/// does), and answers again once Redis is back.
#[tokio::test]
async fn with_redis_down_the_answer_is_unavailable_until_it_is_back() {
    let mut rls = Rls::start(Store::Redis, "").await;
    assert!(!over(&rls.ask("edge", &[&[("user", "r")]]).await));
    let redis = rls.redis.as_mut().unwrap();
    redis.kill();
    let mut c = rls.client().await;
    let e = c
        .should_rate_limit(request("edge", &[&[("user", "r")]]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Status::Unavailable, "{e:?}");
    rls.redis.as_mut().unwrap().restart();
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(r) = c
            .should_rate_limit(request("edge", &[&[("user", "r")]]))
            .await
        {
            answered = Some(r.into_inner());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        answered.is_some_and(|r| r.overall_code == OK),
        "answers again"
    );
}

/// A flood of distinct descriptor values meets the store's cap on live keys: the excess is
/// RESOURCE_EXHAUSTED, counters already live keep answering, nothing panics.
#[tokio::test]
async fn a_flood_of_names_meets_the_key_cap() {
    let rls = Rls::start(Store::Memory, "[capacity]\nmax_live_keys = 8\n").await;
    let mut c = rls.client().await;
    let mut refused = 0;
    for i in 0..40 {
        let user = format!("flood-{i}");
        match c
            .should_rate_limit(request("edge", &[&[("user", &user)]]))
            .await
        {
            Ok(r) => assert_eq!(r.into_inner().overall_code, OK),
            Err(e) => {
                assert_eq!(e.code(), Status::ResourceExhausted, "{e:?}");
                refused += 1;
            }
        }
    }
    assert!(
        refused >= 30,
        "at most 8 keys live: {refused} of 40 refused"
    );
    let r = rls.ask("edge", &[&[("user", "flood-0")]]).await;
    assert_eq!(
        r.statuses[0].limit_remaining, 0,
        "a live counter still counts"
    );
}
