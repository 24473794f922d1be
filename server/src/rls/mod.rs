//! Envoy's rate limit service (`envoy.service.ratelimit.v3.RateLimitService`) over quotad's engine, with
//! envoyproxy/ratelimit's config files read as they are.
//!
//! - [`config`]: the YAML files, parsed into one tree per domain ([`RlsConfig`]);
//! - this module: a request's descriptor matched against the tree, as upstream matches it ([`RlsConfig::limit_for`]),
//!   and the counter it counts in ([`counter_key`]);
//! - [`metadata`]: a node's free-form `metadata` as a protobuf `Struct`;
//! - `grpc/rls_service.rs`: the RPC: every descriptor's counter hit in one store step
//!   ([`crate::engine::policy::hits`]), the answer built from what the store says.
//!
//! Each limit is a fixed window of its unit, aligned to the Unix epoch (upstream's windows). A request's
//! counters are checked and debited all or none (a shadow counter whenever it has room): one store step,
//! one Redis round trip.

pub mod config;
pub mod metadata;

use std::{fmt::Write as _, sync::Arc};

pub use config::{RlsConfig, RlsLimit, Route};

use crate::engine::plan::KEY_SEP;

/// A limit's unit: its window's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// Seven days.
    Week,
    /// Thirty days.
    Month,
    /// 365 days.
    Year,
}

impl Unit {
    /// Its number in `envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit` (and in
    /// `envoy.type.v3.RateLimitUnit`, which numbers them alike).
    pub fn wire(self) -> i32 {
        match self {
            Self::Second => 1,
            Self::Minute => 2,
            Self::Hour => 3,
            Self::Day => 4,
            Self::Month => 5,
            Self::Year => 6,
            Self::Week => 7,
        }
    }

    /// The unit numbered `n` on the wire, if any (0 is UNKNOWN: none).
    pub fn from_wire(n: i32) -> Option<Self> {
        Some(match n {
            1 => Self::Second,
            2 => Self::Minute,
            3 => Self::Hour,
            4 => Self::Day,
            5 => Self::Month,
            6 => Self::Year,
            7 => Self::Week,
            _ => return None,
        })
    }
}

/// What a descriptor matched.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The limit of the node its last entry reached.
    pub limit: Arc<RlsLimit>,
    /// Per entry, the wildcard value its counter uses instead of the entry's own (`share_threshold`);
    /// empty when none does.
    pub shared: Vec<Option<String>>,
    /// A node on its path asked for values in its metric name (`value_to_metric`).
    pub value_to_metric: bool,
}

impl RlsConfig {
    /// True when `domain` is configured.
    pub fn has_domain(&self, domain: &str) -> bool {
        self.domains.contains_key(domain)
    }

    /// The limit for one descriptor of `domain`, matched as upstream does: entry by entry, an exact
    /// `key_value` first, then the first wildcard that matches in file order, then the key alone; the limit
    /// is the one of the node the **last** entry reaches. A descriptor deeper than the tree, or one that
    /// stops above any limit, has none.
    pub fn limit_for(&self, domain: &str, entries: &[(&str, &str)]) -> Option<Matched> {
        let mut node = self.domains.get(domain)?;
        // Allocated only when a shared wildcard matched.
        let mut shared = Vec::new();
        let mut found = None;
        let mut value_to_metric = false;
        let mut key_value = String::new();
        for (i, (key, value)) in entries.iter().enumerate() {
            key_value.clear();
            key_value.push_str(key);
            key_value.push('_');
            key_value.push_str(value);
            let mut next = node.children.get(&key_value);
            if next.is_none() {
                for w in &node.wildcards {
                    if w.matches(&key_value) {
                        next = node.children.get(&w.pattern);
                        if next.is_some_and(|n| n.share_threshold) {
                            let pattern = (w.pattern.strip_prefix(key))
                                .and_then(|p| p.strip_prefix('_'))
                                .unwrap_or(&w.pattern);
                            shared.resize(entries.len(), None);
                            shared[i] = Some(pattern.to_owned());
                        }
                        break;
                    }
                }
            }
            let Some(next) = next.or_else(|| node.children.get(*key)) else {
                break;
            };
            value_to_metric |= next.value_to_metric;
            if i + 1 == entries.len() {
                found = next.limit.clone();
            }
            if next.children.is_empty() {
                break;
            }
            node = next;
        }
        found.map(|limit| Matched {
            limit,
            shared,
            value_to_metric,
        })
    }
}

