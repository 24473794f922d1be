//! Validating the transport settings: `[server.tls]`, the plaintext health listener and `[server.http2]`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use super::{
    ConfigError,
    file::{Http2Section, TlsSection},
    validate::{duration, invalid, positive},
};

/// Where the TLS material lives (the files are read by the server, and re-read when they change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain, PEM.
    pub cert: PathBuf,
    /// Private key, PEM.
    pub key: PathBuf,
    /// Client CA bundle, PEM: when set, client certificates are required.
    pub client_ca: Option<PathBuf>,
}

/// HTTP/2 and connection limits, set deliberately (see the README, Security).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Http2Settings {
    /// Most concurrent streams per connection.
    pub max_concurrent_streams: u32,
    /// Most reset streams pending before the connection is closed (rapid reset).
    pub max_pending_reset_streams: usize,
    /// Largest header list, in bytes.
    pub max_header_list_bytes: u32,
    /// Server ping interval on an idle connection.
    pub keepalive_interval: Duration,
    /// How long a ping may go unanswered.
    pub keepalive_timeout: Duration,
    /// A connection with no call for this long is closed.
    pub preface_timeout: Duration,
    /// Most connections served at once.
    pub max_connections: usize,
    /// Most PING, SETTINGS or RST_STREAM frames a client may send in a second before its connection is
    /// closed.
    pub max_control_frames_per_second: u32,
}

impl Default for Http2Settings {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 256,
            max_pending_reset_streams: 256,
            max_header_list_bytes: 16 * 1024,
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            preface_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            max_control_frames_per_second: 100,
        }
    }
}

/// Checks `[server.tls]`: the files must exist (they are parsed when the server starts).
pub fn tls(t: &TlsSection) -> Result<TlsSettings, ConfigError> {
    let file = |key: &str, path: &str| {
        let p = PathBuf::from(path);
        if path.is_empty() {
            Err(invalid(key, "is required with [server.tls]"))
        } else if !p.is_file() {
            Err(invalid(key, format!("'{path}' is not a readable file")))
        } else {
            Ok(p)
        }
    };
    Ok(TlsSettings {
        cert: file("server.tls.cert", &t.cert)?,
        key: file("server.tls.key", &t.key)?,
        client_ca: t
            .client_ca
            .as_deref()
            .map(|c| file("server.tls.client_ca", c))
            .transpose()?,
    })
}

/// Checks the plaintext health listener's address.
pub fn health_listen(s: Option<&str>) -> Result<Option<SocketAddr>, ConfigError> {
    s.map(|a| {
        a.parse().map_err(|_| {
            invalid(
                "server.health_listen",
                format!("'{a}' is not an address like 127.0.0.1:50052"),
            )
        })
    })
    .transpose()
}

/// Checks `[server.http2]`, each limit within a range that keeps the server usable.
pub fn http2(h: &Http2Section) -> Result<Http2Settings, ConfigError> {
    let d = Http2Settings::default();
    let within = |key: &str, v: u64, lo: u64, hi: u64| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                key,
                format!("{v} is out of range; must be {lo}..={hi}"),
            ))
        }
    };
    let streams = h.max_concurrent_streams.unwrap_or(d.max_concurrent_streams);
    let resets = h
        .max_pending_reset_streams
        .unwrap_or(d.max_pending_reset_streams);
    let headers = h.max_header_list_bytes.unwrap_or(d.max_header_list_bytes);
    let connections = h.max_connections.unwrap_or(d.max_connections);
    let d_of = |key: &str, v: Option<&String>, default| positive(key, duration(key, v, default)?);
    Ok(Http2Settings {
        max_concurrent_streams: within(
            "server.http2.max_concurrent_streams",
            streams.into(),
            1,
            100_000,
        )? as u32,
        max_pending_reset_streams: within(
            "server.http2.max_pending_reset_streams",
            resets as u64,
            1,
            10_000,
        )? as usize,
        max_header_list_bytes: within(
            "server.http2.max_header_list_bytes",
            headers.into(),
            1024,
            1 << 20,
        )? as u32,
        keepalive_interval: d_of(
            "server.http2.keepalive_interval",
            h.keepalive_interval.as_ref(),
            d.keepalive_interval,
        )?,
        keepalive_timeout: d_of(
            "server.http2.keepalive_timeout",
            h.keepalive_timeout.as_ref(),
            d.keepalive_timeout,
        )?,
        preface_timeout: d_of(
            "server.http2.preface_timeout",
            h.preface_timeout.as_ref(),
            d.preface_timeout,
        )?,
        max_connections: within(
            "server.http2.max_connections",
            connections as u64,
            1,
            1_000_000,
        )? as usize,
        max_control_frames_per_second: within(
            "server.http2.max_control_frames_per_second",
            h.max_control_frames_per_second
                .unwrap_or(d.max_control_frames_per_second)
                .into(),
            1,
            10_000,
        )? as u32,
    })
}
