//! envoyproxy/ratelimit's config files, read as they are: one YAML document per file with a `domain` and
//! `descriptors` nested to any depth. Every key upstream reads is accepted; an unknown key, a bad unit or a
//! malformed file fails naming the file, the line where the parser gives one, and the key.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::Deserialize;

use super::Unit;

/// One file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlFile {
    domain: Option<Scalar>,
    #[serde(default)]
    descriptors: Option<Vec<YamlDescriptor>>,
}

/// One descriptor node.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlDescriptor {
    key: Option<Scalar>,
    value: Option<Scalar>,
    rate_limit: Option<YamlRateLimit>,
    descriptors: Option<Vec<YamlDescriptor>>,
    #[serde(default)]
    shadow_mode: bool,
    #[serde(default)]
    quota_mode: bool,
    #[serde(default)]
    detailed_metric: bool,
    #[serde(default)]
    value_to_metric: bool,
    #[serde(default)]
    share_threshold: bool,
    metadata: Option<serde_norway::Value>,
}

/// A node's `rate_limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlRateLimit {
    #[serde(default)]
    requests_per_unit: u32,
    unit: Option<Scalar>,
    #[serde(default)]
    unlimited: bool,
    name: Option<Scalar>,
    #[serde(default)]
    replaces: Option<Vec<YamlReplaces>>,
}

/// One entry of `replaces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct YamlReplaces {
    name: Option<Scalar>,
}

/// A YAML scalar read as text (`value: 200` is the string `200`, as upstream reads it).
#[derive(Debug)]
struct Scalar(String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_norway::Value::deserialize(d)? {
            serde_norway::Value::String(s) => Ok(Self(s)),
            serde_norway::Value::Number(n) => Ok(Self(n.to_string())),
            serde_norway::Value::Bool(b) => Ok(Self(b.to_string())),
            serde_norway::Value::Null => Ok(Self(String::new())),
            _ => Err(D::Error::custom("expected a string")),
        }
    }
}

/// A limit a descriptor node declares.
#[derive(Debug, Clone, PartialEq)]
pub struct RlsLimit {
    /// Requests per unit (0 refuses every request that takes a hit).
    pub requests_per_unit: u32,
    /// The window's length.
    pub unit: Unit,
    /// `unlimited: true`: matched, never counted.
    pub unlimited: bool,
    /// `shadow_mode`: counted, never refuses.
    pub shadow: bool,
    /// `quota_mode`: refuses only with the request's other quota limits.
    pub quota: bool,
    /// `name`, which other limits' `replaces` name.
    pub name: Option<String>,
    /// The names of the limits this one replaces when both match one request.
    pub replaces: Vec<String>,
    /// The node's path, `domain.key_value.key`: its metric name.
    pub path: Arc<str>,
    /// `detailed_metric`: counted per descriptor value in the metrics (capped).
    pub detailed_metric: bool,
    /// `metadata`, handed back when a descriptor under this limit passed.
    pub metadata: Option<prost_types::Struct>,
}

impl RlsLimit {
    /// The limit a descriptor brings itself (Envoy's `limit` from route metadata): enforced, unnamed.
    pub fn overriding(requests_per_unit: u32, unit: Unit, path: String) -> Self {
        Self {
            requests_per_unit,
            unit,
            unlimited: false,
            shadow: false,
            quota: false,
            name: None,
            replaces: Vec::new(),
            path: Arc::from(path),
            detailed_metric: false,
            metadata: None,
        }
    }
}

/// A descriptor's path with its values, `domain.key_value.key_value` (its detailed metric name).
pub fn descriptor_path(domain: &str, entries: &[(&str, &str)]) -> String {
    let mut path = domain.to_owned();
    for (k, v) in entries {
        path.push('.');
        path.push_str(k);
        if !v.is_empty() {
            path.push('_');
            path.push_str(v);
        }
    }
    path
}

/// A wildcard child: its pattern (`key_value*`), split at its stars.
#[derive(Debug, Clone)]
pub(super) struct Wildcard {
    pub(super) pattern: String,
    pub(super) parts: Vec<String>,
}

