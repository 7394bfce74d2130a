//! Bringing a store written by an earlier layout to [`SCHEMA_VERSION`].
//!
//! Each step is idempotent and the version is written last, after a flush:
//! a crash in the middle leaves the old version recorded, and the next open
//! runs the step again from the start.

use ironroot_api::entry::RegistrationEntry;
use tracing::info;

use super::codec::{decode, encode, index_key};
use super::{sled_err, Inner, KEY_REVISION, KEY_SCHEMA, SCHEMA_VERSION};
use crate::store::{AttestedNode, ChangeEvent, StoreError};

pub(super) fn to_current(s: &Inner) -> Result<(), StoreError> {
    let found = s.meta.get(KEY_SCHEMA).map_err(sled_err)?;
    let version = match &found {
        None => {
            // A new store, or one that has entries from before versions were
            // written (there is none such): start at the current layout.
            if !s.entries.is_empty() || !s.nodes.is_empty() {
                return Err(StoreError::UnsupportedSchema {
                    found: "none".into(),
                    supported: SCHEMA_VERSION,
                });
            }
            return set_version(s, SCHEMA_VERSION);
        }
        Some(v) => std::str::from_utf8(v)
            .ok()
            .and_then(|v| v.parse::<u32>().ok()),
    };
    let mut version = match version {
        Some(v @ 1..=SCHEMA_VERSION) => v,
        _ => {
            return Err(StoreError::UnsupportedSchema {
                found: found
                    .map(|v| String::from_utf8_lossy(&v).into_owned())
                    .unwrap_or_default(),
                supported: SCHEMA_VERSION,
            })
        }
    };
    // One step at a time, each recorded once done.
    while version < SCHEMA_VERSION {
        match version {
            1 => v1_to_v2(s)?,
            _ => v2_to_v3(s)?,
        }
        version += 1;
        set_version(s, version)?;
    }
    Ok(())
}

fn set_version(s: &Inner, v: u32) -> Result<(), StoreError> {
    s.db.flush().map_err(sled_err)?;
    s.meta
        .insert(KEY_SCHEMA, v.to_string().as_bytes())
        .map_err(sled_err)?;
    s.db.flush().map_err(sled_err)?;
    Ok(())
}

/// 1 → 2: the listing indexes, the banned-node index, and the change feed
/// starting at revision 0 (nothing to replay: every server reads a snapshot
/// first).
fn v1_to_v2(s: &Inner) -> Result<(), StoreError> {
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
fn v2_to_v3(s: &Inner) -> Result<(), StoreError> {
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
