//! The agent's cache: the entries it may serve, an X.509-SVID per entry, and
//! the bundles. Published as immutable snapshots through a watch channel, so
//! every open Workload API stream sees a change (rotation, new entry, new
//! bundle) as soon as the sync loop stores it.

use std::collections::HashMap;
use std::sync::Arc;

use ironroot_api::agent as pb;
use ironroot_api::selector::Selector;
use tokio::sync::watch;

/// One X.509-SVID with its key (PKCS#8 DER, made by the agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedSvid {
    pub entry_id: String,
    pub spiffe_id: String,
    /// Leaf first, then intermediates.
    pub chain: Vec<Vec<u8>>,
    pub key_pkcs8: Vec<u8>,
    pub issued_at: i64,
    pub expires_at: i64,
    /// The entry revision it was signed for: a changed entry gets a new SVID.
    pub entry_revision: i64,
}

impl CachedSvid {
    /// Past half its life (or the entry changed): time for a new one.
    pub fn needs_renewal(&self, now: i64, entry_revision: i64) -> bool {
        entry_revision != self.entry_revision
            || now >= self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// Everything a Workload API answer is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub trust_domain: String,
    pub entries: Vec<pb::Entry>,
    pub svids: HashMap<String, CachedSvid>,
    /// Root CAs (DER) of the trust domain.
    pub roots: Vec<Vec<u8>>,
    /// The trust domain's JWKS bundle.
    pub jwks_json: String,
    /// Federated trust domain -> JWKS.
    pub federated_jwks: HashMap<String, String>,
}

fn selectors_of(e: &pb::Entry) -> Vec<Selector> {
    e.selectors
        .iter()
        .filter_map(|s| Selector::new(&s.r#type, &s.value).ok())
        .collect()
}

impl Snapshot {
    /// Entries whose selectors are all among the workload's, with their SVIDs
    /// (entries without a valid SVID yet are left out).
    pub fn matching(&self, workload: &[Selector], now: i64) -> Vec<(&pb::Entry, &CachedSvid)> {
        self.entries
            .iter()
            .filter(|e| {
                let sel = selectors_of(e);
                !sel.is_empty() && Selector::all_in(&sel, workload)
            })
            .filter_map(|e| self.svids.get(&e.id).map(|s| (e, s)))
            .filter(|(_, s)| s.expires_at > now)
            .collect()
    }

    /// Entries matching the workload (for JWT-SVIDs, which are minted on demand).
    pub fn matching_entries(&self, workload: &[Selector]) -> Vec<&pb::Entry> {
        self.entries
            .iter()
            .filter(|e| {
                let sel = selectors_of(e);
                !sel.is_empty() && Selector::all_in(&sel, workload)
            })
            .collect()
    }

    /// The roots concatenated (the Workload API's bundle format: DER certificates back to back).
    pub fn roots_concat(&self) -> Vec<u8> {
        self.roots.concat()
    }
}

#[derive(Clone)]
pub struct Cache {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Cache {
    pub fn new(trust_domain: &str) -> Self {
        let (tx, _rx) = watch::channel(Arc::new(Snapshot {
            trust_domain: trust_domain.to_string(),
            ..Snapshot::default()
        }));
        Cache { tx: Arc::new(tx) }
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Publishes `next` if it differs from the current snapshot (so streams
    /// are not woken for nothing). Returns whether it did.
    pub fn publish(&self, next: Snapshot) -> bool {
        self.tx.send_if_modified(|cur| {
            if **cur == next {
                false
            } else {
                *cur = Arc::new(next);
                true
            }
        })
    }
}
