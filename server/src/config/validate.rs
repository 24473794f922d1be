//! Checking a [`ConfigFile`] and building typed values from it. Every problem names its key, e.g.
//! `resources[1] ("bedrock.invoke").rate.burst: must be at least 1`.

use std::{collections::HashSet, net::SocketAddr, sync::Arc, time::Duration};

use super::file::{
    AdaptiveSection, BreakerSection, CapacitySection, ConfigFile, DefaultsSection, LimitsSection,
    MetricsSection, PartitionSection, PrioritySection, RateSection, ResourceSection, ServerSection,
    TracingSection,
};
use crate::engine::{
    AdaptiveSpec, Algorithm, BreakerSpec, Capacity, LevelSpec, LocalShare, OnStoreError, Partition,
    Priority, RateSpec, RequestLimits, Rule, Rules, glob, priority::PPM,
};

/// A config that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key has a bad value.
    #[error("config key {key}: {problem}")]
    Invalid {
        /// The key, e.g. `server.listen` or `resources[0] ("x").rate.limit`.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// The file could not be read or parsed.
    #[error("config: {0}")]
    Source(String),
}

pub(super) fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Server settings (not rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSettings {
    /// Where to serve gRPC.
    pub listen: SocketAddr,
    /// How long in-flight calls may run after a shutdown signal.
    pub shutdown_grace: Duration,
    /// How long to keep serving with health NOT_SERVING before closing.
    pub drain_delay: Duration,
    /// How often expired leases are reclaimed.
    pub sweep_interval: Duration,
    /// Largest gRPC request accepted, in bytes.
    pub max_request_bytes: usize,
    /// Runtime threads (0: one per core; 1: a current-thread runtime).
    pub worker_threads: usize,
    /// Log format.
    pub log_format: LogFormat,
    /// TLS, when configured.
    pub tls: Option<super::TlsSettings>,
    /// The plaintext health-only listener, when configured.
    pub health_listen: Option<SocketAddr>,
    /// HTTP/2 and connection limits.
    pub http2: super::Http2Settings,
}

/// Where `/metrics` is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSettings {
    /// The HTTP endpoint's address; `None` when metrics are off.
    pub listen: Option<SocketAddr>,
}

/// OpenTelemetry export.
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// OTLP/gRPC collector; `None`: nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of exported spans.
    pub service_name: String,
    /// Fraction of new traces sampled.
    pub sample_ratio: f64,
    /// Longest time one export may take.
    pub export_timeout: Duration,
}

/// Everything a validated config yields.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Server settings.
    pub server: ServerSettings,
    /// The metrics endpoint.
    pub metrics: MetricsSettings,
    /// OpenTelemetry export.
    pub tracing: TracingSettings,
    /// Engine rules.
    pub rules: Rules,
    /// Who may call what.
    pub auth: crate::auth::AuthSettings,
    /// Where quota state lives.
    pub store: super::StoreSettings,
    /// Envoy's rate limit service: its config files, read.
    pub rls: std::sync::Arc<crate::rls::RlsConfig>,
}

pub(super) fn duration(
    key: &str,
    value: Option<&String>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(s) = value else { return Ok(default) };
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        invalid(
            key,
            format!("'{s}' is not a duration ({e}); write e.g. \"250ms\", \"30s\", \"15m\""),
        )
    })?;
    if d > crate::clock::MAX_DURATION {
        return Err(invalid(key, format!("'{s}' is longer than 365 days")));
    }
    Ok(d)
}

pub(super) fn positive(key: &str, d: Duration) -> Result<Duration, ConfigError> {
    if d.is_zero() {
        Err(invalid(key, "must be greater than zero"))
    } else {
        Ok(d)
    }
}

fn at_least_one<T: PartialOrd + From<u8> + Copy>(key: &str, v: T) -> Result<T, ConfigError> {
    if v < T::from(1) {
        Err(invalid(key, "must be at least 1"))
    } else {
        Ok(v)
    }
}

