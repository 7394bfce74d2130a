//! [`DataStore`] on sled: one directory, no server to run.
//!
//! Layout: one sled tree, `store`, in parts told apart by their keys' first
//! byte ([`codec::Space`]): meta (schema version, trust domain, head
//! revision), entries (id -> JSON entry), the listing index by parent
//! (`<parent ID> NUL <entry id>`), the index by SPIFFE ID (`<SPIFFE ID> NUL
//! <identity key>` -> entry id, where the identity key is the SHA-256 of SPIFFE
//! ID, parent ID and selectors: it lists by SPIFFE ID and finds a duplicate in
//! one lookup), nodes (SPIFFE ID -> JSON node), banned
//! nodes (SPIFFE ID of each banned node), federated bundles (trust domain ->
//! JSON bundle), the CA journal, join tokens (SHA-256 -> expiry), and the
//! change feed (the change events of one write, keyed by the first one's
//! revision -> JSON array of events; the revisions of consecutive records are
//! contiguous; about the last [`CHANGES_KEPT`] are kept).
//!
//! One tree, so that one write is one `Tree::apply_batch` (atomic, recovered
//! whole or not at all) rather than a sled transaction over several trees,
//! which reads every key it writes and buffers everything twice.
//!
//! sled is synchronous: every call runs on tokio's blocking pool, and one
//! lock serializes writers (the duplicate check and the revision counter
//! stay race-free: nothing writes between a write's reads and its batch).

mod codec;
mod migrate;
mod ops;
mod recent;
mod tx;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use sled::{Db, IVec, Tree};
use tokio::sync::watch;

use super::{
    AttestedNode, BatchResults, ChangesSince, DataStore, EntryFilter, Page, PageRequest, Revision,
    Snapshot, StoreError,
};
use codec::Space;
use tx::{Tx, TxResult};

/// The layout this build reads and writes. 1: no listing indexes, no change
/// feed; 2: one change event per record; 3: a tree per kind of record, written
/// in sled transactions (all migrated on open).
const SCHEMA_VERSION: u32 = 4;
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_TRUST_DOMAIN: &[u8] = b"trust_domain";
const KEY_REVISION: &[u8] = b"revision";
const KEY_JOURNAL: &[u8] = b"journal";
const BACKEND: &str = "sled";
/// The sled tree holding everything (schema 4 on).
const STORE_TREE: &str = "store";

/// sled's page cache unless `[store] cache_bytes` says otherwise, instead of sled's
/// 1 GiB default: agents are answered from the authorized-entry cache, so the store's
/// own cache only serves admin listings and writes. sled's resident memory is well above
/// its nominal cache: at 100,000 entries just created, a 64 MiB cache held ~100 MB more
/// than a 16 MiB one, for the same batch creation rate (docs/benchmarks.md).
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// Change events kept for servers catching up; older ones are pruned (a
/// cache further behind reloads a snapshot).
pub(super) const CHANGES_KEPT: u64 = 100_000;
/// Prune once per this many revisions.
const PRUNE_EVERY: u64 = 4_096;

/// The sled-backed store. A clone is another handle on the same database.
#[derive(Clone)]
pub struct SledStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    trust_domain: TrustDomain,
    tree: Tree,
    write_lock: Mutex<()>,
    head: watch::Sender<Revision>,
    /// The newest change events, as written.
    recent: recent::Recent,
    /// A failure the next CA journal write reports (unit tests of the CA's rotation).
    #[cfg(test)]
    journal_fault: Mutex<Option<JournalFault>>,
}

/// How the next CA journal write fails, for tests of what the CA does when the store does
/// not say whether a write was stored.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JournalFault {
    /// Reports the store unavailable and writes nothing.
    Unwritten,
    /// Writes, then reports the store unavailable (a lost acknowledgement).
    WrittenButUnacknowledged,
}

#[cfg(test)]
impl SledStore {
    /// Makes the next CA journal write fail as `fault` says.
    pub(crate) fn fail_next_journal_write(&self, fault: JournalFault) {
        *self.inner.journal_fault.lock().unwrap() = Some(fault);
    }
}

fn sled_err(e: sled::Error) -> StoreError {
    StoreError::backend(BACKEND, e)
}

impl SledStore {
    /// Opens (creating if needed) the store in `dir` for `trust_domain`,
    /// migrating a store written by an earlier layout. Refuses a store
    /// written for another trust domain or a newer schema version.
    pub fn open(dir: &Path, trust_domain: TrustDomain) -> Result<Self, StoreError> {
        Self::open_with_cache(dir, trust_domain, DEFAULT_CACHE_BYTES)
    }

