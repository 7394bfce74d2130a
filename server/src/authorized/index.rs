//! The server's in-memory view of entries, nodes and federated bundles, kept
//! from a snapshot plus the change feed, and the one question agents ask of
//! it: which entries may this agent serve?
//!
//! Pure (no I/O, no clock): the follower feeds it, tests and the fuzzer
//! drive it directly. Invariants:
//! - after `load(snapshot at R)` and `apply` of every event after R, the
//!   index answers exactly what a scan of the store at the same revision
//!   would (`authorized_scan` is that scan, kept as the reference);
//! - an agent's answer costs O(its entries + its alias candidates), never
//!   O(all entries).

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::RegistrationEntry;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};

use crate::store::{AttestedNode, Change, ChangeEvent, Revision, Snapshot, Unreadable};

/// An entry as the index holds it: shared (responses clone the `Arc`), with
/// the revision that last wrote it (what a delta sync compares against).
///
/// Hashed and compared by the entry's id alone, and borrowed as it, so the set of
/// entries is looked up by id without holding a copy of every id as its key.
#[derive(Debug, Clone)]
pub(crate) struct IndexedEntry {
    /// The entry.
    pub(crate) entry: Arc<RegistrationEntry>,
    /// The store revision of its last create or update.
    pub(crate) changed_at: Revision,
}

impl Borrow<str> for IndexedEntry {
    fn borrow(&self) -> &str {
        &self.entry.id
    }
}

impl Hash for IndexedEntry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes, which `Borrow<str>` requires.
        self.entry.id.as_str().hash(state);
    }
}

impl PartialEq for IndexedEntry {
    fn eq(&self, other: &Self) -> bool {
        self.entry.id == other.entry.id
    }
}

impl Eq for IndexedEntry {}

/// An entry in one of the index's listings (by parent, by alias selector): the entry
/// shared, ordered, hashed and compared by its id as `str` is, so a listing costs a
/// pointer per entry rather than a copy of its id (100,000 entries hold ~10 MB less).
#[derive(Debug, Clone)]
struct ById(Arc<RegistrationEntry>);

impl ById {
    fn id(&self) -> &str {
        &self.0.id
    }
}

impl Borrow<str> for ById {
    fn borrow(&self) -> &str {
        self.id()
    }
}

impl Hash for ById {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id().hash(state);
    }
}

impl PartialEq for ById {
    fn eq(&self, other: &Self) -> bool {
        self.id() == other.id()
    }
}

impl Eq for ById {}

impl PartialOrd for ById {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ById {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id().cmp(other.id())
    }
}

/// What an applied event touched, so the caller can wake exactly the agents
/// concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Touched {
    /// Parents (agent or alias IDs) whose entries changed.
    pub(crate) parents: BTreeSet<SpiffeId>,
    /// An alias entry (child of the server) changed: which agents it covers
    /// is a question of selectors, so every agent must look.
    pub(crate) aliases: bool,
    /// Nodes that were put or deleted.
    pub(crate) nodes: BTreeSet<SpiffeId>,
    /// A federated bundle changed.
    pub(crate) bundles: bool,
    /// The CA journal changed (another server rotated).
    pub(crate) ca: bool,
}

impl Touched {
    fn merge(&mut self, other: Touched) {
        self.parents.extend(other.parents);
        self.nodes.extend(other.nodes);
        self.aliases |= other.aliases;
        self.bundles |= other.bundles;
        self.ca |= other.ca;
    }
}

/// Why events could not be applied: the index must be reloaded from a
/// snapshot (the caller does so; nothing is served from a gap).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum IndexError {
    /// An event skips revisions: some change would be missed.
    #[error("change feed gap: at revision {at}, next event is {next}")]
    Gap {
        /// The index's revision.
        at: Revision,
        /// The revision of the event offered.
        next: Revision,
    },
}

/// The index.
#[derive(Debug)]
pub(crate) struct EntryIndex {
    server_id: SpiffeId,
    revision: Revision,
    /// Every entry, found by id.
    entries: HashSet<IndexedEntry>,
    by_parent: HashMap<SpiffeId, BTreeSet<ById>>,
    /// For each selector, the alias entries (children of the server) that
    /// carry it: a node's candidate aliases come from its own selectors.
    alias_by_selector: HashMap<Selector, HashSet<ById>>,
    /// SPIFFE IDs of the alias entries, with how many entries carry each:
    /// a change under one of them concerns every agent the alias covers.
    alias_ids: HashMap<SpiffeId, usize>,
    nodes: HashMap<SpiffeId, AttestedNode>,
    bundles: BTreeMap<TrustDomain, TrustBundle>,
    unreadable: Vec<Unreadable>,
}

