//! One accepted connection: it holds a slot under `server.http2.max_connections` for as long as it lives,
//! is closed if its client says nothing at all for `server.http2.preface_timeout` after connecting (once
//! it has spoken, the server's keepalive pings find a peer that goes silent), and its frames are watched
//! for a PING or SETTINGS flood (see `frames`), which is a strike against the client's address (see
//! `penalty`). After the first bytes, a read costs the frame watch and nothing else: no timer is touched
//! per read.

use std::{
    io,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use super::{
    Limits,
    frames::FrameWatch,
    penalty::{CloseReason, Penalties},
};

/// An accepted connection (plaintext or TLS) with its slot, preface timer and frame watch.
#[derive(Debug)]
pub struct Conn<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    /// Until the client's first bytes arrive.
    preface: Option<Pin<Box<Sleep>>>,
    frames: FrameWatch,
    peer: IpAddr,
    penalties: Arc<Penalties>,
}

impl<S> Conn<S> {
    /// Wraps `inner`, holding `slot` until the connection is dropped.
    pub fn new(inner: S, peer: IpAddr, slot: OwnedSemaphorePermit, limits: &Limits) -> Self {
        let now = Instant::now();
        Self {
            inner,
            _slot: slot,
            peer,
            penalties: limits.penalties.clone(),
            preface: Some(Box::pin(tokio::time::sleep_until(
                now + limits.preface_timeout,
            ))),
            frames: FrameWatch::new(limits.max_control_frames_per_second, now),
        }
    }
}

impl<S> Conn<S> {
    /// What to call if hyper closes this connection for abuse (see `serve`).
    pub fn closer(&self) -> Closer {
        Closer {
            peer: self.peer,
            penalties: self.penalties.clone(),
        }
    }

    fn close_for(&self, reason: CloseReason) {
        self.penalties.closed(self.peer, reason, Instant::now());
    }
}

/// Counts a connection's close for abuse that only hyper sees (a reset flood), against its address.
#[derive(Debug, Clone)]
pub struct Closer {
    peer: IpAddr,
    penalties: Arc<Penalties>,
}

impl Closer {
    /// The connection was closed for `reason`.
    pub fn closed(&self, reason: CloseReason) {
        self.penalties.closed(self.peer, reason, Instant::now());
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Conn<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let read = buf.filled().get(before..).unwrap_or_default();
                if !read.is_empty() {
                    let this = &mut *self;
                    this.preface = None;
                    if this.frames.observe(read).is_err() {
                        this.close_for(CloseReason::ControlFlood);
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "control frame flood",
                        )));
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.preface.as_mut().map(|t| t.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    self.preface = None;
                    self.close_for(CloseReason::Silent);
                    Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "client silent since connecting",
                    )))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Conn<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The wrapped stream's own connection info (remote address, and peer certificates over TLS), so tonic's
/// `Request::remote_addr` and `peer_certs` work unchanged.
impl<S: Connected> Connected for Conn<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> S::ConnectInfo {
        self.inner.connect_info()
    }
}
