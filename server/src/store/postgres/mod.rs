//! The PostgreSQL store (`--store postgres://...`): any number of collector replicas over one
//! database. Each batch is one transaction that locks the device rows it decides on
//! (`SELECT ... FOR UPDATE`, in id order), decides with the same `stage` as sled (so the same
//! `shoal-fleet` deciders, never SQL), and writes the result; a unique key pin and the row locks
//! make enrollment, pinning and the per-key sequence check atomic across replicas, and a batch that
//! lost a race (deadlock, a pin taken meanwhile) is decided again. Counters are added to a shard
//! row chosen per batch, so writers do not queue on one hot row; the summary sums the shards.
//!
//! The store runs its own small tokio runtime; the `Store` methods block on it (the writer's
//! thread and request handlers call them like sled's). It never logs or returns the database
//! password: every message names the store by `redact_url`.

mod import;
mod schema;
mod tls;

pub use import::{ImportRows, Imported, Importer, RowCounts};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod};
use shoal_proto::{CommitId, KeyId, Status};
use tokio_postgres::error::SqlState;

use shoal_fleet::tally::{Counter, RolloutKey, Summary, Tally};

use super::stage::{self, Op, Stored};
use super::{
    check_device_id, registration, CommitCounts, DeviceRecord, HaltChange, HaltChanged, HaltError,
    HistoryEntry, Outcome, Registration, Store, StoreError, StoredHalts, Write,
};

/// Counter shards: writers add to `batch number mod SHARDS`.
const SHARDS: u64 = 16;
/// A batch that lost a race is decided again this many times before it fails (503).
const ATTEMPTS: usize = 8;
/// Every this many batches, the last-seen rows older than `COMPACT_AFTER` seconds are summed into one
/// row per second (and zero seconds dropped), so the table stays as small as the distinct seconds.
const COMPACT_EVERY: u64 = 1024;
const COMPACT_AFTER: u64 = 600;

/// `url` with any password replaced by `***` (URL userinfo, `password=` parameters).
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(rest_start + colon + 1..rest_start + at, "***");
            }
        }
    }
    // `password=...` in a query string (`&`-separated) or a key=value string (space-separated).
    let mut redacted = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(i) = rest.find("password=") {
        let boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        let value_start = i + "password=".len();
        redacted.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if boundary {
            let end = if let Some(quoted) = rest.strip_prefix('\'') {
                quoted.find('\'').map_or(rest.len(), |j| j + 2)
            } else {
                rest.find(['&', ' ']).unwrap_or(rest.len())
            };
            redacted.push_str("***");
            rest = &rest[end..];
        }
    }
    redacted.push_str(rest);
    redacted
}

struct Inner {
    pool: Pool,
    /// "PostgreSQL store URL", password redacted.
    name: String,
}

/// The PostgreSQL store.
pub struct PgStore {
    inner: Arc<Inner>,
    runtime: Option<tokio::runtime::Runtime>,
    batches: AtomicU64,
}

fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

impl PgStore {
    /// A device record as stored (JSON); one that does not parse is corrupt, named by device.
    fn decode_record(&self, id: &str, bytes: &[u8]) -> Result<DeviceRecord, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| {
            self.inner
                .corrupt(&format!("the record of device {id:?}"), e)
        })
    }

    /// Connects to `url` (TLS as its `sslmode` asks, verified against `ca` or the system's roots),
    /// applies the missing schema migrations, and checks that the database is not newer than
    /// this collector. Fails naming the store (never its password) when the database is not
    /// reachable.
    pub fn connect(url: &str, ca: Option<&Path>) -> Result<PgStore, StoreError> {
        let name = format!("PostgreSQL store {}", redact_url(url));
        let bad = |reason: String| StoreError::Database {
            store: name.clone(),
            reason,
        };
        let mut config = tokio_postgres::Config::from_str(url)
            .map_err(|e| bad(format!("not a PostgreSQL URL: {}", chain(&e))))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name("shoal-collector");
        }
        let tls = tls::RustlsConnector::new(ca).map_err(bad)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("shoal-postgres")
            .enable_all()
            .build()
            .map_err(|e| bad(format!("starting its runtime: {e}")))?;
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(16)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| bad(format!("building the connection pool: {e}")))?;
        let store = PgStore {
            inner: Arc::new(Inner { pool, name }),
            runtime: Some(runtime),
            batches: AtomicU64::new(0),
        };
        let inner = store.inner.clone();
        store.block(async move { inner.migrate().await })?;
        Ok(store)
    }

    /// Runs `fut` on the store's runtime and waits for it (from any thread, async or not).
    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let stopped = || StoreError::Database {
            store: self.inner.name.clone(),
            reason: "the store's runtime has stopped".to_owned(),
        };
        let runtime = self.runtime.as_ref().ok_or_else(stopped)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv().map_err(|_| stopped())?
    }

    /// Runs a read on a pooled connection.
    fn read<T, F, Fut>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Inner>, deadpool_postgres::Object) -> Fut + Send + 'static,
        Fut: Future<Output = Result<T, tokio_postgres::Error>> + Send,
    {
        let inner = self.inner.clone();
        self.block(async move {
            let client = inner.client().await?;
            f(inner.clone(), client)
                .await
                .map_err(|e| inner.error("reading", &e))
        })
    }
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Not a blocking shutdown: the store may be dropped inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn retryable(e: &tokio_postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE
            || *c == SqlState::T_R_DEADLOCK_DETECTED
            || *c == SqlState::UNIQUE_VIOLATION
    )
}

