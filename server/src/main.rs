//! The `quotad` binary: parse arguments, load config, set up logging, bind, and serve until SIGTERM or
//! SIGINT; SIGHUP reloads the config file.

use std::{path::PathBuf, process::ExitCode, sync::Arc};

use quotad_server::{
    clock::MonotonicClock,
    config::{self, LogFormat},
    server::Quotad,
};

const USAGE: &str = "\
quotad: a central quota service (rate limits, concurrency leases, circuit breakers) over gRPC

USAGE:
    quotad [--config FILE]        serve (without --config: $QUOTAD_CONFIG, else the embedded default)
    quotad --check [--config FILE] validate the config and exit
    quotad --print-default-config print the embedded default config
    quotad --version | --help

Environment overrides any key: QUOTAD_SERVER__LISTEN=0.0.0.0:50051, QUOTAD_CAPACITY__MAX_LEASES=500000.
Logging: RUST_LOG (default info). Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the config.";

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
            "config OK: {} resources, listen {}",
            settings.rules.len(),
            settings.server.listen
        );
        return ExitCode::SUCCESS;
    }
    init_logging(settings.server.log_format);
    match path.as_deref() {
        Some(p) => tracing::info!(config = %p.display(), "config loaded"),
        None => tracing::info!("no --config given: using the embedded default config"),
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => return fail(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(async move {
        let listen = settings.server.listen;
        let listener = match tokio::net::TcpListener::bind(listen).await {
            Ok(l) => l,
            Err(e) => return fail(&format!("cannot listen on {listen}: {e}")),
        };
        let quotad = Arc::new(Quotad::new(settings, path, Arc::new(MonotonicClock::new())));
        spawn_reload_on_sighup(quotad.clone());
        match quotad.serve(listener, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e.to_string()),
        }
    })
}

fn fail(message: &str) -> ExitCode {
    eprintln!("quotad: {message}");
    ExitCode::FAILURE
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
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
