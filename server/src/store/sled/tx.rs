//! One write transaction over every tree, with the change events it makes.
//!
//! Every write goes through [`Tx`]: the data, the indexes, the change events
//! and the head revision commit together or not at all, so the feed can
//! never miss a change nor announce one that did not happen.

use std::cell::RefCell;

use ironroot_api::entry::RegistrationEntry;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use crate::store::{Change, ChangeEvent, Revision, StoreError};

use super::codec::{decode, encode, index_key, revision_key};
use super::KEY_REVISION;

pub(super) type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// Aborts the transaction with `e`.
pub(super) fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

/// The trees as one transaction sees them.
pub(super) struct Tx<'a> {
    pub(super) meta: &'a TransactionalTree,
    pub(super) entries: &'a TransactionalTree,
    pub(super) entry_keys: &'a TransactionalTree,
    pub(super) by_parent: &'a TransactionalTree,
    pub(super) by_spiffe_id: &'a TransactionalTree,
    pub(super) nodes: &'a TransactionalTree,
    pub(super) banned: &'a TransactionalTree,
    pub(super) bundles: &'a TransactionalTree,
    pub(super) ca: &'a TransactionalTree,
    pub(super) join_tokens: &'a TransactionalTree,
    pub(super) changes: &'a TransactionalTree,
    /// What this attempt changed, in order (sled may run a transaction's
    /// closure more than once: each attempt starts with a fresh `Tx`).
    pub(super) events: RefCell<Vec<Change>>,
}

impl Tx<'_> {
    /// Records that this transaction made `change`.
    pub(super) fn changed(&self, change: Change) {
        self.events.borrow_mut().push(change);
    }

    pub(super) fn get_json<T: DeserializeOwned>(
        &self,
        tree: &TransactionalTree,
        key: &[u8],
        what: &str,
    ) -> TxResult<Option<T>> {
        match tree.get(key)? {
            Some(v) => decode(what, &v).map(Some).or_else(abort),
            None => Ok(None),
        }
    }

    pub(super) fn put_json<T: Serialize>(
        &self,
        tree: &TransactionalTree,
        key: &[u8],
        what: &str,
        value: &T,
    ) -> TxResult<()> {
        tree.insert(key, encode(what, value).or_else(abort)?)?;
        Ok(())
    }

    /// Stores `entry` with its index keys (the caller removed the old ones).
    pub(super) fn insert_entry(&self, entry: &RegistrationEntry) -> TxResult<()> {
        let id = entry.id.as_bytes();
        self.put_json(self.entries, id, "entry", entry)?;
        self.entry_keys
            .insert(&super::super::entry_identity_key(entry), id)?;
        self.by_parent
            .insert(index_key(&entry.spec.parent_id.to_string(), &entry.id), &[])?;
        self.by_spiffe_id
            .insert(index_key(&entry.spec.spiffe_id.to_string(), &entry.id), &[])?;
        Ok(())
    }

    /// Removes `entry`'s index keys (not the entry itself).
    pub(super) fn remove_entry_keys(&self, entry: &RegistrationEntry) -> TxResult<()> {
        self.entry_keys
            .remove(&super::super::entry_identity_key(entry))?;
        self.by_parent
            .remove(index_key(&entry.spec.parent_id.to_string(), &entry.id))?;
        self.by_spiffe_id
            .remove(index_key(&entry.spec.spiffe_id.to_string(), &entry.id))?;
        Ok(())
    }

    /// Appends this attempt's events after the head, as one record keyed by
    /// the first event's revision (one sled write per transaction, however
    /// many changes it made), and moves the head; returns the new head.
    pub(super) fn commit_events(&self) -> TxResult<Revision> {
        let head = match self.meta.get(KEY_REVISION)? {
            Some(v) => super::codec::decode_revision(&v).or_else(abort)?,
            None => Revision(0),
        };
        let changes: Vec<Change> = self.events.borrow_mut().drain(..).collect();
        if changes.is_empty() {
            return Ok(head);
        }
        let group: Vec<ChangeEvent> = (head.0 + 1..)
            .zip(changes)
            .map(|(revision, change)| ChangeEvent {
                revision: Revision(revision),
                change,
            })
            .collect();
        let first = Revision(head.0 + 1);
        let last = group.last().map_or(head, |e| e.revision);
        self.put_json(self.changes, &revision_key(first), "change events", &group)?;
        self.meta.insert(KEY_REVISION, &revision_key(last))?;
        Ok(last)
    }
}
