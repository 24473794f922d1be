//! Memory per key: the process RSS before and after creating N idle tenant keys (a bucket each, nothing
//! held), then N live leases on them, printed per key. Not a criterion bench; it takes seconds.
//! `QUOTAD_BENCH_KEYS` sets N (default 1,000,000).
//!
//! `cargo bench -p quotad-server --bench memory`

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use std::time::Duration;

use quotad_server::{
    clock::FakeClock,
    config,
    engine::{Acquire, Outcome, Quota, Release},
};

const CONFIG: &str = r#"
[capacity]
max_live_keys = 3000000
max_leases = 3000000

[[resources]]
name = "warm"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }

[[resources]]
name = "tenants"
lease_ttl = "1h"
[[resources.partitions]]
descriptor = "tenant"
# A slow refill, so a key that lent one token is not yet full (and not evicted) when measured.
rate = { limit = 1, period = "1h", burst = 20 }
"#;

fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("in-memory store futures are always ready"),
    }
}

/// Resident set size, bytes (Linux).
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn release(
    quota: &Quota<quotad_server::engine::MemoryStore>,
    lease_id: quotad_server::engine::LeaseId,
) {
    ready(quota.release(&Release {
        caller: None,
        lease_id,
        outcome: Outcome::Success,
        used_permits: None,
    }))
    .expect("release");
}

fn tenant(i: usize) -> Acquire {
    Acquire {
        resource: "tenants".into(),
        descriptors: vec![("tenant".into(), format!("tenant-{i:07}"))],
        permits: 1,
        ..Default::default()
    }
}

fn main() {
    let n: usize = std::env::var("QUOTAD_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rules = config::load_str(CONFIG).expect("bench config").rules;
    let clock = Arc::new(FakeClock::new());
    let quota = Quota::in_memory(rules, clock.clone());

    // Warm-up: n leases on one key, so the tombstone table (a released lease is remembered for 60 s) has
    // grown to its size; after 61 s a sweep forgets them but keeps the table's capacity. The idle keys
    // measured next then cost only themselves.
    let one = Acquire {
        resource: "warm".into(),
        permits: 1,
        ..Default::default()
    };
    for _ in 0..n {
        let id = ready(quota.acquire(&one))
            .expect("acquire")
            .grant()
            .expect("granted")
            .lease_id;
        release(&quota, id);
    }
    clock.advance(Duration::from_secs(61));
    ready(quota.sweep()).expect("sweep");
    let requests: Vec<Acquire> = (0..n).map(tenant).collect();

    let baseline = rss();
    for r in &requests {
        let id = ready(quota.acquire(r))
            .expect("acquire")
            .grant()
            .expect("granted")
            .lease_id;
        release(&quota, id);
    }
    let idle_keys = rss();
    let usage = ready(quota.usage()).expect("usage");
    let mut leases = Vec::with_capacity(n);
    for r in &requests {
        leases.push(
            ready(quota.acquire(r))
                .expect("acquire")
                .grant()
                .expect("granted")
                .lease_id,
        );
    }
    let with_leases = rss();
    println!("keys: {n} (live keys in the store: {})", usage.live_keys);
    println!(
        "idle keys: {:.0} bytes per key (RSS {:.1} MB -> {:.1} MB)",
        idle_keys.saturating_sub(baseline) as f64 / n as f64,
        baseline as f64 / 1e6,
        idle_keys as f64 / 1e6
    );
    println!(
        "plus one live lease per key: {:.0} bytes per lease; process RSS {:.1} MB",
        with_leases.saturating_sub(idle_keys) as f64 / n as f64,
        with_leases as f64 / 1e6
    );
    drop(leases);
}
