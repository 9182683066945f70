//! When each request is due.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use super::{LATE_CUTOFF, Plan};

/// Hands out requests. Open-loop: a thread sleeps until each due time (`start + i / rate`, with
/// the kernel's timer precision rather than tokio's 1 ms wheel) and queues it; a free lane takes
/// the oldest, so due times queue up while every connection is busy. Saturating: a request is due
/// whenever a lane is free.
pub(super) enum Pacer {
    Saturate {
        end: Instant,
        max_requests: u64,
        next: AtomicU64,
    },
    Paced {
        end: Instant,
        due: Mutex<tokio::sync::mpsc::UnboundedReceiver<Instant>>,
        /// How many requests came due, sent or not.
        scheduled: Arc<AtomicU64>,
    },
}

impl Pacer {
    pub(super) fn new(start: Instant, plan: Plan) -> Self {
        let Plan {
            rate,
            max_requests,
            duration,
            ..
        } = plan;
        let end = start + duration;
        if rate <= 0.0 {
            return Pacer::Saturate {
                end,
                max_requests,
                next: AtomicU64::new(0),
            };
        }
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let scheduled = Arc::new(AtomicU64::new(0));
        let counter = scheduled.clone();
        let (start, end_std) = (start.into_std(), end.into_std());
        std::thread::spawn(move || {
            for i in 0u64.. {
                if max_requests > 0 && i >= max_requests {
                    break;
                }
                let due = start + Duration::from_secs_f64(i as f64 / rate);
                if due >= end_std {
                    break;
                }
                let now = std::time::Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                counter.fetch_add(1, Ordering::Relaxed);
                if tx.send(Instant::from_std(due)).is_err() {
                    break;
                }
            }
        });
        Pacer::Paced {
            end,
            due: Mutex::new(rx),
            scheduled,
        }
    }

    pub(super) async fn take(&self) -> Option<Instant> {
        match self {
            Pacer::Saturate {
                end,
                max_requests,
                next,
            } => {
                let now = Instant::now();
                if now >= *end {
                    return None;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                (*max_requests == 0 || i < *max_requests).then_some(now)
            }
            Pacer::Paced { end, due, .. } => {
                let due = due.lock().await.recv().await?;
                (Instant::now() < *end + LATE_CUTOFF).then_some(due)
            }
        }
    }

    /// Requests that came due (open-loop only).
    pub(super) fn scheduled(&self) -> u64 {
        match self {
            Pacer::Saturate { .. } => 0,
            Pacer::Paced { scheduled, .. } => scheduled.load(Ordering::Relaxed),
        }
    }

    pub(super) fn end(&self) -> Instant {
        match self {
            Pacer::Saturate { end, .. } | Pacer::Paced { end, .. } => *end,
        }
    }
}
