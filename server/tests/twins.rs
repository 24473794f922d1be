//! The policy's primitives run in Rust and in Lua on the same random states and inputs, with the same
//! answers required: the token bucket (`engine/rate.rs` and `lua/policy.lua`'s `bucket_*`), the breaker's
//! window and transitions (`engine/breaker/` and `breaker_*`, `window_*`), the adaptive rate
//! (`engine/adaptive.rs` and `adaptive_*`), a node's slice (`engine/policy/share.rs` and `slice_*`), settlement (`engine/policy.rs` and `settlement`) and the
//! de-duplication of an identity's flood of throttle reports (`engine/reporters.rs` and `reporters_admit`). The Lua side
//! runs on a real redis-server, in a library of its own (`prelude.lua`, `policy.lua` and the test step
//! `tests/twins/harness.lua`), one call per random case.

mod common;

use std::time::Duration;

use proptest::prelude::*;
use quotad_server::{
    clock::Nanos,
    engine::{
        AdaptiveRate, AdaptiveSpec, Admission, Algorithm, Breaker, BreakerSpec, Bucket, RateSpec,
        Transition,
        policy::{
            Limit, Limiter, Settlement, settlement,
            share::{slice_give, slice_take},
        },
        redis::{args, protocol},
        reporters::Reporters,
    },
};

/// Where the Rust twins' clock starts (and the Lua breaker's: its window slots are absolute).
const T0: Nanos = 1_767_225_600_123_456_789;

fn redis() -> &'static common::redis_server::RedisServer {
    static R: std::sync::OnceLock<common::redis_server::RedisServer> = std::sync::OnceLock::new();
    R.get_or_init(|| {
        let r = common::redis_server::RedisServer::start();
        let src = concat!(
            include_str!("../src/engine/redis/lua/prelude.lua"),
            "\n",
            include_str!("../src/engine/redis/lua/policy.lua"),
            "\n",
            include_str!("twins/harness.lua"),
        );
        let code = format!(
            "#!lua name=quotad_twins\n{}",
            src.replace(
                "__QUOTAD_PROTOCOL__",
                &protocol::lua(protocol::Layout::Readable)
            )
        );
        let mut con = connection(&r);
        let loaded: Result<String, _> = redis::cmd("FUNCTION")
            .arg("LOAD")
            .arg("REPLACE")
            .arg(code)
            .query(&mut con);
        loaded.expect("the twins library loads");
        r
    })
}

fn connection(r: &common::redis_server::RedisServer) -> redis::Connection {
    redis::Client::open(r.url())
        .and_then(|c| c.get_connection())
        .expect("connect to the test's redis")
}

/// Runs the Lua twin of `primitive` on `args`.
fn lua(args: &[String]) -> Vec<String> {
    let mut con = connection(redis());
    redis::cmd("FCALL")
        .arg("quotad_twin")
        .arg(0)
        .arg(args)
        .query(&mut con)
        .expect("the twin step answers")
}

/// One operation on a bucket.
#[derive(Debug, Clone, Copy)]
enum BucketOp {
    Advance(u64),
    Check(u64),
    Debit(u64),
    DebitBounded(u64, u64),
    Credit(u64),
    /// A slice of `permits` and up to `want` more.
    Slice(u64, u64),
    Give(u64),
    Remaining,
    Retune(u64, u64),
}

fn bucket_op() -> impl Strategy<Value = BucketOp> {
    prop_oneof![
        (0u64..5_000_000_000).prop_map(BucketOp::Advance),
        (1u64..40).prop_map(BucketOp::Check),
        (1u64..40).prop_map(BucketOp::Debit),
        (1u64..40, 0u64..40).prop_map(|(p, d)| BucketOp::DebitBounded(p, d)),
        (1u64..40).prop_map(BucketOp::Credit),
        (1u64..40, 0u64..60).prop_map(|(p, w)| BucketOp::Slice(p, w)),
        (1u64..40).prop_map(BucketOp::Give),
        Just(BucketOp::Remaining),
        (1u64..50_000_000, 1u64..40).prop_map(|(i, b)| BucketOp::Retune(i, b)),
    ]
}