    /// [`open`](Self::open) with a page cache of `cache_bytes` (`[store] cache_bytes`).
    pub fn open_with_cache(
        dir: &Path,
        trust_domain: TrustDomain,
        cache_bytes: u64,
    ) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            .open()
            .map_err(sled_err)?;
        let inner = Inner {
            tree: db.open_tree(STORE_TREE).map_err(sled_err)?,
            db,
            trust_domain,
            write_lock: Mutex::new(()),
            head: watch::Sender::new(Revision(0)),
            recent: recent::Recent::default(),
            #[cfg(test)]
            journal_fault: Mutex::new(None),
        };
        // The trust domain is checked before anything is migrated or written.
        let stored = match inner.get(Space::Meta, KEY_TRUST_DOMAIN)? {
            Some(v) => Some(v),
            None => migrate::legacy_trust_domain(&inner.db)?,
        };
        match stored {
            None => {}
            Some(v) if v.as_ref() == inner.trust_domain.as_str().as_bytes() => {}
            Some(v) => {
                return Err(StoreError::TrustDomainMismatch {
                    stored: String::from_utf8_lossy(&v).into_owned(),
                    configured: inner.trust_domain.to_string(),
                })
            }
        }
        migrate::to_current(&inner)?;
        let head = inner.read_head()?;
        inner.head.send_replace(head);
        inner.db.flush().map_err(sled_err)?;
        Ok(SledStore {
            inner: Arc::new(inner),
        })
    }

    /// Runs `f` on the blocking pool: sled's calls block on I/O.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StoreError::backend(BACKEND, e))?
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `key` in `space`, as stored.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<IVec>, StoreError> {
        self.tree.get(space.key(key)).map_err(sled_err)
    }

    /// The records of `space` whose keys start with `prefix`, in key order
    /// (keys as stored: strip them with [`Space::strip`]).
    fn scan(&self, space: Space, prefix: &[u8]) -> sled::Iter {
        self.tree.scan_prefix(space.key(prefix))
    }

    /// The records of `space` after `after` (all of them for `None`), in key order.
    fn after(&self, space: Space, after: Option<&[u8]>) -> sled::Iter {
        use std::ops::Bound;
        let start = match after {
            Some(a) => Bound::Excluded(space.key(a)),
            None => Bound::Included(space.key(&[])),
        };
        self.tree
            .range::<Vec<u8>, _>((start, Bound::Excluded(space.end().to_vec())))
    }

    fn read_head(&self) -> Result<Revision, StoreError> {
        match self.get(Space::Meta, KEY_REVISION)? {
            Some(v) => codec::decode_revision(&v),
            None => Ok(Revision(0)),
        }
    }

    /// Runs `f` with the writer lock held, applies what it wrote and its
    /// change events as one batch, makes it durable, then announces the new
    /// head. `f` failing writes nothing.
    fn write<T>(&self, f: impl FnOnce(&Tx<'_>) -> TxResult<T>) -> Result<T, StoreError> {
        let _w = self.lock();
        let tx = Tx::new(&self.tree);
        let out = f(&tx)?;
        let Some(tx::Finished { batch, events }) = tx.finish()? else {
            return Ok(out);
        };
        if let Err(e) = self
            .tree
            .apply_batch(batch)
            .and_then(|()| self.db.flush().map(drop))
        {
            // Whether it landed is unknown: the feed is read from sled again.
            self.recent.forget();
            return Err(sled_err(e));
        }
        let before = *self.head.borrow();
        let head = events.last().map_or(before, |e| e.revision);
        self.recent.push(events);
        if head != before {
            self.head.send_replace(head);
            if head.0 / PRUNE_EVERY != before.0 / PRUNE_EVERY {
                if let Some(keep_from) = head.0.checked_sub(CHANGES_KEPT) {
                    self.prune_changes(Revision(keep_from))?;
                }
            }
        }
        Ok(out)
    }

    /// Drops the change records whose events are all older than `keep_from`
    /// (the record holding `keep_from` stays whole).
    fn prune_changes(&self, keep_from: Revision) -> Result<(), StoreError> {
        let end = Space::Changes.key(&codec::revision_key(keep_from));
        // Records start at or before `keep_from`; the last of them may hold it.
        let mut older: Vec<IVec> = self
            .tree
            .range(Space::Changes.key(&[])..=end)
            .keys()
            .collect::<Result<_, _>>()
            .map_err(sled_err)?;
        if let Some(kept) = older.pop() {
            self.recent
                .drop_before(codec::decode_revision(Space::strip(&kept))?);
        }
        let mut batch = sled::Batch::default();
        for key in older {
            batch.remove(key);
        }
        self.tree.apply_batch(batch).map_err(sled_err)
    }
}

