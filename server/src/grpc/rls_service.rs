//! `envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`: a gateway's request matched against the
//! `[rls]` config files ([`crate::rls`]), every descriptor's counter hit in one store step, and the answer
//! built as envoyproxy/ratelimit builds it (statuses per descriptor, the overall code, optional
//! `x-ratelimit-*` headers, the matched limits' metadata).

use std::{borrow::Cow, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use quotad_api::envoy::{
    config::core::v3::HeaderValue,
    extensions::common::ratelimit::v3::RateLimitDescriptor,
    service::ratelimit::v3::{
        RateLimitRequest, RateLimitResponse,
        rate_limit_response::{Code, DescriptorStatus, RateLimit},
        rate_limit_service_server::RateLimitService,
    },
};
use smallvec::SmallVec;
use tonic::{Request, Response, Status};

use crate::{
    engine::{
        Algorithm, LevelSpec, Quota, RateSpec, Store,
        policy::{Hit, HitMode, HitPlan, HitStatus},
    },
    metrics::Metrics,
    rls::{self, Matched, RlsConfig, RlsLimit, Unit},
};

/// The most descriptors one request may carry.
pub const MAX_DESCRIPTORS: usize = 64;
/// The most entries one descriptor may carry.
pub const MAX_ENTRIES: usize = 32;
/// The longest domain, entry key or entry value, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Hits beyond this are counted as this many: more than any limit (a `u32`) holds, exact in Redis's doubles.
const MAX_HITS: u64 = 1 << 40;

/// The rate limit service over `quota`'s store and the `[rls]` config in force (swapped on reload).
#[derive(Debug)]
pub struct RlsGrpc<S: Store> {
    quota: Arc<Quota<S>>,
    config: Arc<ArcSwap<RlsConfig>>,
    metrics: Option<Arc<Metrics>>,
}

impl<S: Store> RlsGrpc<S> {
    /// Serves `config` over `quota`'s store.
    pub fn new(quota: Arc<Quota<S>>, config: Arc<ArcSwap<RlsConfig>>) -> Self {
        Self {
            quota,
            config,
            metrics: None,
        }
    }

    /// Counts answers in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }
}

/// What one descriptor of a request comes to.
#[derive(Debug)]
enum Counted {
    /// No limit matched (or it was replaced): OK, no limit.
    Nothing,
    /// `unlimited: true`: OK, unlimited.
    Unlimited,
    /// Counted at hit `hit` of the plan, under `limit`; `metric` names it in the metrics.
    Hit {
        hit: usize,
        limit: Arc<RlsLimit>,
        metric: Arc<str>,
    },
}

#[tonic::async_trait]
impl<S: Store> RateLimitService for RlsGrpc<S> {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        self.answer(request.into_inner()).await.map(Response::new)
    }
}

impl<S: Store> RlsGrpc<S> {
    /// The answer to `req` (served on the unary path; the generated service's method calls it too).
    pub async fn answer(&self, req: RateLimitRequest) -> Result<RateLimitResponse, Status> {
        validate(&req)?;
        let config = self.config.load();
        let counted = limits(&config, &req);
        let tag = config.shard_tag(&req.domain);
        let mut plan = HitPlan::default();
        let mut kinds = Vec::with_capacity(counted.len());
        for (d, found) in req.descriptors.iter().zip(counted) {
            let entries = entries(d);
            if d.limit.is_none()
                && let Some(route) = config.route_for(&req.domain, &entries)
            {
                let (h, limit) = routed(&self.quota.rules(), &req, d, route)?;
                kinds.push(Counted::Hit {
                    hit: plan.hits.len(),
                    metric: limit.path.clone(),
                    limit,
                });
                plan.hits.push(h);
                continue;
            }
            let Some(matched) = found else {
                kinds.push(Counted::Nothing);
                continue;
            };
            let limit = matched.limit.clone();
            if limit.unlimited {
                kinds.push(Counted::Unlimited);
                continue;
            }
            let metric = if limit.detailed_metric || matched.value_to_metric {
                Arc::from(rls::config::descriptor_path(&req.domain, &entries))
            } else {
                limit.path.clone()
            };
            kinds.push(Counted::Hit {
                hit: plan.hits.len(),
                limit: limit.clone(),
                metric,
            });
            plan.hits
                .push(hit(&req, tag, d, &entries, &matched, &limit));
        }
        let hits = if plan.hits.is_empty() {
            Default::default()
        } else {
            self.quota.hits(&plan).await?
        };
        let answer = answer(&config, &req, &kinds, &hits.statuses, hits.over);
        if let Some(m) = &self.metrics {
            m.rls_answered(&req.domain, results(&kinds, &hits.statuses), hits.over);
        }
        Ok(answer)
    }
}