fn bucket_args(interval: u64, burst: u64, ops: &[BucketOp]) -> Vec<String> {
    let mut a = vec!["bucket".to_owned(), interval.to_string(), burst.to_string()];
    for op in ops {
        let (name, x, y) = match *op {
            BucketOp::Advance(ns) => ("adv", ns, 0),
            BucketOp::Check(p) => ("chk", p, 0),
            BucketOp::Debit(p) => ("deb", p, 0),
            BucketOp::DebitBounded(p, d) => ("bnd", p, d),
            BucketOp::Credit(p) => ("crd", p, 0),
            BucketOp::Slice(p, w) => ("sli", p, w),
            BucketOp::Give(p) => ("giv", p, 0),
            BucketOp::Remaining => ("rem", 0, 0),
            BucketOp::Retune(i, b) => ("ret", i, b),
        };
        a.extend([name.to_owned(), x.to_string(), y.to_string()]);
    }
    a
}

/// The Rust twin: each operation's result and the time until the bucket is full after it.
fn bucket_rust(interval: u64, burst: u64, ops: &[BucketOp]) -> Vec<String> {
    let mut b = Bucket::new(interval, burst);
    let mut now = T0;
    let mut out = Vec::new();
    for op in ops {
        let v = match *op {
            BucketOp::Advance(ns) => {
                now += ns;
                String::new()
            }
            BucketOp::Check(p) => b
                .check(now, p)
                .err()
                .map_or(String::new(), |w| w.to_string()),
            BucketOp::Debit(p) => {
                b.debit(now, p);
                String::new()
            }
            BucketOp::DebitBounded(p, d) => b.debit_bounded(now, p, d).to_string(),
            BucketOp::Credit(p) => {
                b.credit(now, p, now);
                String::new()
            }
            BucketOp::Slice(p, w) => match b.check(now, p) {
                Err(_) => "-1".to_owned(),
                Ok(()) => slice_take(&mut [&mut b], now, p, w).to_string(),
            },
            BucketOp::Give(p) => {
                slice_give(&mut [&mut b], now, p, now);
                String::new()
            }
            BucketOp::Remaining => b.remaining(now).to_string(),
            BucketOp::Retune(i, burst) => {
                b.retune(now, i, burst);
                String::new()
            }
        };
        out.extend([v, b.reset_after(now).to_string()]);
    }
    out
}

/// One operation on an adaptive rate.
#[derive(Debug, Clone, Copy)]
enum AimdOp {
    Advance(u64),
    Throttle,
    Grant,
}

fn aimd_op() -> impl Strategy<Value = AimdOp> {
    prop_oneof![
        (0u64..3_000_000_000).prop_map(AimdOp::Advance),
        Just(AimdOp::Throttle),
        Just(AimdOp::Grant),
    ]
}

fn aimd_spec() -> impl Strategy<Value = AdaptiveSpec> {
    (1u32..99, 1u32..99, 0u64..2_000, 1u32..60, 1u64..2_000).prop_map(|(d, f, c, s, i)| {
        AdaptiveSpec {
            decrease_factor: f64::from(d) / 100.0,
            floor: f64::from(f) / 100.0,
            cooldown: Duration::from_millis(c),
            increase_step: f64::from(s) / 100.0,
            increase_interval: Duration::from_millis(i),
        }
    })
}

/// The Rust twin: each operation's result (a throttle: 1 when it lowered the rate) and the factor after it.
fn aimd_rust(spec: &AdaptiveSpec, ops: &[AimdOp]) -> Vec<(String, f64)> {
    let mut a = AdaptiveRate::default();
    let mut now = T0;
    ops.iter()
        .map(|op| {
            let v = match op {
                AimdOp::Advance(ns) => {
                    now += ns;
                    String::new()
                }
                AimdOp::Throttle => u8::from(a.on_throttle(spec, now)).to_string(),
                AimdOp::Grant => {
                    a.on_grant(spec, now);
                    String::new()
                }
            };
            (v, a.factor())
        })
        .collect()
}

fn aimd_lua(spec: &AdaptiveSpec, ops: &[AimdOp]) -> Vec<(String, f64)> {
    let mut a = vec!["aimd".to_owned(), args::adaptive(Some(spec))];
    for op in ops {
        let (name, x) = match *op {
            AimdOp::Advance(ns) => ("adv", ns),
            AimdOp::Throttle => ("thr", 0),
            AimdOp::Grant => ("grt", 0),
        };
        a.extend([name.to_owned(), x.to_string(), "0".to_owned()]);
    }
    lua(&a)
        .chunks(2)
        .map(|c| (c[0].clone(), c[1].parse().expect("a factor")))
        .collect()
}

