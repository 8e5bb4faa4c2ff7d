//! The PostgreSQL store's schema, as numbered migrations applied at start in one transaction
//! under an advisory lock (replicas starting together migrate once). `shoal_schema` records the
//! version; a database newer than this binary is refused, never written.

/// Migration N (1-based) is `MIGRATIONS[N - 1]`; append only, never edit a released one.
pub const MIGRATIONS: &[&str] = &[
    // 1: devices (latest record and key pin in one row, so a pin pair cannot split), history,
    // retired sequences, and the counters, sharded so concurrent writers do not queue on one row.
    r#"
    CREATE TABLE shoal_device (
        id text COLLATE "C" PRIMARY KEY,
        -- The key pinned to the device; UNIQUE: one key speaks for one device.
        pinned_key text UNIQUE,
        -- DeviceRecord JSON; NULL for a device registered that never reported.
        record bytea
    );
    CREATE TABLE shoal_history (
        device_id text COLLATE "C" NOT NULL,
        slot bigint NOT NULL,
        entry bytea NOT NULL,
        PRIMARY KEY (device_id, slot)
    );
    CREATE TABLE shoal_retired (
        device_id text COLLATE "C" NOT NULL,
        key_id text NOT NULL,
        sequence bigint NOT NULL,
        PRIMARY KEY (device_id, key_id)
    );
    -- Devices by status ('status', name), by commit ('commit', hex) and without one
    -- ('no-commit', ''): the sum over shards is the count.
    CREATE TABLE shoal_counter (
        kind text NOT NULL,
        name text NOT NULL,
        shard integer NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (kind, name, shard)
    );
    -- Devices by last-seen second, summed over shards (the stale count reads the seconds
    -- before the cutoff, not the devices).
    CREATE TABLE shoal_seen (
        second bigint NOT NULL,
        shard integer NOT NULL,
        n bigint NOT NULL,
        PRIMARY KEY (second, shard)
    );
    "#,
    // 2: rollouts (issue 15). The halt list: one state per commit, and one row holding the
    // list's serial (locked by every change, so changes are serialised across replicas and each
    // serial names one list). Adoption samples: devices on a commit per minute. Rollout counts
    // are `shoal_counter` rows of kind 'rollout'.
    r#"
    CREATE TABLE shoal_halt (
        commit_id text COLLATE "C" PRIMARY KEY,
        -- rollout::HaltState JSON.
        state bytea NOT NULL
    );
    CREATE TABLE shoal_halt_list (
        id integer PRIMARY KEY CHECK (id = 1),
        serial bigint NOT NULL,
        changed_at bigint NOT NULL
    );
    INSERT INTO shoal_halt_list (id, serial, changed_at) VALUES (1, 0, 0);
    CREATE TABLE shoal_adoption (
        commit_id text COLLATE "C" NOT NULL,
        minute bigint NOT NULL,
        devices bigint NOT NULL,
        PRIMARY KEY (commit_id, minute)
    );
    "#,
];

/// The version this binary writes.
pub fn current() -> i64 {
    MIGRATIONS.len() as i64
}

/// Serialises migrations between collectors starting at once (an arbitrary, fixed number).
pub const LOCK: i64 = 0x5_4a0a_1c01;