/// Bad input, named by field, as upstream refuses it (an empty domain or descriptor list), and past the
/// bounds a request may reach.
fn validate(req: &RateLimitRequest) -> Result<(), Status> {
    let bad = |field: String, why: String| Err(Status::invalid_argument(format!("{field}: {why}")));
    if req.domain.is_empty() {
        return bad("domain".into(), "must not be empty".into());
    }
    if req.domain.len() > MAX_TEXT {
        return bad("domain".into(), format!("is longer than {MAX_TEXT} bytes"));
    }
    if req.descriptors.is_empty() {
        return bad("descriptors".into(), "must not be empty".into());
    }
    if req.descriptors.len() > MAX_DESCRIPTORS {
        let n = req.descriptors.len();
        return bad(
            "descriptors".into(),
            format!("{n} descriptors, at most {MAX_DESCRIPTORS}"),
        );
    }
    for (i, d) in req.descriptors.iter().enumerate() {
        if d.entries.is_empty() {
            return bad(
                format!("descriptors[{i}].entries"),
                "must not be empty".into(),
            );
        }
        if d.entries.len() > MAX_ENTRIES {
            let n = d.entries.len();
            return bad(
                format!("descriptors[{i}].entries"),
                format!("{n} entries, at most {MAX_ENTRIES}"),
            );
        }
        for (j, e) in d.entries.iter().enumerate() {
            if e.key.is_empty() {
                return bad(
                    format!("descriptors[{i}].entries[{j}].key"),
                    "must not be empty".into(),
                );
            }
            if e.key.len() > MAX_TEXT || e.value.len() > MAX_TEXT {
                return bad(
                    format!("descriptors[{i}].entries[{j}]"),
                    format!("a key or value is longer than {MAX_TEXT} bytes"),
                );
            }
        }
        if let Some(l) = &d.limit
            && Unit::from_wire(l.unit).is_none()
        {
            return bad(
                format!("descriptors[{i}].limit.unit"),
                format!("{} is not a unit", l.unit),
            );
        }
    }
    Ok(())
}

fn entries(d: &RateLimitDescriptor) -> SmallVec<[(&str, &str); 4]> {
    d.entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect()
}

/// Each descriptor's matched limit (a descriptor's own `limit` wins; a routed descriptor has none here),
/// with `replaces` applied: a limit whose `name` another matched limit replaces is not counted.
fn limits(config: &RlsConfig, req: &RateLimitRequest) -> Vec<Option<Matched>> {
    let mut found: Vec<Option<Matched>> = Vec::with_capacity(req.descriptors.len());
    for d in &req.descriptors {
        let entries = entries(d);
        found.push(match &d.limit {
            Some(over) => {
                let unit = Unit::from_wire(over.unit).unwrap_or(Unit::Second);
                let path = rls::config::descriptor_path(&req.domain, &entries);
                Some(Matched {
                    limit: Arc::new(RlsLimit::overriding(over.requests_per_unit, unit, path)),
                    shared: Vec::new(),
                    value_to_metric: false,
                })
            }
            None if config.route_for(&req.domain, &entries).is_some() => None,
            None => config.limit_for(&req.domain, &entries),
        });
    }
    let replaced: Vec<&str> = found
        .iter()
        .flatten()
        .flat_map(|m| m.limit.replaces.iter().map(String::as_str))
        .collect();
    if replaced.is_empty() {
        return found;
    }
    let keep: Vec<bool> = found
        .iter()
        .map(|f| {
            let named = f.as_ref().and_then(|m| m.limit.name.as_deref());
            !named.is_some_and(|n| replaced.contains(&n))
        })
        .collect();
    found
        .into_iter()
        .zip(keep)
        .map(|(f, keep)| f.filter(|_| keep))
        .collect()
}

