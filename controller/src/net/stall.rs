//! `StallGuard`: a request body that fails when no byte arrives for a while. A slow-loris
//! upload (a PUT that sends a few bytes and then nothing) ends with an error instead of
//! holding its connection and its upload session forever, while a large upload that keeps
//! moving, however slowly, is never cut: the clock restarts with every chunk.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::Sleep;

/// The body error when the client stopped sending.
#[derive(Debug, thiserror::Error)]
#[error("the client sent no part of the request body for {}s", .after.as_secs())]
pub struct BodyStalled {
    pub after: Duration,
}

/// Wraps a body so that a wait of `after` for its next chunk fails it.
#[derive(Debug)]
pub struct StallGuard {
    inner: Body,
    after: Duration,
    /// Started at the first poll (not when the request arrived: a handler may read the
    /// body late, and `Expect: 100-continue` clients only send once it is read).
    deadline: Option<Pin<Box<Sleep>>>,
}

impl StallGuard {
    pub fn new(inner: Body, after: Duration) -> Self {
        Self {
            inner,
            after,
            deadline: None,
        }
    }
}

impl HttpBody for StallGuard {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.deadline = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let after = this.after;
                let deadline = this
                    .deadline
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(after)));
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled { after })))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Middleware body: every request body of a router gets the guard.
pub fn guard_request(request: Request, after: Duration) -> Request {
    request.map(|body| Body::new(StallGuard::new(body, after)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body fed by a channel, so the test decides when chunks arrive.
    fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv()
                .await
                .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
        });
        (tx, Body::from_stream(stream))
    }

    // Real time, short spans: pausing the clock would need tokio's test-util feature, which
    // rebuilds tokio and everything above it for the workspace's tests.
    const STALL: Duration = Duration::from_secs(1);

    #[tokio::test]
    async fn a_body_that_stops_sending_fails_after_the_stall_time() {
        let (tx, body) = channel_body();
        let mut guarded = StallGuard::new(body, STALL);
        tx.send(Bytes::from_static(b"part")).await.unwrap();
        assert!(guarded.frame().await.unwrap().is_ok());
        let started = tokio::time::Instant::now();
        let err = guarded.frame().await.unwrap().unwrap_err();
        assert!(err.is::<BodyStalled>(), "{err}");
        assert!(started.elapsed() >= STALL);
        drop(tx);
    }

    #[tokio::test]
    async fn a_slow_body_that_keeps_moving_is_not_cut() {
        let (tx, body) = channel_body();
        let guarded = StallGuard::new(body, STALL);
        let sender = tokio::spawn(async move {
            // 8 chunks 250 ms apart: 2 s in all, twice the stall time.
            for _ in 0..8 {
                tokio::time::sleep(STALL / 4).await;
                tx.send(Bytes::from_static(b"chunk")).await.unwrap();
            }
        });
        let collected = guarded.collect().await.unwrap().to_bytes();
        assert_eq!(collected.len(), 8 * 5);
        sender.await.unwrap();
    }
}
