//! [`DataStore`] on sled: one directory, no server to run.
//!
//! Layout (one sled tree each): `meta` (schema version, trust domain),
//! `entries` (id -> JSON entry), `entry_keys` (SHA-256 of the entry's
//! identity -> id, the uniqueness index), `nodes` (SPIFFE ID -> JSON node),
//! `bundles` (trust domain -> JSON bundle), `ca` (`journal` -> bytes).

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::{Db, Transactional, Tree};

use super::{AttestedNode, DataStore, EntryFilter, StoreError};

/// Bumped whenever the stored layout or value format changes incompatibly.
const SCHEMA_VERSION: u32 = 1;
const KEY_SCHEMA: &[u8] = b"schema_version";
const KEY_TRUST_DOMAIN: &[u8] = b"trust_domain";
const KEY_JOURNAL: &[u8] = b"journal";

/// The sled-backed store.
pub struct SledStore {
    db: Db,
    trust_domain: TrustDomain,
    entries: Tree,
    entry_keys: Tree,
    nodes: Tree,
    bundles: Tree,
    ca: Tree,
    join_tokens: Tree,
    /// Serializes writers. sled transactions give atomicity; this lock makes
    /// the duplicate check race-free without relying on the fine points of
    /// sled's optimistic concurrency, at no cost at admin-API write rates.
    write_lock: Mutex<()>,
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl SledStore {
    /// Opens (creating if needed) the store in `dir` for `trust_domain`.
    /// Refuses a store written for another trust domain or schema version.
    pub fn open(dir: &Path, trust_domain: TrustDomain) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).open()?;
        let meta = db.open_tree("meta")?;
        match meta.get(KEY_SCHEMA)? {
            None => {
                meta.insert(KEY_SCHEMA, SCHEMA_VERSION.to_string().as_bytes())?;
            }
            Some(v) if v.as_ref() == SCHEMA_VERSION.to_string().as_bytes() => {}
            Some(v) => {
                return Err(StoreError::UnsupportedSchema {
                    found: String::from_utf8_lossy(&v).into_owned(),
                    supported: SCHEMA_VERSION,
                })
            }
        }
        match meta.get(KEY_TRUST_DOMAIN)? {
            None => {
                meta.insert(KEY_TRUST_DOMAIN, trust_domain.as_str().as_bytes())?;
            }
            Some(v) if v.as_ref() == trust_domain.as_str().as_bytes() => {}
            Some(v) => {
                return Err(StoreError::TrustDomainMismatch {
                    stored: String::from_utf8_lossy(&v).into_owned(),
                    configured: trust_domain.to_string(),
                })
            }
        }
        db.flush()?;
        Ok(SledStore {
            entries: db.open_tree("entries")?,
            entry_keys: db.open_tree("entry_keys")?,
            nodes: db.open_tree("nodes")?,
            bundles: db.open_tree("bundles")?,
            ca: db.open_tree("ca")?,
            join_tokens: db.open_tree("join_tokens")?,
            db,
            trust_domain,
            write_lock: Mutex::new(()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded data is `()`: a panic elsewhere cannot leave it inconsistent.
        self.write_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Makes every write so far durable; called before acknowledging one.
    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    fn validated(&self, mut spec: EntrySpec) -> Result<EntrySpec, StoreError> {
        spec.normalize();
        spec.validate(&self.trust_domain)?;
        Ok(spec)
    }

    /// Runs `f` as one transaction over the entry tree and its index.
    fn entry_tx<T>(
        &self,
        f: impl Fn(&TransactionalTree, &TransactionalTree) -> TxResult<T>,
    ) -> Result<T, StoreError> {
        let _w = self.lock();
        let out = (&self.entries, &self.entry_keys)
            .transaction(|(entries, keys)| f(entries, keys))
            .map_err(|e| match e {
                TransactionError::Abort(e) => e,
                TransactionError::Storage(e) => StoreError::Sled(e),
            })?;
        self.flush()?;
        Ok(out)
    }

    fn put_value<T: Serialize>(
        &self,
        tree: &Tree,
        key: &[u8],
        what: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = encode(what, value)?;
        let _w = self.lock();
        tree.insert(key, bytes)?;
        self.flush()
    }

    fn get_value<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        tree.get(key)?.map(|v| decode(what, &v)).transpose()
    }

    fn list_values<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        tree.iter().values().map(|v| decode(what, &v?)).collect()
    }

    fn remove_value<T: DeserializeOwned>(
        &self,
        tree: &Tree,
        key: &[u8],
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let _w = self.lock();
        let old = tree.remove(key)?;
        self.flush()?;
        old.map(|v| decode(what, &v)).transpose()
    }
}

impl DataStore for SledStore {
    fn create_entry(&self, spec: EntrySpec) -> Result<RegistrationEntry, StoreError> {
        let spec = self.validated(spec)?;
        let id = uuid::Uuid::new_v4().to_string();
        let entry = RegistrationEntry::from_spec(id, spec, 0, ironroot_runtime::unix_now());
        let value = encode("entry", &entry)?;
        let key = identity_key(&entry);
        self.entry_tx(|entries, keys| {
            if let Some(existing) = keys.get(key)? {
                return abort(StoreError::DuplicateEntry {
                    existing_id: String::from_utf8_lossy(&existing).into_owned(),
                });
            }
            keys.insert(&key, entry.id.as_bytes())?;
            entries.insert(entry.id.as_bytes(), value.as_slice())?;
            Ok(())
        })?;
        Ok(entry)
    }

