//! The store's operations on sled, synchronous (the caller is on the
//! blocking pool).

use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::de::DeserializeOwned;
use tracing::warn;

use std::collections::HashMap;

use sled::IVec;

use super::codec::{
    decode, decode_revision, encode, index_id, index_prefix, node_key, revision_key, Space,
};
use super::tx::abort;
use super::{sled_err, Inner, KEY_JOURNAL};
use crate::store::rules::{check_batch, check_token, new_entries, page_of};
use crate::store::{
    entry_identity_key, validated_spec, AttestedNode, BatchResults, Change, ChangeEvent,
    ChangesSince, EntryFilter, Page, PageRequest, Revision, Snapshot, StoreError, Unreadable,
    MAX_CHANGES_PER_READ,
};

impl Inner {
    pub(super) fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        let candidates = new_entries(specs, &self.trust_domain, ironroot_runtime::unix_now())?;
        self.write(|tx| {
            let mut out = Vec::with_capacity(candidates.len());
            let mut seen: HashMap<[u8; 32], String> = HashMap::with_capacity(candidates.len());
            for c in candidates {
                let entry = match c {
                    Ok(e) => e,
                    Err(e) => {
                        out.push(Err(e));
                        continue;
                    }
                };
                let key = entry_identity_key(&entry);
                let existing = match seen.get(&key) {
                    Some(id) => Some(id.clone()),
                    None => tx.duplicate_of(&key, &entry, None)?,
                };
                if let Some(existing_id) = existing {
                    out.push(Err(StoreError::DuplicateEntry { existing_id }));
                    continue;
                }
                tx.insert_entry(&entry, &key, encode("entry", &entry)?);
                seen.insert(key, entry.id.clone());
                tx.changed(Change::EntryPut {
                    entry: entry.clone(),
                });
                out.push(Ok(entry));
            }
            Ok(out)
        })
    }

    pub(super) fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        let spec = validated_spec(spec, &self.trust_domain)?;
        self.write(|tx| {
            let Some(old) =
                tx.get_json::<RegistrationEntry>(Space::Entries, id.as_bytes(), "entry")?
            else {
                return abort(StoreError::EntryNotFound { id: id.to_owned() });
            };
            if let Some(expected) = expected_revision {
                if expected != old.revision {
                    return abort(StoreError::RevisionMismatch {
                        id: id.to_owned(),
                        expected,
                        actual: old.revision,
                    });
                }
            }
            let Some(revision) = old.revision.checked_add(1) else {
                return abort(StoreError::Corrupt {
                    what: format!("entry {id}"),
                    reason: "revision number overflows".into(),
                });
            };
            let new = RegistrationEntry::from_spec(
                old.id.clone(),
                spec.clone(),
                revision,
                old.created_at,
            );
            let new_key = entry_identity_key(&new);
            if new_key != entry_identity_key(&old) {
                if let Some(existing_id) = tx.duplicate_of(&new_key, &new, Some(id))? {
                    return abort(StoreError::DuplicateEntry { existing_id });
                }
            }
            tx.remove_entry_keys(&old);
            tx.insert_entry(&new, &new_key, encode("entry", &new)?);
            tx.changed(Change::EntryPut { entry: new.clone() });
            Ok(new)
        })
    }

    pub(super) fn delete_entries(
        &self,
        ids: Vec<String>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        check_batch(ids.len())?;
        self.write(|tx| {
            let mut out = Vec::with_capacity(ids.len());
            for id in &ids {
                let Some(old) = tx.remove(Space::Entries, id.as_bytes())? else {
                    out.push(Err(StoreError::EntryNotFound { id: id.clone() }));
                    continue;
                };
                // An entry that does not decode is still deleted (that is how
                // an operator gets rid of it); its index keys stay until the
                // next rebuild, harmless since they point at nothing.
                match decode::<RegistrationEntry>("entry", &old) {
                    Ok(old) => {
                        tx.remove_entry_keys(&old);
                        tx.changed(Change::EntryDeleted { id: id.clone() });
                        out.push(Ok(old));
                    }
                    Err(e) => {
                        tx.changed(Change::EntryDeleted { id: id.clone() });
                        out.push(Err(e));
                    }
                }
            }
            Ok(out)
        })
    }

    /// How many entries there are (a scan of their keys: sled keeps no count).
    pub(super) fn count_entries(&self) -> Result<u64, StoreError> {
        let mut n = 0u64;
        for k in self.scan(Space::Entries, &[]).keys() {
            k.map_err(sled_err)?;
            n += 1;
        }
        Ok(n)
    }

    pub(super) fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        self.get_value(Space::Entries, id.as_bytes(), "entry")
    }

    pub(super) fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>, StoreError> {
        check_token(page)?;
        let size = page.effective_size();
        let after = page.after.as_deref();
        let mut items = Vec::new();
        let mut more = false;
        // The narrowest index the filter allows; the filter decides the rest.
        let ids: Box<dyn Iterator<Item = Result<String, StoreError>>> =
            match (&filter.parent_id, &filter.spiffe_id) {
                (Some(parent), _) => {
                    Box::new(self.index_ids(Space::ByParent, &parent.to_string(), after))
                }
                (None, Some(id)) => Box::new(
                    self.spiffe_id_ids(&id.to_string(), after)?
                        .into_iter()
                        .map(Ok),
                ),
                (None, None) => {
                    // Scanning the values directly: no second lookup per entry.
                    for kv in self.after(Space::Entries, after.map(str::as_bytes)) {
                        let (k, v) = kv.map_err(sled_err)?;
                        let k = Space::strip(&k);
                        let Some(e) = self.readable::<RegistrationEntry>("entry", k, &v) else {
                            continue;
                        };
                        if filter.matches(&e) {
                            if items.len() == size {
                                more = true;
                                break;
                            }
                            items.push(e);
                        }
                    }
                    return Ok(page_of(items, more, |e| e.id.clone()));
                }
            };
        for id in ids {
            let id = id?;
            let Some(v) = self.get(Space::Entries, id.as_bytes())? else {
                continue;
            };
            let Some(e) = self.readable::<RegistrationEntry>("entry", id.as_bytes(), &v) else {
                continue;
            };
            if filter.matches(&e) {
                if items.len() == size {
                    more = true;
                    break;
                }
                items.push(e);
            }
        }
        Ok(page_of(items, more, |e| e.id.clone()))
    }

    /// The entry ids under `value` in an index, after `after`, in id order.
    fn index_ids<'a>(
        &self,
        space: Space,
        value: &str,
        after: Option<&'a str>,
    ) -> impl Iterator<Item = Result<String, StoreError>> + 'a {
        self.scan(space, &index_prefix(value))
            .keys()
            .filter_map(move |k| match k {
                Err(e) => Some(Err(sled_err(e))),
                Ok(k) => {
                    let id = index_id(Space::strip(&k))?.to_owned();
                    match after {
                        Some(a) if id.as_str() <= a => None,
                        _ => Some(Ok(id)),
                    }
                }
            })
    }

    /// The entry ids with SPIFFE ID `value`, after `after`, in id order (the
    /// index orders them by identity key: they are few, and sorted here).
    fn spiffe_id_ids(&self, value: &str, after: Option<&str>) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::new();
        for v in self.scan(Space::BySpiffeId, &index_prefix(value)).values() {
            let id = String::from_utf8_lossy(&v.map_err(sled_err)?).into_owned();
            if after.is_none_or(|a| id.as_str() > a) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    pub(super) fn get_attested_node(
        &self,
        id: &SpiffeId,
    ) -> Result<Option<AttestedNode>, StoreError> {
        self.get_value(Space::Nodes, &node_key(id), "attested node")
    }

    /// `first_only`: refuse a node already there (`AlreadyAttested`), in the transaction.
    pub(super) fn record_attestation(
        &self,
        node: &AttestedNode,
        first_only: bool,
    ) -> Result<AttestedNode, StoreError> {
        let key = node_key(&node.spiffe_id);
        // One transaction: a ban made concurrently is never overwritten.
        self.write(|tx| {
            let previous: Option<AttestedNode> =
                tx.get_json(Space::Nodes, &key, "attested node")?;
            if previous.as_ref().is_some_and(|p| p.banned) {
                return abort(StoreError::Banned {
                    id: node.spiffe_id.to_string(),
                });
            }
            if first_only && previous.is_some() {
                return abort(StoreError::AlreadyAttested {
                    id: node.spiffe_id.to_string(),
                });
            }
            let mut stored = node.clone();
            stored.banned = false;
            if let Some(p) = previous {
                stored.first_attested_at = p.first_attested_at;
            }
            tx.put_json(Space::Nodes, &key, "attested node", &stored)?;
            tx.remove(Space::Banned, &key)?;
            tx.changed(Change::NodePut {
                node: stored.clone(),
            });
            Ok(stored)
        })
    }

    pub(super) fn set_node_banned(
        &self,
        id: &SpiffeId,
        banned: bool,
    ) -> Result<AttestedNode, StoreError> {
        let key = node_key(id);
        self.write(|tx| {
            let Some(mut node) =
                tx.get_json::<AttestedNode>(Space::Nodes, &key, "attested node")?
            else {
                return abort(StoreError::NodeNotFound { id: id.to_string() });
            };
            node.banned = banned;
            tx.put_json(Space::Nodes, &key, "attested node", &node)?;
            if banned {
                tx.insert(Space::Banned, &key, IVec::default());
            } else {
                tx.remove(Space::Banned, &key)?;
            }
            tx.changed(Change::NodePut { node: node.clone() });
            Ok(node)
        })
    }

    pub(super) fn list_attested_nodes(
        &self,
        page: &PageRequest,
    ) -> Result<Page<AttestedNode>, StoreError> {
        check_token(page)?;
        let size = page.effective_size();
        let mut items = Vec::new();
        let mut more = false;
        for kv in self.after(Space::Nodes, page.after.as_deref().map(str::as_bytes)) {
            let (k, v) = kv.map_err(sled_err)?;
            let Some(n) = self.readable::<AttestedNode>("attested node", Space::strip(&k), &v)
            else {
                continue;
            };
            if items.len() == size {
                more = true;
                break;
            }
            items.push(n);
        }
        Ok(page_of(items, more, |n| n.spiffe_id.to_string()))
    }

    pub(super) fn list_banned_nodes(&self) -> Result<Vec<AttestedNode>, StoreError> {
        let mut out = Vec::new();
        for k in self.scan(Space::Banned, &[]).keys() {
            let k = k.map_err(sled_err)?;
            let k = Space::strip(&k);
            if let Some(v) = self.get(Space::Nodes, k)? {
                if let Some(n) = self.readable::<AttestedNode>("attested node", k, &v) {
                    out.push(n);
                }
            }
        }
        Ok(out)
    }

    pub(super) fn delete_attested_node(
        &self,
        id: &SpiffeId,
    ) -> Result<Option<AttestedNode>, StoreError> {
        let key = node_key(id);
        self.write(|tx| {
            let old = tx.get_json::<AttestedNode>(Space::Nodes, &key, "attested node")?;
            if tx.remove(Space::Nodes, &key)?.is_some() {
                tx.remove(Space::Banned, &key)?;
                tx.changed(Change::NodeDeleted { id: id.clone() });
            }
            Ok(old)
        })
    }

    pub(super) fn put_federated_bundle(&self, bundle: &TrustBundle) -> Result<(), StoreError> {
        self.write_federated_bundle(None, bundle)
    }

    pub(super) fn replace_federated_bundle(
        &self,
        expected: Option<&TrustBundle>,
        bundle: &TrustBundle,
    ) -> Result<(), StoreError> {
        self.write_federated_bundle(Some(expected), bundle)
    }

    /// Writes `bundle`; with `condition`, only if the stored one is still what it holds.
    fn write_federated_bundle(
        &self,
        condition: Option<Option<&TrustBundle>>,
        bundle: &TrustBundle,
    ) -> Result<(), StoreError> {
        if bundle.trust_domain == self.trust_domain {
            return Err(StoreError::OwnTrustDomain {
                trust_domain: self.trust_domain.to_string(),
            });
        }
        let key = bundle.trust_domain.as_str().as_bytes();
        self.write(|tx| {
            if let Some(expected) = condition {
                let stored = tx.get_json::<TrustBundle>(Space::Bundles, key, "federated bundle")?;
                if stored.as_ref() != expected {
                    return abort(StoreError::FederatedBundleChanged {
                        trust_domain: bundle.trust_domain.to_string(),
                    });
                }
            }
            tx.put_json(Space::Bundles, key, "federated bundle", bundle)?;
            tx.changed(Change::BundlePut {
                bundle: bundle.clone(),
            });
            Ok(())
        })
    }

    pub(super) fn get_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<TrustBundle>, StoreError> {
        self.get_value(Space::Bundles, td.as_str().as_bytes(), "federated bundle")
    }

    pub(super) fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError> {
        let mut out = Vec::new();
        for kv in self.scan(Space::Bundles, &[]) {
            let (k, v) = kv.map_err(sled_err)?;
            if let Some(b) = self.readable("federated bundle", Space::strip(&k), &v) {
                out.push(b);
            }
        }
        Ok(out)
    }

    pub(super) fn delete_federated_bundle(&self, td: &TrustDomain) -> Result<bool, StoreError> {
        self.write(|tx| {
            let existed = tx.remove(Space::Bundles, td.as_str().as_bytes())?.is_some();
            if existed {
                tx.changed(Change::BundleDeleted {
                    trust_domain: td.clone(),
                });
            }
            Ok(existed)
        })
    }

    pub(super) fn replace_ca_journal(
        &self,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            if tx.get(Space::Ca, KEY_JOURNAL)?.as_deref() != expected {
                return abort(StoreError::CaJournalChanged);
            }
            tx.insert(Space::Ca, KEY_JOURNAL, bytes);
            tx.changed(Change::CaJournal);
            Ok(())
        })
    }

    pub(super) fn put_join_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.insert(Space::JoinTokens, token_hash, &expires_at.to_be_bytes());
            Ok(())
        })
    }

    pub(super) fn take_join_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError> {
        // Removed before it is used: a token works once, even if the attestation fails.
        let Some(v) = self.write(|tx| tx.remove(Space::JoinTokens, token_hash))? else {
            return Ok(None);
        };
        let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: "join token".into(),
            reason: format!("expiry is {} bytes, not 8", v.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }

    pub(super) fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<ChangesSince, StoreError> {
        let limit = limit.clamp(1, MAX_CHANGES_PER_READ);
        if let Some(events) = self.recent.after(after, limit) {
            return Ok(ChangesSince::Events(events));
        }
        let first = self.scan(Space::Changes, &[]).next().transpose();
        let oldest = match first.map_err(sled_err)? {
            Some((k, _)) => decode_revision(Space::strip(&k))?,
            None => Revision(self.read_head()?.0 + 1),
        };
        if after.0.saturating_add(1) < oldest.0 {
            return Ok(ChangesSince::Truncated { oldest });
        }
        let next = Space::Changes.key(&revision_key(Revision(after.0.saturating_add(1))));
        // The record holding `after + 1` starts at or before it.
        let from = match self
            .tree
            .range(Space::Changes.key(&[])..=next.clone())
            .next_back()
            .transpose()
            .map_err(sled_err)?
        {
            Some((k, _)) => k.to_vec(),
            None => next,
        };
        let records = self
            .tree
            .range(from..Space::Changes.end().to_vec())
            .values();
        let mut events = Vec::new();
        'records: for v in records {
            // An event that does not decode cannot be skipped: a follower
            // would miss the change. It is a corrupt store.
            let group = decode::<Vec<ChangeEvent>>("change events", &v.map_err(sled_err)?)?;
            for event in group {
                if event.revision <= after {
                    continue;
                }
                if events.len() == limit {
                    break 'records;
                }
                events.push(event);
            }
        }
        Ok(ChangesSince::Events(events))
    }

    pub(super) fn snapshot(&self) -> Result<Snapshot, StoreError> {
        // Writers wait: everything read is at one revision.
        let _w = self.lock();
        let mut snap = Snapshot {
            revision: self.read_head()?,
            ..Snapshot::default()
        };
        let mut unreadable = Vec::new();
        collect(
            self,
            Space::Entries,
            "entry",
            &mut snap.entries,
            &mut unreadable,
        )?;
        collect(
            self,
            Space::Nodes,
            "attested node",
            &mut snap.nodes,
            &mut unreadable,
        )?;
        collect(
            self,
            Space::Bundles,
            "federated bundle",
            &mut snap.bundles,
            &mut unreadable,
        )?;
        snap.unreadable = unreadable;
        Ok(snap)
    }

    fn get_value<T: DeserializeOwned>(
        &self,
        space: Space,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get(space, key)?.map(|v| decode(what, &v)).transpose()
    }

    /// `v` decoded, or `None` after logging why not (listings skip a bad
    /// record rather than fail).
    fn readable<T: DeserializeOwned>(&self, what: &'static str, key: &[u8], v: &[u8]) -> Option<T> {
        match decode(what, v) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(key = %String::from_utf8_lossy(key), "{e}; skipped");
                None
            }
        }
    }
}

fn collect<T: DeserializeOwned>(
    store: &Inner,
    space: Space,
    what: &'static str,
    out: &mut Vec<T>,
    unreadable: &mut Vec<Unreadable>,
) -> Result<(), StoreError> {
    for kv in store.scan(space, &[]) {
        let (k, v) = kv.map_err(sled_err)?;
        let k = Space::strip(&k);
        match serde_json::from_slice(&v) {
            Ok(t) => out.push(t),
            Err(e) => unreadable.push(Unreadable {
                what,
                key: String::from_utf8_lossy(k).into_owned(),
                reason: e.to_string(),
            }),
        }
    }
    Ok(())
}
