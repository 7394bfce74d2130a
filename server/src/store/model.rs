//! What the store holds and hands out, apart from the entry types of
//! `ironroot_api::entry`: attested nodes, list filters and pages, and the
//! change feed's events.

use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::RegistrationEntry;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::{Deserialize, Serialize};

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

/// Which entries to list. Empty filters match everything; set filters must
/// all match. `spiffe_id` and `parent_id` are served by indexes; the selector
/// filter is applied to what they leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryFilter {
    /// Entries with exactly this SPIFFE ID.
    pub spiffe_id: Option<SpiffeId>,
    /// Entries with exactly this parent ID.
    pub parent_id: Option<SpiffeId>,
    /// Entries whose selectors include all of these.
    pub selectors_superset_of: Vec<Selector>,
    /// Entries whose `federates_with` relates to these trust domains as it says (not
    /// served by an index: applied to what the other filters leave).
    pub federates_with: Option<FederatesWithFilter>,
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
            && self
                .federates_with
                .as_ref()
                .is_none_or(|f| f.matches(&e.spec.federates_with))
    }
}

/// How an entry's `federates_with` must relate to a filter's trust domains (SPIRE's
/// `-matchFederatesWithOn`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FederatesWithMatch {
    /// It names every one of them, and maybe others (SPIRE's default).
    #[default]
    Superset,
    /// It names exactly them.
    Exact,
    /// It names at least one of them.
    Any,
    /// It names some of them and no other (an entry that federates with nothing is left out).
    Subset,
}

/// A filter on entries' `federates_with`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FederatesWithFilter {
    /// The trust domains (at least one).
    pub trust_domains: Vec<TrustDomain>,
    /// How an entry's list must relate to them.
    pub match_on: FederatesWithMatch,
}

impl FederatesWithFilter {
    /// Whether an entry federating with `entry` passes.
    pub fn matches(&self, entry: &[TrustDomain]) -> bool {
        let wanted = |td: &TrustDomain| self.trust_domains.contains(td);
        match self.match_on {
            FederatesWithMatch::Superset => self.trust_domains.iter().all(|td| entry.contains(td)),
            FederatesWithMatch::Exact => {
                entry.iter().all(wanted) && self.trust_domains.iter().all(|td| entry.contains(td))
            }
            FederatesWithMatch::Any => entry.iter().any(wanted),
            FederatesWithMatch::Subset => !entry.is_empty() && entry.iter().all(wanted),
        }
    }
}

/// Most items in one page, whatever the caller asks for.
pub const MAX_PAGE_SIZE: usize = 10_000;
/// Items in a page when the caller does not say.
pub const DEFAULT_PAGE_SIZE: usize = 1_000;

/// One page of a listing: at most `size` items after the key `after`
/// (keyset pagination: a write between two pages neither repeats nor skips
/// an item that stayed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// The token of the previous page ([`Page::next`]); `None` for the first.
    pub after: Option<String>,
    /// Items wanted; 0 means [`DEFAULT_PAGE_SIZE`], more than
    /// [`MAX_PAGE_SIZE`] means that.
    pub size: usize,
}

impl PageRequest {
    /// Everything, in pages of the largest size (for callers that need all).
    pub fn first(size: usize) -> Self {
        PageRequest { after: None, size }
    }

    /// The page size this request gets.
    pub(crate) fn effective_size(&self) -> usize {
        match self.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        }
    }
}

/// A page of a listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The token for the next page; `None` on the last.
    pub next: Option<String>,
}

/// A position in the store's history: every acknowledged write moves the
/// head by one. Revisions are totally ordered across every server of a
/// cluster (the store hands them out), so "everything after N" is exact.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Revision(pub u64);

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// What one write changed. Puts carry the whole stored value, so a cache
/// follows the feed without reading the store again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Change {
    /// An entry was created or updated; this is what is stored now.
    EntryPut {
        /// The entry.
        entry: RegistrationEntry,
    },
    /// An entry was deleted.
    EntryDeleted {
        /// Its id.
        id: String,
    },
    /// A node attested, was banned or unbanned; this is what is stored now.
    NodePut {
        /// The node.
        node: AttestedNode,
    },
    /// A node was evicted.
    NodeDeleted {
        /// Its SPIFFE ID.
        id: SpiffeId,
    },
    /// A federated bundle was set.
    BundlePut {
        /// The bundle.
        bundle: TrustBundle,
    },
    /// A federated bundle was removed.
    BundleDeleted {
        /// Its trust domain.
        trust_domain: TrustDomain,
    },
    /// The CA journal was replaced (another server rotated).
    CaJournal,
}

/// A change with its place in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeEvent {
    /// The revision this write made.
    pub revision: Revision,
    /// What it changed.
    pub change: Change,
}

/// The answer to "what changed after revision N".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangesSince {
    /// Every change after N, in order (up to the limit asked for; ask again
    /// after the last one for more).
    Events(Vec<ChangeEvent>),
    /// The store no longer keeps the history back to N (it keeps a bounded
    /// window): the caller must start again from a [`Snapshot`].
    Truncated {
        /// The oldest revision still kept.
        oldest: Revision,
    },
}

/// A record the store holds but cannot decode. Listings and snapshots skip
/// it and report it here, so one bad record is an operator's task, not a
/// fleet-wide outage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// What it should have been (`entry`, `attested node`, `federated bundle`).
    pub(crate) what: &'static str,
    /// Its key in the store.
    pub key: String,
    /// Why it does not decode.
    pub(crate) reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} '{}' is unreadable: {}",
            self.what, self.key, self.reason
        )
    }
}

/// Everything a server's caches start from, read at one revision.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The revision the snapshot is at: follow the feed from here.
    pub revision: Revision,
    /// Every readable entry.
    pub entries: Vec<RegistrationEntry>,
    /// Every readable attested node.
    pub nodes: Vec<AttestedNode>,
    /// Every readable federated bundle.
    pub bundles: Vec<TrustBundle>,
    /// What was skipped.
    pub unreadable: Vec<Unreadable>,
}
