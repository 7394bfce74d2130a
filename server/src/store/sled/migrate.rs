//! Bringing a store written by an earlier layout to [`SCHEMA_VERSION`].
//!
//! Schemas 1 to 3 kept a sled tree per kind of record (their version in the
//! `meta` tree); schema 4 keeps everything in the `store` tree. Each step is
//! idempotent and the version is written last, after a flush: a crash in the
//! middle leaves the old version recorded, and the next open runs the step
//! again from the start. The old trees are dropped only once schema 4 is
//! recorded (and again on any open that still finds them).

use ironroot_api::entry::RegistrationEntry;
use sled::{Db, IVec, Tree};
use tracing::info;

use super::codec::{decode, encode, identity_index_key, index_key, Space};
use super::{sled_err, Inner, KEY_REVISION, KEY_SCHEMA, KEY_TRUST_DOMAIN, SCHEMA_VERSION};
use crate::store::{entry_identity_key, AttestedNode, ChangeEvent, StoreError};

/// The last schema with a tree per kind of record.
const LAST_LEGACY: u32 = 3;

/// The trees of schemas 1 to 3.
const LEGACY_TREES: [&str; 11] = [
    "meta",
    "entries",
    "entry_keys",
    "entries_by_parent",
    "entries_by_spiffe_id",
    "nodes",
    "banned_nodes",
    "bundles",
    "ca",
    "join_tokens",
    "changes",
];

/// A store of schema 1 to 3, tree by tree.
struct Legacy {
    meta: Tree,
    entries: Tree,
    by_parent: Tree,
    by_spiffe_id: Tree,
    nodes: Tree,
    banned: Tree,
    bundles: Tree,
    ca: Tree,
    join_tokens: Tree,
    changes: Tree,
}

impl Legacy {
    fn open(db: &Db) -> Result<Self, StoreError> {
        let tree = |name: &str| db.open_tree(name).map_err(sled_err);
        Ok(Legacy {
            meta: tree("meta")?,
            entries: tree("entries")?,
            by_parent: tree("entries_by_parent")?,
            by_spiffe_id: tree("entries_by_spiffe_id")?,
            nodes: tree("nodes")?,
            banned: tree("banned_nodes")?,
            bundles: tree("bundles")?,
            ca: tree("ca")?,
            join_tokens: tree("join_tokens")?,
            changes: tree("changes")?,
        })
    }
}

fn has_tree(db: &Db, name: &str) -> bool {
    db.tree_names()
        .iter()
        .any(|n| n.as_ref() == name.as_bytes())
}

/// The trust domain a store of schema 1 to 3 was written for, if there is one.
pub(super) fn legacy_trust_domain(db: &Db) -> Result<Option<IVec>, StoreError> {
    if !has_tree(db, "meta") {
        return Ok(None);
    }
    let meta = db.open_tree("meta").map_err(sled_err)?;
    meta.get(KEY_TRUST_DOMAIN).map_err(sled_err)
}

fn unsupported(found: Option<IVec>) -> StoreError {
    StoreError::UnsupportedSchema {
        found: found
            .map(|v| String::from_utf8_lossy(&v).into_owned())
            .unwrap_or_default(),
        supported: SCHEMA_VERSION,
    }
}

fn parse_version(v: &[u8]) -> Option<u32> {
    std::str::from_utf8(v).ok()?.parse().ok()
}

pub(super) fn to_current(s: &Inner) -> Result<(), StoreError> {
    if let Some(found) = s.get(Space::Meta, KEY_SCHEMA)? {
        if parse_version(&found) != Some(SCHEMA_VERSION) {
            return Err(unsupported(Some(found)));
        }
        return drop_legacy(&s.db);
    }
    let found = match has_tree(&s.db, "meta") {
        true => {
            s.db.open_tree("meta")
                .and_then(|m| m.get(KEY_SCHEMA))
                .map_err(sled_err)?
        }
        false => None,
    };
    let Some(found) = found else {
        // A new store, or one that has records from before versions were
        // written (there is none such): start at the current layout.
        for name in ["entries", "nodes"] {
            if has_tree(&s.db, name) && !s.db.open_tree(name).map_err(sled_err)?.is_empty() {
                return Err(StoreError::UnsupportedSchema {
                    found: "none".into(),
                    supported: SCHEMA_VERSION,
                });
            }
        }
        s.tree
            .insert(
                Space::Meta.key(KEY_TRUST_DOMAIN),
                s.trust_domain.as_str().as_bytes(),
            )
            .map_err(sled_err)?;
        set_version(s, SCHEMA_VERSION)?;
        return drop_legacy(&s.db);
    };
    let mut version = match parse_version(&found) {
        Some(v @ 1..=LAST_LEGACY) => v,
        _ => return Err(unsupported(Some(found))),
    };
    let legacy = Legacy::open(&s.db)?;
    // One step at a time, each recorded once done.
    while version < LAST_LEGACY {
        match version {
            1 => v1_to_v2(&legacy)?,
            _ => v2_to_v3(&legacy)?,
        }
        version += 1;
        set_legacy_version(s, &legacy, version)?;
    }
    v3_to_v4(s, &legacy)?;
    set_version(s, SCHEMA_VERSION)?;
    drop(legacy);
    drop_legacy(&s.db)
}

fn set_legacy_version(s: &Inner, legacy: &Legacy, v: u32) -> Result<(), StoreError> {
    s.db.flush().map_err(sled_err)?;
    legacy
        .meta
        .insert(KEY_SCHEMA, v.to_string().as_bytes())
        .map_err(sled_err)?;
    s.db.flush().map_err(sled_err)?;
    Ok(())
}