impl Wildcard {
    /// Whether `text` matches: each `*` stands for zero or more characters.
    pub(super) fn matches(&self, text: &str) -> bool {
        let parts = &self.parts;
        let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
            return false;
        };
        if parts.len() == 1 {
            return first == text;
        }
        let fixed: usize = parts.iter().map(String::len).sum();
        if text.len() < fixed || !text.starts_with(first.as_str()) || !text.ends_with(last.as_str())
        {
            return false;
        }
        let mut rest = &text[first.len()..text.len() - last.len()];
        for part in &parts[1..parts.len() - 1] {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

/// A descriptor node: its children by `key_value` or `key`, its wildcard children in file order, its limit.
#[derive(Debug, Clone, Default)]
pub struct Node {
    pub(super) children: HashMap<String, Node>,
    pub(super) wildcards: Vec<Wildcard>,
    pub(super) limit: Option<Arc<RlsLimit>>,
    pub(super) share_threshold: bool,
    pub(super) value_to_metric: bool,
}

/// Every domain's tree, and what the files hold that quotad does not act on (said once at start-up).
#[derive(Debug, Clone, Default)]
pub struct RlsConfig {
    pub(super) domains: HashMap<String, Node>,
    /// `x-ratelimit-*` headers on every answer with a limit (`[rls] response_headers`).
    pub response_headers: bool,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
    /// `[[rls.routes]]`: descriptors that draw on a quotad resource's bucket (checked before the files).
    pub routes: Vec<Route>,
}

/// A gateway descriptor that draws on a quotad resource's resource-wide bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Its domain.
    pub domain: String,
    /// Its entries, in order: (key, value); a value of `None` matches any.
    pub entries: Vec<(String, Option<String>)>,
    /// The resource.
    pub resource: String,
}

impl Route {
    /// Whether `entries` is this route's descriptor.
    pub fn matches(&self, entries: &[(&str, &str)]) -> bool {
        self.entries.len() == entries.len()
            && self
                .entries
                .iter()
                .zip(entries)
                .all(|((k, v), (ek, ev))| k == ek && v.as_ref().is_none_or(|v| v == ev))
    }
}

/// Where a config error is.
fn err(file: &Path, what: impl std::fmt::Display) -> String {
    format!("rls.config: {}: {what}", file.display())
}

impl RlsConfig {
    /// Reads `patterns` (files, directories of `*.yaml`/`*.yml`, or globs of files), relative to `base`.
    pub fn load(patterns: &[String], base: &Path, response_headers: bool) -> Result<Self, String> {
        let mut config = Self {
            response_headers,
            ..Self::default()
        };
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for file in files(patterns, base)? {
            let text = std::fs::read_to_string(&file).map_err(|e| err(&file, e))?;
            let (domain, node) = parse(&file, &text)?;
            if let Some(other) = seen.get(&domain) {
                return Err(err(
                    &file,
                    format!("domain '{domain}' is also in {}", other.display()),
                ));
            }
            seen.insert(domain.clone(), file.clone());
            config.domains.insert(domain, node);
            config.files.push(file);
        }
        Ok(config)
    }

    /// True when no file and no route is configured.
    pub fn is_empty(&self) -> bool {
        self.domains.is_empty() && self.routes.is_empty()
    }

    /// The route `entries` of `domain` takes, if any.
    pub fn route_for(&self, domain: &str, entries: &[(&str, &str)]) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.domain == domain && r.matches(entries))
    }

    /// What a domain's counters are placed by (their shard): the resource its routes name, so a request's
    /// counters and its routed bucket share one Redis Cluster slot; else the domain.
    pub fn shard_tag<'a>(&'a self, domain: &'a str) -> &'a str {
        self.routes
            .iter()
            .find(|r| r.domain == domain)
            .map_or(domain, |r| r.resource.as_str())
    }

    /// The domains configured, sorted.
    pub fn domains(&self) -> Vec<&str> {
        let mut d: Vec<&str> = self.domains.keys().map(String::as_str).collect();
        d.sort_unstable();
        d
    }
}

/// The files `patterns` name, in order, each once.
fn files(patterns: &[String], base: &Path) -> Result<Vec<PathBuf>, String> {
    let mut out: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let path = base.join(pattern);
        let found: Vec<PathBuf> = if path.is_dir() {
            yaml_in(&path, None)?
        } else if pattern.contains('*') {
            let dir = path.parent().unwrap_or(base).to_path_buf();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("*");
            yaml_in(&dir, Some(name))?
        } else if path.is_file() {
            vec![path]
        } else {
            return Err(format!("rls.config: {}: no such file", path.display()));
        };
        for f in found {
            if !out.contains(&f) {
                out.push(f);
            }
        }
    }
    Ok(out)
}

