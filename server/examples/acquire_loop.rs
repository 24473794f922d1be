//! A fixed loop of Acquire+Release pairs on the in-memory engine, for counting instructions where the clock
//! is too noisy (BENCHMARKS.md, Engine):
//!
//! ```sh
//! cargo build --release -p quotad-server --example acquire_loop
//! valgrind --tool=callgrind target/release/examples/acquire_loop 200000   # Ir / 200000 = per pair
//! ```
//!
//! A second argument `acquire-only` does the Acquires in rounds of 10,000 and releases each round after it,
//! so a profiler (`perf record -e cpu-clock`) sees the Acquires apart from the Releases (`pairs`, the
//! default, alternates them). A third argument `three-level` acquires on a resource with a resource-wide
//! level and two partitions (endpoint, tenant) instead of a rate-only one; `fixed-window` or
//! `sliding-window` on a rate-only resource of that algorithm. Acquires go through
//! `Quota::acquire_ready`, as the server's handler calls it.

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use quotad_server::{
    clock::MonotonicClock,
    config,
    engine::{Acquire, Outcome, Quota, Release},
};

const CONFIG: &str = r#"
[[resources]]
name = "rate"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }

[[resources]]
name = "fixed-window"
rate = { limit = 1000000000, period = "1s", algorithm = "fixed_window" }

[[resources]]
name = "sliding-window"
rate = { limit = 1000000000, period = "1s", algorithm = "sliding_window" }

[[resources]]
name = "three"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }
[[resources.partitions]]
descriptor = "endpoint"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }
"#;

/// The in-memory store never waits: poll once.
fn ready<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => unreachable!("in-memory store futures are always ready"),
    }
}

fn main() {
    let pairs: u64 = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let rules = config::load_str(CONFIG).expect("config").rules;
    let quota = Quota::in_memory(rules, Arc::new(MonotonicClock::new()));
    let shape = std::env::args().nth(3);
    let req = if let Some(window @ ("fixed-window" | "sliding-window")) = shape.as_deref() {
        Acquire {
            resource: window.into(),
            permits: 1,
            ..Default::default()
        }
    } else if shape.as_deref() == Some("three-level") {
        Acquire {
            resource: "three".into(),
            descriptors: vec![
                ("endpoint".into(), "/build".into()),
                ("tenant".into(), "acme".into()),
            ],
            permits: 1,
            ..Default::default()
        }
    } else {
        Acquire {
            resource: "rate".into(),
            permits: 1,
            ..Default::default()
        }
    };
    let release = |lease_id| {
        ready(quota.release(&Release {
            caller: None,
            lease_id,
            outcome: Outcome::Success,
            used_permits: None,
        }))
        .expect("release");
    };
    let acquire = || {
        let decision = quota
            .acquire_ready(&req)
            .expect("the in-memory store decides at once")
            .expect("acquire");
        decision.grant().expect("granted").lease_id
    };
    if std::env::args().nth(2).as_deref() == Some("acquire-only") {
        // Acquires in rounds of 10,000, each round's leases released after it (profile the acquires).
        let mut held = Vec::with_capacity(10_000);
        let mut left = pairs;
        while left > 0 {
            let n = left.min(10_000);
            held.extend((0..n).map(|_| acquire()));
            held.drain(..).for_each(release);
            left -= n;
        }
    } else {
        for _ in 0..pairs {
            release(acquire());
        }
    }
    println!("{pairs} Acquire+Release pairs");
}
