//! The datastore: registration entries, attested nodes, federated bundles,
//! join tokens and the CA journal, behind one async trait with a change feed
//! the store owns.
//!
//! Contract every backend keeps (the conformance suite in
//! `server/tests/` checks each one):
//! - A write that returns `Ok` is durable and has moved the head [`Revision`]
//!   by exactly one per change, with its [`ChangeEvent`]s readable from
//!   [`DataStore::changes_since`] in revision order, written atomically with
//!   the data (no change without its event, no event without its change).
//! - Batches are all-or-nothing for the items that pass their rules: each
//!   item gets its own result, and a backend failure writes none of them.
//! - A record that does not decode is skipped by listings and snapshots and
//!   reported ([`Unreadable`]), never a failure of the whole listing.
//! - Backend errors are boxed ([`StoreError::Backend`] / `Unavailable`):
//!   nothing above this module names a backend's types.
//!
//! sled ([`SledStore`]) is the embedded default; PostgreSQL
//! ([`PostgresStore`]) is for several servers sharing one database.

pub(crate) mod bridge;
mod error;
mod model;
pub mod postgres;
mod rules;
mod sled;

pub use error::{BackendError, StoreError};
pub use model::{
    AttestedNode, Change, ChangeEvent, ChangesSince, EntryFilter, FederatesWithFilter,
    FederatesWithMatch, Page, PageRequest, Revision, Snapshot, Unreadable, DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
};
pub use postgres::{PostgresConfig, PostgresStore};
pub use rules::entry_identity_key;
pub(crate) use rules::validated_spec;
#[cfg(test)]
pub(crate) use sled::JournalFault;
pub use sled::{SledStore, DEFAULT_CACHE_BYTES as SLED_DEFAULT_CACHE_BYTES};

use async_trait::async_trait;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use tokio::sync::watch;

/// Most items in one batch call (entries created or deleted together).
pub const MAX_BATCH: usize = 10_000;

/// Most change events one [`DataStore::changes_since`] call returns.
pub const MAX_CHANGES_PER_READ: usize = 10_000;

/// One result per item of a batch, in the order given.
pub(crate) type BatchResults<T> = Vec<Result<T, StoreError>>;

