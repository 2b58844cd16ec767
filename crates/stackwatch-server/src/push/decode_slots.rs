//! How many push requests inflate and decode at once.
//!
//! Each decode may hold its body inflated (`push.max_decompressed_bytes`, 64 MiB) and
//! what decoding builds (twice as much, counted before it is built:
//! [`max_message_bytes`](stackwatch_profile::pprof::max_message_bytes)) at the same
//! time: twenty at once would be gigabytes. `push.max_concurrent_decodes`
//! requests decode at once, `push.max_queued_decodes` more wait up to
//! [`QUEUE_TIMEOUT`] for a slot, and the rest are answered `503` with `Retry-After`
//! at once, holding nothing but their body as sent. A slot is held from inflating the
//! body to the decoded series (bounded by the stack budget), and released before the
//! series wait for the writer.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::PushError;

/// How long a request waits for a decode slot before it is answered `503`.
pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client is told to wait before retrying a request shed for want of a slot.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The decode slots of the push endpoints.
#[derive(Debug)]
pub struct DecodeSlots {
    running: Arc<Semaphore>,
    max_running: usize,
    waiting: AtomicUsize,
    max_waiting: usize,
}

/// A held decode slot; dropping it frees the slot.
#[derive(Debug)]
pub struct DecodeSlot {
    _permit: OwnedSemaphorePermit,
}

impl DecodeSlots {
    /// `running` decodes at once (at least one), `waiting` more queued.
    pub fn new(running: usize, waiting: usize) -> Self {
        let running = running.max(1);
        DecodeSlots {
            running: Arc::new(Semaphore::new(running)),
            max_running: running,
            waiting: AtomicUsize::new(0),
            max_waiting: waiting,
        }
    }

    /// A slot, waiting for one if `max_queued_decodes` others are not already waiting;
    /// `503` with `Retry-After` when the queue is full or no slot frees up within
    /// [`QUEUE_TIMEOUT`].
    pub async fn acquire(&self) -> Result<DecodeSlot, PushError> {
        if let Ok(p) = self.running.clone().try_acquire_owned() {
            return Ok(DecodeSlot { _permit: p });
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.busy(format!(
                "{} push requests decoding and {} waiting (push.max_concurrent_decodes, push.max_queued_decodes); retry later",
                self.max_running, self.max_waiting
            )));
        }
        let waited =
            tokio::time::timeout(QUEUE_TIMEOUT, self.running.clone().acquire_owned()).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(p)) => Ok(DecodeSlot { _permit: p }),
            _ => Err(self.busy(format!(
                "no decode slot within {} s ({} push requests decoding, push.max_concurrent_decodes); retry later",
                QUEUE_TIMEOUT.as_secs(),
                self.max_running
            ))),
        }
    }

    fn busy(&self, why: String) -> PushError {
        tracing::debug!(reason = %why, "push request shed");
        PushError::Busy {
            why,
            retry_after: RETRY_AFTER,
        }
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn past_the_slots_and_the_queue_requests_are_shed() {
        let slots = Arc::new(DecodeSlots::new(2, 1));
        let a = slots.acquire().await.unwrap();
        let _b = slots.acquire().await.unwrap();
        // The third waits; the fourth finds the queue full.
        let waiter = {
            let slots = slots.clone();
            tokio::spawn(async move { slots.acquire().await.map(|_| ()) })
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while slots.waiting() == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the third never waited"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = slots.acquire().await.unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::SERVICE_UNAVAILABLE);
        assert!(err.to_string().contains("push.max_queued_decodes"), "{err}");
        // A slot freed goes to the waiter.
        drop(a);
        waiter.await.unwrap().unwrap();
        assert_eq!(slots.waiting(), 0);
    }
}
