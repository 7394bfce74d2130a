//! `federates_with`: which federated trust domains' bundles an entry's
//! workloads receive. Accepted in SPIRE's two spellings (`example.org` and
//! `spiffe://example.org`), stored as bare names.

use super::{EntryError, MAX_FEDERATES_WITH};
use crate::spiffe_id::{SpiffeId, TrustDomain};

/// Longest slice of a refused value quoted back in an error.
const QUOTED_MAX: usize = 256;

/// Parses item `index` of `federates_with`: a trust domain name
/// (`example.org`) or its SPIFFE ID (`spiffe://example.org`), as SPIRE
/// accepts both. A SPIFFE ID with a path is refused: it names a workload,
/// not a trust domain, and is most likely a mistaken paste.
pub fn parse_federated_trust_domain(index: usize, s: &str) -> Result<TrustDomain, EntryError> {
    let refused = |reason: String| EntryError::FederatesWith {
        index,
        value: s.chars().take(QUOTED_MAX).collect(),
        reason,
    };
    if s.is_empty() {
        return Err(refused("it is empty".into()));
    }
    if !s.contains("://") {
        return TrustDomain::parse(s).map_err(|e| refused(e.to_string()));
    }
    let id = SpiffeId::parse(s).map_err(|e| refused(e.to_string()))?;
    if !id.path().is_empty() {
        return Err(refused(format!(
            "it has a path ('{}'); name the trust domain alone",
            id.path()
        )));
    }
    Ok(id.trust_domain().clone())
}

/// The rules of a (normalized) `federates_with` that need no store: at most
/// [`MAX_FEDERATES_WITH`] names, and never the entry's own trust domain.
pub(super) fn validate(list: &[TrustDomain], own: &TrustDomain) -> Result<(), EntryError> {
    if list.len() > MAX_FEDERATES_WITH {
        return Err(EntryError::TooManyFederatesWith {
            count: list.len(),
            max: MAX_FEDERATES_WITH,
        });
    }
    if let Some(td) = list.iter().find(|td| *td == own) {
        return Err(EntryError::FederatesWithOwnTrustDomain {
            trust_domain: td.to_string(),
        });
    }
    Ok(())
}