/// The counter a descriptor hits.
fn hit<'a>(
    req: &RateLimitRequest,
    tag: &str,
    d: &RateLimitDescriptor,
    entries: &[(&str, &str)],
    matched: &Matched,
    limit: &RlsLimit,
) -> Hit<'a> {
    let permits = hits_of(req, d);
    let rpu = u64::from(limit.requests_per_unit);
    let rate = RateSpec::new(rpu, limit.unit.period(), rpu).with_algorithm(Algorithm::FixedWindow);
    let mode = if limit.shadow {
        HitMode::Shadow
    } else if limit.quota {
        HitMode::Quota
    } else {
        HitMode::Enforced
    };
    Hit {
        key: Cow::Owned(rls::counter_key(tag, &req.domain, entries, &matched.shared)),
        spec: LevelSpec {
            rate: Some(rate),
            max_in_flight: None,
            shadow: limit.shadow,
            bypass: false,
        },
        permits,
        mode,
        negative: d.is_negative_hits,
    }
}

/// A descriptor's hits: its own `hits_addend` (0 only checks), else the request's (0 means 1), capped.
fn hits_of(req: &RateLimitRequest, d: &RateLimitDescriptor) -> u64 {
    let hits = match d.hits_addend {
        Some(n) => n,
        None => u64::from(req.hits_addend.max(1)),
    };
    hits.min(MAX_HITS)
}

/// The hit of a descriptor a route sends to a quotad resource: its resource-wide level, the very bucket
/// workers' Acquires draw on (its rate only: a gateway's hit holds no lease).
fn routed<'a>(
    rules: &crate::engine::Rules,
    req: &RateLimitRequest,
    d: &RateLimitDescriptor,
    route: &rls::Route,
) -> Result<(Hit<'a>, Arc<RlsLimit>), Status> {
    let rate = rules
        .resolve(&route.resource)
        .and_then(|r| r.resource.rate)
        .ok_or_else(|| {
            Status::failed_precondition(format!(
                "resource '{}' of this domain's route has no rate",
                route.resource
            ))
        })?;
    let unit = [
        Unit::Second,
        Unit::Minute,
        Unit::Hour,
        Unit::Day,
        Unit::Week,
        Unit::Month,
        Unit::Year,
    ]
    .into_iter()
    .find(|u| u.period() == rate.period);
    // A period that is no unit is reported per second (rounded down).
    let (per_unit, unit) = match unit {
        Some(u) => (rate.limit, u),
        None => (rate.per_second() as u64, Unit::Second),
    };
    let limit = Arc::new(RlsLimit::overriding(
        u32::try_from(per_unit).unwrap_or(u32::MAX),
        unit,
        format!("{}.route:{}", req.domain, route.resource),
    ));
    let hit = Hit {
        key: Cow::Owned(route.resource.clone()),
        spec: LevelSpec {
            rate: Some(rate),
            max_in_flight: None,
            shadow: false,
            bypass: false,
        },
        permits: hits_of(req, d),
        mode: HitMode::Enforced,
        negative: d.is_negative_hits,
    };
    Ok((hit, limit))
}

