//! A worker that calls a fake, throttling downstream through `Client::run` and prints its progress.
//!
//! Start quotad on its embedded default config, then:
//!
//! ```sh
//! cargo run -p quotad-client --example worker -- http://127.0.0.1:50051
//! ```
//!
//! Against a quotad with TLS and auth, set `QUOTAD_CA` (the CA's PEM file), `QUOTAD_CLIENT_CERT` and
//! `QUOTAD_CLIENT_KEY` (for mTLS) and/or `QUOTAD_TOKEN`, and pass an `https://` endpoint.
//!
//! The fake downstream answers HTTP 429 with `Retry-After: 0.2 s` to every third call; `run` reports each
//! throttle to quotad (so the whole fleet backs off), waits at least the retry-after plus jitter, and tries
//! again with a fresh permit.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use quotad_client::{AcquireOptions, Classification, Client, RetryPolicy, RunOptions};

/// A downstream reply: an HTTP status and, on 429, the Retry-After it sent.
#[derive(Debug)]
struct Reply {
    status: u16,
    retry_after: Option<Duration>,
}

/// The fake downstream: every third call is throttled.
async fn call_downstream(calls: &AtomicU32) -> Result<Reply, std::io::Error> {
    let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
    tokio::time::sleep(Duration::from_millis(5)).await;
    Ok(if n.is_multiple_of(3) {
        Reply {
            status: 429,
            retry_after: Some(Duration::from_millis(200)),
        }
    } else {
        Reply {
            status: 200,
            retry_after: None,
        }
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let endpoint = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let mut builder = Client::builder(endpoint)
        .client_id("example-worker")
        .retry_policy(RetryPolicy {
            initial_backoff: Duration::from_millis(50),
            ..RetryPolicy::default()
        });
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(ca) = env("QUOTAD_CA") {
        builder = builder.tls_ca_certificate(std::fs::read(ca)?);
    }
    if let (Some(cert), Some(key)) = (env("QUOTAD_CLIENT_CERT"), env("QUOTAD_CLIENT_KEY")) {
        builder = builder.tls_client_certificate(std::fs::read(cert)?, std::fs::read(key)?);
    }
    if let Some(token) = env("QUOTAD_TOKEN") {
        builder = builder.bearer_token(token.to_string_lossy())?;
    }
    let client = builder.connect().await?;
    let calls = Arc::new(AtomicU32::new(0));
    for job in 1..=5 {
        let options = RunOptions::new()
            .acquire(AcquireOptions::new().max_wait(Duration::from_secs(5)))
            .classify(|r: &Result<Reply, std::io::Error>| match r {
                Ok(Reply {
                    status: 429,
                    retry_after,
                }) => Classification::Throttled {
                    retry_after: *retry_after,
                },
                Ok(_) => Classification::Success,
                Err(_) => Classification::Failure,
            })
            .on_progress(|p| println!("  {p}"));
        let calls = calls.clone();
        let reply = client.run("example.api", options, move |_| {
            let calls = calls.clone();
            async move { call_downstream(&calls).await }
        });
        let reply = reply.await?;
        println!("job {job}: downstream answered {}", reply.status);
    }
    let state = client.circuit_state("example.api").await?;
    println!(
        "example.api: breaker {:?}, {} failures of {} calls in the window",
        state.state, state.failures, state.calls
    );
    Ok(())
}
