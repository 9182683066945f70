//! HTTP/2 streams run inside their connection's task instead of one task each.
//!
//! hyper hands every HTTP/2 stream to an executor. With tokio's, each stream is a task, and a
//! stream that finishes wakes the connection task, which tokio then runs next: every response is
//! written and flushed on its own, and the connection's code runs between every two reviews.
//! Polling the streams from the connection's own task instead lets one wake-up decide all the
//! reviews that arrived together and write their answers in one flush (with [`super::unvectored`]).
//!
//! Measured with `hack/bench.sh`: see the Performance section of README.md.
//!
//! The price: the streams of one connection share one core. kube-apiserver opens one HTTP/2
//! connection per webhook endpoint and apiserver replica, so one core per apiserver answers
//! reviews, tens of thousands a second, far above what any cluster asks. And a slow review (a body
//! of megabytes) delays the reviews behind it on the same connection by its decoding time, where a
//! task per stream would let another core take them.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use futures_util::FutureExt;
use futures_util::stream::{FuturesUnordered, StreamExt};

type StreamFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to hyper for one HTTP/2 connection: it only queues what hyper starts.
#[derive(Clone, Default)]
pub struct StreamQueue {
    started: Arc<Mutex<Vec<StreamFuture>>>,
}

impl<F> hyper::rt::Executor<F> for StreamQueue
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        // A panic in one stream must not take the connection's other streams with it, as it
        // would not with a task per stream: the stream is dropped, so h2 resets it.
        let stream = async move {
            if AssertUnwindSafe(stream).catch_unwind().await.is_err() {
                tracing::error!("an HTTP/2 stream panicked; its stream was reset");
            }
        };
        // Only this connection's task touches the queue, so the lock is never contended; a
        // poisoned lock still holds a valid Vec.
        self.started
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(stream));
    }
}

impl StreamQueue {
    fn take(&self) -> Vec<StreamFuture> {
        std::mem::take(&mut *self.started.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Rounds of "connection, then streams" in one poll before yielding to other tasks, so one busy
/// connection cannot hold a worker thread.
const ROUNDS_PER_POLL: usize = 16;

/// Drives `connection` and the streams it starts through `queue`, in one task. Resolves with the
/// connection; streams still running then are dropped, as their connection is gone.
pub struct WithStreams<C> {
    connection: Pin<Box<C>>,
    queue: StreamQueue,
    streams: FuturesUnordered<StreamFuture>,
}

impl<C: Future> WithStreams<C> {
    pub fn new(connection: C, queue: StreamQueue) -> Self {
        Self {
            connection: Box::pin(connection),
            queue,
            streams: FuturesUnordered::new(),
        }
    }
}

impl<C: Future> Future for WithStreams<C> {
    type Output = C::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let this = &mut *self;
        for _ in 0..ROUNDS_PER_POLL {
            // Reads frames and starts streams; in later rounds, writes what the streams answered.
            if let Poll::Ready(output) = this.connection.as_mut().poll(cx) {
                return Poll::Ready(output);
            }
            let started = this.queue.take();
            let mut progressed = !started.is_empty();
            this.streams.extend(started);
            while let Poll::Ready(Some(())) = this.streams.poll_next_unpin(cx) {
                progressed = true;
            }
            if !progressed {
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    use hyper::rt::Executor;

    use super::*;

    /// A connection that starts `streams` streams on its first poll, then waits for all of them.
    struct Starter {
        queue: StreamQueue,
        streams: usize,
        finished: Arc<AtomicUsize>,
        task_ids: Arc<Mutex<Vec<tokio::task::Id>>>,
        started: bool,
    }

    impl Future for Starter {
        type Output = usize;

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<usize> {
            if !self.started {
                self.started = true;
                for _ in 0..self.streams {
                    let (finished, ids) = (self.finished.clone(), self.task_ids.clone());
                    self.queue.execute(async move {
                        ids.lock().unwrap().push(tokio::task::id());
                        tokio::task::yield_now().await;
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
            }
            let finished = self.finished.load(Ordering::SeqCst);
            if finished == self.streams {
                Poll::Ready(finished)
            } else {
                Poll::Pending
            }
        }
    }

    #[tokio::test]
    async fn streams_run_in_the_connection_task_and_the_connection_waits_for_them() {
        let queue = StreamQueue::default();
        let task_ids = Arc::new(Mutex::new(Vec::new()));
        let connection = Starter {
            queue: queue.clone(),
            streams: 5,
            finished: Arc::new(AtomicUsize::new(0)),
            task_ids: task_ids.clone(),
            started: false,
        };
        let handle = tokio::spawn(WithStreams::new(connection, queue));
        let connection_task = handle.id();
        assert_eq!(handle.await.unwrap(), 5);
        let ids = task_ids.lock().unwrap();
        assert_eq!(ids.len(), 5);
        assert!(ids.iter().all(|id| *id == connection_task), "{ids:?}");
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A connection that never ends and starts a finished stream every time it is polled.
    struct Busy {
        queue: StreamQueue,
        polls: usize,
    }

    impl Future for Busy {
        type Output = ();

        fn poll(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.queue.execute(async {});
            Poll::Pending
        }
    }

    #[test]
    fn a_busy_connection_yields_after_a_bounded_number_of_rounds() {
        let queue = StreamQueue::default();
        let mut driver = Box::pin(WithStreams::new(
            Busy {
                queue: queue.clone(),
                polls: 0,
            },
            queue,
        ));
        let waker = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let std_waker = std::task::Waker::from(waker.clone());
        let mut cx = Context::from_waker(&std_waker);
        assert!(driver.as_mut().poll(&mut cx).is_pending());
        assert_eq!(driver.connection.polls, ROUNDS_PER_POLL);
        // It asks to be polled again rather than waiting for an event that may never come.
        assert_eq!(waker.0.load(Ordering::SeqCst), 1);
    }
}