/// The answer: one status per descriptor, the overall code, and the headers and metadata asked for.
fn answer(
    config: &RlsConfig,
    req: &RateLimitRequest,
    kinds: &[Counted],
    statuses: &[HitStatus],
    over: bool,
) -> RateLimitResponse {
    let mut out = RateLimitResponse {
        overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
        ..RateLimitResponse::default()
    };
    // The status the headers describe: an enforced over-limit one, else the one with the least remaining.
    let mut closest: Option<(bool, u64, usize)> = None;
    let mut metadata = prost_types::Struct::default();
    for (i, kind) in kinds.iter().enumerate() {
        let status = match kind {
            Counted::Nothing => DescriptorStatus {
                code: Code::Ok as i32,
                ..DescriptorStatus::default()
            },
            Counted::Unlimited => DescriptorStatus {
                code: Code::Ok as i32,
                limit_remaining: u32::MAX,
                ..DescriptorStatus::default()
            },
            Counted::Hit { hit, limit, .. } => {
                let s = statuses.get(*hit).copied().unwrap_or_default();
                let refused = s.over && !limit.shadow;
                let enforced_over = refused && !limit.quota;
                let rank = (!enforced_over, s.remaining, i);
                if closest.is_none_or(|c| rank < c) {
                    closest = Some(rank);
                }
                if !refused && let Some(m) = &limit.metadata {
                    rls::metadata::merge(&mut metadata, m);
                }
                DescriptorStatus {
                    code: if refused { Code::OverLimit } else { Code::Ok } as i32,
                    current_limit: Some(RateLimit {
                        name: limit.name.clone().unwrap_or_default(),
                        requests_per_unit: limit.requests_per_unit,
                        unit: limit.unit.wire(),
                    }),
                    limit_remaining: u32::try_from(s.remaining).unwrap_or(u32::MAX),
                    duration_until_reset: Some(duration(s.reset_after)),
                    quota: None,
                }
            }
        };
        out.statuses.push(status);
    }
    if config.response_headers
        && let Some((_, _, i)) = closest
    {
        out.response_headers_to_add = headers(&out.statuses[i]);
    }
    if !metadata.fields.is_empty() {
        out.dynamic_metadata = Some(dynamic_metadata(req, metadata));
    }
    out
}

/// The draft RFC headers for the status `s`.
fn headers(s: &DescriptorStatus) -> Vec<HeaderValue> {
    let limit = s.current_limit.as_ref().map_or(0, |l| l.requests_per_unit);
    let reset = s.duration_until_reset.as_ref().map_or(0, |d| {
        // Whole seconds, rounded up: a reset "in 0 s" would say the window is over.
        d.seconds + i64::from(d.nanos > 0)
    });
    let header = |key: &str, value: String| HeaderValue {
        key: key.to_owned(),
        value,
        raw_value: Vec::new(),
    };
    vec![
        header("x-ratelimit-limit", limit.to_string()),
        header("x-ratelimit-remaining", s.limit_remaining.to_string()),
        header("x-ratelimit-reset", reset.to_string()),
    ]
}

/// `dynamic_metadata`, shaped as upstream's: the domain, the hits asked for, and the passed limits'
/// metadata merged.
fn dynamic_metadata(req: &RateLimitRequest, merged: prost_types::Struct) -> prost_types::Struct {
    use prost_types::{Value, value::Kind};
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "domain".to_owned(),
        Value {
            kind: Some(Kind::StringValue(req.domain.clone())),
        },
    );
    if req.hits_addend != 0 {
        fields.insert(
            "hitsAddend".to_owned(),
            Value {
                kind: Some(Kind::NumberValue(f64::from(req.hits_addend))),
            },
        );
    }
    fields.insert(
        "metadata".to_owned(),
        Value {
            kind: Some(Kind::StructValue(merged)),
        },
    );
    prost_types::Struct { fields }
}

fn duration(ns: u64) -> prost_types::Duration {
    let d = Duration::from_nanos(ns);
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Each counted descriptor's metric name and result (an index into the metrics' `RLS_RESULTS`: ok, over
/// the limit, a shadow limit over).
fn results<'a>(
    kinds: &'a [Counted],
    statuses: &'a [HitStatus],
) -> impl Iterator<Item = (&'a str, usize)> {
    kinds.iter().filter_map(|k| match k {
        Counted::Hit { hit, limit, metric } => {
            let over = statuses.get(*hit).is_some_and(|s| s.over);
            let result = match (over, limit.shadow) {
                (false, _) => 0,
                (true, false) => 1,
                (true, true) => 2,
            };
            Some((&**metric, result))
        }
        _ => None,
    })
}
