//! The entry rules every backend applies the same way.

use ironroot_api::entry::{EntrySpec, RegistrationEntry};
use ironroot_api::spiffe_id::TrustDomain;
use sha2::{Digest, Sha256};

use super::{Page, PageRequest, StoreError, MAX_BATCH};

/// `spec` in stored form (selectors sorted and deduplicated) if it passes
/// [`EntrySpec::validate`] for `trust_domain`.
pub(crate) fn validated_spec(
    mut spec: EntrySpec,
    trust_domain: &TrustDomain,
) -> Result<EntrySpec, StoreError> {
    spec.normalize();
    spec.validate(trust_domain)?;
    Ok(spec)
}

/// A batch's new entries before any store rule: each spec validated and
/// given a fresh UUID v7 id, revision 0, `created_at` `now`; an invalid spec
/// is its error. Ids are fixed here, outside any transaction, so a retried
/// transaction writes the same entries. Refuses a batch over [`MAX_BATCH`].
pub(crate) fn new_entries(
    specs: Vec<EntrySpec>,
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<Vec<Result<RegistrationEntry, StoreError>>, StoreError> {
    check_batch(specs.len())?;
    Ok(specs
        .into_iter()
        .map(|spec| {
            let spec = validated_spec(spec, trust_domain)?;
            // v7: time-ordered, so new entries' records land at the end of the
            // store's key order instead of all over it (fewer leaf splits on sled).
            let id = uuid::Uuid::now_v7().to_string();
            Ok(RegistrationEntry::from_spec(id, spec, 0, now))
        })
        .collect())
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

/// Refuses a batch larger than [`MAX_BATCH`].
pub(super) fn check_batch(count: usize) -> Result<(), StoreError> {
    if count > MAX_BATCH {
        return Err(StoreError::BatchTooLarge {
            count,
            max: MAX_BATCH,
        });
    }
    Ok(())
}

/// A page token is the last key of the previous page; one that cannot be a
/// key is refused rather than silently restarting the listing.
pub(super) fn check_token(page: &PageRequest) -> Result<(), StoreError> {
    match &page.after {
        Some(t) if t.is_empty() || t.len() > 2048 || t.contains('\0') => {
            Err(StoreError::BadPageToken { token: t.clone() })
        }
        _ => Ok(()),
    }
}

/// A page of `items`, whose token is the last item's key when there are `more`.
pub(super) fn page_of<T>(items: Vec<T>, more: bool, key: impl Fn(&T) -> String) -> Page<T> {
    let next = if more { items.last().map(key) } else { None };
    Page { items, next }
}
