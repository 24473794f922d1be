//! One function per subcommand: call quotad, then print a table or JSON.

use std::collections::HashMap;

use quotad_api::v1 as pb;
use serde_json::{Value, json};

use crate::{
    args::{BreakerCommand, LeaseCommand, ResourceFilter, Target},
    connect::{Conn, Failure, explain},
    render::{self, Table},
};

type Out = Result<(), Failure>;

/// Most pages `--all` and `status` read (100 resources each at the default page size).
const MAX_PAGES: usize = 1000;

fn print_json(v: &Value) {
    say!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// One page of resources (or every page with `all`), with the last answer's totals.
pub async fn resources_of(
    c: &mut Conn,
    f: &ResourceFilter,
    all: bool,
) -> Result<(Vec<pb::ResourceUsage>, pb::ListResourcesResponse), Failure> {
    let mut out = Vec::new();
    let mut token = f.page_token.clone();
    for _ in 0..MAX_PAGES {
        let req = pb::ListResourcesRequest {
            prefix: f.prefix.clone(),
            rule: f.rule.clone(),
            page_size: f.page_size,
            page_token: token,
        };
        let mut page = c
            .admin
            .list_resources(req)
            .await
            .map_err(|s| explain(&c.addr, &s))?
            .into_inner();
        out.append(&mut page.resources);
        if !all || page.next_page_token.is_empty() {
            return Ok((out, page));
        }
        token = page.next_page_token.clone();
    }
    Err(Failure(format!(
        "more than {MAX_PAGES} pages: narrow it with --prefix or --rule"
    )))
}

pub async fn resources(c: &mut Conn, f: &ResourceFilter, json_out: bool) -> Out {
    let (list, last) = resources_of(c, f, f.all).await?;
    if json_out {
        let rows: Vec<Value> = list.iter().map(render::resource).collect();
        print_json(
            &json!({ "resources": rows, "next_page_token": last.next_page_token,
                            "config_version": last.config_version }),
        );
        return Ok(());
    }
    let mut t = Table::new(render::RESOURCE_HEADERS);
    list.iter().for_each(|r| t.row(render::resource_row(r)));
    t.print();
    if !last.next_page_token.is_empty() {
        say!("more: --page-token {} (or --all)", last.next_page_token);
    }
    Ok(())
}

pub async fn status(c: &mut Conn, json_out: bool) -> Out {
    let every = ResourceFilter {
        prefix: String::new(),
        rule: String::new(),
        page_size: 1000,
        page_token: String::new(),
        all: true,
    };
    let (list, last) = resources_of(c, &every, true).await?;
    let not_closed: Vec<&pb::ResourceUsage> = list
        .iter()
        .filter(|r| r.circuit_state != pb::CircuitState::Closed as i32 || r.paused_until.is_some())
        .collect();
    if json_out {
        let rows: Vec<Value> = not_closed.iter().map(|r| render::resource(r)).collect();
        print_json(&json!({
            "addr": c.addr, "config_version": last.config_version, "resources": list.len(),
            "live_keys": last.live_keys, "max_live_keys": last.max_live_keys,
            "live_leases": last.live_leases, "max_leases": last.max_leases, "attention": rows,
        }));
        return Ok(());
    }
    say!(
        "quotad at {}: config version {}, {} resources",
        c.addr,
        last.config_version,
        list.len()
    );
    say!(
        "live keys {} of {}, live leases {} of {}",
        last.live_keys,
        last.max_live_keys,
        last.live_leases,
        last.max_leases
    );
    if not_closed.is_empty() {
        say!("every breaker CLOSED, nothing paused");
        return Ok(());
    }
    say!("needing attention (breaker not CLOSED, or paused):");
    let mut t = Table::new(render::RESOURCE_HEADERS);
    not_closed
        .iter()
        .for_each(|r| t.row(render::resource_row(r)));
    t.print();
    Ok(())
}

pub async fn leases(c: &mut Conn, cmd: &LeaseCommand, json_out: bool) -> Out {
    match cmd {
        LeaseCommand::List {
            resource,
            prefix,
            rule,
            page_size,
            page_token,
        } => {
            let req = pb::ListLeasesRequest {
                resource: resource.clone(),
                page_size: *page_size,
                prefix: prefix.clone(),
                rule: rule.clone(),
                page_token: page_token.clone(),
            };
            let r = c
                .admin
                .list_leases(req)
                .await
                .map_err(|s| explain(&c.addr, &s))?
                .into_inner();
            if json_out {
                let rows: Vec<Value> = r.leases.iter().map(render::lease).collect();
                print_json(&json!({ "leases": rows, "next_page_token": r.next_page_token }));
                return Ok(());
            }
            let mut t = Table::new(&[
                "lease",
                "resource",
                "permits",
                "expires in",
                "client",
                "owner",
                "probe",
            ]);
            for l in &r.leases {
                t.row(vec![
                    l.lease_id.clone(),
                    l.resource.clone(),
                    l.permits.to_string(),
                    render::until(l.expires_at.as_ref()),
                    l.client_id.clone(),
                    l.owner.clone(),
                    if l.probe {
                        "probe".into()
                    } else {
                        String::new()
                    },
                ]);
            }
            t.print();
            if !r.next_page_token.is_empty() {
                say!("more: --page-token {}", r.next_page_token);
            }
            Ok(())
        }
        LeaseCommand::Revoke { lease_id } => {
            let req = pb::RevokeLeaseRequest {
                lease_id: lease_id.clone(),
            };
            let r = c
                .admin
                .revoke_lease(req)
                .await
                .map_err(|s| explain(&c.addr, &s))?
                .into_inner();
            if json_out {
                print_json(&json!({ "lease_id": lease_id, "revoked": r.revoked }));
            } else if r.revoked {
                say!("revoked {lease_id}");
            } else {
                say!("{lease_id} was not live (already released, expired or unknown)");
            }
            Ok(())
        }
    }
}

fn descriptors(t: &Target) -> HashMap<String, String> {
    t.descriptors.iter().cloned().collect()
}

pub async fn breaker(c: &mut Conn, cmd: &BreakerCommand, json_out: bool) -> Out {
    let target = match cmd {
        BreakerCommand::Show(t) | BreakerCommand::Reset(t) => t,
        BreakerCommand::Open { target, .. } => target,
    };
    let d = descriptors(target);
    let resource = target.resource.clone();
    let before = match cmd {
        BreakerCommand::Show(_) => None,
        BreakerCommand::Reset(_) => {
            let req = pb::ResetBreakerRequest {
                resource: resource.clone(),
                descriptors: d.clone(),
            };
            let r = c
                .admin
                .reset_breaker(req)
                .await
                .map_err(|s| explain(&c.addr, &s))?;
            Some(r.into_inner().previous_state)
        }
        BreakerCommand::Open { duration, .. } => {
            let duration = prost_types::Duration::try_from(*duration).ok();
            let req = pb::ForceOpenBreakerRequest {
                resource: resource.clone(),
                descriptors: d.clone(),
                duration,
            };
            let r = c
                .admin
                .force_open_breaker(req)
                .await
                .map_err(|s| explain(&c.addr, &s))?;
            Some(r.into_inner().previous_state)
        }
    };
    let req = pb::GetCircuitStateRequest {
        resource,
        descriptors: d,
    };
    let s = c
        .quota
        .get_circuit_state(req)
        .await
        .map_err(|s| explain(&c.addr, &s))?
        .into_inner();
    if json_out {
        let mut v = render::circuit(&s);
        if let (Some(b), Some(o)) = (before, v.as_object_mut()) {
            o.insert("previous_state".into(), render::state(b).into());
        }
        print_json(&v);
        return Ok(());
    }
    if let Some(b) = before {
        say!(
            "{}: {} -> {}",
            s.resource,
            render::state(b),
            render::state(s.state)
        );
    }
    print_circuit(&s);
    Ok(())
}

fn print_circuit(s: &pb::GetCircuitStateResponse) {
    let mut t = Table::new(&["field", "value"]);
    let mut add = |k: &str, v: String| t.row(vec![k.to_owned(), v]);
    add("resource", s.resource.clone());
    add(
        "breaker",
        if s.breaker_configured {
            render::state(s.state).into()
        } else {
            "none configured".into()
        },
    );
    add(
        "window",
        format!(
            "{} failures in {} calls ({:.0}%)",
            s.failures,
            s.calls,
            s.failure_rate * 100.0
        ),
    );
    add("consecutive failures", s.consecutive_failures.to_string());
    add("half-open in", render::until(s.half_open_at.as_ref()));
    add("probes left", s.half_open_probes_left.to_string());
    add(
        "rate/s eff/conf",
        format!(
            "{:.3}/{:.3}",
            s.effective_rate_per_second, s.configured_rate_per_second
        ),
    );
    add("paused for", render::until(s.paused_until.as_ref()));
    t.print();
}

pub async fn reload(c: &mut Conn, json_out: bool) -> Out {
    let r = c
        .admin
        .reload_config(pb::ReloadConfigRequest {})
        .await
        .map_err(|s| explain(&c.addr, &s))?;
    let r = r.into_inner();
    if json_out {
        print_json(&json!({ "config_version": r.config_version, "resources": r.resources }));
    } else {
        say!(
            "reloaded: config version {}, {} resources",
            r.config_version,
            r.resources
        );
    }
    Ok(())
}

pub fn config_check(path: Option<&std::path::Path>, json_out: bool) -> Out {
    let s = quotad_server::config::load(path).map_err(|e| Failure(format!("config: {e}")))?;
    let names: Vec<&str> = s.rules.all().iter().map(|r| r.name).collect();
    if json_out {
        print_json(
            &json!({ "ok": true, "listen": s.server.listen.to_string(), "resources": names }),
        );
    } else {
        say!(
            "config OK: {} resources ({}), listen {}",
            names.len(),
            names.join(", "),
            s.server.listen
        );
    }
    Ok(())
}

fn decision(d: i32) -> &'static str {
    match pb::Decision::try_from(d).unwrap_or_default() {
        pb::Decision::Granted => "granted",
        pb::Decision::RateLimited => "rate_limited",
        pb::Decision::ConcurrencyLimited => "concurrency_limited",
        pb::Decision::CircuitOpen => "circuit_open",
        pb::Decision::Paused => "paused",
        pb::Decision::Unspecified => "-",
    }
}