/// One operation on a breaker.
#[derive(Debug, Clone, Copy)]
enum BreakerOp {
    Advance(u64),
    Admit,
    /// Failed, and the probe epoch the call ran under (if any).
    Record(bool, Option<u64>),
    CancelProbe(u64),
}

fn breaker_op() -> impl Strategy<Value = BreakerOp> {
    prop_oneof![
        (0u64..4_000_000_000).prop_map(BreakerOp::Advance),
        Just(BreakerOp::Admit),
        (any::<bool>(), proptest::option::of(0u64..4)).prop_map(|(f, p)| BreakerOp::Record(f, p)),
        (0u64..4).prop_map(BreakerOp::CancelProbe),
    ]
}

fn breaker_spec() -> impl Strategy<Value = BreakerSpec> {
    (
        (1u32..=100, 1u32..6, 1u64..20_000),
        (0u32..4, 1u64..5_000, 1u32..4),
        (1u32..4, 1u32..4),
    )
        .prop_map(
            |((rate, min, window), (consecutive, open, backoff), (probes, successes))| {
                BreakerSpec {
                    failure_rate: f64::from(rate) / 100.0,
                    min_calls: min,
                    window: Duration::from_millis(window),
                    consecutive_failures: consecutive,
                    open_duration: Duration::from_millis(open),
                    open_backoff: f64::from(backoff),
                    max_open_duration: Duration::from_millis(open * 8),
                    half_open_probes: probes,
                    half_open_successes: successes,
                }
            },
        )
}

fn transition(t: Option<Transition>) -> String {
    t.map_or(String::new(), |t| {
        format!(
            "{}:{}:{}",
            t.from.as_str(),
            t.to.as_str(),
            t.reason.as_str()
        )
    })
}

/// The Rust twin: each operation's result, the state after it and the transition it made.
fn breaker_rust(spec: &BreakerSpec, ops: &[BreakerOp]) -> Vec<String> {
    let mut now = T0;
    let mut b = Breaker::new(spec, now);
    let mut out = Vec::new();
    for op in ops {
        let (v, t) = match *op {
            BreakerOp::Advance(ns) => {
                now += ns;
                (String::new(), None)
            }
            BreakerOp::Admit => {
                let (a, t) = b.admit(spec, now);
                let v = match a {
                    Admission::Allowed => "allowed:".to_owned(),
                    Admission::Probe(epoch) => format!("probe:{epoch}"),
                    Admission::Rejected { retry_after } => format!("rejected:{retry_after}"),
                };
                (v, t)
            }
            BreakerOp::Record(failed, probe) => (String::new(), b.record(spec, now, failed, probe)),
            BreakerOp::CancelProbe(epoch) => {
                b.cancel_probe(epoch);
                (String::new(), None)
            }
        };
        out.extend([v, b.state(now).as_str().to_owned(), transition(t)]);
    }
    out
}

fn breaker_lua(spec: &BreakerSpec, ops: &[BreakerOp]) -> Vec<String> {
    let mut a = vec![
        "breaker".to_owned(),
        args::breaker(Some(spec)),
        T0.to_string(),
    ];
    for op in ops {
        let (name, x, y) = match *op {
            BreakerOp::Advance(ns) => ("adv", ns.to_string(), "0".to_owned()),
            BreakerOp::Admit => ("adm", "0".to_owned(), "0".to_owned()),
            BreakerOp::Record(failed, probe) => (
                "rec",
                u8::from(failed).to_string(),
                probe.map_or("-1".to_owned(), |p| p.to_string()),
            ),
            BreakerOp::CancelProbe(epoch) => ("cnl", epoch.to_string(), "0".to_owned()),
        };
        a.extend([name.to_owned(), x, y]);
    }
    lua(&a)
}

