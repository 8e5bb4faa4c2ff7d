//! Copying a whole store into an empty PostgreSQL database (`shoal-collector migrate`): rows
//! arrive in chunks over a channel and are written in ONE transaction that holds the tables
//! locked against writers, checked empty first and counted again before the commit, so a copy is
//! either whole and verified or not there at all (a mismatch rolls back). Decides nothing: the
//! rows are a store's records as they are.

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;
use shoal_fleet::tally::{Counter, Tally};
use tokio::sync::mpsc;

use super::{counter_row, to_i64, Inner, PgStore};
use crate::store::{DeviceRecord, HistoryEntry, StoreError};

/// One chunk of rows to copy.
pub enum ImportRows {
    /// Device rows: id, pinned key, latest record (`None`: pre-registered, never reported).
    Devices(Vec<(String, Option<String>, Option<DeviceRecord>)>),
    /// History entries: device id, slot, entry.
    History(Vec<(String, u64, HistoryEntry)>),
    /// Retired keys' last sequences: device id, key id, sequence.
    Retired(Vec<(String, String, u64)>),
    /// The halt list: every commit's halt state, its serial and when it last changed.
    Halts(crate::store::StoredHalts),
}

/// How many rows of each kind a store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// Devices with a record (that reported at least once).
    pub devices: u64,
    /// Devices pre-registered that never reported (a pin, no record).
    pub registered_only: u64,
    /// Pinned keys.
    pub pins: u64,
    pub history: u64,
    pub retired: u64,
}

/// What the copy found in the database before deciding to commit.
#[derive(Debug)]
pub struct Imported {
    pub counts: RowCounts,
    pub tally: Tally,
    /// False: the counts or the counters differed from the expected ones and the transaction was
    /// rolled back (the database is as empty as before).
    pub committed: bool,
}

enum Message {
    Rows(ImportRows),
    Finish {
        expected: RowCounts,
        tally: Tally,
        seen: BTreeMap<u64, u64>,
    },
}

/// A copy in progress: one transaction on one connection, fed by `send`, ended by `finish`
/// (dropping it rolls the copy back).
pub struct Importer {
    rows: mpsc::Sender<Message>,
    done: std::sync::mpsc::Receiver<Result<Imported, StoreError>>,
    name: String,
}

impl PgStore {
    /// Starts a copy into this database, which must hold no device, history, retired key or
    /// counter yet (else `StoreError::NotEmpty`). Its tables stay locked against writers (a
    /// collector started on it meanwhile waits) until `finish`.
    pub fn begin_import(&self) -> Result<Importer, StoreError> {
        let runtime = self.runtime.as_ref().ok_or_else(|| StoreError::Database {
            store: self.inner.name.clone(),
            reason: "the store's runtime has stopped".to_owned(),
        })?;
        let (rows, mut inbox) = mpsc::channel::<Message>(4);
        let (ready_tx, ready) = std::sync::mpsc::sync_channel(1);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let inner = self.inner.clone();
        runtime.spawn(async move {
            let result = async {
                let mut client = inner.client().await?;
                let err = |e: tokio_postgres::Error| inner.error("copying into it", &e);
                let tx = client.transaction().await.map_err(err)?;
                tx.batch_execute(
                    "LOCK TABLE shoal_device, shoal_history, shoal_retired, shoal_counter, shoal_seen \
                     IN EXCLUSIVE MODE",
                )
                .await
                .map_err(err)?;
                let before = count_rows(&tx).await.map_err(err)?;
                let counters: i64 = tx
                    .query_one(
                        "SELECT (SELECT count(*) FROM shoal_counter) + (SELECT count(*) FROM shoal_seen)",
                        &[],
                    )
                    .await
                    .map_err(err)?
                    .get(0);
                if before != RowCounts::default() || counters != 0 {
                    return Err(StoreError::NotEmpty {
                        store: inner.name.clone(),
                        found: format!(
                            "{} devices, {} registered without a report, {} history entries, {} retired keys, {counters} counter rows",
                            before.devices, before.registered_only, before.history, before.retired
                        ),
                    });
                }
                let _ = ready_tx.send(Ok(()));
                while let Some(message) = inbox.recv().await {
                    match message {
                        Message::Rows(rows) => inner.import_rows(&tx, rows).await?,
                        Message::Finish {
                            expected,
                            tally,
                            seen,
                        } => {
                            inner
                                .import_counters(&tx, &tally, &seen)
                                .await
                                .map_err(err)?;
                            let counts = count_rows(&tx).await.map_err(err)?;
                            let found = inner.tally_in(&tx).await?;
                            let committed = counts == expected && found == tally;
                            if committed {
                                tx.commit().await.map_err(err)?;
                            } else {
                                tx.rollback().await.map_err(err)?;
                            }
                            return Ok(Imported {
                                counts,
                                tally: found,
                                committed,
                            });
                        }
                    }
                }
                Err(StoreError::Database {
                    store: inner.name.clone(),
                    reason: "the copy was abandoned before it finished; nothing was written"
                        .to_owned(),
                })
            }
            .await;
            match result {
                Ok(imported) => {
                    let _ = done_tx.send(Ok(imported));
                }
                Err(e) => {
                    // Before `ready`: the caller is waiting there; after it, at `finish`.
                    let e2 = StoreError::Database {
                        store: inner.name.clone(),
                        reason: e.to_string(),
                    };
                    let _ = ready_tx.send(Err(e));
                    let _ = done_tx.send(Err(e2));
                }
            }
        });
        let stopped = || StoreError::Database {
            store: self.inner.name.clone(),
            reason: "the copy stopped before it started".to_owned(),
        };
        ready.recv().map_err(|_| stopped())??;
        Ok(Importer {
            rows,
            done,
            name: self.inner.name.clone(),
        })
    }
}

