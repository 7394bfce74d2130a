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

/// `<SPIFFE ID> NUL <identity key>`: the SPIFFE ID index's key of an entry.
pub(super) fn identity_index_key(spiffe_id: &str, identity: &[u8; 32]) -> Vec<u8> {
    let mut k = index_prefix(spiffe_id);
    k.extend_from_slice(identity);
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

/// The parts of the one `store` tree: every key starts with its part's byte,
/// so each part is one contiguous, ordered key range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Space {
    /// Schema version, trust domain, head revision.
    Meta,
    /// Entry id -> JSON entry.
    Entries,
    /// `<parent id> NUL <entry id>` -> empty.
    ByParent,
    /// `<SPIFFE ID> NUL <identity key>` -> entry id: the listing index by
    /// SPIFFE ID and the uniqueness index at once (the identity key is the
    /// SHA-256 of SPIFFE ID, parent ID and selectors).
    BySpiffeId,
    /// Node SPIFFE ID -> JSON node.
    Nodes,
    /// SPIFFE ID of each banned node -> empty.
    Banned,
    /// Trust domain -> JSON federated bundle.
    Bundles,
    /// `journal` -> the CA journal's bytes.
    Ca,
    /// SHA-256 of a join token -> its expiry.
    JoinTokens,
    /// First revision of a write -> JSON array of its change events.
    Changes,
}

impl Space {
    fn tag(self) -> u8 {
        match self {
            Space::Meta => b'm',
            Space::Entries => b'e',
            Space::ByParent => b'p',
            Space::BySpiffeId => b's',
            Space::Nodes => b'n',
            Space::Banned => b'b',
            Space::Bundles => b'f',
            Space::Ca => b'c',
            Space::JoinTokens => b'j',
            Space::Changes => b'r',
        }
    }

    /// `key` in this part.
    pub(super) fn key(self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(key.len() + 1);
        k.push(self.tag());
        k.extend_from_slice(key);
        k
    }

    /// The first key past this part (its keys are all below it).
    pub(super) fn end(self) -> [u8; 1] {
        [self.tag() + 1]
    }

    /// A stored key without its part's byte.
    pub(super) fn strip(key: &[u8]) -> &[u8] {
        key.get(1..).unwrap_or_default()
    }
}