/// One operation on a window.
#[derive(Debug, Clone, Copy)]
enum WindowOp {
    Advance(u64),
    Check(u64),
    Debit(u64),
    DebitBounded(u64, u64),
    /// Permits taken this long ago.
    Credit(u64, u64),
    /// A slice of `permits` and up to `want` more.
    Slice(u64, u64),
    /// A slice's permits given back, taken this long ago.
    Give(u64, u64),
    Remaining,
    ResetAfter,
    /// A reload: limit, period (whole ms, in ns).
    Sync(u64, u64),
}

fn window_op(period: u64) -> impl Strategy<Value = WindowOp> {
    prop_oneof![
        4 => (0..period * 3 / 2).prop_map(WindowOp::Advance),
        3 => (1u64..12).prop_map(WindowOp::Check),
        3 => (1u64..12).prop_map(WindowOp::Debit),
        1 => (1u64..12, 0u64..12).prop_map(|(p, d)| WindowOp::DebitBounded(p, d)),
        1 => (1u64..12, 0..period * 2).prop_map(|(p, ago)| WindowOp::Credit(p, ago)),
        2 => (1u64..12, 0u64..20).prop_map(|(p, w)| WindowOp::Slice(p, w)),
        1 => (1u64..12, 0..period * 2).prop_map(|(p, ago)| WindowOp::Give(p, ago)),
        1 => Just(WindowOp::Remaining),
        1 => Just(WindowOp::ResetAfter),
        1 => (1u64..30, 1u64..3_000).prop_map(|(l, ms)| WindowOp::Sync(l, ms * 1_000_000)),
    ]
}

fn window_lua(algorithm: Algorithm, limit: u64, period: u64, ops: &[WindowOp]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "window".into(),
        algorithm.as_str().into(),
        limit.to_string(),
        period.to_string(),
        T0.to_string(),
    ];
    for op in ops {
        let (name, x, y) = match *op {
            WindowOp::Advance(ns) => ("adv", ns, 0),
            WindowOp::Check(p) => ("chk", p, 0),
            WindowOp::Debit(p) => ("deb", p, 0),
            WindowOp::DebitBounded(p, d) => ("bnd", p, d),
            WindowOp::Credit(p, ago) => ("crd", p, ago),
            WindowOp::Slice(p, w) => ("sli", p, w),
            WindowOp::Give(p, ago) => ("giv", p, ago),
            WindowOp::Remaining => ("rem", 0, 0),
            WindowOp::ResetAfter => ("rst", 0, 0),
            WindowOp::Sync(l, w) => ("syn", l, w),
        };
        a.extend([name.to_owned(), x.to_string(), y.to_string()]);
    }
    lua(&a)
}