#[async_trait]
impl DataStore for SledStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn create_entries(
        &self,
        specs: Vec<EntrySpec>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        self.run(move |s| s.create_entries(specs)).await
    }

    async fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        let id = id.to_owned();
        self.run(move |s| s.update_entry(&id, spec, expected_revision))
            .await
    }

    async fn delete_entries(
        &self,
        ids: Vec<String>,
    ) -> Result<BatchResults<RegistrationEntry>, StoreError> {
        self.run(move |s| s.delete_entries(ids)).await
    }

    async fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        let id = id.to_owned();
        self.run(move |s| s.get_entry(&id)).await
    }

    async fn list_entries(
        &self,
        filter: &EntryFilter,
        page: &PageRequest,
    ) -> Result<Page<RegistrationEntry>, StoreError> {
        let (filter, page) = (filter.clone(), page.clone());
        self.run(move |s| s.list_entries(&filter, &page)).await
    }

    async fn count_entries(&self) -> Result<u64, StoreError> {
        self.run(|s| s.count_entries()).await
    }

    async fn get_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError> {
        let id = id.clone();
        self.run(move |s| s.get_attested_node(&id)).await
    }

    async fn record_attestation(&self, node: &AttestedNode) -> Result<AttestedNode, StoreError> {
        let node = node.clone();
        self.run(move |s| s.record_attestation(&node, false)).await
    }

    async fn record_first_attestation(
        &self,
        node: &AttestedNode,
    ) -> Result<AttestedNode, StoreError> {
        let node = node.clone();
        self.run(move |s| s.record_attestation(&node, true)).await
    }

    async fn set_node_banned(
        &self,
        id: &SpiffeId,
        banned: bool,
    ) -> Result<AttestedNode, StoreError> {
        let id = id.clone();
        self.run(move |s| s.set_node_banned(&id, banned)).await
    }

    async fn list_attested_nodes(
        &self,
        page: &PageRequest,
    ) -> Result<Page<AttestedNode>, StoreError> {
        let page = page.clone();
        self.run(move |s| s.list_attested_nodes(&page)).await
    }

    async fn list_banned_nodes(&self) -> Result<Vec<AttestedNode>, StoreError> {
        self.run(|s| s.list_banned_nodes()).await
    }

    async fn delete_attested_node(
        &self,
        id: &SpiffeId,
    ) -> Result<Option<AttestedNode>, StoreError> {
        let id = id.clone();
        self.run(move |s| s.delete_attested_node(&id)).await
    }

    async fn put_federated_bundle(&self, bundle: &TrustBundle) -> Result<(), StoreError> {
        let bundle = bundle.clone();
        self.run(move |s| s.put_federated_bundle(&bundle)).await
    }

    async fn replace_federated_bundle(
        &self,
        expected: Option<&TrustBundle>,
        bundle: &TrustBundle,
    ) -> Result<(), StoreError> {
        let expected = expected.cloned();
        let bundle = bundle.clone();
        self.run(move |s| s.replace_federated_bundle(expected.as_ref(), &bundle))
            .await
    }

    async fn get_federated_bundle(
        &self,
        td: &TrustDomain,
    ) -> Result<Option<TrustBundle>, StoreError> {
        let td = td.clone();
        self.run(move |s| s.get_federated_bundle(&td)).await
    }

    async fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError> {
        self.run(|s| s.list_federated_bundles()).await
    }

    async fn delete_federated_bundle(&self, td: &TrustDomain) -> Result<bool, StoreError> {
        let td = td.clone();
        self.run(move |s| s.delete_federated_bundle(&td)).await
    }

    async fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.run(|s| Ok(s.get(Space::Ca, KEY_JOURNAL)?.map(|v| v.to_vec())))
            .await
    }

    async fn replace_ca_journal(
        &self,
        expected: Option<&[u8]>,
        bytes: &[u8],
    ) -> Result<(), StoreError> {
        let (expected, bytes) = (expected.map(<[u8]>::to_vec), bytes.to_vec());
        #[cfg(test)]
        let fault = self.inner.journal_fault.lock().unwrap().take();
        #[cfg(test)]
        if let Some(fault) = fault {
            if fault == JournalFault::WrittenButUnacknowledged {
                self.run(move |s| s.replace_ca_journal(expected.as_deref(), &bytes))
                    .await?;
            }
            return Err(StoreError::Unavailable {
                backend: "sled",
                source: "injected by a test: no answer".into(),
            });
        }
        self.run(move |s| s.replace_ca_journal(expected.as_deref(), &bytes))
            .await
    }

    async fn put_join_token(
        &self,
        token_hash: &[u8; 32],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let hash = *token_hash;
        self.run(move |s| s.put_join_token(&hash, expires_at)).await
    }

    async fn take_join_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError> {
        let hash = *token_hash;
        self.run(move |s| s.take_join_token(&hash)).await
    }

    fn watch_head(&self) -> watch::Receiver<Revision> {
        self.inner.head.subscribe()
    }

    async fn changes_since(
        &self,
        after: Revision,
        limit: usize,
    ) -> Result<ChangesSince, StoreError> {
        self.run(move |s| s.changes_since(after, limit)).await
    }

    async fn snapshot(&self) -> Result<Snapshot, StoreError> {
        self.run(|s| s.snapshot()).await
    }
}