    fn update_entry(
        &self,
        id: &str,
        spec: EntrySpec,
        expected_revision: Option<i64>,
    ) -> Result<RegistrationEntry, StoreError> {
        let spec = self.validated(spec)?;
        self.entry_tx(|entries, keys| {
            let Some(old) = entries.get(id)? else {
                return abort(StoreError::EntryNotFound { id: id.to_owned() });
            };
            let old: RegistrationEntry = decode("entry", &old).or_else(abort)?;
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
            let (old_key, new_key) = (identity_key(&old), identity_key(&new));
            if old_key != new_key {
                if let Some(existing) = keys.get(new_key)? {
                    return abort(StoreError::DuplicateEntry {
                        existing_id: String::from_utf8_lossy(&existing).into_owned(),
                    });
                }
                keys.remove(&old_key)?;
                keys.insert(&new_key, id.as_bytes())?;
            }
            entries.insert(id.as_bytes(), encode("entry", &new).or_else(abort)?)?;
            Ok(new)
        })
    }

    fn delete_entry(&self, id: &str) -> Result<RegistrationEntry, StoreError> {
        self.entry_tx(|entries, keys| {
            let Some(old) = entries.remove(id.as_bytes())? else {
                return abort(StoreError::EntryNotFound { id: id.to_owned() });
            };
            let old: RegistrationEntry = decode("entry", &old).or_else(abort)?;
            keys.remove(&identity_key(&old))?;
            Ok(old)
        })
    }

    fn get_entry(&self, id: &str) -> Result<Option<RegistrationEntry>, StoreError> {
        self.get_value(&self.entries, id.as_bytes(), "entry")
    }

    fn list_entries(&self, filter: &EntryFilter) -> Result<Vec<RegistrationEntry>, StoreError> {
        // A scan: entry counts are in the thousands, and the scan keeps every
        // filter combination correct without more indexes to keep in step.
        let mut out = Vec::new();
        for v in self.entries.iter().values() {
            let e: RegistrationEntry = decode("entry", &v?)?;
            if filter.matches(&e) {
                out.push(e);
            }
        }
        Ok(out)
    }

    fn count_entries(&self) -> Result<u64, StoreError> {
        Ok(self.entries.len() as u64)
    }

    fn put_attested_node(&self, node: &AttestedNode) -> Result<(), StoreError> {
        let key = node.spiffe_id.to_string();
        self.put_value(&self.nodes, key.as_bytes(), "attested node", node)
    }

    fn get_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError> {
        self.get_value(&self.nodes, id.to_string().as_bytes(), "attested node")
    }

