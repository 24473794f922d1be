//! The config file's shape, as written by users. Durations are strings such as `"250ms"`, `"30s"`, `"15m"`,
//! parsed during validation so errors can name the key.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Where quota state lives: `memory` (default) or `redis`.
    pub store: Option<String>,
    /// `[redis]`: the Redis store.
    pub redis: RedisSection,
    /// `[server]`.
    pub server: ServerSection,
    /// `[limits]`: request size limits.
    pub limits: LimitsSection,
    /// `[capacity]`: memory caps.
    pub capacity: CapacitySection,
    /// `[defaults]`: per-resource defaults.
    pub defaults: DefaultsSection,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsSection,
    /// `[tracing]`: OpenTelemetry export.
    pub tracing: TracingSection,
    /// `[auth]`: who may call what.
    pub auth: AuthSection,
    /// `[[resources]]`.
    pub resources: Vec<ResourceSection>,
    /// `[rls]`: Envoy's rate limit service and its config files.
    pub rls: RlsSection,
}

/// `[rls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlsSection {
    /// envoyproxy/ratelimit config files: paths, directories (every `*.yaml`/`*.yml` in them) or globs of
    /// files, relative to the config file's folder.
    pub config: Vec<String>,
    /// Answers carry `x-ratelimit-limit`, `x-ratelimit-remaining` and `x-ratelimit-reset` (default false).
    pub response_headers: Option<bool>,
    /// `[[rls.routes]]`: descriptors that draw on a quotad resource's bucket.
    pub routes: Vec<RlsRouteSection>,
}

/// `[[rls.routes]]`: a gateway's descriptor of `domain` whose entries are `entries` (in order) draws on
/// `resource`'s resource-wide bucket, the one workers' Acquires draw on.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsRouteSection {
    /// The RLS domain.
    pub domain: String,
    /// The descriptor's entries; an entry without a value matches any value.
    pub entries: Vec<RlsRouteEntry>,
    /// The quotad resource (a concrete name; it may match a pattern rule).
    pub resource: String,
}

/// One entry of a route's descriptor.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlsRouteEntry {
    /// The entry's key.
    pub key: String,
    /// Its value; absent: any.
    pub value: Option<String>,
}

/// `[redis]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSection {
    /// `redis://host:port/db` of a single Redis.
    pub url: Option<String>,
    /// Seed nodes of a Redis Cluster, instead of `url`.
    pub cluster: Vec<String>,
    /// Prepended to every key (several deployments on one Redis).
    pub prefix: Option<String>,
    /// Each Redis call's deadline.
    pub timeout: Option<String>,
    /// Redis calls outstanding per node at most.
    pub max_in_flight: Option<usize>,
    /// `redis` (default: Redis's clock decides) or `node` (this node's clock).
    pub time: Option<String>,
    /// `readable` (default) or `compact`: the field names state is written with.
    pub layout: Option<String>,
}

/// `[server]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to serve gRPC on, e.g. `127.0.0.1:50051`.
    pub listen: Option<String>,
    /// How long in-flight calls may run after a shutdown signal.
    pub shutdown_grace: Option<String>,
    /// How long to keep serving with health NOT_SERVING before closing, so load balancers move away.
    pub drain_delay: Option<String>,
    /// How often expired leases are reclaimed.
    pub sweep_interval: Option<String>,
    /// Largest gRPC request accepted, in bytes.
    pub max_request_bytes: Option<usize>,
    /// Runtime threads: 0 (default) one per core the process may run on; 1 runs everything on one thread
    /// (a current-thread runtime); N that many workers.
    pub worker_threads: Option<usize>,
    /// `text` (default) or `json`.
    pub log_format: Option<String>,
    /// `[server.tls]`: serve gRPC over TLS (and require client certificates with `client_ca`).
    pub tls: Option<TlsSection>,
    /// A plaintext listener serving only grpc.health.v1 (for load balancers that cannot present a client
    /// certificate), e.g. `127.0.0.1:50052`.
    pub health_listen: Option<String>,
    /// HTTP/2 and connection limits.
    pub http2: Http2Section,
}

/// `[server.tls]`: PEM files, re-read on SIGHUP and when they change.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSection {
    /// The server's certificate chain (PEM).
    pub cert: String,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: String,
    /// CA certificates (PEM) that client certificates must chain to; when set, every connection must
    /// present one.
    pub client_ca: Option<String>,
}

