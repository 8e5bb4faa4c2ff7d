//! The ingest writer: one thread takes verified reports from every request, records a whole queue
//! of them in one atomic store batch, makes it durable with one flush, and only then answers each
//! request. Under load, N concurrent reports cost one batch and one fsync instead of N.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::ingest::{Enrollment, Verified};
use crate::store::{Accepted, IngestError, Store, StoreError};

/// Most reports recorded in one batch (bounds the latency one batch adds to the next).
pub const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer beyond this wait in their handler (backpressure).
const QUEUE: usize = 8192;

struct Job {
    verified: Verified,
    enrollment: Enrollment,
    now: u64,
    reply: oneshot::Sender<Result<Accepted, IngestError>>,
}

/// Handle to the writer thread; the thread ends when the last handle drops.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Arc<Store>) -> std::io::Result<Writer> {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE);
        std::thread::Builder::new()
            .name("shoal-ingest-writer".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut jobs = vec![first];
                    while jobs.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok(job) => jobs.push(job),
                            Err(_) => break,
                        }
                    }
                    write(&store, jobs);
                }
            })?;
        Ok(Writer { tx })
    }

    /// Records a verified report; returns once it is durable (or refused, or the store failed).
    pub async fn submit(
        &self,
        verified: Verified,
        enrollment: Enrollment,
        now: u64,
    ) -> Result<Accepted, IngestError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            IngestError::Store(StoreError::Write {
                path: "(writer)".into(),
                reason: "the ingest writer has stopped".into(),
            })
        };
        self.tx
            .send(Job {
                verified,
                enrollment,
                now,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn write(store: &Store, jobs: Vec<Job>) {
    let (reports, replies): (Vec<_>, Vec<_>) = jobs
        .into_iter()
        .map(|j| ((j.verified, j.enrollment, j.now), j.reply))
        .unzip();
    let mut results = store.ingest_batch(reports);
    // Durable before any 200: the agent forgets a report once it is acknowledged.
    if results.iter().any(Result::is_ok) {
        if let Err(e) = store.flush() {
            let reason = e.to_string();
            tracing::error!(error = %reason, "flushing the store failed; answering 503");
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(IngestError::Store(StoreError::Write {
                    path: "(flush)".into(),
                    reason: reason.clone(),
                }));
            }
        }
    }
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
}