pub(super) fn at_most(key: &str, v: usize, max: usize) -> Result<usize, ConfigError> {
    if v > max {
        Err(invalid(key, format!("must be at most {max}")))
    } else {
        Ok(v)
    }
}

fn fraction(key: &str, v: f64, allow_one: bool) -> Result<f64, ConfigError> {
    let ok = v > 0.0 && (v < 1.0 || (allow_one && v == 1.0));
    if ok {
        Ok(v)
    } else {
        Err(invalid(
            key,
            format!(
                "{v} is out of range; must be > 0 and {}",
                if allow_one { "≤ 1" } else { "< 1" }
            ),
        ))
    }
}

fn rate(key: &str, r: &RateSection) -> Result<RateSpec, ConfigError> {
    let limit = at_least_one(&format!("{key}.limit"), r.limit)?;
    let period = positive(
        &format!("{key}.period"),
        duration(
            &format!("{key}.period"),
            r.period.as_ref(),
            Duration::from_secs(1),
        )?,
    )?;
    let burst = at_least_one(&format!("{key}.burst"), r.burst.unwrap_or(limit))?;
    if period.as_nanos() / u128::from(limit) == 0 {
        return Err(invalid(
            key,
            "more than one token per nanosecond is not supported",
        ));
    }
    let algorithm = algorithm(key, r)?;
    Ok(RateSpec::new(limit, period, burst).with_algorithm(algorithm))
}

/// `rate.algorithm`, and what only a token bucket has: a window's capacity is its `limit`, and its period
/// is a whole number of milliseconds (windows are aligned to the Unix epoch in both stores).
fn algorithm(key: &str, r: &RateSection) -> Result<Algorithm, ConfigError> {
    let name = r.algorithm.as_deref().unwrap_or("token_bucket");
    let Some(algorithm) = Algorithm::parse(name) else {
        let all: Vec<&str> = Algorithm::ALL.iter().map(|a| a.as_str()).collect();
        return Err(invalid(
            format!("{key}.algorithm"),
            format!("'{name}' is not one of: {}", all.join(", ")),
        ));
    };
    if algorithm == Algorithm::TokenBucket {
        return Ok(algorithm);
    }
    if r.burst.is_some() {
        return Err(invalid(
            format!("{key}.burst"),
            format!("only a token_bucket has a burst; a {name}'s capacity is its limit"),
        ));
    }
    let period = duration(
        &format!("{key}.period"),
        r.period.as_ref(),
        Duration::from_secs(1),
    )?;
    if period.as_nanos() % 1_000_000 != 0 {
        return Err(invalid(
            format!("{key}.period"),
            format!("a {name}'s period must be a whole number of milliseconds"),
        ));
    }
    Ok(algorithm)
}

fn concurrency(key: &str, c: Option<u32>) -> Result<Option<u32>, ConfigError> {
    c.map(|c| at_least_one(key, c)).transpose()
}

