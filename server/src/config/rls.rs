//! `[[rls.routes]]`: gateway descriptors that draw on a quotad resource's bucket, checked against the rules.

use super::{ConfigError, file::RlsRouteSection, validate::invalid};
use crate::{engine::Rules, rls::Route};

/// The routes, each naming a resource with a resource-wide rate. On a Redis Cluster a domain's counters and
/// its routed resource must share a slot: its routes name one resource.
pub fn routes(
    sections: &[RlsRouteSection],
    rules: &Rules,
    cluster: bool,
) -> Result<Vec<Route>, ConfigError> {
    let mut routes: Vec<Route> = Vec::with_capacity(sections.len());
    for (i, r) in sections.iter().enumerate() {
        let at = |key: &str| format!("rls.routes[{i}].{key}");
        if r.domain.is_empty() {
            return Err(invalid(at("domain"), "must not be empty"));
        }
        if r.entries.is_empty() {
            return Err(invalid(at("entries"), "must not be empty"));
        }
        if let Some(k) = r.entries.iter().position(|e| e.key.is_empty()) {
            return Err(invalid(
                at(&format!("entries[{k}].key")),
                "must not be empty",
            ));
        }
        let Some(rule) = rules.resolve(&r.resource) else {
            return Err(invalid(
                at("resource"),
                format!("'{}' matches no [[resources]] rule", r.resource),
            ));
        };
        if rule.resource.rate.is_none() {
            return Err(invalid(
                at("resource"),
                format!("'{}' has no resource-wide rate to share", r.resource),
            ));
        }
        if cluster
            && let Some(other) = routes
                .iter()
                .find(|o| o.domain == r.domain && o.resource != r.resource)
        {
            return Err(invalid(
                at("resource"),
                format!(
                    "domain '{}' already routes to '{}': on a Redis Cluster a domain's routes name one resource \
                     (its counters live in that resource's slot)",
                    r.domain, other.resource
                ),
            ));
        }
        routes.push(Route {
            domain: r.domain.clone(),
            entries: r
                .entries
                .iter()
                .map(|e| (e.key.clone(), e.value.clone()))
                .collect(),
            resource: r.resource.clone(),
        });
    }
    Ok(routes)
}
