//! One accepted connection: it holds a slot under `server.http2.max_connections` for as long as it lives,
//! and is closed when its client sends nothing for `server.http2.idle_timeout`. A healthy client is never
//! idle that long: it answers the server's keepalive pings. A peer that connects and then says nothing
//! (not even the HTTP/2 preface) is. Its frames are watched for a PING or SETTINGS flood (see `frames`).

use std::{
    io,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    sync::OwnedSemaphorePermit,
    time::{Instant, Sleep},
};
use tonic::transport::server::Connected;

use super::{Limits, frames::FrameWatch};

/// An accepted connection (plaintext or TLS) with its slot and idle timer.
#[derive(Debug)]
pub struct Conn<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    idle: Duration,
    last_read: Instant,
    timer: Pin<Box<Sleep>>,
    frames: FrameWatch,
}

impl<S> Conn<S> {
    /// Wraps `inner`, holding `slot` until the connection is dropped.
    pub fn new(inner: S, slot: OwnedSemaphorePermit, limits: &Limits) -> Self {
        let now = Instant::now();
        Self {
            inner,
            _slot: slot,
            idle: limits.idle_timeout,
            last_read: now,
            timer: Box::pin(tokio::time::sleep_until(now + limits.idle_timeout)),
            frames: FrameWatch::new(limits.max_pings_per_second, now),
        }
    }

    /// True when the client has been silent for the idle timeout; re-arms the timer otherwise. The timer is
    /// moved only when it fires, so reads cost a clock read, not a timer update.
    fn timed_out(&mut self, cx: &mut Context<'_>) -> bool {
        while self.timer.as_mut().poll(cx).is_ready() {
            let due = self.last_read + self.idle;
            if due <= Instant::now() {
                return true;
            }
            self.timer.as_mut().reset(due);
        }
        false
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
                    let now = Instant::now();
                    self.last_read = now;
                    if self.frames.observe(read, now).is_err() {
                        tracing::info!("closing a connection that floods PING or SETTINGS frames");
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "PING or SETTINGS flood",
                        )));
                    }
                }
                Poll::Ready(r)
            }
            Poll::Pending if self.timed_out(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "client silent for the idle timeout",
            ))),
            Poll::Pending => Poll::Pending,
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