fn explain_json(e: &pb::ExplainResponse) -> Value {
    let levels: Vec<Value> = e.levels.iter().map(|l| json!({
        "level": l.level, "has_rate": l.has_rate, "algorithm": l.algorithm, "shadow": l.shadow,
        "overridden": l.overridden, "reserved_tokens": l.reserved_tokens,
        "reserved_in_flight": l.reserved_in_flight,
        "tokens_available": l.tokens_available, "burst": l.burst,
        "rate_per_second": l.rate_per_second, "in_flight": l.in_flight, "max_in_flight": l.max_in_flight,
        "decision": decision(l.decision), "retry_after_seconds": render::secs(l.retry_after.as_ref()),
    })).collect();
    json!({
        "resource": e.resource, "rule": e.rule, "config_version": e.config_version, "permits": e.permits,
        "would_grant": e.would_grant, "decision": decision(e.decision),
        "retry_after_seconds": render::secs(e.retry_after.as_ref()), "denied_by": e.denied_by,
        "shadow_denied_by": e.shadow_denied_by, "bypassed_by": e.bypassed_by, "priority": e.priority,
        "circuit_state": render::state(e.circuit_state), "breaker_configured": e.breaker_configured,
        "half_open_at": render::time(e.half_open_at.as_ref()), "half_open_probes_left": e.half_open_probes_left,
        "paused_until": render::time(e.paused_until.as_ref()),
        "effective_rate_per_second": e.effective_rate_per_second,
        "configured_rate_per_second": e.configured_rate_per_second, "levels": levels,
    })
}