#[cfg(test)]
mod tests {
    use ironroot_api::entry::EntrySpec;
    use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};

    use super::*;

    fn spec(i: usize) -> EntrySpec {
        let id = |p: &str| SpiffeId::parse(&format!("spiffe://example.org{p}")).unwrap();
        EntrySpec {
            spiffe_id: id(&format!("/w/{i}")),
            parent_id: id("/spire/agent/a"),
            selectors: vec!["unix:uid:1".parse().unwrap()],
            x509_svid_ttl: 0,
            jwt_svid_ttl: 0,
            dns_names: vec![],
            admin: false,
            downstream: false,
            hint: String::new(),
            expires_at: 0,
            federates_with: vec![],
        }
    }

    fn revisions(c: ChangesSince) -> Vec<u64> {
        match c {
            ChangesSince::Events(e) => e.iter().map(|e| e.revision.0).collect(),
            ChangesSince::Truncated { oldest } => panic!("truncated at {oldest:?}"),
        }
    }

    /// Writes of 3, 5 and 2 changes make records starting at revisions 1, 4
    /// and 9. Reads start anywhere inside a record and stop at the limit;
    /// pruning keeps the record holding the first kept revision whole.
    #[test]
    fn change_records_are_read_and_pruned_across_their_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SledStore::open(dir.path(), TrustDomain::parse("example.org").unwrap()).unwrap();
        let s = &store.inner;
        let mut n = 0;
        for size in [3, 5, 2] {
            let specs = (n..n + size).map(spec).collect();
            n += size;
            assert!(s.create_entries(specs).unwrap().iter().all(Result::is_ok));
        }
        let starts: Vec<u64> = s
            .scan(Space::Changes, &[])
            .keys()
            .map(|k| codec::decode_revision(Space::strip(&k.unwrap())).unwrap().0)
            .collect();
        assert_eq!(starts, [1, 4, 9]);
        // Served from the events kept in memory, then (forgotten) from sled.
        for from_memory in [true, false] {
            if !from_memory {
                s.recent.forget();
            }
            assert_eq!(
                revisions(s.changes_since(Revision(0), 100).unwrap()),
                (1..=10).collect::<Vec<_>>()
            );
            assert_eq!(
                revisions(s.changes_since(Revision(5), 100).unwrap()),
                [6, 7, 8, 9, 10]
            );
            assert_eq!(
                revisions(s.changes_since(Revision(2), 4).unwrap()),
                [3, 4, 5, 6]
            );
            assert_eq!(
                revisions(s.changes_since(Revision(10), 100).unwrap()),
                Vec::<u64>::new()
            );
        }
        // Kept in memory again from the next write on, and pruned with sled.
        let specs = (n..n + 2).map(spec).collect();
        assert!(s.create_entries(specs).unwrap().iter().all(Result::is_ok));
        assert_eq!(s.recent.after(Revision(10), 100).map(|e| e.len()), Some(2));
        assert_eq!(s.recent.after(Revision(9), 100), None);
        assert_eq!(
            revisions(s.changes_since(Revision(9), 100).unwrap()),
            [10, 11, 12]
        );

        s.prune_changes(Revision(6)).unwrap();
        match s.changes_since(Revision(0), 100).unwrap() {
            ChangesSince::Truncated { oldest } => assert_eq!(oldest, Revision(4)),
            ChangesSince::Events(e) => {
                panic!("{} events read from before the pruned point", e.len())
            }
        }
        assert_eq!(
            revisions(s.changes_since(Revision(3), 100).unwrap()),
            (4..=12).collect::<Vec<_>>()
        );
        s.prune_changes(Revision(9)).unwrap();
        assert_eq!(
            revisions(s.changes_since(Revision(8), 100).unwrap()),
            [9, 10, 11, 12]
        );
        s.prune_changes(Revision(12)).unwrap();
        assert_eq!(s.recent.after(Revision(10), 100).map(|e| e.len()), Some(2));
        match s.changes_since(Revision(9), 100).unwrap() {
            ChangesSince::Truncated { oldest } => assert_eq!(oldest, Revision(11)),
            ChangesSince::Events(e) => panic!("{} pruned events read from memory", e.len()),
        }
    }
}