impl EntryIndex {
    /// An index of `snapshot`, for the trust domain whose server is `server_id`.
    pub(crate) fn load(server_id: SpiffeId, snapshot: Snapshot) -> Self {
        let mut ix = EntryIndex {
            server_id,
            revision: snapshot.revision,
            entries: HashSet::with_capacity(snapshot.entries.len()),
            by_parent: HashMap::new(),
            alias_by_selector: HashMap::new(),
            alias_ids: HashMap::new(),
            nodes: HashMap::with_capacity(snapshot.nodes.len()),
            bundles: BTreeMap::new(),
            unreadable: snapshot.unreadable,
        };
        for e in snapshot.entries {
            // The snapshot does not say when each entry last changed: its
            // revision is the upper bound, so a delta from before it
            // includes them all (correct, at worst a little more data).
            ix.put_entry(e, snapshot.revision);
        }
        for n in snapshot.nodes {
            ix.nodes.insert(n.spiffe_id.clone(), n);
        }
        for b in snapshot.bundles {
            ix.bundles.insert(b.trust_domain.clone(), b);
        }
        ix
    }

    /// The store revision the index reflects.
    pub(crate) fn revision(&self) -> Revision {
        self.revision
    }

    /// Records the snapshot could not decode (for health).
    pub(crate) fn unreadable(&self) -> &[Unreadable] {
        &self.unreadable
    }

    /// How many entries are indexed.
    pub(crate) fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// How many attested agents (nodes) are indexed.
    pub(crate) fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Applies `events`, which must continue exactly from [`revision`](Self::revision)
    /// (events at or below it are skipped: they are already in). On a gap
    /// nothing after it is applied and the index must be reloaded.
    pub(crate) fn apply(&mut self, events: &[ChangeEvent]) -> Result<Touched, IndexError> {
        let mut touched = Touched::default();
        for ev in events {
            if ev.revision <= self.revision {
                continue;
            }
            if ev.revision.0 != self.revision.0 + 1 {
                return Err(IndexError::Gap {
                    at: self.revision,
                    next: ev.revision,
                });
            }
            touched.merge(self.apply_one(ev));
            self.revision = ev.revision;
        }
        Ok(touched)
    }

    fn apply_one(&mut self, ev: &ChangeEvent) -> Touched {
        let mut t = Touched::default();
        match &ev.change {
            Change::EntryPut { entry } => {
                if let Some(old) = self.remove_entry(&entry.id) {
                    self.note_parent(&mut t, &old.spec.parent_id);
                }
                self.note_parent(&mut t, &entry.spec.parent_id);
                self.put_entry(entry.clone(), ev.revision);
            }
            Change::EntryDeleted { id } => {
                if let Some(old) = self.remove_entry(id) {
                    self.note_parent(&mut t, &old.spec.parent_id);
                }
                // Deleting an unreadable entry is how an operator clears it.
                self.unreadable
                    .retain(|u| !(u.what == "entry" && u.key == *id));
            }
            Change::NodePut { node } => {
                t.nodes.insert(node.spiffe_id.clone());
                self.nodes.insert(node.spiffe_id.clone(), node.clone());
            }
            Change::NodeDeleted { id } => {
                t.nodes.insert(id.clone());
                self.nodes.remove(id);
                let key = id.to_string();
                self.unreadable
                    .retain(|u| !(u.what == "attested node" && u.key == key));
            }
            Change::BundlePut { bundle } => {
                t.bundles = true;
                self.bundles
                    .insert(bundle.trust_domain.clone(), bundle.clone());
            }
            Change::BundleDeleted { trust_domain } => {
                t.bundles = true;
                self.bundles.remove(trust_domain);
                self.unreadable
                    .retain(|u| !(u.what == "federated bundle" && u.key == trust_domain.as_str()));
            }
            Change::CaJournal => t.ca = true,
        }
        t
    }

    fn note_parent(&self, t: &mut Touched, parent: &SpiffeId) {
        if parent == &self.server_id || self.alias_ids.contains_key(parent) {
            t.aliases = true;
        } else {
            t.parents.insert(parent.clone());
        }
    }

    fn put_entry(&mut self, e: RegistrationEntry, changed_at: Revision) {
        let e = Arc::new(e);
        if e.spec.parent_id == self.server_id {
            *self.alias_ids.entry(e.spec.spiffe_id.clone()).or_default() += 1;
            for s in &e.spec.selectors {
                self.alias_by_selector
                    .entry(s.clone())
                    .or_default()
                    .replace(ById(e.clone()));
            }
        }
        self.by_parent
            .entry(e.spec.parent_id.clone())
            .or_default()
            .replace(ById(e.clone()));
        // `replace`, not `insert`: an equal (same id) element already there is swapped out.
        self.entries.replace(IndexedEntry {
            entry: e,
            changed_at,
        });
    }

