//! Counting the calls in flight, so a shutdown knows when nothing is left to wait for: an idle connection
//! whose client ignores GOAWAY must not hold the server for the whole grace period.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

/// Calls being served right now.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Calls whose handler has not answered yet.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// `call`, counted until it completes or is dropped.
    pub fn count<F>(&self, call: F) -> CountedFuture<F> {
        self.0.fetch_add(1, Ordering::AcqRel);
        CountedFuture {
            inner: call,
            guard: Some(Guard(self.0.clone())),
        }
    }
}

/// Decrements the count when the call's future completes or is dropped.
#[derive(Debug)]
struct Guard(Arc<AtomicUsize>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A call's future, counted until it completes (no allocation per call).
    #[derive(Debug)]
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<Guard>,
    }
}

impl<F: Future> Future for CountedFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.take();
        Poll::Ready(out)
    }
}
