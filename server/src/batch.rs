//! One thread serving a queue in batches: it waits for a job, takes every job queued meanwhile
//! (up to a maximum), and hands them to its handler together. The ingest writer is such a
//! thread; the batch is what makes it cheap under load (one batch signature check, one store
//! flush, for whatever arrived together). The thread ends when every sender is dropped.

use tokio::sync::mpsc;

/// Starts thread `name` over a queue of `queue` jobs; each batch holds at most `max`.
pub(crate) fn spawn<J: Send + 'static>(
    name: &str,
    queue: usize,
    max: usize,
    mut handle: impl FnMut(Vec<J>) + Send + 'static,
) -> std::io::Result<mpsc::Sender<J>> {
    let (tx, mut rx) = mpsc::channel::<J>(queue);
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            while let Some(first) = rx.blocking_recv() {
                let mut jobs = vec![first];
                while jobs.len() < max {
                    match rx.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                handle(jobs);
            }
        })?;
    Ok(tx)
}