/// `[server.http2]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Section {
    /// Most concurrent streams one connection may open.
    pub max_concurrent_streams: Option<u32>,
    /// Most streams a client may reset before the server answers them (rapid reset, CVE-2023-44487).
    pub max_pending_reset_streams: Option<usize>,
    /// Largest header list accepted, in bytes.
    pub max_header_list_bytes: Option<u32>,
    /// How often the server pings an idle connection.
    pub keepalive_interval: Option<String>,
    /// How long a ping may go unanswered before the connection is closed.
    pub keepalive_timeout: Option<String>,
    /// A connection with no call for this long is closed.
    pub preface_timeout: Option<String>,
    /// Most connections served at once; further ones wait to be accepted.
    pub max_connections: Option<usize>,
    /// Most PING, SETTINGS or RST_STREAM frames a client may send in a second before its connection is
    /// closed (and its address refused for a while).
    pub max_control_frames_per_second: Option<u32>,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Without identities: let QuotaAdmin answer non-loopback peers too (default false).
    pub admin_from_anywhere: Option<bool>,
    /// The descriptor a tenant-bound identity fills and may not change (default `tenant`).
    pub tenant_descriptor: Option<String>,
    /// `[[auth.identities]]`: when any is configured, every QuotaService and QuotaAdmin call must prove one.
    pub identities: Vec<IdentitySection>,
}

/// `[[auth.identities]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// The identity's name (in logs, metrics and lease listings; never its secret).
    pub name: String,
    /// `worker` (QuotaService) and/or `admin` (QuotaAdmin).
    pub roles: Vec<String>,
    /// Binds the identity to one tenant: requests get this tenant, and naming another is refused.
    pub tenant: Option<String>,
    /// SHA-256 of the bearer token, in hex (`quotad --hash-token` prints it); the token itself is never stored.
    pub token_sha256: Option<String>,
    /// Client certificate names that prove this identity over mTLS: a subject alternative name (DNS or IP)
    /// or the subject common name (CN).
    #[serde(default)]
    pub certificate_names: Vec<String>,
    /// Its Acquires are never limited (granted, counted, holding a lease): for internal callers.
    pub bypass: Option<bool>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve `/metrics` (default true).
    pub enabled: Option<bool>,
    /// Address of the HTTP endpoint, e.g. `127.0.0.1:9464`.
    pub listen: Option<String>,
}

/// `[tracing]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// OTLP/gRPC collector, e.g. `http://127.0.0.1:4317`. Unset: no spans are exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans (default `quotad`).
    pub service_name: Option<String>,
    /// Fraction of new traces sampled, 0 to 1 (default 1); a caller's sampled parent is always followed.
    pub sample_ratio: Option<f64>,
    /// Longest time one export may take (default 3s).
    pub export_timeout: Option<String>,
}

/// `[limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Longest resource name, descriptor key/value, client id (bytes).
    pub max_name_bytes: Option<usize>,
    /// Most descriptors per request.
    pub max_descriptors: Option<usize>,
    /// Longest request_id (bytes).
    pub max_request_id_bytes: Option<usize>,
    /// Longest ReportThrottle message (bytes).
    pub max_message_bytes: Option<usize>,
    /// Longest `max_wait` a request may ask for.
    pub max_wait: Option<String>,
}

/// `[capacity]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacitySection {
    /// Most live keys before RESOURCE_EXHAUSTED.
    pub max_live_keys: Option<usize>,
    /// Most live leases before RESOURCE_EXHAUSTED.
    pub max_leases: Option<usize>,
    /// How long a granted request_id is remembered.
    pub idempotency_window: Option<String>,
    /// Most request_ids remembered at once.
    pub max_request_ids: Option<usize>,
}

/// `[defaults]`: applied to every resource that does not set its own.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DefaultsSection {
    /// Lease TTL when a request gives none.
    pub lease_ttl: Option<String>,
    /// Longest lease TTL.
    pub max_lease_ttl: Option<String>,
    /// Longest pause a downstream's retry-after may impose.
    pub max_pause: Option<String>,
    /// Suggested wait on CONCURRENCY_LIMITED.
    pub concurrency_retry_after: Option<String>,
    /// While Redis cannot be reached: `fail_closed` (default), `fail_open` or `local`.
    pub on_store_error: Option<String>,
}

/// A rate limit: `limit` per `period`, enforced by `algorithm` (a token bucket holds at most `burst`,
/// default `limit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSection {
    /// Permits per period.
    pub limit: u64,
    /// The period, e.g. `"1s"` or `"1m"`. Default `"1s"`.
    pub period: Option<String>,
    /// A token bucket's capacity. Default: `limit`.
    pub burst: Option<u64>,
    /// `token_bucket` (default), `fixed_window` or `sliding_window`.
    pub algorithm: Option<String>,
}

