//! The ingest writer: one thread takes decoded reports from every request, and operators' key
//! changes, checks the reports' signatures together (`ingest::verify_all`: one batch check, a
//! third of the CPU per signature of one-by-one checks, the verdicts of a strict check), records
//! the verified ones and the key changes in one atomic store batch (in the order they arrived),
//! makes it durable with one flush, and only then answers each request. Under load, N concurrent
//! reports cost one batch check, one store batch and one fsync instead of N, and one hand-over
//! between threads each way; a key change never races a report. After answering, it hands the
//! target commits of the batch's accepted reports from devices that tried them (any status but
//! `pending` and `halted`) to a hook (the automatic halt), off the answer's path.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::store::{
    Accepted, IngestError, KeyChangeError, KeyChanged, Outcome, Store, StoreError, Write,
};
use shoal_fleet::ingest::{self, Enrollment};
use shoal_fleet::keys::KeyChange;
use shoal_proto::Unverified;

/// Most writes recorded in one batch (bounds the latency one batch adds to the next).
pub const MAX_BATCH: usize = 1024;
/// Requests waiting for the writer beyond this wait in their handler (backpressure).
const QUEUE: usize = 8192;

/// A write as queued: a report's signature is not checked yet.
// Reports are nearly every write: boxing them to shrink the rare key change would cost an
// allocation per report on the ingest path.
#[allow(clippy::large_enum_variant)]
enum Queued {
    Report {
        envelope: Unverified,
        enrollment: Enrollment,
        now: u64,
    },
    Key {
        device_id: String,
        change: KeyChange,
    },
}

/// A queued write's place in the batch while the signatures are checked.
enum Slot {
    Report {
        enrollment: Enrollment,
        now: u64,
    },
    Key {
        device_id: String,
        change: KeyChange,
    },
}

struct Job {
    write: Queued,
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
    async fn send(&self, write: Queued) -> Option<Outcome> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { write, reply }).await.ok()?;
        answer.await.ok()
    }

    /// Checks a decoded report's signature and records the report; returns once it is durable
    /// (or refused, or the store failed).
    pub async fn submit(
        &self,
        envelope: Unverified,
        enrollment: Enrollment,
        now: u64,
    ) -> Result<Accepted, IngestError> {
        let write = Queued::Report {
            envelope,
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
        match self.send(Queued::Key { device_id, change }).await {
            Some(Outcome::Key(r)) => r,
            _ => Err(KeyChangeError::Store(stopped())),
        }
    }
}

/// Checks, records and answers one batch; returns the target commits its accepted reports tried.
fn write(store: &dyn Store, jobs: Vec<Job>) -> Vec<String> {
    // The batch's signatures first, together (in this thread: a second thread for them would
    // cost a hand-over each way per report); a refused report is answered at once and never
    // reaches the store.
    let mut envelopes = Vec::with_capacity(jobs.len());
    let mut queued = Vec::with_capacity(jobs.len());
    for Job { write, reply } in jobs {
        let slot = match write {
            Queued::Report {
                envelope,
                enrollment,
                now,
            } => {
                envelopes.push(envelope);
                Slot::Report { enrollment, now }
            }
            Queued::Key { device_id, change } => Slot::Key { device_id, change },
        };
        queued.push((slot, reply));
    }
    // One verdict per envelope, in order: the n-th report slot takes the n-th verdict.
    let mut verdicts = ingest::verify_all(envelopes).into_iter();
    let mut writes = Vec::with_capacity(queued.len());
    let mut replies = Vec::with_capacity(queued.len());
    for (slot, reply) in queued {
        let write = match slot {
            Slot::Key { device_id, change } => Write::Key { device_id, change },
            Slot::Report { enrollment, now } => match verdicts.next() {
                Some(Ok(verified)) => Write::Report {
                    verified,
                    enrollment,
                    now,
                },
                Some(Err(refused)) => {
                    let _ = reply.send(Outcome::Report(Err(IngestError::Rejected(refused))));
                    continue;
                }
                None => unreachable!("verify_all gives one verdict per envelope"),
            },
        };
        writes.push(write);
        replies.push(reply);
    }
    if writes.is_empty() {
        return Vec::new();
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use ed25519_dalek::SigningKey;
    use shoal_proto::{Report, SignedEnvelope, Status};

    use crate::store::SledStore;

    fn envelope(seed: u8, device: &str, sequence: u64) -> SignedEnvelope {
        let key = SigningKey::from_bytes(&[seed; 32]);
        SignedEnvelope::seal(&key, &Report::new(device, Status::Converged, sequence)).unwrap()
    }

    fn job(write: Queued) -> (Job, oneshot::Receiver<Outcome>) {
        let (reply, answer) = oneshot::channel();
        (Job { write, reply }, answer)
    }

    fn report(envelope: &SignedEnvelope) -> Queued {
        Queued::Report {
            envelope: ingest::decode(&envelope.to_json()).unwrap(),
            enrollment: Enrollment::Valid,
            now: 100,
        }
    }

    /// One batch of the writer: the signatures are checked together, a forged report is refused
    /// with the strict check's reason and never reaches the store, and the verified reports and
    /// the key change between them are recorded in arrival order.
    #[test]
    fn a_batch_checks_its_signatures_together_and_records_only_the_verified_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = SledStore::open(dir.path()).unwrap();
        let mut forged = envelope(2, "gw-2", 1);
        let mut signature = STANDARD.decode(&forged.signature).unwrap();
        signature[10] ^= 1;
        forged.signature = STANDARD.encode(signature);
        // More reports than verify_all checks one by one, so the batch check and its split run.
        let mut jobs = Vec::new();
        let mut answers = Vec::new();
        let mut push = |write| {
            let (j, a) = job(write);
            jobs.push(j);
            answers.push(a);
        };
        push(report(&envelope(1, "gw-1", 1)));
        push(report(&forged));
        for seed in 3..9 {
            push(report(&envelope(seed, &format!("gw-{seed}"), 1)));
        }
        push(Queued::Key {
            device_id: "gw-1".into(),
            change: KeyChange::Unpin,
        });
        push(report(&envelope(1, "gw-1", 2)));
        write(&store, jobs);

        let mut outcomes = answers.into_iter().map(|mut a| a.try_recv().unwrap());
        let Some(Outcome::Report(Ok(first))) = outcomes.next() else {
            panic!("gw-1's first report is accepted");
        };
        assert!(first.enrolled);
        match outcomes.next() {
            Some(Outcome::Report(Err(IngestError::Rejected(r)))) => assert_eq!(
                r.to_string(),
                format!("signature does not verify with key {}", forged.key_id)
            ),
            other => panic!("the forged report is refused, got {other:?}"),
        }
        for seed in 3..9 {
            assert!(
                matches!(outcomes.next(), Some(Outcome::Report(Ok(_)))),
                "gw-{seed}"
            );
        }
        let Some(Outcome::Key(Ok(unpinned))) = outcomes.next() else {
            panic!("the unpin is applied");
        };
        assert!(unpinned.changed);
        // Behind the unpin in the same batch: gw-1 is unpinned, so its key must enroll again,
        // and it does (the token is valid), with the next sequence.
        let Some(Outcome::Report(Ok(again))) = outcomes.next() else {
            panic!("gw-1's report behind the unpin is accepted");
        };
        assert!(again.enrolled);
        assert_eq!(
            store.device("gw-2").unwrap(),
            None,
            "nothing of the forgery"
        );
        assert_eq!(store.device("gw-1").unwrap().unwrap().report.sequence, 2);
        assert_eq!(store.summary(100, 180).unwrap().total, 7);
    }
}
