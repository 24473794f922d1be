//! Reaching quotad: the channel (TLS, mTLS, a bearer token, as the Rust client takes them), and errors that
//! say what to do.

use std::{fmt, time::Duration};

use quotad_api::v1::{
    quota_admin_client::QuotaAdminClient, quota_service_client::QuotaServiceClient,
};
use tonic::{
    Code, Request, Status,
    metadata::AsciiMetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};

use crate::args::Cli;

/// Adds `authorization: Bearer ...` when a token is set.
#[derive(Clone)]
pub struct Auth(Option<AsciiMetadataValue>);

impl Interceptor for Auth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            request.metadata_mut().insert("authorization", t.clone());
        }
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, Auth>;

/// Both services over one lazy channel.
pub struct Conn {
    pub addr: String,
    pub admin: QuotaAdminClient<Authed>,
    pub quota: QuotaServiceClient<Authed>,
}

/// What went wrong, worded for the person at the terminal.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure(format!("{what} {}: {e}", path.display())))
}

/// The address with a scheme (https when TLS options are given).
fn url(cli: &Cli) -> String {
    let tls = cli.ca.is_some() || cli.cert.is_some();
    match (cli.addr.contains("://"), tls) {
        (true, _) => cli.addr.clone(),
        (false, true) => format!("https://{}", cli.addr),
        (false, false) => format!("http://{}", cli.addr),
    }
}

fn tls(cli: &Cli) -> Result<Option<ClientTlsConfig>, Failure> {
    if cli.ca.is_none() && cli.cert.is_none() && !url(cli).starts_with("https://") {
        return Ok(None);
    }
    let mut tls = ClientTlsConfig::new().with_enabled_roots();
    if let Some(ca) = &cli.ca {
        tls = tls.ca_certificate(Certificate::from_pem(read(ca, "--ca")?));
    }
    if let (Some(cert), Some(key)) = (&cli.cert, &cli.key) {
        tls = tls.identity(Identity::from_pem(
            read(cert, "--cert")?,
            read(key, "--key")?,
        ));
    }
    if let Some(name) = &cli.tls_domain {
        tls = tls.domain_name(name.clone());
    }
    Ok(Some(tls))
}

/// A lazy channel to quotad per the command line.
pub fn connect(cli: &Cli) -> Result<Conn, Failure> {
    let url = url(cli);
    let timeout = Duration::try_from_secs_f64(cli.timeout)
        .ok()
        .filter(|t| !t.is_zero() && *t <= Duration::from_secs(3600))
        .ok_or_else(|| {
            Failure("--timeout must be a number of seconds above 0, at most 3600".into())
        })?;
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| Failure(format!("--addr '{}': {e}", cli.addr)))?
        .connect_timeout(timeout)
        .timeout(timeout);
    let tls = tls(cli)?;
    if let Some(t) = tls.clone() {
        endpoint = endpoint
            .tls_config(t)
            .map_err(|e| Failure(format!("TLS: {e}")))?;
    }
    let token = match &cli.token {
        None => None,
        Some(_) if tls.is_none() => {
            return Err(Failure(
                "--token needs TLS (--ca or an https:// --addr): on plaintext it can be read on the wire".into(),
            ));
        }
        Some(t) => Some(
            format!("Bearer {t}")
                .parse()
                .map_err(|_| Failure("--token is not a valid header value".into()))?,
        ),
    };
    let channel = endpoint.connect_lazy();
    let auth = Auth(token);
    Ok(Conn {
        addr: cli.addr.clone(),
        admin: QuotaAdminClient::with_interceptor(channel.clone(), auth.clone()),
        quota: QuotaServiceClient::with_interceptor(channel, auth),
    })
}

/// A failed call, said plainly.
pub fn explain(addr: &str, s: &Status) -> Failure {
    let what = match s.code() {
        Code::Unavailable
            if s.message().contains("connect") || s.message().contains("transport") =>
        {
            format!(
                "quotad at {addr} is not answering: is it running? (start it with `cargo run --release -p quotad-server`, \
             or pass --addr)"
            )
        }
        Code::Unavailable => format!("quotad at {addr} is unavailable: {}", s.message()),
        Code::DeadlineExceeded | Code::Cancelled => {
            format!("quotad at {addr} did not answer in time (raise --timeout?)")
        }
        Code::Unauthenticated => format!(
            "quotad at {addr} wants a token: pass --token (or QUOTADCTL_TOKEN) of an identity with the admin role ({})",
            s.message()
        ),
        Code::PermissionDenied => format!(
            "quotad at {addr} refused: admin calls need an identity with the admin role, or a loopback \
             connection when no identities are configured ({})",
            s.message()
        ),
        Code::Unimplemented => {
            format!("quotad at {addr} does not offer this call (an older version?)")
        }
        _ => format!("quotad at {addr}: {:?}: {}", s.code(), s.message()),
    };
    Failure(what)
}