/// The Rust twin: each operation's result and the window's start (ms), count and previous count after it.
fn window_rust(algorithm: Algorithm, limit: u64, period: u64, ops: &[WindowOp]) -> Vec<String> {
    let spec = |limit: u64, period: u64| {
        RateSpec::new(limit, Duration::from_nanos(period), limit).with_algorithm(algorithm)
    };
    let mut w = Limit::fresh(&spec(limit, period), 1.0);
    let mut now = T0;
    let mut out = Vec::new();
    for op in ops {
        let v = match *op {
            WindowOp::Advance(ns) => {
                now += ns;
                String::new()
            }
            WindowOp::Check(p) => w
                .check(now, p)
                .err()
                .map_or(String::new(), |x| x.to_string()),
            WindowOp::Debit(p) => {
                w.debit(now, p);
                String::new()
            }
            WindowOp::DebitBounded(p, d) => w.debit_bounded(now, p, d).to_string(),
            WindowOp::Credit(p, ago) => {
                w.credit(now, p, now - ago);
                String::new()
            }
            WindowOp::Slice(p, want) => match w.check(now, p) {
                Err(_) => "-1".to_owned(),
                Ok(()) => slice_take(&mut [&mut w], now, p, want).to_string(),
            },
            WindowOp::Give(p, ago) => {
                slice_give(&mut [&mut w], now, p, now - ago);
                String::new()
            }
            WindowOp::Remaining => w.remaining(now).to_string(),
            WindowOp::ResetAfter => w.reset_after(now).to_string(),
            WindowOp::Sync(l, period) => {
                w.sync(&spec(l, period), 1.0, now);
                String::new()
            }
        };
        let (start, count, previous) = match w {
            Limit::FixedWindow(f) => {
                let (s, c) = f.parts();
                (s, c, 0)
            }
            Limit::SlidingWindow(s) => s.parts(),
            Limit::TokenBucket(_) => unreachable!("a window"),
        };
        out.extend([
            v,
            (start / 1_000_000).to_string(),
            count.to_string(),
            previous.to_string(),
        ]);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_bucket_answers_alike(
        interval in 1u64..50_000_000,
        burst in 1u64..40,
        ops in proptest::collection::vec(bucket_op(), 1..48),
    ) {
        let rust = bucket_rust(interval, burst, &ops);
        prop_assert_eq!(lua(&bucket_args(interval, burst, &ops)), rust);
    }

    #[test]
    fn both_windows_answer_alike(
        (period, ops) in (1u64..3_000).prop_flat_map(|ms| {
            let period = ms * 1_000_000;
            (Just(period), proptest::collection::vec(window_op(period), 1..48))
        }),
        sliding: bool,
        limit in 1u64..30,
    ) {
        let algorithm = if sliding { Algorithm::SlidingWindow } else { Algorithm::FixedWindow };
        let rust = window_rust(algorithm, limit, period, &ops);
        prop_assert_eq!(window_lua(algorithm, limit, period, &ops), rust);
    }

    #[test]
    fn the_adaptive_rate_answers_alike(
        spec in aimd_spec(),
        ops in proptest::collection::vec(aimd_op(), 1..48),
    ) {
        let rust = aimd_rust(&spec, &ops);
        let lua = aimd_lua(&spec, &ops);
        prop_assert_eq!(lua.len(), rust.len());
        for (i, ((lv, lf), (rv, rf))) in lua.iter().zip(&rust).enumerate() {
            prop_assert_eq!(lv, rv, "op {} {:?}", i, ops[i]);
            prop_assert_eq!(lf.to_bits(), rf.to_bits(), "op {}: factor {} vs {}", i, lf, rf);
        }
    }

    #[test]
    fn the_breaker_answers_alike(
        spec in breaker_spec(),
        ops in proptest::collection::vec(breaker_op(), 1..64),
    ) {
        prop_assert_eq!(breaker_lua(&spec, &ops), breaker_rust(&spec, &ops));
    }

    #[test]
    fn settlement_answers_alike(
        cases in proptest::collection::vec((1u64..1_000_000, proptest::option::of(0u64..2_000_000)), 1..32),
    ) {
        let mut a = vec!["settle".to_owned()];
        for (acquired, used) in &cases {
            a.extend([acquired.to_string(), used.map_or(String::new(), |u| u.to_string()), String::new()]);
        }
        let rust: Vec<String> = cases
            .iter()
            .map(|(acquired, used)| match settlement(*acquired, *used) {
                Settlement::Refund(n) => format!("refund:{n}"),
                Settlement::Charge(n) => format!("charge:{n}"),
                Settlement::Even => "even:0".to_owned(),
            })
            .collect();
        prop_assert_eq!(lua(&a), rust);
    }

    #[test]
    fn report_floods_are_told_apart_alike(
        quiet in 1u64..10_000_000_000,
        ops in proptest::collection::vec(
            prop_oneof![
                (0u64..4_000_000_000).prop_map(|ns| (None, ns)),
                (0usize..4).prop_map(|who| (Some(who), 0)),
            ],
            1..64,
        ),
    ) {
        // Identities "a", "b", "c", and anonymous ("").
        const WHO: [&str; 4] = ["a", "b", "c", ""];
        let mut r = Reporters::default();
        let mut now = T0;
        let mut a = vec!["reporters".to_owned(), quiet.to_string()];
        let mut rust = Vec::new();
        for (who, ns) in &ops {
            match who {
                None => {
                    now += ns;
                    a.extend(["adv".to_owned(), ns.to_string(), String::new()]);
                    rust.push(String::new());
                }
                Some(i) => {
                    let id = Some(WHO[*i]).filter(|w| !w.is_empty());
                    a.extend(["rep".to_owned(), WHO[*i].to_owned(), String::new()]);
                    rust.push(u8::from(r.admit(id, now, quiet)).to_string());
                }
            }
        }
        prop_assert_eq!(lua(&a), rust);
    }
}
