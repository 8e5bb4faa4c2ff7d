//! The signature checker: one thread takes every decoded envelope that request handlers queued
//! meanwhile and checks their signatures as one batch (`shoal_fleet::ingest::verify_all`: about a
//! third of the CPU per signature of checking them one by one), then answers each handler. The
//! verdicts are those of a one-by-one strict check (a batch that fails is split until the bad
//! envelopes are found and refused one by one). Decides nothing else and touches no store.

use tokio::sync::{mpsc, oneshot};

use shoal_fleet::ingest::{self, Rejection, Verified};
use shoal_proto::Unverified;

/// Most envelopes checked in one batch (beyond it the gain per signature is small, and the
/// batch's time adds to its handlers' latency).
pub const MAX_BATCH: usize = 128;
/// Envelopes waiting beyond this wait in their handler (backpressure).
const QUEUE: usize = 8192;

struct Job {
    envelope: Unverified,
    reply: oneshot::Sender<Result<Verified, Rejection>>,
}

/// Handle to the checker thread; the thread ends when the last handle drops.
pub struct Verifier {
    tx: mpsc::Sender<Job>,
}

#[derive(Debug, thiserror::Error)]
#[error("the signature checker has stopped")]
pub struct Stopped;

impl Verifier {
    /// Starts the checker thread.
    pub fn spawn() -> std::io::Result<Verifier> {
        let tx = crate::batch::spawn("shoal-verifier", QUEUE, MAX_BATCH, |jobs: Vec<Job>| {
            let (envelopes, replies): (Vec<_>, Vec<_>) =
                jobs.into_iter().map(|j| (j.envelope, j.reply)).unzip();
            for (reply, result) in replies.into_iter().zip(ingest::verify_all(envelopes)) {
                let _ = reply.send(result);
            }
        })?;
        Ok(Verifier { tx })
    }

    /// Checks `envelope`'s signature with the others queued now; its report if it verified.
    pub async fn verify(
        &self,
        envelope: Unverified,
    ) -> Result<Result<Verified, Rejection>, Stopped> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job { envelope, reply })
            .await
            .map_err(|_| Stopped)?;
        answer.await.map_err(|_| Stopped)
    }
}
