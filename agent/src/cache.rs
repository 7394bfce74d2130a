//! The agent's cache: the entries it may serve, an X.509-SVID per entry, and
//! the bundles, all parsed once when a sync stores them (requests never parse
//! selectors or JWKS). Published as immutable snapshots through a watch channel,
//! so every open Workload API stream sees a change (rotation, new entry, new
//! bundle) as soon as the sync loop stores it.
//!
//! What the server sent but cannot be served (an entry without selectors or with
//! one that does not parse, a bundle that does not parse) is not dropped quietly:
//! `parse` returns it with the reason, the sync logs it when it first appears,
//! and the snapshot keeps the count (`Snapshot::rejected`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ironroot_api::agent as pb;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::selector::{Selector, SelectorError};
use ironroot_api::spiffe_id::{SpiffeIdError, TrustDomain};
use tokio::sync::watch;

/// One X.509-SVID with its key (PKCS#8 DER, made by the agent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedSvid {
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
    pub(crate) fn needs_renewal(&self, now: i64, entry_revision: i64) -> bool {
        entry_revision != self.entry_revision
            || now >= self.issued_at + (self.expires_at - self.issued_at) / 2
    }
}

/// A registration entry as the agent serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedEntry {
    pub id: String,
    pub spiffe_id: String,
    pub hint: String,
    pub revision_number: i64,
    /// Parsed at sync; never empty (an entry without selectors would match every caller).
    pub selectors: Vec<Selector>,
    /// Trust domain names whose federated bundles this entry's workloads
    /// receive (checked at sync, sorted); empty: none.
    pub federates_with: Vec<String>,
}

/// Why something the server sent cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum Rejected {
    #[error("entry {id} has no selectors")]
    NoSelectors { id: String },
    #[error("entry {id}: selector {kind}:{value}: {error}")]
    Selector {
        id: String,
        kind: String,
        value: String,
        error: SelectorError,
    },
    #[error("bundle of {trust_domain}: {error}")]
    Bundle { trust_domain: String, error: String },
    #[error("entry {id}: federates_with '{value}' is not a trust domain name: {error}")]
    FederatesWith {
        id: String,
        value: String,
        error: SpiffeIdError,
    },
}

impl Rejected {
    /// What was rejected, as [`Snapshot::rejected`] keys it.
    pub(crate) fn subject(&self) -> String {
        match self {
            Rejected::NoSelectors { id }
            | Rejected::Selector { id, .. }
            | Rejected::FederatesWith { id, .. } => format!("entry {id}"),
            Rejected::Bundle { trust_domain, .. } => format!("bundle {trust_domain}"),
        }
    }
}

