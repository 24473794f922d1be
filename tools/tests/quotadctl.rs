//! `quotadctl` end to end: the binary against a live quotad (served by the test), its `--json` output parsed.

use std::{path::PathBuf, process::Command};

use quotad_api::v1::{AcquireRequest, quota_service_client::QuotaServiceClient};
use serde_json::Value;

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[metrics]
enabled = false
[[resources]]
name = "llm.invoke"
rate = { limit = 10, period = "1s", burst = 10 }
concurrency = 5
breaker = { min_calls = 5, open_duration = "30s", max_open_duration = "5m" }
[[resources]]
name = "partner.*"
rate = { limit = 100, period = "1s" }
"#;

/// A quotad on a port of its choosing, served in this process on a runtime of its own (quotadctl runs as a
/// process against it), stopped on drop.
struct Server {
    addr: String,
    dir: PathBuf,
    config: PathBuf,
    // Dropped last: the server's tasks run on it.
    _server: quotad_e2e::TestServer,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("quotadctl-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("quotad.toml");
        std::fs::write(&config, CONFIG).unwrap();
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let clock = std::sync::Arc::new(quotad_server::clock::MonotonicClock::new());
        let server = runtime.block_on(quotad_e2e::TestServer::start_file(config.clone(), clock));
        Self {
            addr: server.addr.to_string(),
            dir,
            config,
            _server: server,
            _runtime: runtime,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Runs quotadctl; (exit code, stdout, stderr).
fn ctl(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_quotadctl"))
        .args(args)
        .env_remove("QUOTADCTL_ADDR")
        .env_remove("QUOTADCTL_TOKEN")
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Runs quotadctl --json against `s`, expecting success, and parses what it printed.
fn json(s: &Server, args: &[&str]) -> Value {
    let mut all = vec!["--addr", s.addr.as_str(), "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = ctl(&all);
    assert_eq!(code, 0, "quotadctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?} printed no JSON ({e}): {out}"))
}

fn acquire(addr: &str, resource: &str, n: usize) -> Vec<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut c = QuotaServiceClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let mut ids = Vec::new();
        for _ in 0..n {
            let r = c
                .acquire(AcquireRequest {
                    resource: resource.into(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert!(r.granted);
            ids.push(r.lease_id);
        }
        ids
    })
}

#[test]
fn status_resources_and_leases_as_json() {
    let s = Server::start("list");
    acquire(&s.addr, "llm.invoke", 3);
    acquire(&s.addr, "partner.stripe", 1);
    let status = json(&s, &["status"]);
    assert_eq!(status["config_version"], 1);
    assert_eq!(
        status["resources"], 2,
        "llm.invoke and partner.stripe (a glob is listed by its concrete names): {status}"
    );
    assert_eq!(status["attention"].as_array().unwrap().len(), 0);
    let r = json(&s, &["resources", "--prefix", "llm"]);
    let llm = &r["resources"][0];
    assert_eq!(llm["resource"], "llm.invoke");
    assert_eq!(llm["in_flight"], 3);
    assert_eq!(llm["tokens_available"], 7);
    assert_eq!(llm["limits"]["max_concurrent"], 5);
    assert_eq!(llm["circuit_state"], "CLOSED");
    let paged = json(&s, &["resources", "--page-size", "1", "--all"]);
    assert_eq!(
        paged["resources"].as_array().unwrap().len(),
        2,
        "--all follows every page"
    );
    let leases = json(&s, &["leases", "list", "--resource", "llm.invoke"]);
    let ids: Vec<&str> = leases["leases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lease_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
    let revoked = json(&s, &["leases", "revoke", ids[0]]);
    assert_eq!(revoked["revoked"], true);
    assert_eq!(
        json(&s, &["leases", "revoke", ids[0]])["revoked"],
        false,
        "only once"
    );
    assert_eq!(
        json(&s, &["resources", "--prefix", "llm"])["resources"][0]["in_flight"],
        2
    );
}

#[test]
fn breaker_open_show_reset_and_status_attention() {
    let s = Server::start("breaker");
    let opened = json(&s, &["breaker", "open", "llm.invoke", "--for", "30s"]);
    assert_eq!(
        (opened["previous_state"].as_str(), opened["state"].as_str()),
        (Some("CLOSED"), Some("OPEN"))
    );
    assert!(opened["half_open_at"].is_string());
    let status = json(&s, &["status"]);
    assert_eq!(status["attention"][0]["resource"], "llm.invoke");
    assert_eq!(
        json(&s, &["breaker", "show", "llm.invoke"])["state"],
        "OPEN"
    );
    let reset = json(&s, &["breaker", "reset", "llm.invoke"]);
    assert_eq!(
        (reset["previous_state"].as_str(), reset["state"].as_str()),
        (Some("OPEN"), Some("CLOSED"))
    );
    // Plain output is a table a person reads.
    let (code, out, _) = ctl(&["--addr", &s.addr, "breaker", "show", "llm.invoke"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("breaker") && out.contains("CLOSED") && !out.contains('\u{1b}'),
        "{out}"
    );
}

#[test]
fn reload_watch_and_config_check() {
    let s = Server::start("reload");
    std::fs::write(
        &s.config,
        format!("{CONFIG}\n[[resources]]\nname = \"extra\"\nconcurrency = 1\n"),
    )
    .unwrap();
    let r = json(&s, &["reload"]);
    assert_eq!(
        (r["config_version"].as_u64(), r["resources"].as_u64()),
        (Some(2), Some(3))
    );
    let (code, out, err) = ctl(&[
        "--addr", &s.addr, "--json", "watch", "--count", "2", "--every", "100ms",
    ]);
    assert_eq!(code, 0, "{err}");
    let ticks: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(ticks.len(), 2, "one JSON object per refresh: {out}");
    assert_eq!(ticks[1]["config_version"], 2);
    let checked = json(&s, &["config", "check", s.config.to_str().unwrap()]);
    assert_eq!(checked["ok"], true);
    let bad = s.dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[resources]]\nname = \"x\"\nrate = { limit = 0, period = \"1s\" }\n",
    )
    .unwrap();
    let (code, _, err) = ctl(&["config", "check", bad.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(err.contains("limit"), "the error names the field: {err}");
}

#[test]
fn errors_say_what_to_do() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("127.0.0.1:{port}");
    let (code, out, err) = ctl(&["--addr", &dead, "status"]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    assert!(
        err.contains(&format!(
            "quotad at {dead} is not answering: is it running?"
        )),
        "{err}"
    );
    let (code, _, err) = ctl(&["--addr", &dead, "--token", "t", "status"]);
    assert_eq!(code, 1);
    assert!(err.contains("--token needs TLS"), "{err}");
    // A careless --timeout: zero would time out every call, a huge one overflows; both named.
    for t in ["0", "1e300", "NaN"] {
        let (code, _, err) = ctl(&["--addr", &dead, "--timeout", t, "status"]);
        assert_eq!(code, 1, "--timeout {t}");
        assert!(err.contains("--timeout must be"), "--timeout {t}: {err}");
    }
    let (code, _, err) = ctl(&["--addr", &dead, "explain", "x", "-d", "nokey"]);
    assert_eq!(code, 2, "a descriptor without '=' is a usage error: {err}");
    assert!(err.contains("key=value"), "{err}");
    let (code, _, err) = ctl(&["breaker", "show"]);
    assert_eq!(code, 2, "usage errors exit 2: {err}");
    let (code, out, _) = ctl(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("quotadctl") && out.contains("breaker"));
}

#[test]
fn explain_says_why_without_debiting() {
    let s = Server::start("explain");
    acquire(&s.addr, "llm.invoke", 5);
    let e = json(&s, &["explain", "llm.invoke"]);
    assert_eq!(e["would_grant"], false, "{e}");
    assert_eq!(
        (e["decision"].as_str(), e["denied_by"].as_str()),
        (Some("concurrency_limited"), Some("resource"))
    );
    assert_eq!(
        (e["rule"].as_str(), e["config_version"].as_u64()),
        (Some("llm.invoke"), Some(1))
    );
    let level = &e["levels"][0];
    assert_eq!(
        (
            level["tokens_available"].as_u64(),
            level["in_flight"].as_u64()
        ),
        (Some(5), Some(5))
    );
    // Explaining took nothing: the tokens are still 5.
    let again = json(&s, &["explain", "llm.invoke"]);
    assert_eq!(again["levels"][0]["tokens_available"], 5);
    let fresh = json(&s, &["explain", "partner.acme", "--permits", "3"]);
    assert_eq!(
        (fresh["would_grant"].as_bool(), fresh["rule"].as_str()),
        (Some(true), Some("partner.*"))
    );
    let (code, out, err) = ctl(&["--addr", &s.addr, "explain", "llm.invoke"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("would be DENIED: concurrency_limited by resource"),
        "{out}"
    );
    let (code, _, err) = ctl(&["--addr", &s.addr, "explain", "nosuch"]);
    assert_eq!(code, 1);
    assert!(err.contains("nosuch"), "{err}");
}