/// Marks a state key as a gateway counter's (a control character: no resource name can hold it).
pub const COUNTER_MARK: char = '\u{1d}';

/// The state key of a descriptor's counter in `domain`: first the shard tag ([`RlsConfig::shard_tag`]: every
/// counter of a request shares it), then the domain and each entry's key and value (or its shared
/// wildcard), each length-prefixed so no two descriptors share a counter by accident.
pub fn counter_key(
    tag: &str,
    domain: &str,
    entries: &[(&str, &str)],
    shared: &[Option<String>],
) -> String {
    let mut key = String::with_capacity(tag.len() + domain.len() + 16 * entries.len() + 8);
    key.push(COUNTER_MARK);
    key.push_str(tag);
    key.push(KEY_SEP);
    let _ = write!(key, "{}:{domain}", domain.len());
    for (i, (k, v)) in entries.iter().enumerate() {
        let v = shared.get(i).and_then(Option::as_deref).unwrap_or(v);
        // Writing to a String cannot fail.
        let _ = write!(key, "{}:{k}{}:{v}", k.len(), v.len());
    }
    key
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const EXAMPLE: &str = r#"
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
    descriptors:
      - key: path
        value: "/api/*/action"
        rate_limit: {unit: minute, requests_per_unit: 2}
  - key: files
    value: "a*"
    share_threshold: true
    rate_limit: {unit: hour, requests_per_unit: 7}
"#;

    fn config() -> RlsConfig {
        let dir = std::env::temp_dir().join(format!("quotad-rls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.yaml"), EXAMPLE).unwrap();
        RlsConfig::load(&["a.yaml".into()], &dir, false).unwrap()
    }

    #[test]
    fn matching_follows_upstream() {
        let c = config();
        let rpu = |e: &[(&str, &str)]| {
            c.limit_for("mongo_cps", e)
                .map(|m| m.limit.requests_per_unit)
        };
        assert_eq!(rpu(&[("database", "users")]), Some(500));
        assert_eq!(rpu(&[("database", "other")]), None);
        assert_eq!(rpu(&[("remote_address", "10.0.0.1")]), Some(10));
        assert_eq!(
            rpu(&[("remote_address", "1"), ("path", "/api/v2/action")]),
            Some(2)
        );
        assert_eq!(rpu(&[("remote_address", "1"), ("path", "/x")]), None);
        assert_eq!(rpu(&[("database", "users"), ("deeper", "x")]), None);
        assert!(c.limit_for("nope", &[("database", "users")]).is_none());
        let m = c.limit_for("mongo_cps", &[("files", "abc")]).unwrap();
        assert_eq!(m.shared, vec![Some("a*".to_owned())]);
        let _ = Path::new("");
    }

    #[test]
    fn counter_keys_differ_by_every_entry_and_share_wildcards() {
        let a = counter_key("d", "d", &[("k", "a\u{1f}b")], &[None]);
        let b = counter_key("d", "d", &[("k", "a"), ("b", "")], &[None, None]);
        assert_ne!(a, b);
        let shared = [Some("a*".to_owned())];
        assert_eq!(
            counter_key("d", "d", &[("files", "abc")], &shared),
            counter_key("d", "d", &[("files", "axy")], &shared)
        );
        assert!(a.starts_with("\u{1d}d\u{1f}"));
    }
}