fn breaker(key: &str, b: &BreakerSection) -> Result<BreakerSpec, ConfigError> {
    let d = BreakerSpec::default();
    let half_open_probes = at_least_one(
        &format!("{key}.half_open_probes"),
        b.half_open_probes.unwrap_or(d.half_open_probes),
    )?;
    let half_open_successes = at_least_one(
        &format!("{key}.half_open_successes"),
        b.half_open_successes.unwrap_or(half_open_probes),
    )?;
    if half_open_successes > half_open_probes {
        return Err(invalid(
            format!("{key}.half_open_successes"),
            format!(
                "{half_open_successes} exceeds half_open_probes ({half_open_probes}); it could never close"
            ),
        ));
    }
    let open_duration = positive(
        &format!("{key}.open_duration"),
        duration(
            &format!("{key}.open_duration"),
            b.open_duration.as_ref(),
            d.open_duration,
        )?,
    )?;
    let max_open_duration = duration(
        &format!("{key}.max_open_duration"),
        b.max_open_duration.as_ref(),
        d.max_open_duration.max(open_duration),
    )?;
    if max_open_duration < open_duration {
        return Err(invalid(
            format!("{key}.max_open_duration"),
            "must be at least open_duration",
        ));
    }
    let open_backoff = b.open_backoff.unwrap_or(d.open_backoff);
    if !(1.0..=100.0).contains(&open_backoff) {
        return Err(invalid(
            format!("{key}.open_backoff"),
            format!("{open_backoff} is out of range; must be 1..=100"),
        ));
    }
    Ok(BreakerSpec {
        failure_rate: fraction(
            &format!("{key}.failure_rate"),
            b.failure_rate.unwrap_or(d.failure_rate),
            true,
        )?,
        min_calls: at_least_one(
            &format!("{key}.min_calls"),
            b.min_calls.unwrap_or(d.min_calls),
        )?,
        window: positive(
            &format!("{key}.window"),
            duration(&format!("{key}.window"), b.window.as_ref(), d.window)?,
        )?,
        consecutive_failures: b.consecutive_failures.unwrap_or(d.consecutive_failures),
        open_duration,
        open_backoff,
        max_open_duration,
        half_open_probes,
        half_open_successes,
    })
}

fn adaptive(key: &str, a: &AdaptiveSection) -> Result<AdaptiveSpec, ConfigError> {
    let d = AdaptiveSpec::default();
    Ok(AdaptiveSpec {
        decrease_factor: fraction(
            &format!("{key}.decrease_factor"),
            a.decrease_factor.unwrap_or(d.decrease_factor),
            false,
        )?,
        floor: fraction(&format!("{key}.floor"), a.floor.unwrap_or(d.floor), true)?,
        cooldown: duration(&format!("{key}.cooldown"), a.cooldown.as_ref(), d.cooldown)?,
        increase_step: fraction(
            &format!("{key}.increase_step"),
            a.increase_step.unwrap_or(d.increase_step),
            true,
        )?,
        increase_interval: positive(
            &format!("{key}.increase_interval"),
            duration(
                &format!("{key}.increase_interval"),
                a.increase_interval.as_ref(),
                d.increase_interval,
            )?,
        )?,
    })
}

fn descriptor_key(key: &str, d: &str) -> Result<Arc<str>, ConfigError> {
    if d.is_empty() || d.len() > 256 || d.chars().any(char::is_control) {
        return Err(invalid(
            key,
            format!("'{d}' must be 1..=256 bytes with no control characters"),
        ));
    }
    Ok(Arc::from(d))
}

fn partition(key: &str, p: &PartitionSection) -> Result<Partition, ConfigError> {
    let limits = LevelSpec {
        rate: p
            .rate
            .as_ref()
            .map(|r| rate(&format!("{key}.rate"), r))
            .transpose()?,
        max_in_flight: concurrency(&format!("{key}.concurrency"), p.concurrency)?,
        shadow: p.shadow.unwrap_or(false),
        bypass: false,
    };
    if limits.rate.is_none() && limits.max_in_flight.is_none() {
        return Err(invalid(
            key,
            "a partition needs a rate, a concurrency limit, or both",
        ));
    }
    let (overrides, by_value) = overrides(key, p)?;
    Ok(Partition {
        descriptor: descriptor_key(&format!("{key}.descriptor"), &p.descriptor)?,
        limits,
        overrides,
        by_value,
    })
}

/// A partition's `overrides`: each value once, each with limits of its own (a value with neither a rate
/// nor a concurrency limit is unlimited at this level; its shadow flag defaults to the partition's).
type Overrides = (
    Vec<(Arc<str>, LevelSpec)>,
    std::collections::HashMap<Arc<str>, u32>,
);

