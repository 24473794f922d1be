//! Engine benches against the in-memory store, without gRPC:
//! - `acquire/*`: one Acquire, timed alone (the leases are released outside the timing);
//! - `acquire+release/*`: an Acquire and its Release;
//! - `contended/two_threads_one_key`: two threads hammering one key, wall time per Acquire+Release;
//! - `contended/two_threads_one_key_acquire`: the same, Acquires alone timed (leases released between
//!   timed rounds);
//! - `keys/*`: Acquire+Release spread over 1, 100k and 1M live tenant keys.
//!
//! `cargo bench -p quotad-server --bench engine`  (memory per key: `--bench memory`)

use std::{
    future::Future,
    pin::pin,
    sync::{Arc, Barrier},
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quotad_server::{
    clock::MonotonicClock,
    config,
    engine::{Acquire, LeaseId, MemoryStore, Outcome, Quota, Release},
};

const CONFIG: &str = r#"
[capacity]
max_live_keys = 3000000
max_leases = 3000000

[[resources]]
name = "rate"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }

[[resources]]
name = "conc"
concurrency = 1000000

[[resources]]
name = "three"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }
[[resources.partitions]]
descriptor = "endpoint"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }
[[resources.partitions]]
descriptor = "tenant"
rate = { limit = 1000000000, period = "1s", burst = 1000000000 }

[[resources]]
name = "tenants"
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

fn quota() -> Arc<Quota<MemoryStore>> {
    let rules = config::load_str(CONFIG).expect("bench config").rules;
    Arc::new(Quota::in_memory(rules, Arc::new(MonotonicClock::new())))
}

fn request(resource: &str, descriptors: &[(&str, &str)]) -> Acquire {
    Acquire {
        resource: resource.into(),
        descriptors: descriptors
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        permits: 1,
        ..Default::default()
    }
}

/// An Acquire as the server's handler makes it (`acquire_ready`: decided at once, rules borrowed).
fn acquire(quota: &Quota<MemoryStore>, req: &Acquire) -> LeaseId {
    quota
        .acquire_ready(req)
        .expect("the in-memory store decides at once")
        .expect("acquire")
        .grant()
        .expect("granted")
        .lease_id
}

fn release(quota: &Quota<MemoryStore>, lease_id: LeaseId) {
    ready(quota.release(&Release {
        caller: None,
        lease_id,
        outcome: Outcome::Success,
        used_permits: None,
    }))
    .expect("release");
}

fn cases() -> [(&'static str, Acquire); 3] {
    [
        ("rate_only", request("rate", &[])),
        ("concurrency", request("conc", &[])),
        (
            "three_level",
            request("three", &[("endpoint", "/build"), ("tenant", "acme")]),
        ),
    ]
}

fn acquire_only(c: &mut Criterion) {
    let quota = quota();
    let mut group = c.benchmark_group("acquire");
    for (name, req) in cases() {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                let mut held = Vec::with_capacity(10_000);
                let mut left = iters;
                while left > 0 {
                    let n = left.min(10_000);
                    let start = Instant::now();
                    for _ in 0..n {
                        held.push(acquire(&quota, &req));
                    }
                    total += start.elapsed();
                    for id in held.drain(..) {
                        release(&quota, id);
                    }
                    left -= n;
                }
                total
            })
        });
    }
    group.finish();
}

fn acquire_release(c: &mut Criterion) {
    let quota = quota();
    let mut group = c.benchmark_group("acquire+release");
    for (name, req) in cases() {
        group.bench_function(name, |b| b.iter(|| release(&quota, acquire(&quota, &req))));
    }
    group.finish();
}

fn contended(c: &mut Criterion) {
    let quota = quota();
    let mut group = c.benchmark_group("contended");
    group.bench_function("two_threads_one_key", |b| {
        b.iter_custom(|iters| {
            let per_thread = iters.div_ceil(2);
            let barrier = Arc::new(Barrier::new(2));
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..2 {
                    let (quota, barrier) = (quota.clone(), barrier.clone());
                    s.spawn(move || {
                        let req = request("conc", &[]);
                        barrier.wait();
                        for _ in 0..per_thread {
                            release(&quota, acquire(&quota, &req));
                        }
                    });
                }
            });
            // Wall time for 2 × per_thread operations, reported per operation.
            start
                .elapsed()
                .mul_f64(iters as f64 / (2 * per_thread) as f64)
        })
    });
    group.bench_function("two_threads_one_key_acquire", |b| {
        const ROUND: u64 = 5_000;
        b.iter_custom(|iters| {
            let rounds = iters.div_ceil(2 * ROUND);
            let barrier = Arc::new(Barrier::new(2));
            let mut timed = Duration::ZERO;
            std::thread::scope(|s| {
                let worker = |timer: bool| {
                    let (quota, barrier) = (quota.clone(), barrier.clone());
                    move || {
                        let req = request("rate", &[]);
                        let mut held = Vec::with_capacity(ROUND as usize);
                        let mut total = Duration::ZERO;
                        for _ in 0..rounds {
                            // Both threads acquire together; one of them times the round, wall clock.
                            barrier.wait();
                            let start = Instant::now();
                            for _ in 0..ROUND {
                                held.push(acquire(&quota, &req));
                            }
                            barrier.wait();
                            if timer {
                                total += start.elapsed();
                            }
                            for id in held.drain(..) {
                                release(&quota, id);
                            }
                        }
                        total
                    }
                };
                let timer = s.spawn(worker(true));
                s.spawn(worker(false));
                timed = timer.join().expect("bench thread");
            });
            // Wall time for 2 × ROUND acquires per round, reported per acquire.
            timed.mul_f64(iters as f64 / (2 * ROUND * rounds) as f64)
        })
    });
    group.finish();
}

fn keys(c: &mut Criterion) {
    let mut group = c.benchmark_group("keys");
    group.sample_size(20);
    for count in [1usize, 100_000, 1_000_000] {
        let quota = quota();
        let requests: Vec<Acquire> = (0..count)
            .map(|i| request("tenants", &[("tenant", &format!("tenant-{i}"))]))
            .collect();
        // Create every key first (a granted acquire leaves a debited, non-idle bucket behind).
        for r in &requests {
            release(&quota, acquire(&quota, r));
        }
        let mut i = 0;
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                i = (i + 7919) % count;
                release(&quota, acquire(&quota, &requests[i]));
            })
        });
    }
    group.finish();
}

criterion_group!(benches, acquire_only, acquire_release, contended, keys);
criterion_main!(benches);