/// A query's parameters.
type Params<'a, const N: usize> = [&'a (dyn tokio_postgres::types::ToSql + Sync); N];

/// Executes `statement` when `needed` (a batch without such rows skips it). Sent at the first
/// poll, so statements joined in `biased` order reach the server in that order.
async fn execute_if(
    tx: &deadpool_postgres::Transaction<'_>,
    needed: bool,
    statement: &tokio_postgres::Statement,
    params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)>,
) -> Result<u64, tokio_postgres::Error> {
    if needed {
        tx.execute(statement, &params).await
    } else {
        Ok(0)
    }
}

fn counter_row(c: &Counter) -> (&'static str, String) {
    match c {
        Counter::Status(s) => ("status", s.as_str().to_owned()),
        Counter::Commit(Some(c)) => ("commit", c.clone()),
        Counter::Commit(None) => ("no-commit", String::new()),
        Counter::Rollout(k) => ("rollout", k.encode()),
    }
}

fn parse_counter(kind: &str, name: &str) -> Option<Counter> {
    match kind {
        "status" => Status::from_wire(name).map(Counter::Status),
        "commit" => Some(Counter::Commit(Some(name.to_owned()))),
        "no-commit" => Some(Counter::Commit(None)),
        "rollout" => RolloutKey::decode(name).map(Counter::Rollout),
        _ => None,
    }
}

fn to_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_u64(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The rows a batch is decided on, read (and locked) in its transaction.
#[derive(Default)]
struct Snapshot {
    /// Every device row read (and locked), with or without a record or pin.
    rows: std::collections::HashSet<String>,
    records: HashMap<String, DeviceRecord>,
    pins: HashMap<String, String>,
    owners: HashMap<String, String>,
    retired: HashMap<(String, String), u64>,
}

impl Stored for Snapshot {
    fn record(&self, device_id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        Ok(self.records.get(device_id).cloned())
    }
    fn pin(&self, device_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.pins.get(device_id).cloned())
    }
    fn owner(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self.owners.get(key_id).cloned())
    }
    fn retired(&self, device_id: &str, key_id: &str) -> Result<Option<u64>, StoreError> {
        Ok(self
            .retired
            .get(&(device_id.to_owned(), key_id.to_owned()))
            .copied())
    }
}

/// Why one attempt at a batch failed.
enum Failed {
    /// A database error (retryable or not).
    Db(tokio_postgres::Error),
    /// Anything else (an unreadable record): not retried.
    Store(StoreError),
}

impl From<tokio_postgres::Error> for Failed {
    fn from(e: tokio_postgres::Error) -> Failed {
        Failed::Db(e)
    }
}