fn overrides(key: &str, p: &PartitionSection) -> Result<Overrides, ConfigError> {
    let (mut list, mut by_value) = (Vec::new(), std::collections::HashMap::new());
    for (k, o) in p.overrides.iter().enumerate() {
        let okey = format!("{key}.overrides[{k}]");
        if o.value.is_empty() || o.value.len() > 256 || o.value.chars().any(char::is_control) {
            return Err(invalid(
                format!("{okey}.value"),
                "must be 1..=256 bytes with no control characters",
            ));
        }
        let value: Arc<str> = Arc::from(o.value.as_str());
        let index = u32::try_from(list.len()).unwrap_or(u32::MAX);
        if by_value.insert(value.clone(), index).is_some() {
            return Err(invalid(
                format!("{okey}.value"),
                format!("'{}' is overridden twice", o.value),
            ));
        }
        let spec = LevelSpec {
            rate: o
                .rate
                .as_ref()
                .map(|r| rate(&format!("{okey}.rate"), r))
                .transpose()?,
            max_in_flight: concurrency(&format!("{okey}.concurrency"), o.concurrency)?,
            shadow: o.shadow.or(p.shadow).unwrap_or(false),
            bypass: o.bypass.unwrap_or(false),
        };
        if spec.bypass
            && (spec.rate.is_some() || spec.max_in_flight.is_some() || o.shadow.is_some())
        {
            return Err(invalid(
                format!("{okey}.bypass"),
                "a bypassed value is never limited: give it no rate, concurrency or shadow",
            ));
        }
        list.push((value, spec));
    }
    Ok((list, by_value))
}

fn resource(
    i: usize,
    r: &ResourceSection,
    defaults: &DefaultsSection,
) -> Result<Rule, ConfigError> {
    let key = format!("resources[{i}] ({:?})", r.name);
    if r.name.is_empty() || r.name.len() > 256 || r.name.chars().any(char::is_control) {
        return Err(invalid(
            format!("resources[{i}].name"),
            "must be 1..=256 bytes with no control characters",
        ));
    }
    let d = |field: &str, own: Option<&String>, fallback: Option<&String>, default: Duration| {
        duration(&format!("{key}.{field}"), own.or(fallback), default)
    };
    let (lease_ttl, max_lease_ttl) = lease_ttls(&key, r, defaults)?;
    let partitions = partitions(&key, r)?;
    let resource = LevelSpec {
        rate: r
            .rate
            .as_ref()
            .map(|x| rate(&format!("{key}.rate"), x))
            .transpose()?,
        max_in_flight: concurrency(&format!("{key}.concurrency"), r.concurrency)?,
        shadow: r.shadow.unwrap_or(false),
        bypass: false,
    };
    let (breaker, breaker_partition) = resource_breaker(&key, r)?;
    let adaptive = resource_adaptive(&key, r, &resource, &partitions)?;
    let local_share = local_share(&key, r, &resource, &partitions)?;
    // A slice's grants are final: settlement is off unless asked for, and then refused.
    let settlement = r.settlement.unwrap_or(local_share.is_none());
    if !settlement && r.max_debt.is_some() {
        return Err(invalid(
            format!("{key}.max_debt"),
            "settlement = false: a release never charges, so max_debt would do nothing; remove one",
        ));
    }
    Ok(Rule {
        on_store_error: on_store_error(&key, r, defaults)?,
        priority: r
            .priority
            .as_ref()
            .map(|p| priority(&format!("{key}.priority"), p))
            .transpose()?,
        max_debt: r.max_debt,
        settlement,
        local_share,
        name: crate::engine::intern(&r.name),
        resource,
        partitions,
        lease_ttl,
        max_lease_ttl,
        breaker,
        breaker_partition,
        adaptive,
        max_pause: d(
            "max_pause",
            r.max_pause.as_ref(),
            defaults.max_pause.as_ref(),
            Duration::from_secs(300),
        )?,
        concurrency_retry_after: positive(
            &format!("{key}.concurrency_retry_after"),
            d(
                "concurrency_retry_after",
                r.concurrency_retry_after.as_ref(),
                defaults.concurrency_retry_after.as_ref(),
                Duration::from_millis(100),
            )?,
        )?,
    })
}

