//! Engine benches: one Acquire (+ Release) against the in-memory store, without gRPC.
//!
//! `cargo bench -p quotad-server --bench engine`

use std::{
    future::Future,
    pin::pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use criterion::{Criterion, criterion_group, criterion_main};
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
name = "conc"
concurrency = 1000

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

fn acquire_release(c: &mut Criterion) {
    let rules = config::load_str(CONFIG).expect("bench config").rules;
    let quota = Quota::in_memory(rules, Arc::new(MonotonicClock::new()));
    let mut group = c.benchmark_group("acquire+release");
    for (name, req) in [
        (
            "rate_only",
            Acquire {
                resource: "rate".into(),
                permits: 1,
                ..Default::default()
            },
        ),
        (
            "concurrency",
            Acquire {
                resource: "conc".into(),
                permits: 1,
                ..Default::default()
            },
        ),
        (
            "three_level",
            Acquire {
                resource: "three".into(),
                descriptors: vec![
                    ("endpoint".into(), "/build".into()),
                    ("tenant".into(), "acme".into()),
                ],
                permits: 1,
                ..Default::default()
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                let d = ready(quota.acquire(&req)).expect("acquire");
                let lease_id = d.grant().expect("granted").lease_id;
                ready(quota.release(&Release {
                    lease_id,
                    outcome: Outcome::Success,
                    used_permits: None,
                }))
                .expect("release")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, acquire_release);
criterion_main!(benches);