    fn record_attestation(&self, node: &AttestedNode) -> Result<AttestedNode, StoreError> {
        let key = node.spiffe_id.to_string();
        // Under the write lock: a ban made concurrently is never overwritten.
        let _w = self.lock();
        let previous: Option<AttestedNode> = match self.nodes.get(key.as_bytes())? {
            Some(v) => Some(serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: "attested node".into(),
                reason: e.to_string(),
            })?),
            None => None,
        };
        if previous.as_ref().is_some_and(|p| p.banned) {
            return Err(StoreError::Banned { id: key });
        }
        let mut stored = node.clone();
        stored.banned = false;
        if let Some(p) = previous {
            stored.first_attested_at = p.first_attested_at;
        }
        self.nodes
            .insert(key.as_bytes(), encode("attested node", &stored)?)?;
        self.flush()?;
        Ok(stored)
    }

    fn set_node_banned(&self, id: &SpiffeId, banned: bool) -> Result<AttestedNode, StoreError> {
        let key = id.to_string();
        let _w = self.lock();
        let v = self
            .nodes
            .get(key.as_bytes())?
            .ok_or_else(|| StoreError::NodeNotFound { id: key.clone() })?;
        let mut node: AttestedNode =
            serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                what: "attested node".into(),
                reason: e.to_string(),
            })?;
        node.banned = banned;
        self.nodes
            .insert(key.as_bytes(), encode("attested node", &node)?)?;
        self.flush()?;
        Ok(node)
    }

    fn list_attested_nodes(&self) -> Result<Vec<AttestedNode>, StoreError> {
        self.list_values(&self.nodes, "attested node")
    }

    fn delete_attested_node(&self, id: &SpiffeId) -> Result<Option<AttestedNode>, StoreError> {
        self.remove_value(&self.nodes, id.to_string().as_bytes(), "attested node")
    }

    fn put_federated_bundle(&self, bundle: &TrustBundle) -> Result<(), StoreError> {
        if bundle.trust_domain == self.trust_domain {
            return Err(StoreError::OwnTrustDomain {
                trust_domain: self.trust_domain.to_string(),
            });
        }
        let key = bundle.trust_domain.as_str().as_bytes();
        self.put_value(&self.bundles, key, "federated bundle", bundle)
    }

    fn get_federated_bundle(&self, td: &TrustDomain) -> Result<Option<TrustBundle>, StoreError> {
        self.get_value(&self.bundles, td.as_str().as_bytes(), "federated bundle")
    }

    fn list_federated_bundles(&self) -> Result<Vec<TrustBundle>, StoreError> {
        self.list_values(&self.bundles, "federated bundle")
    }

    fn delete_federated_bundle(&self, td: &TrustDomain) -> Result<bool, StoreError> {
        let _w = self.lock();
        let existed = self.bundles.remove(td.as_str().as_bytes())?.is_some();
        self.flush()?;
        Ok(existed)
    }

    fn get_ca_journal(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.ca.get(KEY_JOURNAL)?.map(|v| v.to_vec()))
    }

    fn put_ca_journal(&self, bytes: &[u8]) -> Result<(), StoreError> {
        let _w = self.lock();
        self.ca.insert(KEY_JOURNAL, bytes)?;
        self.flush()
    }

    fn put_join_token(&self, token_hash: &[u8; 32], expires_at: i64) -> Result<(), StoreError> {
        let _w = self.lock();
        self.join_tokens
            .insert(token_hash, &expires_at.to_be_bytes())?;
        self.flush()
    }

    fn take_join_token(&self, token_hash: &[u8; 32]) -> Result<Option<i64>, StoreError> {
        let _w = self.lock();
        // Removed before it is used: a token works once, even if the attestation fails.
        let Some(v) = self.join_tokens.remove(token_hash)? else {
            return Ok(None);
        };
        self.flush()?;
        let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: "join token".into(),
            reason: format!("expiry is {} bytes, not 8", v.len()),
        })?;
        Ok(Some(i64::from_be_bytes(bytes)))
    }
}

/// What makes two entries duplicates: SPIFFE ID, parent ID and the sorted
/// selectors. Hashed so the index key has a fixed size whatever the entry's.
/// NUL separates the parts: none of them can contain it.
fn identity_key(e: &RegistrationEntry) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(e.spec.spiffe_id.to_string().as_bytes());
    h.update([0]);
    h.update(e.spec.parent_id.to_string().as_bytes());
    for s in &e.spec.selectors {
        h.update([0]);
        h.update(s.to_string().as_bytes());
    }
    h.finalize().into()
}

fn abort<T>(e: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(e))
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}