/// A resource's `lease_ttl` and `max_lease_ttl` (each its own, else `[defaults]`'s, else 1 m and 1 h).
fn lease_ttls(
    key: &str,
    r: &ResourceSection,
    defaults: &DefaultsSection,
) -> Result<(Duration, Duration), ConfigError> {
    let lease_ttl = positive(
        &format!("{key}.lease_ttl"),
        duration(
            &format!("{key}.lease_ttl"),
            r.lease_ttl.as_ref().or(defaults.lease_ttl.as_ref()),
            Duration::from_secs(60),
        )?,
    )?;
    let max_lease_ttl = duration(
        &format!("{key}.max_lease_ttl"),
        r.max_lease_ttl.as_ref().or(defaults.max_lease_ttl.as_ref()),
        Duration::from_secs(3600).max(lease_ttl),
    )?;
    if max_lease_ttl < lease_ttl {
        return Err(invalid(
            format!("{key}.max_lease_ttl"),
            format!("{max_lease_ttl:?} is below lease_ttl {lease_ttl:?}"),
        ));
    }
    Ok((lease_ttl, max_lease_ttl))
}

/// A resource's partitions, each descriptor at most once.
fn partitions(key: &str, r: &ResourceSection) -> Result<Vec<Partition>, ConfigError> {
    let mut partitions = Vec::new();
    let mut seen = HashSet::new();
    for (j, p) in r.partitions.iter().enumerate() {
        let pkey = format!("{key}.partitions[{j}]");
        if !seen.insert(p.descriptor.as_str()) {
            return Err(invalid(
                format!("{pkey}.descriptor"),
                format!("'{}' is partitioned twice", p.descriptor),
            ));
        }
        partitions.push(partition(&pkey, p)?);
    }
    Ok(partitions)
}

/// A resource's breaker, and the descriptor it is partitioned by.
fn resource_breaker(
    key: &str,
    r: &ResourceSection,
) -> Result<(Option<BreakerSpec>, Option<Arc<str>>), ConfigError> {
    let spec = r
        .breaker
        .as_ref()
        .map(|b| breaker(&format!("{key}.breaker"), b))
        .transpose()?;
    let partition = r
        .breaker
        .as_ref()
        .and_then(|b| b.partition.as_ref())
        .map(|p| descriptor_key(&format!("{key}.breaker.partition"), p))
        .transpose()?;
    Ok((spec, partition))
}

/// A resource's adaptive rate, which needs a rate limit somewhere to adapt.
/// `local_share`: only for a resource whose grants can come from a slice (rate levels, nothing held).
fn local_share(
    key: &str,
    r: &ResourceSection,
    resource: &LevelSpec,
    partitions: &[Partition],
) -> Result<Option<LocalShare>, ConfigError> {
    let Some(s) = &r.local_share else {
        return Ok(None);
    };
    let k = format!("{key}.local_share");
    let max_fraction = fraction(&format!("{k}.max_fraction"), s.max_fraction, true)?;
    let ttl = positive(
        &format!("{k}.ttl"),
        duration(
            &format!("{k}.ttl"),
            s.ttl.as_ref(),
            Duration::from_millis(200),
        )?,
    )?;
    if ttl > Duration::from_secs(10) {
        return Err(invalid(
            format!("{k}.ttl"),
            "must be at most 10s: a node's slice hides a pause and a reload from it for that long",
        ));
    }
    let per_call = [
        (r.breaker.is_some(), "a breaker"),
        (r.adaptive.is_some(), "an adaptive rate"),
        (r.priority.is_some(), "priority classes"),
        (resource.max_in_flight.is_some(), "a concurrency limit"),
        (resource.shadow, "shadow = true"),
        (r.settlement == Some(true), "settlement = true"),
    ];
    if let Some((_, what)) = per_call.iter().find(|(has, _)| *has) {
        return Err(invalid(
            k,
            format!(
                "a slice's grants are final and hold nothing, but the resource has {what} (decided per \
                 call): put it on a resource of its own, or remove local_share"
            ),
        ));
    }
    let rated = resource.rate.is_some()
        || partitions
            .iter()
            .any(|p| p.specs().any(|spec| spec.rate.is_some()));
    if !rated {
        return Err(invalid(k, "the resource has no rate to share: give it one"));
    }
    Ok(Some(LocalShare { max_fraction, ttl }))
}