pub async fn explain_acquire(
    c: &mut Conn,
    t: &Target,
    (permits, priority, identity): (u64, &str, &str),
    json_out: bool,
) -> Out {
    let req = pb::ExplainRequest {
        resource: t.resource.clone(),
        descriptors: descriptors(t),
        permits,
        priority: priority.to_owned(),
        identity: identity.to_owned(),
    };
    let e = c
        .admin
        .explain(req)
        .await
        .map_err(|s| explain(&c.addr, &s))?
        .into_inner();
    if json_out {
        print_json(&explain_json(&e));
        return Ok(());
    }
    print_explanation(&e);
    explain_levels(&e.levels).print();
    Ok(())
}

/// What an explained acquire would get, and the breaker, pause and rate it met.
fn print_explanation(e: &pb::ExplainResponse) {
    let wait = render::secs(e.retry_after.as_ref()).unwrap_or(0.0);
    if e.would_grant {
        say!(
            "{} (rule {}, config version {}): {} permit(s) would be GRANTED now",
            e.resource,
            e.rule,
            e.config_version,
            e.permits
        );
        if !e.shadow_denied_by.is_empty() {
            say!("(shadow level {} would have denied it)", e.shadow_denied_by);
        }
        if !e.bypassed_by.is_empty() {
            say!(
                "(bypassing every limit: {} is configured bypass = true)",
                e.bypassed_by
            );
        }
    } else {
        say!(
            "{} (rule {}, config version {}): {} permit(s) would be DENIED: {} by {}, retry in {wait:.3} s",
            e.resource,
            e.rule,
            e.config_version,
            e.permits,
            decision(e.decision),
            e.denied_by
        );
    }
    if !e.priority.is_empty() {
        say!("priority class {}", e.priority);
    }
    let breaker = if e.breaker_configured {
        render::state(e.circuit_state)
    } else {
        "none configured"
    };
    let paused = render::until(e.paused_until.as_ref());
    say!(
        "breaker {breaker}; {}; rate {:.3}/s of {:.3}/s",
        if paused.is_empty() {
            "not paused".to_owned()
        } else {
            format!("paused for {paused}")
        },
        e.effective_rate_per_second,
        e.configured_rate_per_second
    );
}