/// The YAML files in `dir` (names ending `.yaml` or `.yml`, or matching `pattern`), sorted.
fn yaml_in(dir: &Path, pattern: Option<&str>) -> Result<Vec<PathBuf>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| err(dir, e))?;
    let pattern = pattern.map(|p| Wildcard {
        pattern: p.to_owned(),
        parts: p.split('*').map(str::to_owned).collect(),
    });
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            match &pattern {
                Some(w) => w.matches(name),
                None => name.ends_with(".yaml") || name.ends_with(".yml"),
            }
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Parses one file into its domain and tree.
fn parse(file: &Path, text: &str) -> Result<(String, Node), String> {
    let yaml: YamlFile = serde_norway::from_str(text).map_err(|e| err(file, e))?;
    let domain = yaml.domain.map(|d| d.0).unwrap_or_default();
    if domain.is_empty() {
        return Err(err(file, "domain: must not be empty"));
    }
    let mut root = Node::default();
    let descriptors = yaml.descriptors.unwrap_or_default();
    load_children(file, &domain, &mut root, descriptors, "descriptors")?;
    Ok((domain, root))
}

fn load_children(
    file: &Path,
    parent: &str,
    node: &mut Node,
    descriptors: Vec<YamlDescriptor>,
    at: &str,
) -> Result<(), String> {
    for (i, d) in descriptors.into_iter().enumerate() {
        let at = format!("{at}[{i}]");
        let key = d.key.as_ref().map(|k| k.0.clone()).unwrap_or_default();
        if key.is_empty() {
            return Err(err(file, format!("{at}.key: must not be empty")));
        }
        let value = d.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
        let child_key = if value.is_empty() {
            key.clone()
        } else {
            format!("{key}_{value}")
        };
        let path = format!("{parent}.{child_key}");
        if node.children.contains_key(&child_key) {
            return Err(err(file, format!("{at}: duplicate descriptor '{path}'")));
        }
        if d.share_threshold && !child_key.contains('*') {
            return Err(err(
                file,
                format!(
                    "{at}.share_threshold: only a value with a '*' wildcard may share a threshold ('{child_key}')"
                ),
            ));
        }
        let limit = match &d.rate_limit {
            Some(r) => Some(Arc::new(limit(file, &at, &path, r, &d)?)),
            None => None,
        };
        if child_key.contains('*') {
            node.wildcards.push(Wildcard {
                pattern: child_key.clone(),
                parts: child_key.split('*').map(str::to_owned).collect(),
            });
        }
        let mut child = Node {
            limit,
            share_threshold: d.share_threshold,
            value_to_metric: d.value_to_metric,
            ..Node::default()
        };
        let nested = d.descriptors.unwrap_or_default();
        load_children(
            file,
            &path,
            &mut child,
            nested,
            &format!("{at}.descriptors"),
        )?;
        node.children.insert(child_key, child);
    }
    Ok(())
}

fn limit(
    file: &Path,
    at: &str,
    path: &str,
    r: &YamlRateLimit,
    d: &YamlDescriptor,
) -> Result<RlsLimit, String> {
    let unit_text = r.unit.as_ref().map(|u| u.0.as_str()).unwrap_or_default();
    let unit = Unit::parse(unit_text);
    if r.unlimited && unit.is_some() {
        return Err(err(
            file,
            format!("{at}.rate_limit.unit: an unlimited limit takes no unit"),
        ));
    }
    let unit = match (r.unlimited, unit) {
        (true, _) => Unit::Second,
        (false, Some(u)) => u,
        (false, None) => {
            return Err(err(
                file,
                format!(
                    "{at}.rate_limit.unit: '{unit_text}' is not a unit (second, minute, hour, day, week, month, year)"
                ),
            ));
        }
    };
    let name = r
        .name
        .as_ref()
        .map(|n| n.0.clone())
        .filter(|n| !n.is_empty());
    let mut replaces = Vec::new();
    for (k, rep) in r.replaces.iter().flatten().enumerate() {
        let rep = rep.name.as_ref().map(|n| n.0.clone()).unwrap_or_default();
        let key = format!("{at}.rate_limit.replaces[{k}].name");
        if rep.is_empty() {
            return Err(err(file, format!("{key}: must not be empty")));
        }
        if Some(&rep) == name.as_ref() {
            return Err(err(file, format!("{key}: a limit cannot replace itself")));
        }
        replaces.push(rep);
    }
    let metadata = match &d.metadata {
        None => None,
        Some(v) => Some(
            super::metadata::to_struct(v).map_err(|e| err(file, format!("{at}.metadata: {e}")))?,
        ),
    };
    Ok(RlsLimit {
        requests_per_unit: r.requests_per_unit,
        unit,
        unlimited: r.unlimited,
        shadow: d.shadow_mode,
        quota: d.quota_mode,
        name,
        replaces,
        path: Arc::from(path),
        detailed_metric: d.detailed_metric,
        metadata,
    })
}