fn resource_adaptive(
    key: &str,
    r: &ResourceSection,
    resource: &LevelSpec,
    partitions: &[Partition],
) -> Result<Option<AdaptiveSpec>, ConfigError> {
    let spec = r
        .adaptive
        .as_ref()
        .map(|a| adaptive(&format!("{key}.adaptive"), a))
        .transpose()?;
    if spec.is_some()
        && resource.rate.is_none()
        && partitions.iter().all(|p| p.limits.rate.is_none())
    {
        return Err(invalid(
            format!("{key}.adaptive"),
            "needs a rate limit to adapt",
        ));
    }
    Ok(spec)
}

/// `priority`: distinct class names (at most 255), a default among them, and reserves for classes that
/// have a class below them, together leaving the lowest class something.
fn priority(key: &str, p: &PrioritySection) -> Result<Priority, ConfigError> {
    if p.classes.is_empty() || p.classes.len() > 255 {
        return Err(invalid(
            format!("{key}.classes"),
            "needs 1..=255 class names",
        ));
    }
    let mut classes: Vec<Arc<str>> = Vec::with_capacity(p.classes.len());
    for (i, c) in p.classes.iter().enumerate() {
        if c.is_empty() || c.len() > 64 || c.chars().any(char::is_control) {
            return Err(invalid(
                format!("{key}.classes[{i}]"),
                "must be 1..=64 bytes with no control characters",
            ));
        }
        if classes.iter().any(|x| **x == **c) {
            return Err(invalid(
                format!("{key}.classes[{i}]"),
                format!("'{c}' is named twice"),
            ));
        }
        classes.push(Arc::from(c.as_str()));
    }
    let index = |field: String, name: &str| {
        classes.iter().position(|c| **c == *name).ok_or_else(|| {
            invalid(
                field,
                format!(
                    "'{name}' is not one of the classes: {}",
                    p.classes.join(", ")
                ),
            )
        })
    };
    let default = match &p.default {
        Some(d) => index(format!("{key}.default"), d)?,
        None => classes.len() - 1,
    };
    let mut reserve = vec![0u32; classes.len()];
    for (name, fraction) in &p.reserve {
        let field = format!("{key}.reserve.{name}");
        let i = index(field.clone(), name)?;
        if !(fraction.is_finite() && (0.0..1.0).contains(fraction)) {
            return Err(invalid(
                field,
                "must be a fraction of capacity, at least 0 and below 1",
            ));
        }
        if i + 1 == classes.len() {
            return Err(invalid(
                field,
                "is the lowest class: no class below it could be kept out of a reserve for it",
            ));
        }
        reserve[i] = (fraction * f64::from(PPM)).round() as u32;
    }
    let total: u64 = reserve.iter().map(|r| u64::from(*r)).sum();
    if total >= u64::from(PPM) {
        return Err(invalid(
            format!("{key}.reserve"),
            "reserves add up to the whole capacity: the lowest class could never be granted",
        ));
    }
    Ok(Priority {
        classes,
        // At most 255 classes (checked above).
        default: default as u8,
        reserve,
    })
}

