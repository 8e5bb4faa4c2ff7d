//! `shoal-collector migrate`: copies an embedded (sled) store into an empty PostgreSQL database —
//! every device's record and key pin (also of devices pre-registered that never reported), the
//! kept history, retired keys' last sequences (their replay floors), the halt list with its
//! serial, and the fleet counters (rollout counters included),
//! recounted from the records — in one transaction, counted again before it commits. A copy
//! whose counts differ from the source's is rolled back. Reads sled, writes only the database.

use std::collections::BTreeMap;

use shoal_fleet::tally::{Entry, Tally};

use super::{ImportRows, PgStore, RowCounts, SledStore, Store as _, StoreError};

/// Rows sent to the database per statement.
const CHUNK: usize = 1000;

/// What a copy moved, counted on both sides.
#[derive(Debug)]
pub struct Migrated {
    pub source: RowCounts,
    pub target: RowCounts,
    /// Devices counted by the source's counters, and by the copy's (recounted from the records).
    pub source_total: u64,
    pub target_total: u64,
    /// Whether the source's own counters agreed with its records (the copy's are recounted
    /// from the records either way).
    pub source_counters_agree: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the copy in {target_store} does not match the source (source {expected:?}, copy {found:?}); it was rolled back and the database is empty again: report this as a bug, with both counts")]
    Mismatch {
        target_store: String,
        expected: RowCounts,
        found: RowCounts,
    },
}

/// Copies `from` into `to`, which must be empty (else `StoreError::NotEmpty`, nothing written).
pub fn migrate(from: &SledStore, to: &PgStore) -> Result<Migrated, MigrateError> {
    let importer = to.begin_import()?;
    let mut source = RowCounts::default();
    let mut tally = Tally::default();
    let mut seen: BTreeMap<u64, u64> = BTreeMap::new();

    // Devices that reported, with their pins.
    let mut chunk = Vec::with_capacity(CHUNK);
    for item in from.devices(None) {
        let (id, record) = item?;
        let pin = from.pinned_key(&id)?;
        source.devices += 1;
        source.pins += u64::from(pin.is_some());
        tally.apply(None, Entry::of(&record.report, record.last_seen));
        *seen.entry(record.last_seen).or_default() += 1;
        chunk.push((id, pin, Some(record)));
        if chunk.len() == CHUNK {
            importer.send(ImportRows::Devices(std::mem::take(&mut chunk)))?;
        }
    }
    // Devices pre-registered that never reported: a pin without a record.
    for item in from.pins() {
        let (id, key) = item?;
        if from.has_record(&id)? {
            continue;
        }
        source.registered_only += 1;
        source.pins += 1;
        chunk.push((id, Some(key), None));
        if chunk.len() == CHUNK {
            importer.send(ImportRows::Devices(std::mem::take(&mut chunk)))?;
        }
    }
    if !chunk.is_empty() {
        importer.send(ImportRows::Devices(chunk))?;
    }

    let mut chunk = Vec::with_capacity(CHUNK);
    for item in from.all_history() {
        chunk.push(item?);
        source.history += 1;
        if chunk.len() == CHUNK {
            importer.send(ImportRows::History(std::mem::take(&mut chunk)))?;
        }
    }
    if !chunk.is_empty() {
        importer.send(ImportRows::History(chunk))?;
    }

    let mut chunk = Vec::new();
    for item in from.all_retired() {
        chunk.push(item?);
        source.retired += 1;
        if chunk.len() == CHUNK {
            importer.send(ImportRows::Retired(std::mem::take(&mut chunk)))?;
        }
    }
    if !chunk.is_empty() {
        importer.send(ImportRows::Retired(chunk))?;
    }

    // The halt list, with its serial: devices ignore a list whose serial is lower than one they
    // accepted, so the copy must keep counting from where the embedded store was.
    importer.send(ImportRows::Halts(from.halts()?))?;

    let persisted = from.persisted_tally()?;
    let source_counters_agree = persisted == tally;
    if !source_counters_agree {
        tracing::warn!(
            counted = persisted.total(),
            recounted = tally.total(),
            "the sled store's counters disagree with its records; the copy gets counters recounted from the records"
        );
    }
    let imported = importer.finish(source, tally, seen)?;
    if !imported.committed {
        return Err(MigrateError::Mismatch {
            target_store: to.describe(),
            expected: source,
            found: imported.counts,
        });
    }
    Ok(Migrated {
        source,
        target: imported.counts,
        source_total: persisted.total(),
        target_total: imported.tally.total(),
        source_counters_agree,
    })
}