impl Inner {
    fn error(&self, doing: &str, e: &tokio_postgres::Error) -> StoreError {
        StoreError::Database {
            store: self.name.clone(),
            reason: format!("{doing}: {}", chain(e)),
        }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::Database {
            store: self.name.clone(),
            reason: format!(
                "cannot connect: {}; check that the database runs, is reachable from here and accepts this user",
                chain(&e)
            ),
        })
    }

    fn corrupt(&self, what: &str, e: impl std::fmt::Display) -> StoreError {
        StoreError::Database {
            store: self.name.clone(),
            reason: format!("{what} is unreadable: {e}"),
        }
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let err = |e: tokio_postgres::Error| self.error("migrating the schema", &e);
        let tx = client.transaction().await.map_err(err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schema::LOCK])
            .await
            .map_err(err)?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS shoal_schema (version bigint NOT NULL)")
            .await
            .map_err(err)?;
        let found: i64 = tx
            .query_opt("SELECT version FROM shoal_schema", &[])
            .await
            .map_err(err)?
            .map_or(0, |row| row.get(0));
        let known = schema::current();
        if found > known {
            return Err(StoreError::SchemaTooNew {
                store: self.name.clone(),
                found,
                known,
            });
        }
        for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(sql).await.map_err(err)?;
            tracing::info!(store = %self.name, version = i + 1, "schema migration applied");
        }
        if found == 0 {
            tx.execute("INSERT INTO shoal_schema (version) VALUES ($1)", &[&known])
                .await
                .map_err(err)?;
        } else if found < known {
            tx.execute("UPDATE shoal_schema SET version = $1", &[&known])
                .await
                .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    async fn write_batch(
        &self,
        writes: Vec<Write>,
        shard: i32,
    ) -> Result<Vec<Outcome>, StoreError> {
        let mut client = self.client().await?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.try_batch(&mut client, writes.clone(), shard).await {
                Ok(outcomes) => return Ok(outcomes),
                Err(Failed::Db(e)) if attempt < ATTEMPTS && retryable(&e) => {
                    tracing::debug!(store = %self.name, error = %chain(&e), attempt, "batch lost a race; deciding it again");
                }
                Err(Failed::Db(e)) => return Err(self.error("recording a batch", &e)),
                Err(Failed::Store(e)) => return Err(e),
            }
        }
    }

    /// One attempt: lock, decide, write, commit.
    async fn try_batch(
        &self,
        client: &mut deadpool_postgres::Object,
        writes: Vec<Write>,
        shard: i32,
    ) -> Result<Vec<Outcome>, Failed> {
        let mut ids: Vec<String> = Vec::new();
        let mut keys: Vec<String> = Vec::new();
        for w in &writes {
            match w {
                Write::Report { verified, .. } => {
                    ids.push(verified.report.device_id.clone());
                    keys.push(verified.key_id.to_string());
                }
                Write::Key { device_id, change } => {
                    ids.push(device_id.clone());
                    if let shoal_fleet::keys::KeyChange::Pin(k) = change {
                        keys.push(k.to_string());
                    }
                }
            }
        }
        ids.sort();
        ids.dedup();
        keys.sort();
        keys.dedup();
        // The statements, prepared once per connection (cached): every later round trip of
        // the batch sends several of them at once (tokio-postgres pipelines the queries of
        // futures polled together, and the server runs them in the order sent).
        let lock = client
            .prepare_cached(
                "SELECT id, pinned_key, record FROM shoal_device \
                 WHERE id = ANY($1) OR pinned_key = ANY($2) ORDER BY id FOR UPDATE",
            )
            .await?;
        let retired_of = client
            .prepare_cached(
                "SELECT device_id, key_id, sequence FROM shoal_retired WHERE device_id = ANY($1)",
            )
            .await?;
        // `AND d.id = ANY($1)` (and its kin below) repeats the join's condition as one the
        // primary key can serve: a generic plan made while the table was empty would otherwise
        // join by scanning every device (measured: 0.7 ms per batch at 10^4 devices, growing
        // with the fleet, after the plan was cached on a fresh database).
        let update_devices = client
            .prepare_cached(
                "UPDATE shoal_device d SET record = u.record \
                 FROM unnest($1::text[], $2::bytea[]) AS u(id, record) \
                 WHERE d.id = u.id AND d.id = ANY($1)",
            )
            .await?;
        let insert_devices = client
            .prepare_cached(
                "INSERT INTO shoal_device (id, record) SELECT * FROM unnest($1::text[], $2::bytea[])",
            )
            .await?;
        let clear_pins = client
            .prepare_cached("UPDATE shoal_device SET pinned_key = NULL WHERE id = ANY($1)")
            .await?;
        let set_pins = client
            .prepare_cached(
                "UPDATE shoal_device d SET pinned_key = u.key \
                 FROM unnest($1::text[], $2::text[]) AS u(id, key) \
                 WHERE d.id = u.id AND d.id = ANY($1)",
            )
            .await?;
        let evict_history = client
            .prepare_cached(
                "DELETE FROM shoal_history h USING unnest($1::text[], $2::int8[]) AS d(device_id, slot) \
                 WHERE h.device_id = d.device_id AND h.slot = d.slot AND h.device_id = ANY($1)",
            )
            .await?;
        let put_history = client
            .prepare_cached(
                "INSERT INTO shoal_history (device_id, slot, entry) \
                 SELECT * FROM unnest($1::text[], $2::int8[], $3::bytea[]) \
                 ON CONFLICT (device_id, slot) DO UPDATE SET entry = excluded.entry",
            )
            .await?;
        let retire_keys = client
            .prepare_cached(
                "INSERT INTO shoal_retired (device_id, key_id, sequence) \
                 SELECT * FROM unnest($1::text[], $2::text[], $3::int8[]) \
                 ON CONFLICT (device_id, key_id) DO UPDATE SET sequence = excluded.sequence",
            )
            .await?;
        let add_counters = client
            .prepare_cached(
                "INSERT INTO shoal_counter (kind, name, shard, n) \
                 SELECT k, nm, $3, d FROM unnest($1::text[], $2::text[], $4::int8[]) AS u(k, nm, d) \
                 ON CONFLICT (kind, name, shard) DO UPDATE SET n = shoal_counter.n + excluded.n",
            )
            .await?;
        let add_seen = client
            .prepare_cached(
                "INSERT INTO shoal_seen (second, shard, n) \
                 SELECT s, $2, d FROM unnest($1::int8[], $3::int8[]) AS u(s, d) \
                 ON CONFLICT (second, shard) DO UPDATE SET n = shoal_seen.n + excluded.n",
            )
            .await?;

        let tx = client.transaction().await?;
        // Locks every row the decisions read, in id order (so two batches cannot deadlock on
        // them). Rows inserted meanwhile by another replica are caught by the primary key and
        // the unique pin at write time, and the batch is decided again. The retired keys of
        // the batch's devices come in the same round trip.
        let lock_params: Params<2> = [&ids, &keys];
        let retired_params: Params<1> = [&ids];
        let (locked, retired) = tokio::try_join!(
            biased;
            tx.query(&lock, &lock_params),
            tx.query(&retired_of, &retired_params),
        )?;
        let mut snapshot = Snapshot::default();
        for row in locked {
            let id: String = row.get(0);
            let pinned: Option<String> = row.get(1);
            let record: Option<Vec<u8>> = row.get(2);
            snapshot.rows.insert(id.clone());
            if let Some(record) = record {
                let record: DeviceRecord = serde_json::from_slice(&record).map_err(|e| {
                    Failed::Store(self.corrupt(&format!("the record of device {id:?}"), e))
                })?;
                snapshot.records.insert(id.clone(), record);
            }
            if let Some(key) = pinned {
                snapshot.owners.insert(key.clone(), id.clone());
                snapshot.pins.insert(id, key);
            }
        }
        for row in retired {
            let sequence: i64 = row.get(2);
            snapshot
                .retired
                .insert((row.get(0), row.get(1)), to_u64(sequence));
        }

        let (outcomes, staged) = stage::stage(&snapshot, writes);
        if staged.ops.is_empty() {
            tx.rollback().await?;
            return Ok(outcomes);
        }

        // The net effect of the ops, in key order.
        let mut records: BTreeMap<String, DeviceRecord> = BTreeMap::new();
        let mut pins: BTreeMap<String, Option<String>> = BTreeMap::new();
        let mut history: BTreeMap<(String, u64), Option<HistoryEntry>> = BTreeMap::new();
        let mut retire: BTreeMap<(String, String), u64> = BTreeMap::new();
        for op in staged.ops {
            match op {
                Op::Record { device_id, record } => {
                    records.insert(device_id, record);
                }
                Op::History {
                    device_id,
                    slot,
                    entry,
                } => {
                    history.insert((device_id, slot), Some(entry));
                }
                Op::Evict { device_id, slot } => {
                    history.insert((device_id, slot), None);
                }
                Op::Pin {
                    device_id, pinned, ..
                } => {
                    pins.insert(device_id, pinned);
                }
                Op::Retire {
                    device_id,
                    key_id,
                    sequence,
                } => {
                    retire.insert((device_id, key_id), sequence);
                }
            }
        }
        let encode = |what: String, v: Result<Vec<u8>, serde_json::Error>| {
            v.map_err(|e| Failed::Store(self.corrupt(&what, format!("cannot encode: {e}"))))
        };

        // Rows this transaction locked are updated; a device new to the snapshot is inserted
        // without ON CONFLICT, so a replica that created it meanwhile makes this batch fail
        // (unique violation) and be decided again, never silently merged.
        let (mut old_ids, mut old_values, mut new_ids, mut new_values) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (id, record) in &records {
            let value = encode(format!("device {id:?}"), serde_json::to_vec(record))?;
            if snapshot.rows.contains(id) {
                old_ids.push(id.as_str());
                old_values.push(value);
            } else {
                new_ids.push(id.as_str());
                new_values.push(value);
            }
        }

        // Pins that move: first every old pin goes, then the new ones are set, so keys moving
        // between devices in one batch never collide with themselves on the unique pin.
        let moved: Vec<(&String, &Option<String>)> = pins
            .iter()
            .filter(|(id, pinned)| snapshot.pins.get(*id) != pinned.as_ref())
            .collect();
        let cleared: Vec<&str> = moved
            .iter()
            .filter(|(id, _)| snapshot.pins.contains_key(*id))
            .map(|(id, _)| id.as_str())
            .collect();
        let (pin_ids, pin_keys): (Vec<&str>, Vec<&str>) = moved
            .iter()
            .filter_map(|(id, key)| Some((id.as_str(), key.as_deref()?)))
            .unzip();

        let mut put = (Vec::new(), Vec::new(), Vec::new());
        let mut evict = (Vec::new(), Vec::new());
        for ((id, slot), entry) in &history {
            match entry {
                Some(entry) => {
                    put.2.push(encode(
                        format!("history of device {id:?}"),
                        serde_json::to_vec(entry),
                    )?);
                    put.0.push(id.as_str());
                    put.1.push(to_i64(*slot));
                }
                None => {
                    evict.0.push(id.as_str());
                    evict.1.push(to_i64(*slot));
                }
            }
        }
        let retired_ids: Vec<&str> = retire.keys().map(|(d, _)| d.as_str()).collect();
        let retired_keys: Vec<&str> = retire.keys().map(|(_, k)| k.as_str()).collect();
        let retired_seqs: Vec<i64> = retire.values().map(|s| to_i64(*s)).collect();

        // Counters: added to this batch's shard, in key order.
        let mut counters: Vec<((&'static str, String), i64)> = staged
            .delta
            .changes()
            .iter()
            .map(|(c, d)| (counter_row(c), *d))
            .collect();
        counters.sort();
        let kinds: Vec<&str> = counters.iter().map(|((k, _), _)| *k).collect();
        let names: Vec<&str> = counters.iter().map(|((_, n), _)| n.as_str()).collect();
        let deltas: Vec<i64> = counters.iter().map(|(_, d)| *d).collect();
        let seen = staged.delta.seen_changes();
        let seconds: Vec<i64> = seen.keys().map(|s| to_i64(*s)).collect();
        let seen_deltas: Vec<i64> = seen.values().copied().collect();

        // Every write in one round trip, sent in this order (which the server keeps): devices
        // before the pins set on their rows, old pins cleared before new ones are set. The
        // first statement that fails fails the batch (the rest then fail as aborted).
        tokio::try_join!(
            biased;
            execute_if(&tx, !old_ids.is_empty(), &update_devices, vec![&old_ids, &old_values]),
            execute_if(&tx, !new_ids.is_empty(), &insert_devices, vec![&new_ids, &new_values]),
            execute_if(&tx, !cleared.is_empty(), &clear_pins, vec![&cleared]),
            // Every row exists by now: locked above, or inserted with its first record.
            execute_if(&tx, !pin_ids.is_empty(), &set_pins, vec![&pin_ids, &pin_keys]),
            execute_if(&tx, !evict.0.is_empty(), &evict_history, vec![&evict.0, &evict.1]),
            execute_if(&tx, !put.0.is_empty(), &put_history, vec![&put.0, &put.1, &put.2]),
            execute_if(
                &tx,
                !retired_ids.is_empty(),
                &retire_keys,
                vec![&retired_ids, &retired_keys, &retired_seqs]
            ),
            execute_if(
                &tx,
                !kinds.is_empty(),
                &add_counters,
                vec![&kinds, &names, &shard, &deltas]
            ),
            execute_if(&tx, !seconds.is_empty(), &add_seen, vec![&seconds, &shard, &seen_deltas]),
        )?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Sums the last-seen rows of seconds before `before` into one row per second (shard 0),
    /// dropping seconds whose devices all moved on. Rows a concurrent batch adds meanwhile are
    /// not deleted (only rows this transaction locked by deleting them), so no count is lost.
    async fn compact(&self, before: u64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let err = |e: tokio_postgres::Error| self.error("compacting the last-seen counts", &e);
        let tx = client.transaction().await.map_err(err)?;
        let rows = tx
            .query(
                "DELETE FROM shoal_seen WHERE second < $1 RETURNING second, n",
                &[&to_i64(before)],
            )
            .await
            .map_err(err)?;
        let mut sums: BTreeMap<i64, i64> = BTreeMap::new();
        for row in rows {
            *sums.entry(row.get(0)).or_default() += row.get::<_, i64>(1);
        }
        sums.retain(|_, n| *n != 0);
        if !sums.is_empty() {
            let seconds: Vec<i64> = sums.keys().copied().collect();
            let counts: Vec<i64> = sums.values().copied().collect();
            tx.execute(
                "INSERT INTO shoal_seen (second, shard, n) SELECT s, 0, d FROM unnest($1::int8[], $2::int8[]) AS u(s, d) \
                 ON CONFLICT (second, shard) DO UPDATE SET n = shoal_seen.n + excluded.n",
                &[&seconds, &counts],
            )
            .await
            .map_err(err)?;
        }
        tx.commit().await.map_err(err)
    }

    /// The counters and the last-seen index as stored (summed over shards), read with `c` (a
    /// connection, or a transaction that has just written them).
    async fn tally_in(&self, c: &impl GenericClient) -> Result<Tally, StoreError> {
        let err = |e: tokio_postgres::Error| self.error("reading the counters", &e);
        let counters = c
            .query(
                "SELECT kind, name, sum(n)::int8 FROM shoal_counter GROUP BY kind, name",
                &[],
            )
            .await
            .map_err(err)?;
        let seen = c
            .query(
                "SELECT second, sum(n)::int8 FROM shoal_seen GROUP BY second HAVING sum(n) <> 0",
                &[],
            )
            .await
            .map_err(err)?;
        let mut tally = Tally::default();
        for row in counters {
            let (kind, name): (String, String) = (row.get(0), row.get(1));
            let counter = parse_counter(&kind, &name)
                .ok_or_else(|| self.corrupt(&format!("counter {kind}/{name}"), "unknown kind"))?;
            tally.load_counter(counter, to_u64(row.get(2)));
        }
        for row in seen {
            tally.load_seen_count(to_u64(row.get(0)), to_u64(row.get(1)));
        }
        Ok(tally)
    }

    /// The halt list read with `c` (the list's row first: with `FOR UPDATE` in a change's
    /// transaction, with `FOR SHARE` otherwise, so a change in flight is waited for and the
    /// serial read is the one of the states read).
    async fn halts_in(&self, c: &impl GenericClient, lock: &str) -> Result<StoredHalts, Failed> {
        let row = c
            .query_one(
                &format!("SELECT serial, changed_at FROM shoal_halt_list WHERE id = 1 {lock}"),
                &[],
            )
            .await?;
        let rows = c
            .query(
                "SELECT commit_id, state FROM shoal_halt ORDER BY commit_id",
                &[],
            )
            .await?;
        let mut states = BTreeMap::new();
        for row in rows {
            let commit: String = row.get(0);
            let what = format!("the halt of commit {commit:?}");
            let commit =
                CommitId::parse(&commit).map_err(|e| Failed::Store(self.corrupt(&what, e)))?;
            let state = serde_json::from_slice(row.get::<_, &[u8]>(1))
                .map_err(|e| Failed::Store(self.corrupt(&what, e)))?;
            states.insert(commit, state);
        }
        Ok(StoredHalts {
            serial: to_u64(row.get(0)),
            changed_at: to_u64(row.get(1)),
            states,
        })
    }

    async fn halts(&self) -> Result<StoredHalts, StoreError> {
        let mut client = self.client().await?;
        let err = |e: tokio_postgres::Error| self.error("reading the halt list", &e);
        let tx = client.transaction().await.map_err(err)?;
        let halts = match self.halts_in(&tx, "FOR SHARE").await {
            Ok(h) => h,
            Err(Failed::Db(e)) => return Err(err(e)),
            Err(Failed::Store(e)) => return Err(e),
        };
        tx.commit().await.map_err(err)?;
        Ok(halts)
    }

    async fn change_halt(
        &self,
        commit: CommitId,
        change: HaltChange,
        now: u64,
    ) -> Result<HaltChanged, HaltError> {
        let mut client = self.client().await?;
        let err = |e: &tokio_postgres::Error| self.error("changing the halt list", e);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: Result<Result<HaltChanged, HaltError>, Failed> = async {
                let tx = client.transaction().await?;
                // The list's row lock serialises every change across replicas.
                let halts = self.halts_in(&tx, "FOR UPDATE").await?;
                let state = match halts.decide(&commit, &change, now) {
                    Err(refusal) => return Ok(Err(refusal.into())),
                    Ok(None) => {
                        let state = halts.states.get(&commit).cloned().unwrap_or_default();
                        return Ok(Ok(HaltChanged::new(&commit, &state, false, halts.serial)));
                    }
                    Ok(Some(state)) => state,
                };
                let json = serde_json::to_vec(&state)
                    .map_err(|e| Failed::Store(self.corrupt("a halt state", e)))?;
                tx.execute(
                    "INSERT INTO shoal_halt (commit_id, state) VALUES ($1, $2)                      ON CONFLICT (commit_id) DO UPDATE SET state = excluded.state",
                    &[&commit.as_str(), &json],
                )
                .await?;
                let serial: i64 = tx
                    .query_one(
                        "UPDATE shoal_halt_list SET serial = serial + 1, changed_at = $1                          WHERE id = 1 RETURNING serial",
                        &[&to_i64(now)],
                    )
                    .await?
                    .get(0);
                tx.commit().await?;
                Ok(Ok(HaltChanged::new(&commit, &state, true, to_u64(serial))))
            }
            .await;
            match result {
                Ok(done) => return done,
                Err(Failed::Db(e)) if attempt < ATTEMPTS && retryable(&e) => continue,
                Err(Failed::Db(e)) => return Err(err(&e).into()),
                Err(Failed::Store(e)) => return Err(e.into()),
            }
        }
    }

    async fn register(
        &self,
        device_id: String,
        key_id: String,
    ) -> Result<Registration, StoreError> {
        let mut client = self.client().await?;
        let err = |e: &tokio_postgres::Error| self.error("registering", e);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result: Result<Result<Registration, StoreError>, tokio_postgres::Error> = async {
                let tx = client.transaction().await?;
                let rows = tx
                    .query(
                        "SELECT id, pinned_key FROM shoal_device WHERE id = $1 OR pinned_key = $2 FOR UPDATE",
                        &[&device_id, &key_id],
                    )
                    .await?;
                let mut pinned = None;
                let mut owner = None;
                let mut exists = false;
                for row in rows {
                    let id: String = row.get(0);
                    let key: Option<String> = row.get(1);
                    if id == device_id {
                        exists = true;
                        pinned = key.clone();
                    }
                    if key.as_deref() == Some(key_id.as_str()) {
                        owner = Some(id);
                    }
                }
                match registration(&device_id, &key_id, pinned, owner) {
                    Err(e) => Ok(Err(e)),
                    Ok(Some(done)) => Ok(Ok(done)),
                    Ok(None) => {
                        // As in a batch: update the locked row, or insert without ON CONFLICT.
                        let sql = if exists {
                            "UPDATE shoal_device SET pinned_key = $2 WHERE id = $1"
                        } else {
                            "INSERT INTO shoal_device (id, pinned_key) VALUES ($1, $2)"
                        };
                        tx.execute(sql, &[&device_id, &key_id]).await?;
                        tx.commit().await?;
                        Ok(Ok(Registration::New))
                    }
                }
            }
            .await;
            match result {
                Ok(done) => return done,
                Err(e) if attempt < ATTEMPTS && retryable(&e) => continue,
                Err(e) => return Err(err(&e)),
            }
        }
    }
}

