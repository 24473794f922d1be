//! The accept loops: each waits for a free connection slot before accepting, sets `TCP_NODELAY`, and (for
//! TLS) completes the handshake on its own task, bounded by a timeout, so a slow or silent client never holds
//! up the next accept.

use std::{io, sync::Arc, time::Duration};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, mpsc},
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;

use super::{Conn, TlsReloader, penalty::Penalties};

/// A stream of accepted connections, for `serve_with_incoming`.
pub type Incoming<S> = ReceiverStream<Result<Conn<S>, io::Error>>;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Limits every accepted connection shares.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most connections at once.
    pub max_connections: usize,
    /// A connection whose client sends nothing for this long is closed.
    pub preface_timeout: Duration,
    /// A connection whose client sends more PING or SETTINGS frames a second is closed.
    pub max_control_frames_per_second: u32,
    /// Closes counted by reason, and addresses refused after repeated abuse (shared by every listener).
    pub penalties: Arc<Penalties>,
}

/// Accepts plaintext connections on `listener`.
pub fn plaintext(listener: TcpListener, limits: Limits) -> Incoming<TcpStream> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        while let Some((stream, peer, slot)) = next(&listener, &limits, &slots).await {
            if tx
                .send(Ok(Conn::new(stream, peer, slot, &limits)))
                .await
                .is_err()
            {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

/// Accepts TLS connections on `listener`, each with the TLS config in force when it arrives.
pub fn tls(
    listener: TcpListener,
    limits: Limits,
    config: Arc<TlsReloader>,
) -> Incoming<TlsStream<TcpStream>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(limits.max_connections));
        while let Some((stream, peer, slot)) = next(&listener, &limits, &slots).await {
            if tx.is_closed() {
                return;
            }
            let acceptor = TlsAcceptor::from(config.current());
            let (tx, limits) = (tx.clone(), limits.clone());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(Conn::new(tls, peer, slot, &limits))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The next connection worth serving, once a slot under the cap is free: `None` only when the slots are
/// gone (never, while the listener's task holds them).
async fn next(
    listener: &TcpListener,
    limits: &Limits,
    slots: &Arc<Semaphore>,
) -> Option<(TcpStream, std::net::IpAddr, OwnedSemaphorePermit)> {
    loop {
        let slot = slots.clone().acquire_owned().await.ok()?;
        if let Some((stream, peer)) = accept(listener, limits).await {
            return Some((stream, peer, slot));
        }
    }
}

/// One accepted connection with `TCP_NODELAY` set (tonic applies its own `tcp_nodelay` only to listeners
/// it binds itself, and with Nagle's algorithm on a small response can wait 40 ms for a delayed ACK).
/// `None` after a failed accept, which is logged and retried after a short pause (out of file descriptors,
/// say: retrying at once would spin), and for a peer refused after repeated abuse (closed at once).
async fn accept(listener: &TcpListener, limits: &Limits) -> Option<(TcpStream, std::net::IpAddr)> {
    match listener.accept().await {
        Ok((stream, peer)) => {
            if limits
                .penalties
                .refused(peer.ip(), tokio::time::Instant::now())
            {
                tracing::debug!(%peer, "refused: this address opened abusive connections recently");
                return None;
            }
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
            Some((stream, peer.ip()))
        }
        Err(e) => {
            tracing::warn!(error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(50)).await;
            None
        }
    }
}
