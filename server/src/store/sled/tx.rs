//! One write: its reads, its buffered writes and the change events it makes,
//! applied to the `store` tree as one sled batch.
//!
//! Every write goes through [`Tx`] under the store's writer lock: the data,
//! the indexes, the change events and the head revision land in one
//! `Tree::apply_batch`, which sled recovers all or nothing after a crash and
//! which readers see whole, so the feed can never miss a change nor announce
//! one that did not happen. The writer lock is what a transaction's conflict
//! detection would give: nothing else writes between a write's reads and its
//! batch. (A sled transaction would also read every key before writing it:
//! twice the tree walks for the same guarantee.)

use std::cell::RefCell;
use std::collections::BTreeMap;

use ironroot_api::entry::RegistrationEntry;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::{IVec, Tree};

use crate::store::{entry_identity_key, Change, ChangeEvent, Revision, StoreError};

use super::codec::{decode, encode, identity_index_key, index_key, revision_key, Space};
use super::{sled_err, KEY_REVISION};

pub(super) type TxResult<T> = Result<T, StoreError>;

/// Fails the write with `e`: nothing it buffered is applied.
pub(super) fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(e)
}

/// The store tree as one write sees it: its own buffered writes over what
/// is stored.
pub(super) struct Tx<'a> {
    tree: &'a Tree,
    /// Full key (part byte included) -> new value, or `None` to remove.
    writes: RefCell<BTreeMap<Vec<u8>, Option<IVec>>>,
    /// What this write changed, in order.
    events: RefCell<Vec<Change>>,
}

impl<'a> Tx<'a> {
    pub(super) fn new(tree: &'a Tree) -> Self {
        Tx {
            tree,
            writes: Default::default(),
            events: Default::default(),
        }
    }

    /// Records that this write made `change`.
    pub(super) fn changed(&self, change: Change) {
        self.events.borrow_mut().push(change);
    }

    /// `key` in `space`: this write's own value if it wrote one, else the stored one.
    pub(super) fn get(&self, space: Space, key: &[u8]) -> TxResult<Option<IVec>> {
        let full = space.key(key);
        if let Some(v) = self.writes.borrow().get(&full) {
            return Ok(v.clone());
        }
        self.tree.get(full).map_err(sled_err)
    }

    pub(super) fn insert(&self, space: Space, key: &[u8], value: impl Into<IVec>) {
        self.writes
            .borrow_mut()
            .insert(space.key(key), Some(value.into()));
    }

    /// Removes `key` and returns what it held.
    pub(super) fn remove(&self, space: Space, key: &[u8]) -> TxResult<Option<IVec>> {
        let old = self.get(space, key)?;
        if old.is_some() {
            self.writes.borrow_mut().insert(space.key(key), None);
        }
        Ok(old)
    }

    /// Removes `key` without reading it first (an index key).
    fn forget(&self, space: Space, key: &[u8]) {
        self.writes.borrow_mut().insert(space.key(key), None);
    }

    pub(super) fn get_json<T: DeserializeOwned>(
        &self,
        space: Space,
        key: &[u8],
        what: &str,
    ) -> TxResult<Option<T>> {
        match self.get(space, key)? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    pub(super) fn put_json<T: Serialize>(
        &self,
        space: Space,
        key: &[u8],
        what: &str,
        value: &T,
    ) -> TxResult<()> {
        self.insert(space, key, encode(what, value)?);
        Ok(())
    }

    /// The entry, other than `except`, with the identity key `identity`
    /// (SPIFFE ID, parent ID, selectors) and `entry`'s SPIFFE ID: one lookup
    /// in the SPIFFE ID index, this write's own buffered keys included.
    pub(super) fn duplicate_of(
        &self,
        identity: &[u8; 32],
        entry: &RegistrationEntry,
        except: Option<&str>,
    ) -> TxResult<Option<String>> {
        let key = identity_index_key(&entry.spec.spiffe_id.to_string(), identity);
        let Some(id) = self.get(Space::BySpiffeId, &key)? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(&id).into_owned();
        // A key left behind by a deleted entry that did not decode points at
        // nothing: not a duplicate.
        if Some(id.as_str()) == except || self.get(Space::Entries, id.as_bytes())?.is_none() {
            return Ok(None);
        }
        Ok(Some(id))
    }

    /// Stores `entry` (`json`: its encoding; `identity`: its identity key)
    /// with its index keys; the caller removed the old ones.
    pub(super) fn insert_entry(
        &self,
        entry: &RegistrationEntry,
        identity: &[u8; 32],
        json: Vec<u8>,
    ) {
        let id = entry.id.as_bytes();
        self.insert(Space::Entries, id, json);
        self.insert(
            Space::ByParent,
            &index_key(&entry.spec.parent_id.to_string(), &entry.id),
            IVec::default(),
        );
        self.insert(
            Space::BySpiffeId,
            &identity_index_key(&entry.spec.spiffe_id.to_string(), identity),
            id,
        );
    }

    /// Removes `entry`'s index keys (not the entry itself).
    pub(super) fn remove_entry_keys(&self, entry: &RegistrationEntry) {
        self.forget(
            Space::ByParent,
            &index_key(&entry.spec.parent_id.to_string(), &entry.id),
        );
        self.forget(
            Space::BySpiffeId,
            &identity_index_key(
                &entry.spec.spiffe_id.to_string(),
                &entry_identity_key(entry),
            ),
        );
    }

    /// Appends this write's events after the head, as one record keyed by
    /// the first event's revision (one sled write however many changes it
    /// made), moves the head, and hands back what to apply (`None`: the
    /// write wrote nothing).
    pub(super) fn finish(self) -> TxResult<Option<Finished>> {
        let head = match self.get(Space::Meta, KEY_REVISION)? {
            Some(v) => super::codec::decode_revision(&v)?,
            None => Revision(0),
        };
        let changes = self.events.take();
        let mut events = Vec::new();
        if !changes.is_empty() {
            events = (head.0 + 1..)
                .zip(changes)
                .map(|(revision, change)| ChangeEvent {
                    revision: Revision(revision),
                    change,
                })
                .collect();
            let last = events.last().map_or(head, |e: &ChangeEvent| e.revision);
            self.put_json(
                Space::Changes,
                &revision_key(Revision(head.0 + 1)),
                "change events",
                &events,
            )?;
            self.insert(Space::Meta, KEY_REVISION, &revision_key(last));
        }
        let writes = self.writes.take();
        if writes.is_empty() {
            return Ok(None);
        }
        let mut batch = sled::Batch::default();
        for (k, v) in writes {
            match v {
                Some(v) => batch.insert(k, v),
                None => batch.remove(k),
            }
        }
        Ok(Some(Finished { batch, events }))
    }
}

/// A write ready to apply.
pub(super) struct Finished {
    /// Everything it writes, its change record and the head included.
    pub(super) batch: sled::Batch,
    /// Its change events, in revision order (none for a write that changes
    /// nothing a follower sees, such as a join token).
    pub(super) events: Vec<ChangeEvent>,
}
