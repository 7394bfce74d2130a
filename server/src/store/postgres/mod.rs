//! [`DataStore`] on PostgreSQL: the store of a server cluster, several
//! servers of one trust domain sharing one database.
//!
//! Layout (`schema.rs`): `entries` (JSON beside the indexed `spiffe_id`,
//! `parent_id` and unique `identity_key` columns), `nodes` (JSON, `banned`
//! with a partial index), `federated_bundles`, `ca_journal`, `join_tokens`,
//! `change_events` (revision -> JSON change) and `store_head`, the one row
//! that hands out revisions (`write.rs` says why a row and not a sequence).
//!
//! The feed: each write transaction notifies `ironroot_changes` with its new
//! head; every server listens on a connection of its own (`listener.rs`) and
//! moves its [`watch_head`](DataStore::watch_head), so a write by one server
//! reaches the others' caches through `changes_since`.
//!
//! Failures: a database that is down, a pool with no free connection, a
//! connection lost mid-call are `StoreError::Unavailable` within the pool's
//! timeouts; the same handle works again once the database is back.

mod connect;
mod entries;
mod listener;
mod ops;
mod schema;
mod tls;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::warn;

use connect::{pg_err, pool_err};
pub use connect::{PasswordSource, PostgresConfig, PostgresTarget};
pub(crate) use connect::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_PORT, DEFAULT_STATEMENT_TIMEOUT,
    DEFAULT_WAIT_TIMEOUT,
};
pub use tls::PostgresTls;

use super::{
    AttestedNode, BatchResults, ChangesSince, DataStore, EntryFilter, Page, PageRequest, Revision,
    Snapshot, StoreError,
};

const BACKEND: &str = "postgres";

/// The channel every write notifies with its new head.
pub(crate) const NOTIFY_CHANNEL: &str = "ironroot_changes";

/// Change events kept for servers catching up (as sled keeps): a server
/// further behind, or down for longer, reloads a snapshot.
pub(crate) const DEFAULT_CHANGES_KEPT: u64 = 100_000;

/// The PostgreSQL-backed store. Dropping it stops its feed listener and
/// closes its connections.
pub struct PostgresStore {
    inner: Inner,
    listener: JoinHandle<()>,
}

struct Inner {
    pool: Pool,
    trust_domain: TrustDomain,
    changes_kept: u64,
    /// Moved by this server's writes and by the listener (others' writes);
    /// only ever forward.
    head: Arc<watch::Sender<Revision>>,
}

impl PostgresStore {
    /// Connects, brings the schema to this build's version, records (or
    /// checks) the trust domain, and starts the feed listener. Refuses a
    /// database of another trust domain or a newer schema; a database that
    /// cannot be reached is `Unavailable`. Must run inside a tokio runtime,
    /// which the listener then runs on.
    pub async fn open(
        config: &PostgresConfig,
        trust_domain: TrustDomain,
    ) -> Result<Self, StoreError> {
        let client_config = config.client_config()?;
        let connector = config.connector()?;
        let pool = config.pool(client_config.clone(), connector.clone())?;
        let mut client = pool.get().await.map_err(pool_err)?;
        schema::prepare(&mut client, trust_domain.as_str()).await?;
        let head = read_head(&client).await?;
        drop(client);
        let head = Arc::new(watch::Sender::new(head));
        let listener = tokio::spawn(listener::run(client_config, connector, head.clone()));
        Ok(PostgresStore {
            inner: Inner {
                pool,
                trust_domain,
                changes_kept: config.changes_kept,
                head,
            },
            listener,
        })
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.inner.pool.close();
    }
}

impl Inner {
    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_err)
    }

    /// A committed write's head, unless the listener already saw a later one.
    fn announce(&self, head: Revision) {
        advance(&self.head, head);
    }
}

/// Moves `head` forward to `to` (never back: notices and own commits may
/// arrive in any order).
fn advance(head: &watch::Sender<Revision>, to: Revision) {
    head.send_if_modified(|h| {
        if to > *h {
            *h = to;
            true
        } else {
            false
        }
    });
}

async fn read_head(client: &tokio_postgres::Client) -> Result<Revision, StoreError> {
    let row = client
        .query_one("SELECT revision FROM store_head WHERE id = 1", &[])
        .await
        .map_err(pg_err)?;
    write::revision(row.try_get(0).map_err(pg_err)?)
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Encode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// `text` decoded, or `None` after logging why not (listings skip a bad
/// record rather than fail).
fn readable<T: DeserializeOwned>(what: &'static str, key: &str, text: &str) -> Option<T> {
    match decode(what, text) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(key, "{e}; skipped");
            None
        }
    }
}

#[async_trait]
impl DataStore for PostgresStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        self.inner.create_entries(specs).await
    }

    async fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        self.inner.update_entry(id, spec, expected_revision).await
    }

    async fn delete_entries(
        &self,
        ids: Vec<String>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        self.inner.delete_entries(ids).await
    }

    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        self.inner.get_entry(id).await
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>, StoreError> {
        self.inner.list_entries(filter, page).await
    }

    async fn count_entries(&self) -> Result<u64, StoreError> {
        self.inner.count_entries().await
    }

    async fn get_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError> {
        self.inner.get_attested_node(id).await
    }

    async fn record_attestation(&self, node: &AttestedNode) -> Result<AttestedNode, StoreError> {
        self.inner.record_attestation(node, false).await
    }

    async fn record_first_attestation(
        &self,
        node: &AttestedNode,
    ) -> Result<AttestedNode, StoreError> {
        self.inner.record_attestation(node, true).await
    }

    async fn set_node_banned(
        &self,
        id: &SpiffeId,
        banned: bool,
    ) -> Result<AttestedNode, StoreError> {
        self.inner.set_node_banned(id, banned).await
    }

    async fn list_attested_nodes(
        &self,
        page: &PageRequest,
    ) -> Result<Page<AttestedNode>, StoreError> {
        self.inner.list_attested_nodes(page).await
    }

    async fn list_banned_nodes(&self) -> Result<Vec<AttestedNode>, StoreError> {
        self.inner.list_banned_nodes().await
    }

    async fn delete_attested_node(
        &self,
        id: &SpiffeId,
    ) -> Result<Option<AttestedNode>, StoreError> {
        self.inner.delete_attested_node(id).await
    }

    async fn put_federated_bundle(&self, bundle: &TrustBundle) -> Result<(), StoreError> {
        self.inner.replace_federated_bundle(None, bundle).await
    }

    async fn replace_federated_bundle(
        &self,
        expected: Option<&TrustBundle>,
        bundle: &TrustBundle,
    ) -> Result<(), StoreError> {
        self.inner
            .replace_federated_bundle(Some(expected), bundle)
            .await
    }

    async fn get_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<TrustBundle>, StoreError> {
        self.inner.get_federated_bundle(td).await
    }

    async fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError> {
        self.inner.list_federated_bundles().await
    }

    async fn delete_federated_bundle(&self, td: &TrustDomain) -> Result<bool, StoreError> {
        self.inner.delete_federated_bundle(td).await
    }

    async fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get_ca_journal().await
    }

    async fn replace_ca_journal(
        &self,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.inner.replace_ca_journal(expected, bytes).await
    }

    async fn put_join_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.inner.put_join_token(token_hash, expires_at).await
    }

    async fn take_join_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError> {
        self.inner.take_join_token(token_hash).await
    }

    fn watch_head(&self) -> watch::Receiver<Revision> {
        self.inner.head.subscribe()
    }

    async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<ChangesSince, StoreError> {
        self.inner.changes_since(after, limit).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.inner.snapshot().await
    }
}