fn set_version(s: &Inner, v: u32) -> Result<(), StoreError> {
    s.db.flush().map_err(sled_err)?;
    s.tree
        .insert(Space::Meta.key(KEY_SCHEMA), v.to_string().as_bytes())
        .map_err(sled_err)?;
    s.db.flush().map_err(sled_err)?;
    Ok(())
}

/// Drops whatever trees of schemas 1 to 3 are still there.
fn drop_legacy(db: &Db) -> Result<(), StoreError> {
    for name in LEGACY_TREES {
        if has_tree(db, name) {
            db.drop_tree(name).map_err(sled_err)?;
        }
    }
    Ok(())
}

/// Writes into the store tree in batches of a bounded size.
struct Copier<'a> {
    tree: &'a Tree,
    batch: sled::Batch,
    pending: usize,
}

impl Copier<'_> {
    const BATCH: usize = 10_000;

    fn put(&mut self, space: Space, key: &[u8], value: impl Into<IVec>) -> Result<(), StoreError> {
        self.batch.insert(space.key(key), value.into());
        self.pending += 1;
        if self.pending == Self::BATCH {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StoreError> {
        self.pending = 0;
        self.tree
            .apply_batch(std::mem::take(&mut self.batch))
            .map_err(sled_err)
    }
}

/// 3 → 4: every tree's records into the one store tree, under their part's
/// byte; the listing indexes rebuilt from the entries, the SPIFFE ID index
/// now keyed by each entry's identity key too (the separate `entry_keys`
/// index is gone). An entry that does not decode is copied as it is, unindexed.
fn v3_to_v4(s: &Inner, l: &Legacy) -> Result<(), StoreError> {
    s.tree.clear().map_err(sled_err)?;
    let mut out = Copier {
        tree: &s.tree,
        batch: sled::Batch::default(),
        pending: 0,
    };
    out.put(
        Space::Meta,
        KEY_TRUST_DOMAIN,
        s.trust_domain.as_str().as_bytes(),
    )?;
    if let Some(head) = l.meta.get(KEY_REVISION).map_err(sled_err)? {
        out.put(Space::Meta, KEY_REVISION, head)?;
    }
    let (mut entries, mut unreadable) = (0u64, 0u64);
    for kv in l.entries.iter() {
        let (k, v) = kv.map_err(sled_err)?;
        out.put(Space::Entries, &k, v.clone())?;
        let Ok(e) = decode::<RegistrationEntry>("entry", &v) else {
            unreadable += 1;
            continue;
        };
        out.put(
            Space::ByParent,
            &index_key(&e.spec.parent_id.to_string(), &e.id),
            IVec::default(),
        )?;
        out.put(
            Space::BySpiffeId,
            &identity_index_key(&e.spec.spiffe_id.to_string(), &entry_identity_key(&e)),
            e.id.as_bytes(),
        )?;
        entries += 1;
    }
    for (tree, space) in [
        (&l.nodes, Space::Nodes),
        (&l.banned, Space::Banned),
        (&l.bundles, Space::Bundles),
        (&l.ca, Space::Ca),
        (&l.join_tokens, Space::JoinTokens),
        (&l.changes, Space::Changes),
    ] {
        for kv in tree.iter() {
            let (k, v) = kv.map_err(sled_err)?;
            out.put(space, &k, v)?;
        }
    }
    out.flush()?;
    info!(
        entries,
        unreadable, "store migrated from schema 3 to 4 (one tree, written in batches)"
    );
    Ok(())
}

/// 1 → 2: the listing indexes, the banned-node index, and the change feed
/// starting at revision 0 (nothing to replay: every server reads a snapshot
/// first).
fn v1_to_v2(s: &Legacy) -> Result<(), StoreError> {
    s.by_parent.clear().map_err(sled_err)?;
    s.by_spiffe_id.clear().map_err(sled_err)?;
    s.banned.clear().map_err(sled_err)?;
    s.changes.clear().map_err(sled_err)?;
    let mut entries = 0u64;
    for v in s.entries.iter().values() {
        // An unreadable entry stays where it is, unindexed: listings by
        // parent will not show it, a full listing reports it.
        let Ok(e) = decode::<RegistrationEntry>("entry", &v.map_err(sled_err)?) else {
            continue;
        };
        s.by_parent
            .insert(index_key(&e.spec.parent_id.to_string(), &e.id), &[])
            .map_err(sled_err)?;
        s.by_spiffe_id
            .insert(index_key(&e.spec.spiffe_id.to_string(), &e.id), &[])
            .map_err(sled_err)?;
        entries += 1;
    }
    for kv in s.nodes.iter() {
        let (k, v) = kv.map_err(sled_err)?;
        if decode::<AttestedNode>("attested node", &v).is_ok_and(|n| n.banned) {
            s.banned.insert(k, &[]).map_err(sled_err)?;
        }
    }
    s.meta
        .insert(KEY_REVISION, &0u64.to_be_bytes())
        .map_err(sled_err)?;
    info!(
        entries,
        "store migrated from schema 1 to 2 (listing indexes, change feed)"
    );
    Ok(())
}

/// 2 → 3: each change event becomes a record of one (records now hold all the
/// events of one write). A record already rewritten (a crash in the middle of
/// this step) is left as it is.
fn v2_to_v3(s: &Legacy) -> Result<(), StoreError> {
    let mut rewritten = 0u64;
    for kv in s.changes.iter() {
        let (k, v) = kv.map_err(sled_err)?;
        if decode::<Vec<ChangeEvent>>("change events", &v).is_ok() {
            continue;
        }
        let event = decode::<ChangeEvent>("change event", &v)?;
        s.changes
            .insert(k, encode("change events", &[event])?)
            .map_err(sled_err)?;
        rewritten += 1;
    }
    info!(
        rewritten,
        "store migrated from schema 2 to 3 (change events grouped per write)"
    );
    Ok(())
}
