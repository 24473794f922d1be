//! End-to-end over TLS: server certificates, required client certificates (mTLS) naming identities, the
//! plaintext health listener, and a certificate rotation under load with no failed RPC. Certificates are
//! made by the test (rcgen) in a temporary directory.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use quotad_api::v1::{self as pb, quota_service_client::QuotaServiceClient};
use quotad_server::{clock::MonotonicClock, config, server::Listeners, server::Quotad};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

/// A CA that signs certificates.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// (certificate PEM, key PEM) for these subject alternative names.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

impl Ca {
    /// (certificate PEM, key PEM, DER) with a subject common name and no subject alternative name.
    fn sign_cn(&self, cn: &str) -> (String, String, Vec<u8>) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "quotad tests");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let d = std::env::temp_dir().join(format!("quotad-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let p = self.0.join(file);
        // Write then rename: the server never reads a half-written file.
        let tmp = self.0.join(format!(".{file}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &p).unwrap();
        p
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn toml_path(p: &Path) -> String {
    p.display().to_string().replace('\\', "/")
}

struct Running {
    addr: std::net::SocketAddr,
    health_addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

async fn serve(toml: &str) -> Running {
    let settings = config::load_str(toml).expect("valid config");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let health = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, health_addr) = (grpc.local_addr().unwrap(), health.local_addr().unwrap());
    let quotad = Arc::new(Quotad::new(settings, None, Arc::new(MonotonicClock::new())).unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        quotad
            .serve_with(
                Listeners {
                    grpc,
                    metrics: None,
                    health: Some(health),
                },
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    Running {
        addr,
        health_addr,
        stop: Some(stop),
    }
}

const RESOURCES: &str = r#"
[metrics]
enabled = false

[[resources]]
name = "llm"
rate = { limit = 1000000, period = "1s", burst = 1000000 }
"#;

async fn channel(
    addr: std::net::SocketAddr,
    ca: &str,
    client: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = client {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
}

fn acquire() -> pb::AcquireRequest {
    pb::AcquireRequest {
        resource: "llm".into(),
        ..Default::default()
    }
}

/// A config with TLS files in `dir`: server certificate from `server_ca`, client certificates required
/// from `client_ca`, one identity proved by the certificate name `worker.quotad.test`.
fn mtls_config(dir: &Dir, server_ca: &Ca, client_ca: &Ca) -> String {
    let (cert, key) = server_ca.sign(&["localhost", "127.0.0.1"]);
    let cert = dir.write("server.pem", &cert);
    let key = dir.write("server.key", &key);
    let ca = dir.write("clients.pem", &client_ca.pem());
    format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n\n\
         [[auth.identities]]\nname = \"worker\"\nroles = [\"worker\"]\ncertificate_names = [\"worker.quotad.test\"]\n{RESOURCES}",
        toml_path(&cert),
        toml_path(&key),
        toml_path(&ca)
    )
}

#[tokio::test]
async fn mtls_admits_certificates_that_name_an_identity_and_nothing_else() {
    let dir = Dir::new("mtls");
    let (server_ca, client_ca, stranger_ca) = (
        Ca::new("server CA"),
        Ca::new("client CA"),
        Ca::new("stranger"),
    );
    let running = serve(&mtls_config(&dir, &server_ca, &client_ca)).await;
    let worker = client_ca.sign(&["worker.quotad.test"]);
    let mut c = QuotaServiceClient::new(
        channel(running.addr, &server_ca.pem(), Some(&worker))
            .await
            .unwrap(),
    );
    assert!(c.acquire(acquire()).await.unwrap().into_inner().granted);

    // No client certificate, or one from another CA: the handshake fails, nothing is served.
    for client in [None, Some(stranger_ca.sign(&["worker.quotad.test"]))] {
        let refused = match channel(running.addr, &server_ca.pem(), client.as_ref()).await {
            Err(_) => true,
            Ok(ch) => QuotaServiceClient::new(ch)
                .acquire(acquire())
                .await
                .is_err(),
        };
        assert!(
            refused,
            "a connection without a valid client certificate was served"
        );
    }
    // A valid certificate that names no identity: connected, but unauthenticated.
    let nobody = client_ca.sign(&["nobody.quotad.test"]);
    let e = QuotaServiceClient::new(
        channel(running.addr, &server_ca.pem(), Some(&nobody))
            .await
            .unwrap(),
    )
    .acquire(acquire())
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // A plaintext client cannot talk to the TLS port.
    let plain = Channel::from_shared(format!("http://{}", running.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        assert!(
            QuotaServiceClient::new(ch)
                .acquire(acquire())
                .await
                .is_err()
        );
    }
    // The plaintext health listener answers without any certificate.
    let health = Channel::from_shared(format!("http://{}", running.health_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let status = tonic_health::pb::health_client::HealthClient::new(health.clone())
        .check(tonic_health::pb::HealthCheckRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    // ...and only health.
    let e = QuotaServiceClient::new(health)
        .acquire(acquire())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
}

#[tokio::test]
async fn a_certificate_rotation_under_load_fails_no_rpc() {
    let dir = Dir::new("rotate");
    let (old_ca, client_ca) = (Ca::new("old server CA"), Ca::new("client CA"));
    let running = serve(&mtls_config(&dir, &old_ca, &client_ca)).await;
    let worker = Arc::new(client_ca.sign(&["worker.quotad.test"]));
    let (ok, failed, done) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    // Four clients keep calling on their connections, and one reconnects for every call, throughout.
    let mut load = Vec::new();
    for reconnect in [false, false, false, false, true] {
        let (ok, failed, done, worker) = (ok.clone(), failed.clone(), done.clone(), worker.clone());
        let (addr, ca) = (running.addr, old_ca.pem());
        load.push(tokio::spawn(async move {
            let mut c = QuotaServiceClient::new(channel(addr, &ca, Some(&worker)).await.unwrap());
            for _ in 0..100_000 {
                if done.load(Ordering::Acquire) {
                    break;
                }
                if reconnect {
                    // A client that still trusts only the old CA: it must keep working until the new
                    // certificate is in force, and the test stops it at that point.
                    match channel(addr, &ca, Some(&worker)).await {
                        Ok(ch) => c = QuotaServiceClient::new(ch),
                        Err(_) => break,
                    }
                }
                match c.acquire(acquire()).await {
                    Ok(_) => ok.fetch_add(1, Ordering::Relaxed),
                    Err(_) if reconnect => break,
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Rotate to a certificate from a new CA (files replaced whole, as cert-manager and certbot do).
    let new_ca = Ca::new("new server CA");
    let (cert, key) = new_ca.sign(&["localhost", "127.0.0.1"]);
    dir.write("server.key", &key);
    dir.write("server.pem", &cert);
    // A client that trusts only the new CA connects once the server has picked the files up.
    let mut rotated = false;
    for _ in 0..100 {
        if let Ok(ch) = channel(running.addr, &new_ca.pem(), Some(&worker)).await {
            assert!(
                QuotaServiceClient::new(ch)
                    .acquire(acquire())
                    .await
                    .unwrap()
                    .into_inner()
                    .granted
            );
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotated, "the new certificate was never served");
    tokio::time::sleep(Duration::from_millis(200)).await;
    done.store(true, Ordering::Release);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "RPCs failed during the rotation"
    );
    assert!(ok.load(Ordering::Relaxed) > 100, "the load ran");
}

#[tokio::test]
async fn a_bearer_token_over_tls_without_client_certificates() {
    let dir = Dir::new("token");
    let ca = Ca::new("server CA");
    let (cert, key) = ca.sign(&["localhost", "127.0.0.1"]);
    let (cert, key) = (
        dir.write("server.pem", &cert),
        dir.write("server.key", &key),
    );
    let toml = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n\n[[auth.identities]]\nname = \"w\"\nroles = [\"worker\"]\ntoken_sha256 = \"{}\"\n{RESOURCES}",
        toml_path(&cert),
        toml_path(&key),
        quotad_server::auth::token::hash_hex("tls-token")
    );
    let running = serve(&toml).await;
    let ch = channel(running.addr, &ca.pem(), None).await.unwrap();
    let e = QuotaServiceClient::new(ch.clone())
        .acquire(acquire())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    let mut c = QuotaServiceClient::with_interceptor(ch, quotad_e2e::Bearer::new("tls-token"));
    assert!(c.acquire(acquire()).await.unwrap().into_inner().granted);
}

#[test]
fn unusable_tls_files_fail_start_up_naming_the_file() {
    let dir = Dir::new("bad");
    let cert = dir.write("server.pem", "not a certificate");
    let key = dir.write("server.key", "not a key");
    let toml = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n{RESOURCES}",
        toml_path(&cert),
        toml_path(&key)
    );
    let settings = config::load_str(&toml).unwrap();
    let e = Quotad::new(settings, None, Arc::new(MonotonicClock::new())).unwrap_err();
    assert!(e.to_string().contains("server.pem"), "{e}");
    let missing = format!(
        "[server.tls]\ncert = \"/nonexistent/x.pem\"\nkey = \"{}\"\n",
        toml_path(&key)
    );
    let e = config::load_str(&missing).unwrap_err();
    assert!(e.to_string().contains("server.tls.cert"), "{e}");
}

#[tokio::test]
async fn the_rust_client_speaks_mtls_and_sends_its_token() {
    use quotad_client::{AcquireOptions, Client, Outcome};
    let dir = Dir::new("client");
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let token_identity = format!(
        "[[auth.identities]]\nname = \"by-token\"\nroles = [\"worker\"]\ntoken_sha256 = \"{}\"\n",
        quotad_server::auth::token::hash_hex("client-token")
    );
    let toml = mtls_config(&dir, &server_ca, &client_ca)
        .replace("[metrics]", &format!("{token_identity}\n[metrics]"));
    let running = serve(&toml).await;
    let (cert, key) = client_ca.sign(&["worker.quotad.test"]);
    let url = format!("https://{}", running.addr);
    let client = Client::builder(url.clone())
        .tls_ca_certificate(server_ca.pem())
        .tls_domain("localhost")
        .tls_client_certificate(&cert, &key)
        .connect()
        .await
        .unwrap();
    let permit = client.acquire("llm", AcquireOptions::new()).await.unwrap();
    permit.release(Outcome::Success).await.unwrap();
    // The same certificate plus a token: the token names the identity.
    let by_token = Client::builder(url.clone())
        .tls_ca_certificate(server_ca.pem())
        .tls_domain("localhost")
        .tls_client_certificate(&cert, &key)
        .bearer_token("client-token")
        .unwrap()
        .connect()
        .await
        .unwrap();
    let permit = by_token
        .acquire("llm", AcquireOptions::new())
        .await
        .unwrap();
    // A lease acquired under one identity cannot be released by the other (the permit's own release is).
    let e = client
        .raw()
        .release(pb::ReleaseRequest {
            lease_id: permit.lease_id().unwrap().to_owned(),
            outcome: pb::Outcome::Success.into(),
            used_permits: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    permit.release(Outcome::Success).await.unwrap();
    // TLS options with a plaintext endpoint are a configuration error, said at once.
    let e = Client::builder(format!("http://{}", running.addr))
        .tls_ca_certificate(server_ca.pem())
        .connect_lazy()
        .unwrap_err();
    assert!(e.to_string().contains("https://"), "{e}");
    // The token is never printed.
    let debug = format!(
        "{:?}",
        Client::builder(url)
            .bearer_token("client-token")
            .unwrap()
            .tls_client_certificate(&cert, &key)
    );
    assert!(!debug.contains("client-token"), "{debug}");
    let key_line = key.lines().nth(1).unwrap();
    assert!(
        !debug.contains(key_line) && !debug.contains("PRIVATE") && !debug.contains("identity"),
        "{debug}"
    );
}

#[tokio::test]
async fn a_client_certificate_with_only_a_common_name_proves_its_identity() {
    let dir = Dir::new("cn");
    let (server_ca, client_ca) = (Ca::new("server CA"), Ca::new("client CA"));
    let toml = mtls_config(&dir, &server_ca, &client_ca).replace(
        "certificate_names = [\"worker.quotad.test\"]",
        "certificate_names = [\"worker.quotad.test\", \"Billing Worker 7\"]",
    );
    let running = serve(&toml).await;
    let (cert, key, der) = client_ca.sign_cn("billing worker 7");
    assert_eq!(
        quotad_server::auth::cert::common_name(&der.into()).as_deref(),
        Some("billing worker 7")
    );
    let mut c = QuotaServiceClient::new(
        channel(running.addr, &server_ca.pem(), Some(&(cert, key)))
            .await
            .unwrap(),
    );
    assert!(c.acquire(acquire()).await.unwrap().into_inner().granted);
    let (cert, key, _) = client_ca.sign_cn("billing worker 8");
    let e = QuotaServiceClient::new(
        channel(running.addr, &server_ca.pem(), Some(&(cert, key)))
            .await
            .unwrap(),
    )
    .acquire(acquire())
    .await
    .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
}