/// Persistent state of the server. Every method that returns `Ok` after a
/// write has made it durable.
#[async_trait]
pub trait DataStore: Send + Sync + 'static {
    /// The backend's name (`sled`, `postgres`), for logs and health.
    fn backend(&self) -> &'static str;

    /// Validates and stores new entries in one transaction: each gets a fresh
    /// UUID v7 id, revision 0, `created_at` now. An item that breaks a rule
    /// (invalid, duplicate of a stored entry or of an earlier item) gets its
    /// error and is not written; the others are.
    async fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError>;

    /// One entry: [`create_entries`](Self::create_entries) with one item.
    async fn create_entry(&self, spec: EntrySpec) -> Result<RegistrationEntry, StoreError> {
        only(self.create_entries(vec![spec]).await?)
    }

    /// Replaces the operator fields of entry `id` and raises its revision by
    /// one; with `expected_revision`, refuses unless the entry is at it.
    async fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError>;

    /// Removes entries in one transaction and returns them; an id with no
    /// entry gets `EntryNotFound`.
    async fn delete_entries(
        &self,
        ids: Vec<String>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError>;

    /// One entry: [`delete_entries`](Self::delete_entries) with one id.
    async fn delete_entry(&self, id: &str) -> Result<RegistrationEntry, StoreError> {
        only(self.delete_entries(vec![id.to_owned()]).await?)
    }

    /// The entry `id`, if any.
    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError>;

    /// A page of the entries passing `filter`, ordered by id.
    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>, StoreError>;

    /// How many entries there are.
    async fn count_entries(&self) -> Result<u64, StoreError>;

    /// The node `id`, if any.
    async fn get_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError>;

    /// Records a successful attestation atomically: refused (`Banned`) if the
    /// node is banned; keeps `first_attested_at`. Returns what was stored.
    async fn record_attestation(&self, node: &AttestedNode) -> Result<AttestedNode, StoreError>;

    /// [`record_attestation`](Self::record_attestation) for a node that may attest only
    /// once: refused (`AlreadyAttested`) if the node is there, in the same transaction,
    /// so two exchanges replaying one piece of evidence cannot both succeed.
    async fn record_first_attestation(
        &self,
        node: &AttestedNode,
    ) -> Result<AttestedNode, StoreError>;

    /// Bans (or unbans) node `id`.
    async fn set_node_banned(
        &self,
        id: &SpiffeId,
        banned: bool,
    ) -> Result<AttestedNode, StoreError>;

    /// A page of the nodes, ordered by SPIFFE ID.
    async fn list_attested_nodes(
        &self,
        page: &PageRequest,
    ) -> Result<Page<AttestedNode>, StoreError>;

    /// Every banned node (served by an index: attestation checks it).
    async fn list_banned_nodes(&self) -> Result<Vec<AttestedNode>, StoreError>;

    /// Removes node `id` and returns it, if it was there.
    async fn delete_attested_node(&self, id: &SpiffeId)
        -> Result<Option<AttestedNode>, StoreError>;

    /// Stores (or replaces) the bundle of a federated trust domain.
    async fn put_federated_bundle(&self, bundle: &TrustBundle) -> Result<(), StoreError>;
    /// Stores `bundle` only if the stored bundle of its trust domain is still `expected`
    /// (`None`: there is none), compared as decoded; otherwise writes nothing, makes no
    /// event and fails with [`StoreError::FederatedBundleChanged`]. The federation poller
    /// judges a fetch against the bundle it read: an operator's `bundle set` or `bundle
    /// delete`, or another server's poller, that lands during the fetch must not be
    /// overwritten by a judgement of what is no longer stored.
    async fn replace_federated_bundle(
        &self,
        expected: Option<&TrustBundle>,
        bundle: &TrustBundle,
    ) -> Result<(), StoreError>;
    /// The bundle of `td`, if any.
    async fn get_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<TrustBundle>, StoreError>;
    /// Every federated bundle, ordered by trust domain.
    async fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError>;
    /// Removes the bundle of `td`; whether there was one.
    async fn delete_federated_bundle(&self, td: &TrustDomain) -> Result<bool, StoreError>;

    /// The CA journal is opaque bytes to the store (the CA module owns its format).
    async fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the CA journal with `bytes` if the stored journal is still `expected`, byte
    /// for byte (`None`: there is none yet); otherwise writes nothing and fails with
    /// [`StoreError::CaJournalChanged`]. A compare-and-swap: of several servers that rotate
    /// from the same journal at once exactly one writes, and the others read the winner's.
    async fn replace_ca_journal(
        &self,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), StoreError>;

    /// Records a join token by its SHA-256 (the token itself is never stored).
    async fn put_join_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// Removes a join token and returns its expiry: each token is used once.
    async fn take_join_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError>;

    /// The head revision, updated whenever a write (by this server or, on a
    /// shared database, another) is acknowledged.
    fn watch_head(&self) -> watch::Receiver<Revision>;

    /// The changes after `after`, at most `limit` (capped at
    /// [`MAX_CHANGES_PER_READ`]), oldest first.
    async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<ChangesSince, StoreError>;

    /// Every entry, node and federated bundle at one revision.
    async fn snapshot(&self) -> Result<Snapshot, StoreError>;
}

/// The single result of a one-item batch.
fn only<T>(mut results: BatchResults<T>) -> Result<T, StoreError> {
    match results.pop() {
        Some(r) if results.is_empty() => r,
        _ => Err(StoreError::Encode {
            what: "batch result".into(),
            reason: "a one-item batch did not return one result".into(),
        }),
    }
}