fn on_store_error(
    key: &str,
    r: &ResourceSection,
    defaults: &DefaultsSection,
) -> Result<OnStoreError, ConfigError> {
    match r
        .on_store_error
        .as_deref()
        .or(defaults.on_store_error.as_deref())
        .unwrap_or("fail_closed")
    {
        "fail_closed" => Ok(OnStoreError::FailClosed),
        "fail_open" => Ok(OnStoreError::FailOpen),
        "local" => Ok(OnStoreError::Local),
        other => Err(invalid(
            format!("{key}.on_store_error"),
            format!("'{other}' is not one of: fail_closed, fail_open, local"),
        )),
    }
}

impl ConfigFile {
    /// Validates the file into typed settings, section by section.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        self.validate_in(std::path::Path::new("."))
    }

    /// Validates, reading the files the config names (`[rls] config`) relative to `base`.
    pub fn validate_in(&self, base: &std::path::Path) -> Result<Settings, ConfigError> {
        let mut rls = crate::rls::RlsConfig::load(
            &self.rls.config,
            base,
            self.rls.response_headers.unwrap_or(false),
        )
        .map_err(ConfigError::Source)?;
        let limits = limits(&self.limits)?;
        let rules = Rules::new(self.rules(&limits)?, limits, capacity(&self.capacity)?);
        rls.routes = super::rls::routes(&self.rls.routes, &rules, !self.redis.cluster.is_empty())?;
        Ok(Settings {
            server: server(&self.server)?,
            metrics: metrics(&self.metrics)?,
            tracing: tracing_settings(&self.tracing)?,
            store: super::store::store(self.store.as_deref(), &self.redis, &rules)?,
            rules,
            auth: super::auth::auth(&self.auth)?,
            rls: std::sync::Arc::new(rls),
        })
    }

    /// `[[resources]]`: each name once, within `limits.max_name_bytes`.
    fn rules(&self, limits: &RequestLimits) -> Result<Vec<Rule>, ConfigError> {
        let mut names = HashSet::new();
        let mut rules = Vec::with_capacity(self.resources.len());
        for (i, r) in self.resources.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                return Err(invalid(
                    format!("resources[{i}].name"),
                    format!("'{}' is declared twice", r.name),
                ));
            }
            if r.name.len() > limits.max_name_bytes {
                return Err(invalid(
                    format!("resources[{i}].name"),
                    "is longer than limits.max_name_bytes",
                ));
            }
            let rule = resource(i, r, &self.defaults)?;
            if glob::is_pattern(rule.name) {
                tracing::debug!(pattern = %rule.name, "resource pattern");
            }
            rules.push(rule);
        }
        Ok(rules)
    }
}

/// `[server]`.
fn server(s: &ServerSection) -> Result<ServerSettings, ConfigError> {
    let listen = address("server.listen", s.listen.as_deref(), "127.0.0.1:50051")?;
    let log_format = match s.log_format.as_deref().unwrap_or("text") {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            return Err(invalid(
                "server.log_format",
                format!("'{other}' is not one of: text, json"),
            ));
        }
    };
    let max_request_bytes = s.max_request_bytes.unwrap_or(64 * 1024);
    if !(1024..=16 * 1024 * 1024).contains(&max_request_bytes) {
        return Err(invalid(
            "server.max_request_bytes",
            "must be between 1024 and 16777216",
        ));
    }
    let worker_threads = s.worker_threads.unwrap_or(0);
    if worker_threads > 1024 {
        return Err(invalid(
            "server.worker_threads",
            "must be at most 1024 (0: one per core)",
        ));
    }
    Ok(ServerSettings {
        worker_threads,
        listen,
        shutdown_grace: duration(
            "server.shutdown_grace",
            s.shutdown_grace.as_ref(),
            Duration::from_secs(10),
        )?,
        drain_delay: duration("server.drain_delay", s.drain_delay.as_ref(), Duration::ZERO)?,
        sweep_interval: sweep_interval(s)?,
        max_request_bytes,
        log_format,
        tls: s.tls.as_ref().map(super::transport::tls).transpose()?,
        health_listen: super::transport::health_listen(s.health_listen.as_deref())?,
        http2: super::transport::http2(&s.http2)?,
    })
}

