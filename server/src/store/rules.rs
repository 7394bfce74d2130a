//! The entry rules every backend applies the same way.

use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::TrustDomain;
use sha2::{Digest, Sha256};

use super::StoreError;

/// `spec` in stored form (selectors sorted and deduplicated) if it passes
/// [`EntrySpec::validate`] for `trust_domain`.
pub fn validated_spec(
    mut spec: EntrySpec,
    trust_domain: &TrustDomain,
) -> Result<EntrySpec, StoreError> {
    spec.normalize();
    spec.validate(trust_domain)?;
    Ok(spec)
}

/// What makes two entries duplicates: SPIFFE ID, parent ID and the sorted
/// selectors. Hashed so an index key has a fixed size whatever the entry's.
/// NUL separates the parts: none of them can contain it.
pub fn entry_identity_key(e: &RegistrationEntry) -> [u8; 32] {
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