/// `[[resources.partitions]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionSection {
    /// The descriptor key, e.g. `tenant`.
    pub descriptor: String,
    /// Per-value rate limit.
    pub rate: Option<RateSection>,
    /// Per-value concurrency limit.
    pub concurrency: Option<u32>,
    /// The partition's levels are a dry run (checked and debited, never denying).
    pub shadow: Option<bool>,
    /// Named values with limits of their own.
    #[serde(default)]
    pub overrides: Vec<OverrideSection>,
}

/// One of a partition's `overrides`: `value` gets these limits instead of the partition's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideSection {
    /// The descriptor value, e.g. `acme`.
    pub value: String,
    /// Its rate limit (none: unlimited by rate).
    pub rate: Option<RateSection>,
    /// Its concurrency limit (none: unlimited).
    pub concurrency: Option<u32>,
    /// Its level is a dry run (default: the partition's).
    pub shadow: Option<bool>,
    /// Traffic with this value is never limited (granted, counted, holding a lease): takes no limits.
    pub bypass: Option<bool>,
}

/// `breaker = { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerSection {
    /// Failure rate (0..1] that opens the breaker. Default 0.5.
    pub failure_rate: Option<f64>,
    /// Calls needed in the window before the rate counts. Default 20.
    pub min_calls: Option<u32>,
    /// Window length. Default `"60s"`.
    pub window: Option<String>,
    /// Failures in a row that open it (0 = off). Default 0.
    pub consecutive_failures: Option<u32>,
    /// Open period. Default `"30s"`.
    pub open_duration: Option<String>,
    /// Multiplier on the open period after each failed half-open. Default 2.
    pub open_backoff: Option<f64>,
    /// Cap on the open period. Default `"5m"`.
    pub max_open_duration: Option<String>,
    /// Probe leases while half-open, fleet-wide. Default 3.
    pub half_open_probes: Option<u32>,
    /// Probe successes to close. Default: `half_open_probes`.
    pub half_open_successes: Option<u32>,
    /// One breaker per value of this descriptor instead of one per resource.
    pub partition: Option<String>,
}

/// `adaptive = { ... }`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveSection {
    /// Multiplier on a throttle. Default 0.5.
    pub decrease_factor: Option<f64>,
    /// Lowest fraction of the configured rate. Default 0.1.
    pub floor: Option<f64>,
    /// No further decrease within this of the last. Default `"1s"`.
    pub cooldown: Option<String>,
    /// Fraction of the configured rate regained per interval with traffic. Default 0.05.
    pub increase_step: Option<f64>,
    /// Default `"1s"`.
    pub increase_interval: Option<String>,
}

/// `[[resources]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceSection {
    /// Name or glob pattern (`partner.*`, `*`).
    pub name: String,
    /// Resource-wide rate limit.
    pub rate: Option<RateSection>,
    /// Resource-wide concurrency limit.
    pub concurrency: Option<u32>,
    /// Partition levels.
    #[serde(default)]
    pub partitions: Vec<PartitionSection>,
    /// Circuit breaker.
    pub breaker: Option<BreakerSection>,
    /// Adaptive rate.
    pub adaptive: Option<AdaptiveSection>,
    /// Overrides of `[defaults]`.
    pub lease_ttl: Option<String>,
    /// See `[defaults]`.
    pub max_lease_ttl: Option<String>,
    /// See `[defaults]`.
    pub max_pause: Option<String>,
    /// See `[defaults]`.
    pub concurrency_retry_after: Option<String>,
    /// Most tokens a settlement may put a level below empty (default: the level's burst).
    pub max_debt: Option<u64>,
    /// False: grants are final (Release's `used_permits` is ignored; a rate-only grant is not stored).
    pub settlement: Option<bool>,
    /// See `[defaults]`.
    pub on_store_error: Option<String>,
    /// The resource-wide level is a dry run (checked and debited, never denying).
    pub shadow: Option<bool>,
    /// Priority classes and the capacity reserved for the higher ones.
    pub priority: Option<PrioritySection>,
    /// With a shared store: each node takes slices of the rate levels' permits and grants from them
    /// locally.
    pub local_share: Option<LocalShareSection>,
}

/// `local_share = { max_fraction, ttl }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalShareSection {
    /// The largest slice one node holds, as a fraction (0..=1) of the smallest burst among the levels.
    pub max_fraction: f64,
    /// How long a node grants from one slice before giving back what is left. Default `"200ms"`.
    pub ttl: Option<String>,
}

/// `priority = { classes, default, reserve }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrioritySection {
    /// Class names, highest first.
    pub classes: Vec<String>,
    /// The class of a request that names none. Default: the lowest.
    pub default: Option<String>,
    /// Fraction (0..1) of every level's capacity reserved for a class: the classes below it may not use it.
    #[serde(default)]
    pub reserve: std::collections::BTreeMap<String, f64>,
}
