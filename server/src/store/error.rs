//! Why a store operation failed. Callers branch on the variant: the rule
//! variants (`DuplicateEntry`, `Banned`, ...) are the caller's fault and map to
//! gRPC statuses that name the rule; `Unavailable` is the backend's and says
//! the operation may work later; `Corrupt` and `Backend` are the operator's
//! to look at.

use ironroot_api::entry::EntryError;
use ironroot_runtime::report::Chain;

/// A backend's own error (sled's, PostgreSQL's), kept as the source so the
/// trait does not name any backend's types.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The entry breaks a rule of [`EntrySpec::validate`](ironroot_api::entry::EntrySpec::validate).
    #[error("invalid entry: {0}")]
    InvalidEntry(#[from] EntryError),
    /// Another entry has the same SPIFFE ID, parent ID and selectors.
    #[error("entry {existing_id} already has the same spiffe_id, parent_id and selectors")]
    DuplicateEntry {
        /// The entry that is already there.
        existing_id: String,
    },
    /// No entry has this id.
    #[error("no entry with id '{id}'")]
    EntryNotFound {
        /// The id asked for.
        id: String,
    },
    /// An update named a revision the entry is no longer at.
    #[error("entry '{id}' is at revision {actual}, not the expected {expected}")]
    RevisionMismatch {
        /// The entry.
        id: String,
        /// The revision the caller last saw.
        expected: i64,
        /// The revision it is at.
        actual: i64,
    },
    /// The node is banned.
    #[error("{id} is banned; evict it before it may attest again")]
    Banned {
        /// The node's SPIFFE ID.
        id: String,
    },
    /// The node is already attested and its attestor attests a node only once (trust on
    /// first use: `aws_iid`, `gcp_iit`, `azure_msi`, `azure_imds`).
    #[error(
        "{id} is already attested and its attestor attests a node only once (the same \
         evidence replayed gives the same agent ID): evict it first with \
         `ironroot-server agent evict --spiffe-id {id}` if this is the same node attesting again"
    )]
    AlreadyAttested {
        /// The node's SPIFFE ID.
        id: String,
    },
    /// No attested node has this SPIFFE ID.
    #[error("no attested agent '{id}'")]
    NodeNotFound {
        /// The SPIFFE ID asked for.
        id: String,
    },
    /// The server's own bundle comes from its CA, never from the store.
    #[error("'{trust_domain}' is this server's own trust domain, not a federated one")]
    OwnTrustDomain {
        /// The server's trust domain.
        trust_domain: String,
    },
    /// A batch is larger than the store takes in one transaction.
    #[error("{count} items in one batch; the limit is {max}")]
    BatchTooLarge {
        /// Items asked for.
        count: usize,
        /// [`MAX_BATCH`](super::MAX_BATCH).
        max: usize,
    },
    /// A page token that this store did not hand out (or for another listing).
    #[error("page token '{token}' is not valid here: start again without one")]
    BadPageToken {
        /// The token given.
        token: String,
    },
    /// A conditional write of the CA journal found another journal than the one it was
    /// based on: another server of the cluster wrote it first.
    #[error(
        "the CA journal changed since it was read (another server of the trust domain \
         rotated first): read it again"
    )]
    CaJournalChanged,
    /// A conditional write of a federated bundle found another bundle (or none) than the
    /// one it was judged against: an operator or another server changed it meanwhile.
    #[error(
        "the stored bundle of {trust_domain} changed while this write was being decided (an \
         operator's bundle set or delete, or another server's refresh): read it again"
    )]
    FederatedBundleChanged {
        /// The federated trust domain.
        trust_domain: String,
    },
    /// The store belongs to another trust domain.
    #[error("the store belongs to trust domain '{stored}', but the server is configured for '{configured}'")]
    TrustDomainMismatch {
        /// The trust domain written in the store.
        stored: String,
        /// The server's.
        configured: String,
    },
    /// The store was written by an incompatible version.
    #[error("the store has schema version '{found}'; this server reads version {supported}")]
    UnsupportedSchema {
        /// The version written in the store.
        found: String,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// A stored value does not decode.
    #[error("stored {what} is unreadable: {reason}")]
    Corrupt {
        /// What it should have been (`entry 1234…`, `attested node`, …).
        what: String,
        /// Why it does not decode.
        reason: String,
    },
    /// A value does not encode (should not happen for these types).
    #[error("cannot encode {what}: {reason}")]
    Encode {
        /// What was being encoded.
        what: String,
        /// Why it failed.
        reason: String,
    },
    /// The backend cannot be reached now (database down, pool exhausted,
    /// timeout): nothing was written; the same call may work later.
    #[error("the {backend} store is unavailable: {}", Chain(source.as_ref()))]
    Unavailable {
        /// `sled`, `postgres`.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
    /// The backend failed otherwise (I/O, a lock held by another process, a
    /// constraint the store did not expect).
    #[error("the {backend} store failed: {}", Chain(source.as_ref()))]
    Backend {
        /// `sled`, `postgres`.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: BackendError,
    },
}

impl StoreError {
    /// Wraps a backend's error.
    pub(crate) fn backend(backend: &'static str, source: impl Into<BackendError>) -> Self {
        StoreError::Backend {
            backend,
            source: source.into(),
        }
    }

    /// Whether the operation may succeed if tried again later unchanged.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable { .. })
    }
}