impl Importer {
    /// Writes one chunk (in the copy's transaction). Fails when the copy has failed.
    pub fn send(&self, rows: ImportRows) -> Result<(), StoreError> {
        if self.rows.blocking_send(Message::Rows(rows)).is_err() {
            return Err(self.failure());
        }
        Ok(())
    }

    /// Writes the counters (`tally`, and the last-seen index `seen`: devices per second), counts
    /// every table again and commits only if the counts are `expected` and the counters read back
    /// equal `tally`; otherwise rolls back.
    pub fn finish(
        self,
        expected: RowCounts,
        tally: Tally,
        seen: BTreeMap<u64, u64>,
    ) -> Result<Imported, StoreError> {
        let message = Message::Finish {
            expected,
            tally,
            seen,
        };
        if self.rows.blocking_send(message).is_err() {
            return Err(self.failure());
        }
        self.done.recv().unwrap_or_else(|_| Err(self.stopped()))
    }

    /// Why the copy's task ended early.
    fn failure(&self) -> StoreError {
        match self.done.recv() {
            Ok(Err(e)) => e,
            _ => self.stopped(),
        }
    }

    fn stopped(&self) -> StoreError {
        StoreError::Database {
            store: self.name.clone(),
            reason: "the copy stopped unexpectedly; nothing was committed".to_owned(),
        }
    }
}

async fn count_rows(c: &impl GenericClient) -> Result<RowCounts, tokio_postgres::Error> {
    let row = c
        .query_one(
            "SELECT count(*) FILTER (WHERE record IS NOT NULL), \
                    count(*) FILTER (WHERE record IS NULL), \
                    count(pinned_key), \
                    (SELECT count(*) FROM shoal_history), \
                    (SELECT count(*) FROM shoal_retired) \
             FROM shoal_device",
            &[],
        )
        .await?;
    let n = |i: usize| super::to_u64(row.get::<_, i64>(i));
    Ok(RowCounts {
        devices: n(0),
        registered_only: n(1),
        pins: n(2),
        history: n(3),
        retired: n(4),
    })
}