impl Store for PgStore {
    fn describe(&self) -> String {
        self.inner.name.clone()
    }

    fn write_batch(&self, writes: Vec<Write>) -> Vec<Outcome> {
        let batch = self.batches.fetch_add(1, Ordering::Relaxed);
        // Each batch adds its counts to the next shard; replicas start at different ones.
        let shard = ((batch + std::process::id() as u64) % SHARDS) as i32;
        let newest = writes
            .iter()
            .filter_map(|w| match w {
                Write::Report { now, .. } => Some(*now),
                Write::Key { .. } => None,
            })
            .max();
        let kinds: Vec<bool> = writes
            .iter()
            .map(|w| matches!(w, Write::Report { .. }))
            .collect();
        let inner = self.inner.clone();
        let result = self.block(async move { inner.write_batch(writes, shard).await });
        let outcomes = match result {
            Ok(outcomes) => outcomes,
            Err(e) => {
                let reason = e.to_string();
                tracing::error!(error = %reason, "recording a batch failed; answering 503");
                let fail = || StoreError::Database {
                    store: self.inner.name.clone(),
                    reason: reason.clone(),
                };
                return kinds
                    .into_iter()
                    .map(|report| {
                        if report {
                            Outcome::Report(Err(fail().into()))
                        } else {
                            Outcome::Key(Err(fail().into()))
                        }
                    })
                    .collect();
            }
        };
        if let Some(now) = newest {
            if batch % COMPACT_EVERY == COMPACT_EVERY - 1 {
                let inner = self.inner.clone();
                let before = now.saturating_sub(COMPACT_AFTER);
                if let Err(e) = self.block(async move { inner.compact(before).await }) {
                    tracing::warn!(error = %e, "compacting the last-seen counts failed; will try again");
                }
            }
        }
        outcomes
    }