impl Unit {
    /// The unit named `name` (any case), as upstream's files write it.
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.to_ascii_lowercase().as_str() {
            "second" => Self::Second,
            "minute" => Self::Minute,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "year" => Self::Year,
            _ => return None,
        })
    }

    /// The window's length (a month is 30 days, a year 365, as upstream counts them).
    pub fn period(self) -> Duration {
        const DAY: u64 = 86_400;
        Duration::from_secs(match self {
            Self::Second => 1,
            Self::Minute => 60,
            Self::Hour => 3_600,
            Self::Day => DAY,
            Self::Week => 7 * DAY,
            Self::Month => 30 * DAY,
            Self::Year => 365 * DAY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Result<(String, Node), String> {
        parse(Path::new("t.yaml"), text)
    }

    #[test]
    fn wildcards_match_anywhere_each_star_zero_or_more() {
        let w = |p: &str| Wildcard {
            pattern: p.to_owned(),
            parts: p.split('*').map(str::to_owned).collect(),
        };
        assert!(w("path_files/*").matches("path_files/"));
        assert!(w("path_files/*").matches("path_files/a/b"));
        assert!(w("path_/api/*/action").matches("path_/api/v1/action"));
        assert!(!w("path_/api/*/action").matches("path_/api/v1/other"));
        assert!(w("k_a*b*c").matches("k_abc"));
        assert!(!w("k_ab*ba").matches("k_aba"));
    }

    #[test]
    fn unknown_keys_and_bad_units_name_the_file_line_and_key() {
        let e = parsed("domain: d\ndescriptors:\n  - key: a\n    rate_limt: {}\n").unwrap_err();
        assert!(
            e.contains("t.yaml") && e.contains("rate_limt") && e.contains("line 4"),
            "{e}"
        );
        let e = parsed("domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n")
            .unwrap_err();
        assert!(
            e.contains("descriptors[0].rate_limit.unit") && e.contains("fortnight"),
            "{e}"
        );
        let e = parsed("descriptors: []\n").unwrap_err();
        assert!(e.contains("domain"), "{e}");
        let e = parsed("domain: d\ndescriptors:\n  - key: a\n  - key: a\n").unwrap_err();
        assert!(e.contains("duplicate") && e.contains("d.a"), "{e}");
    }

    #[test]
    fn the_example_file_loads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let c = RlsConfig::load(&["examples/ratelimit".into()], &root, false).unwrap();
        assert_eq!(c.domains(), ["edge"]);
    }

    #[test]
    fn every_upstream_key_loads() {
        let (domain, root) = parsed(
            "domain: d\ndescriptors:\n  - key: k\n    value: '*'\n    share_threshold: true\n    shadow_mode: true\n    quota_mode: false\n    detailed_metric: true\n    value_to_metric: true\n    metadata: {team: edge, n: 3}\n    rate_limit:\n      unit: MINUTE\n      requests_per_unit: 5\n      name: a\n      replaces:\n        - name: b\n    descriptors:\n      - key: z\n        rate_limit: {unlimited: true}\n",
        )
        .unwrap();
        assert_eq!(domain, "d");
        let k = &root.children["k_*"];
        let l = k.limit.as_ref().unwrap();
        assert_eq!(
            (l.unit, l.requests_per_unit, l.shadow),
            (Unit::Minute, 5, true)
        );
        assert_eq!(l.replaces, ["b"]);
        assert!(k.children["z"].limit.as_ref().unwrap().unlimited);
    }
}
