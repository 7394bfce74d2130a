//! The datastore: registration entries, attested nodes, federated bundles and
//! the CA journal. `DataStore` is the seam for a shared database later; sled
//! ([`SledStore`]) is the embedded default.

mod sled_store;

pub use sled_store::SledStore;

use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{EntryError, EntrySpec, RegistrationEntry};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The entry breaks a rule of [`EntrySpec::validate`].
    #[error("invalid entry: {0}")]
    InvalidEntry(#[from] EntryError),
    /// Another entry has the same SPIFFE ID, parent ID and selectors.
    #[error("entry {existing_id} already has the same spiffe_id, parent_id and selectors")]
    DuplicateEntry { existing_id: String },
    /// No entry has this id.
    #[error("no entry with id '{id}'")]
    EntryNotFound { id: String },
    /// An update named a revision the entry is no longer at.
    #[error("entry '{id}' is at revision {actual}, not the expected {expected}")]
    RevisionMismatch {
        id: String,
        expected: i64,
        actual: i64,
    },
    /// The node is banned.
    #[error("{id} is banned; evict it before it may attest again")]
    Banned { id: String },
    /// No attested node has this SPIFFE ID.
    #[error("no attested agent '{id}'")]
    NodeNotFound { id: String },
    /// The server's own bundle comes from its CA, never from the store.
    #[error("'{trust_domain}' is this server's own trust domain, not a federated one")]
    OwnTrustDomain { trust_domain: String },
    /// The store on disk belongs to another trust domain.
    #[error("the store belongs to trust domain '{stored}', but the server is configured for '{configured}'")]
    TrustDomainMismatch { stored: String, configured: String },
    /// The store on disk was written by an incompatible version.
    #[error("the store has schema version '{found}'; this server reads version {supported}")]
    UnsupportedSchema { found: String, supported: u32 },
    /// A stored value does not decode.
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt { what: String, reason: String },
    /// A value does not encode (should not happen for these types).
    #[error("cannot encode {what}: {reason}")]
    Encode { what: String, reason: String },
    /// The storage engine failed (I/O, lock held by another process, ...).
    #[error("store I/O failed: {0}")]
    Sled(#[from] sled::Error),
}

/// Which entries to list. Empty filters match everything; set filters must
/// all match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Entries with exactly this SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Entries with exactly this parent ID.
    pub parent_id: Option<SpiffeId>,
    /// Entries whose selectors include all of these.
    pub selectors_superset_of: Vec<Selector>,
}

impl EntryFilter {
    /// Whether `e` passes the filter.
    pub fn matches(&self, e: &RegistrationEntry) -> bool {
        self.spiffe_id
            .as_ref()
            .is_none_or(|id| id == &e.spec.spiffe_id)
            && self
                .parent_id
                .as_ref()
                .is_none_or(|id| id == &e.spec.parent_id)
            && Selector::all_in(&self.selectors_superset_of, &e.spec.selectors)
    }
}

/// A node that passed attestation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestedNode {
    /// The agent's SPIFFE ID (`spiffe://<td>/spire/agent/<attestor>/<id>`).
    pub spiffe_id: SpiffeId,
    /// The attestor that vouched for it (`tpm`, `tpm_devid`, ...).
    pub attestor: String,
    /// What attestation proved about the node.
    pub selectors: Vec<Selector>,
    /// Serial number of the agent's current SVID.
    pub serial_number: String,
    /// Unix seconds when that SVID expires.
    pub expires_at: i64,
    /// A banned node may not attest again until unbanned.
    pub banned: bool,
    /// Unix seconds.
    pub first_attested_at: i64,
    /// Unix seconds.
    pub last_attested_at: i64,
}

/// Persistent state of the server. Every method that returns `Ok` after a
/// write has made it durable.
pub trait DataStore: Send + Sync + 'static {
    /// Validates and stores a new entry: a fresh UUID v4 id, revision 0,
    /// `created_at` now.
    fn create_entry(&self, spec: EntrySpec) -> Result<RegistrationEntry, StoreError>;
    /// Replaces the operator fields of entry `id` and raises its revision by
    /// one; with `expected_revision`, refuses unless the entry is at it.
    fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError>;
    /// Removes entry `id` and returns it.
    fn delete_entry(&self, id: &str) -> Result<RegistrationEntry, StoreError>;
    /// The entry `id`, if any.
    fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError>;
    /// The entries passing `filter`, ordered by id.
    fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<RegistrationEntry>, StoreError>;
    /// How many entries there are.
    fn count_entries(&self) -> Result<u64, StoreError>;

    /// Stores (or replaces) the node with `node.spiffe_id`.
    fn put_attested_node(&self, node: &AttestedNode) -> Result<(), StoreError>;
    /// The node `id`, if any.
    fn get_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError>;
    /// Records a successful attestation atomically: refused (`Banned`) if the
    /// node is banned; keeps `first_attested_at`. Returns what was stored.
    fn record_attestation(&self, node: &AttestedNode) -> Result<AttestedNode, StoreError>;
    /// Bans (or unbans) node `id`.
    fn set_node_banned(&self, id: &SpiffeId, banned: bool) -> Result<AttestedNode, StoreError>;
    /// Every node, ordered by SPIFFE ID.
    fn list_attested_nodes(&self) -> Result<Vec<AttestedNode>, StoreError>;
    /// Removes node `id` and returns it, if it was there.
    fn delete_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError>;

    /// Stores (or replaces) the bundle of a federated trust domain.
    fn put_federated_bundle(&self, bundle: &TrustBundle) -> Result<(), StoreError>;
    /// The bundle of `td`, if any.
    fn get_federated_bundle(&self, td: &TrustDomain) -> Result<Option<TrustBundle>, StoreError>;
    /// Every federated bundle, ordered by trust domain.
    fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError>;
    /// Removes the bundle of `td`; whether there was one.
    fn delete_federated_bundle(&self, td: &TrustDomain) -> Result<bool, StoreError>;

    /// The CA journal is opaque bytes to the store (the CA module owns its format).
    fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError>;
    /// Replaces the CA journal.
    fn put_ca_journal(&self, bytes: &[u8]) -> Result<(), StoreError>;

    /// Records a join token by its SHA-256 (the token itself is never stored).
    fn put_join_token(&self, token_hash: &[u8; 32], expires_at: i64) -> Result<(), StoreError>;
    /// Removes a join token and returns its expiry: each token is used once.
    fn take_join_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError>;
}