impl TryFrom<pb::Entry> for CachedEntry {
    type Error = Rejected;
    fn try_from(e: pb::Entry) -> Result<Self, Rejected> {
        let selectors = e
            .selectors
            .iter()
            .map(|s| {
                Selector::new(&s.r#type, &s.value).map_err(|error| Rejected::Selector {
                    id: e.id.clone(),
                    kind: s.r#type.clone(),
                    value: s.value.clone(),
                    error,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if selectors.is_empty() {
            return Err(Rejected::NoSelectors { id: e.id });
        }
        // The server stores bare names; anything else is refused with the
        // entry rather than matched loosely against the bundles' names.
        let mut federates_with = e.federates_with;
        if let Some((value, error)) = federates_with
            .iter()
            .find_map(|td| TrustDomain::parse(td).err().map(|err| (td.clone(), err)))
        {
            return Err(Rejected::FederatesWith {
                id: e.id,
                value,
                error,
            });
        }
        federates_with.sort();
        federates_with.dedup();
        Ok(CachedEntry {
            id: e.id,
            spiffe_id: e.spiffe_id,
            hint: e.hint,
            revision_number: e.revision_number,
            selectors,
            federates_with,
        })
    }
}

/// A trust domain's JWKS, parsed.
fn bundle(trust_domain: &str, jwks: &str) -> Result<TrustBundle, Rejected> {
    let rejected = |error: String| Rejected::Bundle {
        trust_domain: trust_domain.to_owned(),
        error,
    };
    let td = TrustDomain::parse(trust_domain).map_err(|e| rejected(e.to_string()))?;
    TrustBundle::from_jwks_json(td, jwks).map_err(|e| rejected(e.to_string()))
}

/// A sync response's entries and bundles, parsed.
#[derive(Debug, Default)]
pub(crate) struct Parsed {
    pub entries: Vec<CachedEntry>,
    pub jwt_bundle: Option<TrustBundle>,
    pub federated: HashMap<String, TrustBundle>,
    pub rejected: Vec<Rejected>,
}

/// Parses what a sync received: the entries, the trust domain's JWKS (`jwks`; empty
/// before the server has one) and the federated JWKS by trust domain.
pub(crate) fn parse(
    trust_domain: &str,
    entries: Vec<pb::Entry>,
    jwks: &str,
    federated: HashMap<String, String>,
) -> Parsed {
    let mut out = Parsed::default();
    for e in entries {
        match CachedEntry::try_from(e) {
            Ok(e) => out.entries.push(e),
            Err(r) => out.rejected.push(r),
        }
    }
    if !jwks.is_empty() {
        match bundle(trust_domain, jwks) {
            Ok(b) => out.jwt_bundle = Some(b),
            Err(r) => out.rejected.push(r),
        }
    }
    for (td, jwks) in federated {
        match bundle(&td, &jwks) {
            Ok(b) => {
                out.federated.insert(td, b);
            }
            Err(r) => out.rejected.push(r),
        }
    }
    out
}

/// Everything a Workload API answer is made from.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    pub trust_domain: String,
    pub entries: Vec<CachedEntry>,
    pub svids: HashMap<String, CachedSvid>,
    /// Root CAs (DER) of the trust domain.
    pub roots: Vec<Vec<u8>>,
    /// The trust domain's JWT bundle (absent until the server sent one).
    pub jwt_bundle: Option<TrustBundle>,
    /// Federated trust domain -> its bundle: every one the server holds. A
    /// caller is given only those [`Snapshot::federated_bundles_for`] picks.
    pub federated: HashMap<String, TrustBundle>,
    /// What the last sync received but cannot serve: subject -> why.
    pub rejected: BTreeMap<String, String>,
}

impl Snapshot {
    /// Entries whose selectors are all among the workload's, with their SVIDs
    /// (entries without a valid SVID yet are left out).
    pub(crate) fn matching(
        &self,
        workload: &[Selector],
        now: i64,
    ) -> Vec<(&CachedEntry, &CachedSvid)> {
        self.matching_entries(workload)
            .into_iter()
            .filter_map(|e| self.svids.get(&e.id).map(|s| (e, s)))
            .filter(|(_, s)| s.expires_at > now)
            .collect()
    }

    /// Entries matching the workload (for JWT-SVIDs, which are minted on demand).
    pub(crate) fn matching_entries(&self, workload: &[Selector]) -> Vec<&CachedEntry> {
        self.entries
            .iter()
            .filter(|e| Selector::all_in(&e.selectors, workload))
            .collect()
    }

    /// The roots concatenated (the Workload API's bundle format: DER certificates back to back).
    pub(crate) fn roots_concat(&self) -> Vec<u8> {
        self.roots.concat()
    }

    /// The federated bundles a caller attested to `entries` may receive, by
    /// trust domain name.
    ///
    /// Invariant: a workload receives a federated bundle only if one of the
    /// entries it was attested to names that trust domain in
    /// `federates_with`. Every answer that carries federated bundles
    /// (FetchX509SVID's `federated_bundles`, FetchX509Bundles,
    /// FetchJWTBundles, Envoy SDS) and ValidateJWTSVID's choice of bundle is
    /// built from this function's answer, never from [`Snapshot::federated`]
    /// directly. So a caller matching no entry gets none, and an entry
    /// updated to drop a trust domain withdraws its bundle at the next
    /// response. A named trust domain without a bundle here is left out;
    /// the agent's own trust domain is never a federated one.
    pub(crate) fn federated_bundles_for<'a>(
        &'a self,
        entries: impl IntoIterator<Item = &'a CachedEntry>,
    ) -> BTreeMap<&'a str, &'a TrustBundle> {
        let mut out = BTreeMap::new();
        for td in entries.into_iter().flat_map(|e| &e.federates_with) {
            if td == &self.trust_domain {
                continue;
            }
            if let Some((name, b)) = self.federated.get_key_value(td) {
                out.insert(name.as_str(), b);
            }
        }
        out
    }

    /// The JWT bundle of `trust_domain` for a caller whose federated bundles
    /// are `federated` (from [`Snapshot::federated_bundles_for`]): ours, or
    /// one of those.
    pub(crate) fn jwt_bundle_of<'a>(
        &'a self,
        trust_domain: &str,
        federated: &BTreeMap<&'a str, &'a TrustBundle>,
    ) -> Option<&'a TrustBundle> {
        if trust_domain == self.trust_domain {
            self.jwt_bundle.as_ref()
        } else {
            federated.get(trust_domain).copied()
        }
    }
}

/// The agent's cache: the sync loop publishes into it, Workload API and SDS streams read it.
/// Cloning shares the same cache (the clones publish to and watch one channel).
#[derive(Clone)]
pub struct Cache {
    tx: Arc<watch::Sender<Arc<Snapshot>>>,
}

impl Cache {
    /// An empty cache for `trust_domain`: no entries, SVIDs or bundles until the first sync.
    pub fn new(trust_domain: &str) -> Self {
        let (tx, _rx) = watch::channel(Arc::new(Snapshot {
            trust_domain: trust_domain.to_string(),
            ..Snapshot::default()
        }));
        Cache { tx: Arc::new(tx) }
    }

    /// Ids of the registration entries in the current snapshot, in the order the last
    /// sync left them.
    pub fn entry_ids(&self) -> Vec<String> {
        self.snapshot()
            .entries
            .iter()
            .map(|e| e.id.clone())
            .collect()
    }

    /// Each entry's X.509-SVID chain (leaf first) in the current snapshot, by entry id;
    /// entries without an SVID yet are absent.
    pub fn svid_chains(&self) -> BTreeMap<String, Vec<Vec<u8>>> {
        self.snapshot()
            .svids
            .iter()
            .map(|(id, s)| (id.clone(), s.chain.clone()))
            .collect()
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.tx.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.tx.subscribe()
    }

    /// Publishes `next` if it differs from the current snapshot (so streams
    /// are not woken for nothing). Returns whether it did.
    pub(crate) fn publish(&self, next: Snapshot) -> bool {
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

#[cfg(test)]
mod tests;