    fn remove_entry(&mut self, id: &str) -> Option<Arc<RegistrationEntry>> {
        let old = self.entries.take(id)?.entry;
        if let Some(ids) = self.by_parent.get_mut(&old.spec.parent_id) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_parent.remove(&old.spec.parent_id);
            }
        }
        if old.spec.parent_id == self.server_id {
            if let Some(n) = self.alias_ids.get_mut(&old.spec.spiffe_id) {
                *n -= 1;
                if *n == 0 {
                    self.alias_ids.remove(&old.spec.spiffe_id);
                }
            }
            for s in &old.spec.selectors {
                if let Some(ids) = self.alias_by_selector.get_mut(s) {
                    ids.remove(id);
                    if ids.is_empty() {
                        self.alias_by_selector.remove(s);
                    }
                }
            }
        }
        Some(old)
    }

    /// The entries that federate with `td`, ordered by id. A scan of every entry: asked
    /// only when an operator deletes a federated bundle.
    pub(crate) fn federating_with(&self, td: &TrustDomain) -> Vec<Arc<RegistrationEntry>> {
        let mut out: Vec<Arc<RegistrationEntry>> = self
            .entries
            .iter()
            .filter(|e| e.entry.spec.federates_with.contains(td))
            .map(|e| e.entry.clone())
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// The node `id`, as of [`revision`](Self::revision).
    pub(crate) fn node(&self, id: &SpiffeId) -> Option<&AttestedNode> {
        self.nodes.get(id)
    }

    /// The federated bundle of `td`, if stored.
    pub(crate) fn bundle(&self, td: &TrustDomain) -> Option<&TrustBundle> {
        self.bundles.get(td)
    }

    /// The entry `id` if `agent` (with `node_selectors`) may serve it at `now`.
    pub(crate) fn authorized_entry(
        &self,
        agent: &SpiffeId,
        node_selectors: &[Selector],
        id: &str,
        now: i64,
    ) -> Option<&IndexedEntry> {
        let e = self.entries.get(id)?;
        if !live(&e.entry, now) {
            return None;
        }
        let parent = &e.entry.spec.parent_id;
        if parent == agent {
            return Some(e);
        }
        self.aliases_of(node_selectors)
            .contains(parent)
            .then_some(e)
    }

    /// Entries `agent` may serve at `now`, ordered by id: those whose parent is
    /// the agent, and those whose parent is a node alias (an entry under the
    /// server's ID) whose selectors the node has. Expired entries are left out.
    pub(crate) fn authorized(
        &self,
        agent: &SpiffeId,
        node_selectors: &[Selector],
        now: i64,
    ) -> Vec<&IndexedEntry> {
        let mut parents: BTreeSet<&SpiffeId> = self.aliases_of(node_selectors);
        parents.insert(agent);
        let mut ids: BTreeSet<&str> = BTreeSet::new();
        for p in parents {
            if let Some(children) = self.by_parent.get(p) {
                ids.extend(children.iter().map(ById::id));
            }
        }
        ids.into_iter()
            .filter_map(|id| self.entries.get(id))
            .filter(|e| live(&e.entry, now))
            .collect()
    }

    /// SPIFFE IDs of the alias entries whose selectors are all among `node_selectors`.
    fn aliases_of(&self, node_selectors: &[Selector]) -> BTreeSet<&SpiffeId> {
        let mut candidates: HashSet<&str> = HashSet::new();
        for s in node_selectors {
            if let Some(ids) = self.alias_by_selector.get(s) {
                candidates.extend(ids.iter().map(ById::id));
            }
        }
        candidates
            .into_iter()
            .filter_map(|id| self.entries.get(id))
            .filter(|e| Selector::all_in(&e.entry.spec.selectors, node_selectors))
            .map(|e| &e.entry.spec.spiffe_id)
            .collect()
    }
}

fn live(e: &RegistrationEntry, now: i64) -> bool {
    e.spec.expires_at == 0 || e.spec.expires_at > now
}

/// The reference answer: a scan of every entry (what the server did before
/// the index). Tests compare the index against it.
#[cfg(test)]
pub(crate) fn authorized_scan(
    all: &[RegistrationEntry],
    agent: &SpiffeId,
    node_selectors: &[Selector],
    server_id: &SpiffeId,
    now: i64,
) -> Vec<RegistrationEntry> {
    let aliases: Vec<&SpiffeId> = all
        .iter()
        .filter(|e| {
            &e.spec.parent_id == server_id && Selector::all_in(&e.spec.selectors, node_selectors)
        })
        .map(|e| &e.spec.spiffe_id)
        .collect();
    let mut out: Vec<RegistrationEntry> = all
        .iter()
        .filter(|e| live(e, now))
        .filter(|e| &e.spec.parent_id == agent || aliases.contains(&&e.spec.parent_id))
        .cloned()
        .collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}
