//! The ingest writer: one thread takes verified reports from every request, and operators' key
//! changes, records a whole queue of them in one atomic store batch (in the order they arrived),
//! makes it durable with one flush, and only then answers each request. Under load, N concurrent
//! reports cost one batch and one fsync instead of N; a key change never races a report. After
//! answering, it hands the target commits of the batch's accepted reports from devices that
//! tried them (any status but `pending` and `halted`) to a hook (the automatic halt), off the
//! answer's path.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{
    Accepted, IngestError, KeyChangeError, KeyChanged, Outcome, Store, StoreError, Write,
};
use shoal_fleet::ingest::{Enrollment, Verified};
use shoal_fleet::keys::KeyChange;

/// Most writes recorded in one batch (bounds the latency one batch adds to the next).
pub const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer beyond this wait in their handler (backpressure).
const QUEUE: usize = 8192;

struct Job {
    write: Write,
    reply: oneshot::Sender<Outcome>,
}

/// Handle to the writer thread; the thread ends when the last handle drops.
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

fn stopped() -> StoreError {
    StoreError::Write {
        path: "(writer)".into(),
        reason: "the ingest writer has stopped".into(),
    }
}

impl Writer {
    /// Starts the writer thread for `store`.
    pub fn spawn(store: Arc<dyn Store>) -> std::io::Result<Writer> {
        Writer::spawn_with(store, |_| {})
    }

    /// Starts the writer thread for `store`; after each batch is answered, `tried` gets the
    /// target commits of its accepted reports from devices that tried them (when there are any).
    pub fn spawn_with(
        store: Arc<dyn Store>,
        tried: impl Fn(&[String]) + Send + 'static,
    ) -> std::io::Result<Writer> {
        let tx = crate::batch::spawn("shoal-ingest-writer", QUEUE, MAX_BATCH, move |jobs| {
            let commits = write(store.as_ref(), jobs);
            if !commits.is_empty() {
                tried(&commits);
            }
        })?;
        Ok(Writer { tx })
    }

    /// Queues one write; returns its outcome once it is durable (or refused, or the store failed).
    async fn send(&self, write: Write) -> Option<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { write, reply }).await.ok()?;
        answer.await.ok()
    }

    /// Records a verified report; returns once it is durable (or refused, or the store failed).
    pub async fn submit(
        &self,
        verified: Verified,
        enrollment: Enrollment,
        now: u64,
    ) -> Result<Accepted, IngestError> {
        let write = Write::Report {
            verified,
            enrollment,
            now,
        };
        match self.send(write).await {
            Some(Outcome::Report(r)) => r,
            _ => Err(IngestError::Store(stopped())),
        }
    }

    /// Applies an operator's key change to `device_id`, in order with the reports queued before
    /// it; returns once it is durable (or refused, or the store failed).
    pub async fn change_key(
        &self,
        device_id: String,
        change: KeyChange,
    ) -> Result<KeyChanged, KeyChangeError> {
        match self.send(Write::Key { device_id, change }).await {
            Some(Outcome::Key(r)) => r,
            _ => Err(KeyChangeError::Store(stopped())),
        }
    }
}

/// Records and answers one batch; returns the target commits its accepted reports tried.
fn write(store: &dyn Store, jobs: Vec<Job>) -> Vec<String> {
    let (writes, replies): (Vec<_>, Vec<_>) = jobs.into_iter().map(|j| (j.write, j.reply)).unzip();
    let tried_targets: Vec<Option<String>> = writes
        .iter()
        .map(|w| match w {
            Write::Report { verified, .. }
                if !matches!(
                    verified.report.status,
                    shoal_proto::Status::Pending | shoal_proto::Status::Halted
                ) =>
            {
                verified.report.target.as_ref().map(|t| t.commit.clone())
            }
            _ => None,
        })
        .collect();
    let mut results = store.write_batch(writes);
    // Durable before any 200: the agent forgets a report once it is acknowledged, and an
    // operator takes a 200 to mean the key change is in force.
    if results.iter().any(Outcome::is_ok) {
        if let Err(e) = store.flush() {
            let reason = e.to_string();
            tracing::error!(error = %reason, "flushing the store failed; answering 503");
            for r in &mut results {
                r.fail_if_ok(|| StoreError::Write {
                    path: "(flush)".into(),
                    reason: reason.clone(),
                });
            }
        }
    }
    let mut commits: Vec<String> = tried_targets
        .into_iter()
        .zip(&results)
        .filter(|(_, r)| r.is_ok())
        .filter_map(|(c, _)| c)
        .collect();
    commits.sort();
    commits.dedup();
    for (reply, result) in replies.into_iter().zip(results) {
        let _ = reply.send(result);
    }
    commits
}
