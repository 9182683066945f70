//! Request bodies on their way through the router: a deadline counted from the request's first
//! byte, and, over HTTP/2, an early answer that still ends its stream cleanly.
//!
//! An HTTP/2 client may still be sending its body when the answer is complete (a 405, a 404, a
//! 413). If the server drops the rest, h2 resets the stream, and clients that are still writing take
//! the reset for a failure even with `NO_ERROR`: curl reports "Stream error in the HTTP/2 framing
//! layer", and httpx, which sends the whole body before it reads the answer, waits forever for flow
//! control. So the answer's end of stream is held back until the rest of the body has been read and
//! thrown away, within the request's deadline and up to [`UNREAD_BODY_DRAIN_LIMIT`] bytes.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use axum::body::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// How much of an unread request body is read and discarded before an early answer ends its
/// stream; past it the stream is reset. Above the default body limit, so an oversized review still
/// sees its 413 end cleanly.
pub const UNREAD_BODY_DRAIN_LIMIT: u64 = 16 * 1024 * 1024;

/// The request body did not arrive completely before the request's deadline.
#[derive(Debug, thiserror::Error)]
#[error("request body not complete within the deadline")]
pub struct RequestDeadlineExceeded;

/// A request body that fails with [`RequestDeadlineExceeded`] once its deadline passes, so a handler
/// collecting it gets an error instead of waiting on a client that trickles bytes.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl<B> DeadlineBody<B> {
    /// `expired` is set when the deadline fires, so the caller can tell this apart from other errors.
    pub fn new(inner: B, deadline: Instant, expired: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            expired,
        }
    }
}

impl<B> HttpBody for DeadlineBody<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.expired.load(Ordering::Acquire) {
            return Poll::Ready(None);
        }
        // Bytes that already arrived are handed out even past the deadline: only waiting is cut off.
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => Poll::Ready(frame.map(|f| f.map_err(Into::into))),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.expired.store(true, Ordering::Release);
                    Poll::Ready(Some(Err(Box::new(RequestDeadlineExceeded))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body shared between the router, which may drop its half at any time, and the answer,
/// which finishes reading it (see the module documentation).
pub struct SharedBody<B>(Arc<Mutex<B>>);

impl<B> Clone for SharedBody<B> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B> SharedBody<B> {
    pub fn new(body: B) -> Self {
        Self(Arc::new(Mutex::new(body)))
    }

    fn with<T>(&self, f: impl FnOnce(&mut B) -> T) -> T {
        // A body is only ever polled from its own request's task; a poisoned lock still holds one.
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<B: HttpBody + Unpin> HttpBody for SharedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.with(|body| Pin::new(body).poll_frame(cx))
    }

    fn is_end_stream(&self) -> bool {
        self.with(|body| body.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.with(|body| body.size_hint())
    }
}

/// An answer whose end of stream waits until the request it answers has been read to its end (or
/// its deadline, an error, or [`UNREAD_BODY_DRAIN_LIMIT`]).
pub struct AfterRequest<R, B> {
    answer: R,
    request: SharedBody<B>,
    discarded: u64,
    answer_done: bool,
}

impl<R, B> AfterRequest<R, B> {
    pub fn new(answer: R, request: SharedBody<B>) -> Self {
        Self {
            answer,
            request,
            discarded: 0,
            answer_done: false,
        }
    }
}

impl<R, B> HttpBody for AfterRequest<R, B>
where
    R: HttpBody<Data = Bytes> + Unpin,
    B: HttpBody<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = R::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, R::Error>>> {
        let this = self.get_mut();
        if !this.answer_done {
            match Pin::new(&mut this.answer).poll_frame(cx) {
                Poll::Ready(None) => this.answer_done = true,
                other => return other,
            }
        }
        loop {
            if this.discarded > UNREAD_BODY_DRAIN_LIMIT {
                return Poll::Ready(None);
            }
            let frame = this
                .request
                .with(|body| Pin::new(body).poll_frame(cx).map(|f| f.map(|r| r.ok())));
            match frame {
                Poll::Pending => return Poll::Pending,
                // The end, a deadline or a broken stream: nothing more will be read.
                Poll::Ready(None | Some(None)) => return Poll::Ready(None),
                Poll::Ready(Some(Some(frame))) => {
                    let len = frame.data_ref().map_or(0, Bytes::len);
                    this.discarded = this.discarded.saturating_add(len as u64);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.answer.is_end_stream() && self.request.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.answer.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, Full, StreamBody};

    use super::*;

    fn frames(chunks: usize, size: usize) -> impl HttpBody<Data = Bytes, Error = BoxError> + Unpin {
        let frames =
            (0..chunks).map(move |_| Ok::<_, BoxError>(Frame::data(Bytes::from(vec![0u8; size]))));
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn an_answer_ends_only_after_the_unread_request_was_read() {
        let request = SharedBody::new(frames(3, 10));
        let mut answer = AfterRequest::new(Full::new(Bytes::from_static(b"done")), request.clone());
        assert!(!answer.is_end_stream());
        let collected = (&mut answer).collect().await.unwrap().to_bytes();
        assert_eq!(collected, "done");
        assert_eq!(answer.discarded, 30);
        assert!(request.clone().frame().await.is_none());
    }

    #[tokio::test]
    async fn draining_stops_at_the_limit() {
        let chunk = 1024 * 1024;
        let request = SharedBody::new(frames(64, chunk));
        let mut answer = AfterRequest::new(Full::new(Bytes::new()), request.clone());
        (&mut answer).collect().await.unwrap();
        assert_eq!(answer.discarded, UNREAD_BODY_DRAIN_LIMIT + chunk as u64);
        assert!(request.clone().frame().await.is_some());
    }

    #[tokio::test]
    async fn a_request_read_to_its_end_adds_nothing() {
        let request = SharedBody::new(Full::new(Bytes::from_static(b"{}")));
        request.clone().collect().await.unwrap();
        let answer = AfterRequest::new(Full::new(Bytes::from_static(b"ok")), request);
        assert_eq!(answer.collect().await.unwrap().to_bytes(), "ok");
    }
}
