//! The tables, their migrations, and the checks made once when a server
//! opens the database.
//!
//! Migrations are numbered and recorded in `schema_migrations`; each runs in
//! the one transaction that records it, under an advisory lock, so servers
//! starting at once apply each exactly once and a crash leaves the previous
//! version intact. A database recorded at a version newer than this build
//! knows is refused (an older build would misread it).

use deadpool_postgres::Object;

use super::connect::pg_err;
use crate::store::StoreError;

/// The version this build reads and writes: the last migration.
pub(super) const SCHEMA_VERSION: u32 = 2;

/// Held (for the transaction) by whoever checks or migrates the schema.
/// "ironroot" in ASCII: any fixed number no other application of the
/// database uses.
const MIGRATION_LOCK: i64 = 0x6972_6f6e_726f_6f74;

/// `(version, what it does, SQL)`, in order.
const MIGRATIONS: &[(u32, &str, &str)] = &[
    (1, "entries, nodes, bundles, feed", V1),
    (2, "entries' federates_with", V2),
];

/// Keys and ids use the "C" collation: byte order, as keyset pages expect,
/// whatever locale the database was created with. Records are JSON, as in
/// the change events, with the columns the indexes need beside them.
const V1: &str = r#"
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- The head revision, one row. Every write that changes something locks it
-- first and raises it by its number of changes before commit: writers are
-- serialized cluster-wide and revisions commit gap-free and in order.
CREATE TABLE store_head (
    id       SMALLINT PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL CHECK (revision >= 0)
);
INSERT INTO store_head (id, revision) VALUES (1, 0);

CREATE TABLE entries (
    id           TEXT COLLATE "C" PRIMARY KEY,
    spiffe_id    TEXT COLLATE "C" NOT NULL,
    parent_id    TEXT COLLATE "C" NOT NULL,
    -- SHA-256 of SPIFFE ID, parent ID and sorted selectors (rules.rs).
    identity_key BYTEA NOT NULL,
    data         JSONB NOT NULL,
    CONSTRAINT entries_identity_key UNIQUE (identity_key)
);
CREATE INDEX entries_by_parent ON entries (parent_id, id);
CREATE INDEX entries_by_spiffe_id ON entries (spiffe_id, id);

CREATE TABLE nodes (
    spiffe_id TEXT COLLATE "C" PRIMARY KEY,
    banned    BOOLEAN NOT NULL,
    data      JSONB NOT NULL
);
-- Attestation checks bans; few nodes are banned.
CREATE INDEX nodes_banned ON nodes (spiffe_id) WHERE banned;

CREATE TABLE federated_bundles (
    trust_domain TEXT COLLATE "C" PRIMARY KEY,
    data         JSONB NOT NULL
);

CREATE TABLE ca_journal (
    id      SMALLINT PRIMARY KEY CHECK (id = 1),
    journal BYTEA NOT NULL
);

CREATE TABLE join_tokens (
    token_hash BYTEA PRIMARY KEY,
    expires_at BIGINT NOT NULL
);

CREATE TABLE change_events (
    revision BIGINT PRIMARY KEY,
    change   JSONB NOT NULL
);
"#;

/// Entries gained `federates_with` (a JSON array of trust domain names in
/// `data`, absent when empty, so rows written by version 1 read as federating
/// with nothing and need no rewrite). The version is what matters: a build of
/// version 1 would read and rewrite these rows without the field and serve
/// every federated bundle to every workload, so it must refuse this database
/// (it does: a newer version is `UnsupportedSchema`). The constraint keeps the
/// field's shape in the database itself.
const V2: &str = r#"
ALTER TABLE entries ADD CONSTRAINT entries_federates_with_is_a_list
    CHECK (jsonb_typeof(coalesce(data -> 'federates_with', '[]'::jsonb)) = 'array');
"#;

/// Brings the database to [`SCHEMA_VERSION`] and records (or checks) its
/// trust domain, in one transaction.
pub(super) async fn prepare(client: &mut Object, trust_domain: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await.map_err(pg_err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err)?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             version     INTEGER PRIMARY KEY,
             description TEXT NOT NULL,
             applied_at  TIMESTAMPTZ NOT NULL DEFAULT now()
         )",
    )
    .await
    .map_err(pg_err)?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM schema_migrations", &[])
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    let found = found.unwrap_or(0);
    if i64::from(found) > i64::from(SCHEMA_VERSION) || found < 0 {
        return Err(StoreError::UnsupportedSchema {
            found: found.to_string(),
            supported: SCHEMA_VERSION,
        });
    }
    for (version, description, sql) in MIGRATIONS {
        let v = i32::try_from(*version).map_err(|e| StoreError::backend(super::BACKEND, e))?;
        if v <= found {
            continue;
        }
        tx.batch_execute(sql).await.map_err(pg_err)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, description) VALUES ($1, $2)",
            &[&v, description],
        )
        .await
        .map_err(pg_err)?;
        tracing::info!(version, description, "postgres store migrated");
    }
    tx.execute(
        "INSERT INTO store_meta (key, value) VALUES ('trust_domain', $1)
         ON CONFLICT (key) DO NOTHING",
        &[&trust_domain],
    )
    .await
    .map_err(pg_err)?;
    let stored: String = tx
        .query_one(
            "SELECT value FROM store_meta WHERE key = 'trust_domain'",
            &[],
        )
        .await
        .map_err(pg_err)?
        .try_get(0)
        .map_err(pg_err)?;
    if stored != trust_domain {
        return Err(StoreError::TrustDomainMismatch {
            stored,
            configured: trust_domain.to_owned(),
        });
    }
    tx.commit().await.map_err(pg_err)
}