impl Inner {
    async fn import_rows(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        rows: ImportRows,
    ) -> Result<(), StoreError> {
        let err = |e: tokio_postgres::Error| self.error("copying into it", &e);
        match rows {
            ImportRows::Devices(devices) => {
                let mut ids = Vec::with_capacity(devices.len());
                let mut pins = Vec::with_capacity(devices.len());
                let mut records = Vec::with_capacity(devices.len());
                for (id, pin, record) in devices {
                    let record = record
                        .map(|r| serde_json::to_vec(&r))
                        .transpose()
                        .map_err(|e| self.corrupt(&format!("the record of device {id:?}"), e))?;
                    ids.push(id);
                    pins.push(pin);
                    records.push(record);
                }
                tx.execute(
                    "INSERT INTO shoal_device (id, pinned_key, record) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])",
                    &[&ids, &pins, &records],
                )
                .await
                .map_err(err)?;
            }
            ImportRows::History(entries) => {
                let mut ids = Vec::with_capacity(entries.len());
                let mut slots = Vec::with_capacity(entries.len());
                let mut values = Vec::with_capacity(entries.len());
                for (id, slot, entry) in entries {
                    let value = serde_json::to_vec(&entry)
                        .map_err(|e| self.corrupt(&format!("history of device {id:?}"), e))?;
                    ids.push(id);
                    slots.push(to_i64(slot));
                    values.push(value);
                }
                tx.execute(
                    "INSERT INTO shoal_history (device_id, slot, entry) \
                     SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[])",
                    &[&ids, &slots, &values],
                )
                .await
                .map_err(err)?;
            }
            ImportRows::Halts(halts) => {
                let mut commits = Vec::with_capacity(halts.states.len());
                let mut states = Vec::with_capacity(halts.states.len());
                for (commit, state) in &halts.states {
                    let json = serde_json::to_vec(state)
                        .map_err(|e| self.corrupt(&format!("the halt of {commit}"), e))?;
                    commits.push(commit.as_str());
                    states.push(json);
                }
                // No ON CONFLICT: a database that has halts already fails the copy.
                tx.execute(
                    "INSERT INTO shoal_halt (commit_id, state) \
                     SELECT * FROM unnest($1::text[], $2::bytea[])",
                    &[&commits, &states],
                )
                .await
                .map_err(err)?;
                tx.execute(
                    "UPDATE shoal_halt_list SET serial = $1, changed_at = $2 WHERE id = 1",
                    &[&to_i64(halts.serial), &to_i64(halts.changed_at)],
                )
                .await
                .map_err(err)?;
            }
            ImportRows::Retired(retired) => {
                let (mut ids, mut keys, mut seqs) = (Vec::new(), Vec::new(), Vec::new());
                for (id, key, sequence) in retired {
                    ids.push(id);
                    keys.push(key);
                    seqs.push(to_i64(sequence));
                }
                tx.execute(
                    "INSERT INTO shoal_retired (device_id, key_id, sequence) \
                     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])",
                    &[&ids, &keys, &seqs],
                )
                .await
                .map_err(err)?;
            }
        }
        Ok(())
    }

    /// The counters of `tally` and the last-seen index, in shard 0.
    async fn import_counters(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        tally: &Tally,
        seen: &BTreeMap<u64, u64>,
    ) -> Result<(), tokio_postgres::Error> {
        let summary = tally.summary(0, 0);
        let mut counters: Vec<(Counter, u64)> = shoal_proto::Status::ALL
            .iter()
            .map(|s| (Counter::Status(*s), tally.status(*s)))
            .collect();
        counters.extend(
            summary
                .by_commit
                .into_iter()
                .map(|(c, n)| (Counter::Commit(Some(c)), n)),
        );
        counters.push((Counter::Commit(None), summary.no_commit));
        counters.extend(
            tally
                .rollouts()
                .iter()
                .map(|(k, n)| (Counter::Rollout(k.clone()), *n)),
        );
        counters.retain(|(_, n)| *n > 0);
        let (mut kinds, mut names, mut values) = (Vec::new(), Vec::new(), Vec::new());
        for (counter, n) in &counters {
            let (kind, name) = counter_row(counter);
            kinds.push(kind);
            names.push(name);
            values.push(to_i64(*n));
        }
        tx.execute(
            "INSERT INTO shoal_counter (kind, name, shard, n) \
             SELECT k, nm, 0, d FROM unnest($1::text[], $2::text[], $3::int8[]) AS u(k, nm, d)",
            &[&kinds, &names, &values],
        )
        .await?;
        let seconds: Vec<i64> = seen.keys().map(|s| to_i64(*s)).collect();
        let devices: Vec<i64> = seen.values().map(|n| to_i64(*n)).collect();
        tx.execute(
            "INSERT INTO shoal_seen (second, shard, n) \
             SELECT s, 0, d FROM unnest($1::int8[], $2::int8[]) AS u(s, d)",
            &[&seconds, &devices],
        )
        .await?;
        Ok(())
    }
}
