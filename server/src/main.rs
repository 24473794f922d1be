//! The `quotad` binary: parse arguments, load config, set up logging, bind, and serve until SIGTERM or
//! SIGINT; SIGHUP reloads the config file.

// A function fits on a screen (clippy.toml: 80 lines); tests may run longer.
#![warn(clippy::too_many_lines)]
#![cfg_attr(test, allow(clippy::too_many_lines))]
// Nothing a request carries may reach a panic: no unwrap, expect, panic! or unreachable! outside tests
// (the one sound exception says why where it stands).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use quotad_server::{clock::MonotonicClock, config, server::Quotad, telemetry::Telemetry};

/// mimalloc rather than glibc malloc: a million live keys cost 480 MB of RSS under glibc for 200 MB in use,
/// and malloc was 13% of the server's CPU (BENCHMARKS.md). `--no-default-features` builds with glibc.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "\
quotad: a central quota service (rate limits, concurrency leases, circuit breakers) over gRPC

USAGE:
    quotad [--config FILE]        serve (without --config: $QUOTAD_CONFIG, else the embedded default)
    quotad --check [--config FILE] validate the config and exit
    quotad --print-default-config print the embedded default config
    quotad --hash-token           read a bearer token on stdin, print its SHA-256 for auth.identities
    quotad --version | --help

Environment overrides any key: QUOTAD_SERVER__LISTEN=0.0.0.0:50051, QUOTAD_CAPACITY__MAX_LEASES=500000.
Logging: RUST_LOG (default info). Spans go to OTLP when tracing.otlp_endpoint is set. Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the config.";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut path: Option<PathBuf> = std::env::var_os("QUOTAD_CONFIG").map(PathBuf::from);
    let mut check = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-c" | "--config" => match args.next() {
                Some(p) => path = Some(PathBuf::from(p)),
                None => return fail("--config needs a file path"),
            },
            "--check" => check = true,
            "--hash-token" => return hash_token(),
            "--print-default-config" => {
                print!("{}", config::DEFAULT_CONFIG);
                return ExitCode::SUCCESS;
            }
            "-V" | "--version" => {
                println!("quotad {}", env!("CARGO_PKG_VERSION"));
                return ExitCode::SUCCESS;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => return fail(&format!("unknown argument '{other}'\n\n{USAGE}")),
        }
    }

    let settings = match config::load(path.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(&e.to_string()),
    };
    if check {
        println!(
            "config OK: {} resources, {} Envoy rate limit domains, listen {}",
            settings.rules.len(),
            settings.rls.domains().len(),
            settings.server.listen
        );
        return ExitCode::SUCCESS;
    }
    let runtime = match runtime(settings.server.worker_threads).enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        // Inside the runtime: the OTLP exporter's channel lives on it.
        let telemetry = match Telemetry::subscriber(settings.server.log_format, &settings.tracing) {
            Ok((subscriber, telemetry)) => {
                if tracing::subscriber::set_global_default(subscriber).is_err() {
                    eprintln!("quotad: a logger was already installed");
                }
                telemetry
            }
            Err(e) => return fail(&e.to_string()),
        };
        match path.as_deref() {
            Some(p) => tracing::info!(config = %p.display(), "config loaded"),
            None => tracing::info!("no --config given: using the embedded default config"),
        }
        match &settings.tracing.otlp_endpoint {
            Some(endpoint) => tracing::info!(%endpoint, "exporting spans over OTLP"),
            None => tracing::debug!("tracing.otlp_endpoint not set: no spans exported"),
        }
        let code = serve(settings, path).await;
        // Bounded by tracing.export_timeout, so a missing collector cannot hold up the exit.
        let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
        code
    })
}

async fn serve(settings: config::Settings, path: Option<PathBuf>) -> ExitCode {
    let listen = settings.server.listen;
    let listener = match tokio::net::TcpListener::bind(listen).await {
        Ok(l) => l,
        Err(e) => return fail(&format!("cannot listen on {listen}: {e}")),
    };
    let quotad = match Quotad::connect(settings, path, Arc::new(MonotonicClock::new())).await {
        Ok(q) => Arc::new(q),
        Err(e) => return fail(&e.to_string()),
    };
    spawn_reload_on_sighup(quotad.clone());
    match quotad.serve(listener, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

/// Prints the SHA-256 of the token on stdin (one line; surrounding white space ignored), so tokens never
/// sit in a config file, a shell history or a process list.
fn hash_token() -> ExitCode {
    let mut token = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut token) {
        return fail(&format!("cannot read the token from stdin: {e}"));
    }
    let token = token.trim();
    if token.is_empty() {
        return fail("no token on stdin: printf %s \"$TOKEN\" | quotad --hash-token");
    }
    println!("{}", quotad_server::auth::token::hash_hex(token));
    ExitCode::SUCCESS
}

fn fail(message: &str) -> ExitCode {
    eprintln!("quotad: {message}");
    ExitCode::FAILURE
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}

fn spawn_reload_on_sighup(quotad: Arc<Quotad>) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            tracing::warn!("cannot listen for SIGHUP; reload with QuotaAdmin/ReloadConfig instead");
            return;
        };
        while hup.recv().await.is_some() {
            if let Err(e) = quotad.reload() {
                tracing::error!(error = %e, "config reload failed; the old config stays in force");
            }
        }
    });
    #[cfg(not(unix))]
    let _ = quotad;
}

/// The runtime `server.worker_threads` asks for: one worker per core it may run on (0, the default), a
/// current-thread runtime (1), or N workers. On a pinned core the current-thread runtime serves 1.2 to 1.6
/// times the calls of a one-worker pool when clients spread over several connections, but 0.85 times on one
/// busy connection (h2load, BENCHMARKS.md): a choice for the operator, not a default.
fn runtime(workers: usize) -> tokio::runtime::Builder {
    match workers {
        0 => tokio::runtime::Builder::new_multi_thread(),
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(n);
            b
        }
    }
}
