//! How values and keys are laid out in sled.

use ironroot_api::spiffe_id::SpiffeId;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::store::{Revision, StoreError};

pub(super) fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|e| StoreError::Encode {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

pub(super) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

/// Big-endian, so sled's byte order is revision order.
pub(super) fn revision_key(r: Revision) -> [u8; 8] {
    r.0.to_be_bytes()
}

pub(super) fn decode_revision(bytes: &[u8]) -> Result<Revision, StoreError> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        what: "revision".into(),
        reason: format!("{} bytes, not 8", bytes.len()),
    })?;
    Ok(Revision(u64::from_be_bytes(b)))
}

/// `<value> NUL <id>`: an index key whose prefix `<value> NUL` lists the ids
/// with that value in id order. SPIFFE IDs cannot contain NUL.
pub(super) fn index_key(value: &str, id: &str) -> Vec<u8> {
    let mut k = index_prefix(value);
    k.extend_from_slice(id.as_bytes());
    k
}

pub(super) fn index_prefix(value: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(value.len() + 40);
    k.extend_from_slice(value.as_bytes());
    k.push(0);
    k
}

/// The id part of an [`index_key`].
pub(super) fn index_id(key: &[u8]) -> Option<&str> {
    let at = key.iter().position(|b| *b == 0)?;
    std::str::from_utf8(&key[at + 1..]).ok()
}

pub(super) fn node_key(id: &SpiffeId) -> Vec<u8> {
    id.to_string().into_bytes()
}