/// `server.sweep_interval`: at most a second, so expired leases return within TTL + 1 s.
fn sweep_interval(s: &ServerSection) -> Result<Duration, ConfigError> {
    let key = "server.sweep_interval";
    let d = positive(
        key,
        duration(key, s.sweep_interval.as_ref(), Duration::from_millis(250))?,
    )?;
    if d > Duration::from_secs(1) {
        return Err(invalid(
            key,
            "must be at most 1s so expired leases return within TTL + 1s",
        ));
    }
    Ok(d)
}

/// A socket address at `key`, or `default` when unset.
fn address(key: &str, value: Option<&str>, default: &str) -> Result<SocketAddr, ConfigError> {
    let s = value.unwrap_or(default);
    s.parse()
        .map_err(|_| invalid(key, format!("'{s}' is not an address like {default}")))
}

/// `[limits]`.
fn limits(l: &LimitsSection) -> Result<RequestLimits, ConfigError> {
    let d = RequestLimits::default();
    Ok(RequestLimits {
        max_name_bytes: at_least_one(
            "limits.max_name_bytes",
            l.max_name_bytes.unwrap_or(d.max_name_bytes),
        )?,
        max_descriptors: l.max_descriptors.unwrap_or(d.max_descriptors),
        max_request_id_bytes: at_least_one(
            "limits.max_request_id_bytes",
            l.max_request_id_bytes.unwrap_or(d.max_request_id_bytes),
        )?,
        max_message_bytes: l.max_message_bytes.unwrap_or(d.max_message_bytes),
        max_wait: duration("limits.max_wait", l.max_wait.as_ref(), d.max_wait)?,
    })
}

/// `[capacity]`.
fn capacity(c: &CapacitySection) -> Result<Capacity, ConfigError> {
    let d = Capacity::default();
    Ok(Capacity {
        max_live_keys: at_least_one(
            "capacity.max_live_keys",
            c.max_live_keys.unwrap_or(d.max_live_keys),
        )?,
        // Its upper bound is the in-memory store's (checked with the store, config/store.rs).
        max_leases: at_least_one("capacity.max_leases", c.max_leases.unwrap_or(d.max_leases))?,
        idempotency_window: duration(
            "capacity.idempotency_window",
            c.idempotency_window.as_ref(),
            d.idempotency_window,
        )?,
        max_request_ids: at_least_one(
            "capacity.max_request_ids",
            c.max_request_ids.unwrap_or(d.max_request_ids),
        )?,
    })
}

/// `[metrics]`: on by default, on 127.0.0.1:9464.
fn metrics(m: &MetricsSection) -> Result<MetricsSettings, ConfigError> {
    Ok(MetricsSettings {
        listen: if m.enabled.unwrap_or(true) {
            Some(address(
                "metrics.listen",
                m.listen.as_deref(),
                "127.0.0.1:9464",
            )?)
        } else {
            None
        },
    })
}

/// `[tracing]`.
fn tracing_settings(t: &TracingSection) -> Result<TracingSettings, ConfigError> {
    let otlp_endpoint = match t.otlp_endpoint.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(e) if e.starts_with("http://") || e.starts_with("https://") => Some(e.to_owned()),
        Some(e) => {
            return Err(invalid(
                "tracing.otlp_endpoint",
                format!("'{e}' is not a URL like http://127.0.0.1:4317"),
            ));
        }
    };
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        return Err(invalid("tracing.sample_ratio", "must be between 0 and 1"));
    }
    Ok(TracingSettings {
        otlp_endpoint,
        service_name: t
            .service_name
            .clone()
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| "quotad".to_owned()),
        sample_ratio,
        export_timeout: positive(
            "tracing.export_timeout",
            duration(
                "tracing.export_timeout",
                t.export_timeout.as_ref(),
                Duration::from_secs(3),
            )?,
        )?,
    })
}
