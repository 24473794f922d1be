//! The TLS server config, built from the PEM files `[server.tls]` names (rustls with ring: no OpenSSL).
//! Files are re-read when they change (checked every second) and on SIGHUP; a new config applies to new
//! connections, while connections already open keep theirs, so a certificate rotation fails no RPC. A file
//! that does not parse leaves the config in force as it was, and says why in the log.

use std::{
    fs,
    path::Path,
    sync::{Arc, Mutex, PoisonError},
    time::SystemTime,
};

use arc_swap::ArcSwap;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::rustls::{self, RootCertStore, ServerConfig, server::WebPkiClientVerifier};

use crate::config::TlsSettings;

/// Why TLS material could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("server.tls: {path}: {problem}")]
    File {
        /// The file.
        path: String,
        /// What is wrong.
        problem: String,
    },
    /// rustls refused the material (a key that does not match the certificate, say).
    #[error("server.tls: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle cannot verify anything.
    #[error("server.tls.client_ca: {0}")]
    Verifier(String),
}

fn file_error(path: &Path, problem: impl ToString) -> TlsError {
    TlsError::File {
        path: path.display().to_string(),
        problem: problem.to_string(),
    }
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = fs::read(path).map_err(|e| file_error(path, e))?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, format!("not PEM certificates ({e})")))?;
    if certs.is_empty() {
        return Err(file_error(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = fs::read(path).map_err(|e| file_error(path, e))?;
    PrivateKeyDer::from_pem_slice(&bytes)
        .map_err(|e| file_error(path, format!("no PEM private key ({e})")))
}

/// Builds the server config from `files`, advertising HTTP/2 (gRPC) by ALPN.
pub fn server_config(files: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots
                    .add(cert)
                    .map_err(|e| file_error(ca, format!("not a CA certificate ({e})")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(certs(&files.cert)?, key(&files.key)?)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// What identifies a version of the files: their modification times and sizes.
type Stamp = Vec<Option<(SystemTime, u64)>>;

fn stamp(files: &TlsSettings) -> Stamp {
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|p| {
        fs::metadata(p)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    })
    .collect()
}

/// The TLS config in force, and how to refresh it from its files.
#[derive(Debug)]
pub struct TlsReloader {
    files: TlsSettings,
    config: ArcSwap<ServerConfig>,
    stamp: Mutex<Stamp>,
}

impl TlsReloader {
    /// Loads `files` (an error here stops the server from starting: it names the file and the problem).
    pub fn new(files: TlsSettings) -> Result<Self, TlsError> {
        let stamp = stamp(&files);
        let config = server_config(&files)?;
        Ok(Self {
            files,
            config: ArcSwap::from_pointee(config),
            stamp: Mutex::new(stamp),
        })
    }

    /// The config new connections use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    /// Re-reads the files (SIGHUP); on error the config in force stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let stamp = stamp(&self.files);
        let config = server_config(&self.files)?;
        self.config.store(Arc::new(config));
        *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) = stamp;
        tracing::info!(cert = %self.files.cert.display(), "TLS certificates reloaded");
        Ok(())
    }

    /// Reloads when a file changed since the last load. A half-written file fails to parse and is tried
    /// again at the next check, so a rotation that writes files one by one settles on the final set.
    pub fn reload_if_changed(&self) {
        let now = stamp(&self.files);
        if *self.stamp.lock().unwrap_or_else(PoisonError::into_inner) == now {
            return;
        }
        if let Err(e) = self.reload() {
            tracing::warn!(error = %e, "TLS files changed but cannot be used yet; the certificates in force stay");
        }
    }

    /// Checks the files every second until `stop` completes.
    pub async fn watch(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = &mut stop => return,
                _ = tick.tick() => {
                    let me = self.clone();
                    // File reads and certificate parsing stay off the serving threads.
                    let _ = tokio::task::spawn_blocking(move || me.reload_if_changed()).await;
                }
            }
        }
    }
}