    /// A committed transaction is durable already (keep `synchronous_commit` on).
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn register(&self, device_id: &str, key_id: &KeyId) -> Result<Registration, StoreError> {
        check_device_id(device_id)?;
        let inner = self.inner.clone();
        let (device_id, key_id) = (device_id.to_owned(), key_id.to_string());
        self.block(async move { inner.register(device_id, key_id).await })
    }

    fn device(&self, id: &str) -> Result<Option<DeviceRecord>, StoreError> {
        let id = id.to_owned();
        let raw = self.read(move |_, client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT record FROM shoal_device WHERE id = $1 AND record IS NOT NULL",
                )
                .await?;
            let row = client.query_opt(&stmt, &[&id]).await?;
            Ok(row.map(|r| (id, r.get::<_, Vec<u8>>(0))))
        })?;
        raw.map(|(id, bytes)| self.decode_record(&id, &bytes))
            .transpose()
    }

    fn devices_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        let after = after.map(str::to_owned);
        let limit = to_i64(limit as u64);
        let rows = self.read(move |_, client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT id, record FROM shoal_device WHERE record IS NOT NULL \
                     AND ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2",
                )
                .await?;
            let rows = client.query(&stmt, &[&after, &limit]).await?;
            Ok(rows
                .into_iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, Vec<u8>>(1)))
                .collect::<Vec<_>>())
        })?;
        rows.into_iter()
            .map(|(id, bytes)| Ok((id.clone(), self.decode_record(&id, &bytes)?)))
            .collect()
    }

    fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, StoreError> {
        let id = id.to_owned();
        let rows = self.read(move |_, client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT entry FROM shoal_history WHERE device_id = $1 ORDER BY slot DESC",
                )
                .await?;
            let rows = client.query(&stmt, &[&id]).await?;
            Ok(rows
                .into_iter()
                .map(|r| r.get::<_, Vec<u8>>(0))
                .collect::<Vec<_>>())
        })?;
        rows.iter()
            .map(|bytes| {
                serde_json::from_slice(bytes).map_err(|e| self.inner.corrupt("a history entry", e))
            })
            .collect()
    }

    fn pinned_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        let id = id.to_owned();
        self.read(move |_, client| async move {
            let stmt = client
                .prepare_cached("SELECT pinned_key FROM shoal_device WHERE id = $1")
                .await?;
            Ok(client
                .query_opt(&stmt, &[&id])
                .await?
                .and_then(|r| r.get::<_, Option<String>>(0)))
        })
    }

    fn key_owner(&self, key_id: &str) -> Result<Option<String>, StoreError> {
        let key_id = key_id.to_owned();
        self.read(move |_, client| async move {
            let stmt = client
                .prepare_cached("SELECT id FROM shoal_device WHERE pinned_key = $1")
                .await?;
            Ok(client
                .query_opt(&stmt, &[&key_id])
                .await?
                .map(|r| r.get::<_, String>(0)))
        })
    }

    /// Sums the counter shards (rows: statuses and commits × shards) and the last-seen seconds
    /// before the cutoff: never the devices.
    fn summary(&self, now: u64, stale_after: u64) -> Result<Summary, StoreError> {
        let cutoff = to_i64(now.saturating_sub(stale_after));
        let (counters, stale) = self.read(move |_, client| async move {
            let counters = client
                // Rollout counters are not part of the summary (they grow with commits × waves).
                .prepare_cached(
                    "SELECT kind, name, sum(n)::int8 FROM shoal_counter WHERE kind <> 'rollout' GROUP BY kind, name",
                )
                .await?;
            let stale = client
                .prepare_cached(
                    "SELECT coalesce(sum(n), 0)::int8 FROM shoal_seen WHERE second < $1",
                )
                .await?;
            let counters = client
                .query(&counters, &[])
                .await?
                .into_iter()
                .map(|r| {
                    (
                        r.get::<_, String>(0),
                        r.get::<_, String>(1),
                        r.get::<_, i64>(2),
                    )
                })
                .collect::<Vec<_>>();
            let stale: i64 = client.query_one(&stale, &[&cutoff]).await?.get(0);
            Ok((counters, stale))
        })?;
        let mut tally = Tally::default();
        for (kind, name, n) in counters {
            let counter = parse_counter(&kind, &name).ok_or_else(|| {
                self.inner
                    .corrupt(&format!("counter {kind}/{name}"), "unknown kind")
            })?;
            tally.load_counter(counter, to_u64(n));
        }
        let mut summary = tally.summary(now, stale_after);
        summary.stale = to_u64(stale);
        Ok(summary)
    }

    fn persisted_tally(&self) -> Result<Tally, StoreError> {
        let inner = self.inner.clone();
        self.block(async move {
            let client = inner.client().await?;
            inner.tally_in(&client).await
        })
    }

    fn healthy(&self) -> bool {
        self.read(|_, client| async move { client.query_one("SELECT 1", &[]).await.map(|_| ()) })
            .is_ok()
    }

    fn halts(&self) -> Result<StoredHalts, StoreError> {
        let inner = self.inner.clone();
        self.block(async move { inner.halts().await })
    }

    /// One small query (a single row): what every replica polls.
    fn halts_serial(&self) -> Result<u64, StoreError> {
        self.read(|_, client| async move {
            let stmt = client
                .prepare_cached("SELECT serial FROM shoal_halt_list WHERE id = 1")
                .await?;
            Ok(to_u64(client.query_one(&stmt, &[]).await?.get(0)))
        })
    }

    fn change_halt(
        &self,
        commit: &CommitId,
        change: &HaltChange,
        now: u64,
    ) -> Result<HaltChanged, HaltError> {
        let inner = self.inner.clone();
        let (commit, change) = (commit.clone(), change.clone());
        let runtime = self.runtime.as_ref().ok_or_else(|| StoreError::Database {
            store: self.inner.name.clone(),
            reason: "the store's runtime has stopped".to_owned(),
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        runtime.spawn(async move {
            let _ = tx.send(inner.change_halt(commit, change, now).await);
        });
        rx.recv().map_err(|_| {
            HaltError::Store(StoreError::Database {
                store: self.inner.name.clone(),
                reason: "the store's runtime has stopped".to_owned(),
            })
        })?
    }

    /// The rollout counters summed over shards (rows: commits × waves × statuses × shards).
    fn rollouts(&self) -> Result<BTreeMap<String, CommitCounts>, StoreError> {
        let rows = self.read(|_, client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT name, sum(n)::int8 FROM shoal_counter WHERE kind = 'rollout'                      GROUP BY name HAVING sum(n) <> 0",
                )
                .await?;
            Ok(client
                .query(&stmt, &[])
                .await?
                .into_iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)))
                .collect::<Vec<_>>())
        })?;
        let mut counters = Vec::with_capacity(rows.len());
        for (name, n) in rows {
            let key = RolloutKey::decode(&name).ok_or_else(|| {
                self.inner
                    .corrupt(&format!("counter rollout/{name}"), "not COMMIT/STATUS/WAVE")
            })?;
            counters.push((key, to_u64(n)));
        }
        Ok(shoal_fleet::rollout::by_commit(
            counters.iter().map(|(k, n)| (k, n)),
        ))
    }

    fn record_adoption(
        &self,
        minute: u64,
        samples: &[(String, u64)],
        forget_before: u64,
    ) -> Result<(), StoreError> {
        let commits: Vec<String> = samples.iter().map(|(c, _)| c.clone()).collect();
        let devices: Vec<i64> = samples.iter().map(|(_, n)| to_i64(*n)).collect();
        self.read(move |_, client| async move {
            client
                .execute(
                    "INSERT INTO shoal_adoption (commit_id, minute, devices)                      SELECT c, $2, d FROM unnest($1::text[], $3::int8[]) AS u(c, d)                      ON CONFLICT (commit_id, minute) DO NOTHING",
                    &[&commits, &to_i64(minute), &devices],
                )
                .await?;
            client
                .execute(
                    "DELETE FROM shoal_adoption WHERE minute < $1",
                    &[&to_i64(forget_before)],
                )
                .await?;
            Ok(())
        })
    }

    fn adoption(&self, commit: &str) -> Result<Vec<(u64, u64)>, StoreError> {
        let commit = commit.to_owned();
        self.read(move |_, client| async move {
            let stmt = client
                .prepare_cached(
                    "SELECT minute, devices FROM shoal_adoption WHERE commit_id = $1 ORDER BY minute",
                )
                .await?;
            Ok(client
                .query(&stmt, &[&commit])
                .await?
                .into_iter()
                .map(|r| (to_u64(r.get(0)), to_u64(r.get(1))))
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact_url;

    #[test]
    fn passwords_never_survive_redaction() {
        for (url, want) in [
            (
                "postgres://shoal:s3cret@db.example:5432/shoal?sslmode=require",
                "postgres://shoal:***@db.example:5432/shoal?sslmode=require",
            ),
            ("postgres://shoal@db/shoal", "postgres://shoal@db/shoal"),
            (
                "postgresql:///shoal?host=/run/pg&password=s3cret&user=x",
                "postgresql:///shoal?host=/run/pg&password=***&user=x",
            ),
            (
                "host=db user=shoal password='s3 cret' dbname=shoal",
                "host=db user=shoal password=*** dbname=shoal",
            ),
            ("postgres://a:b@c@h/d", "postgres://a:***@h/d"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
            assert!(!redact_url(url).contains("s3"), "{url}");
        }
    }
}