/// An explanation's levels, one row each.
fn explain_levels(levels: &[pb::LevelExplanation]) -> Table {
    let mut table = Table::new(&[
        "level",
        "tokens",
        "rate/s",
        "in flight",
        "alone it would",
        "retry in",
    ]);
    for l in levels {
        let reserved = |n: u64| {
            if n > 0 {
                format!(", {n} reserved")
            } else {
                String::new()
            }
        };
        let tokens = if l.has_rate {
            let r = reserved(l.reserved_tokens);
            format!("{}/{} ({}{r})", l.tokens_available, l.burst, l.algorithm)
        } else {
            "-".into()
        };
        let inflight = if l.max_in_flight > 0 {
            let r = reserved(u64::from(l.reserved_in_flight));
            format!("{}/{}{r}", l.in_flight, l.max_in_flight)
        } else {
            "-".into()
        };
        let retry =
            render::secs(l.retry_after.as_ref()).map_or_else(String::new, |s| format!("{s:.3} s"));
        table.row(vec![
            match (l.shadow, l.overridden) {
                (true, true) => format!("{} (override, shadow)", l.level),
                (true, false) => format!("{} (shadow)", l.level),
                (false, true) => format!("{} (override)", l.level),
                (false, false) => l.level.clone(),
            },
            tokens,
            format!("{:.3}", l.rate_per_second),
            inflight,
            decision(l.decision).into(),
            retry,
        ]);
    }
    table
}
