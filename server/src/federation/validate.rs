//! What a fetched bundle must be before it replaces the stored one, and when the next
//! fetch is due. Pure: no I/O, no clock.
//!
//! The rules, in order (each refusal names its rule; the stored bundle stays):
//!
//! 1. **well-formed**: a SPIFFE JWK Set (`ironroot_api::bundle`, which refuses a malformed
//!    key of a known kind and a document over 1 MiB);
//! 2. **not empty**: at least one X.509 or JWT authority (an empty bundle would silently
//!    stop trust in every SVID of the trust domain); for an `https_spiffe` relationship at
//!    least one X.509 authority (**x509-authority**): the next fetch authenticates the
//!    endpoint with the stored bundle's X.509 roots, so a JWT-only bundle would end the
//!    relationship and drop the peer's X.509 roots from every workload;
//! 3. **trust domain**: every X.509 authority that carries a SPIFFE ID (SPIRE's and
//!    ironroot's CA certificates carry `spiffe://<td>`) is in the relationship's trust
//!    domain; one naming another trust domain is a bundle served for the wrong domain.
//!    Every `spiffe` URI SAN counts (however many, the scheme in any case), and one that is
//!    not a valid SPIFFE ID is refused: a name the rule cannot read is not let through;
//! 4. **sequence**: `spiffe_sequence` never goes down, and a bundle whose keys differ from
//!    the stored one must raise it. A lower sequence is a replay of an old bundle (it
//!    would bring back retired keys) or a peer whose state was reset: refused either way;
//!    the operator re-bootstraps with `bundle set`, which stores whatever sequence the
//!    document carries (0 for a PEM). An equal sequence with equal keys is no change.
//!    `spiffe_sequence` is optional in the SPIFFE bundle format (SPIRE leaves it out while
//!    it is 0): a peer that has never published one (stored and fetched both 0) has its
//!    changed keys accepted, without replay protection, which only a peer that publishes
//!    sequences can give. Once a sequence above 0 is stored, a 0 is a sequence that went back.

use std::time::Duration;

use der::oid::AssociatedOid;
use der::Decode;
use ironroot_api::bundle::{BundleError, TrustBundle};
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::Certificate;

use crate::config::RefreshBounds;

/// Why a fetched bundle was not stored. The message names the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum BundleRefusal {
    /// Not a SPIFFE bundle (not JSON, not a JWK Set, a malformed key).
    #[error("rule well-formed: the answer is not a SPIFFE bundle: {0}")]
    Malformed(#[source] BundleError),
    /// No authority at all.
    #[error("rule not-empty: the bundle holds no X.509 or JWT authority")]
    Empty,
    /// An https_spiffe relationship's bundle without an X.509 authority.
    #[error(
        "rule x509-authority: the bundle holds no X.509 authority, and an https_spiffe \
         relationship authenticates its next fetch with the stored bundle's X.509 roots"
    )]
    NoX509Authority,
    /// An X.509 authority names another trust domain.
    #[error(
        "rule trust-domain: x509 authority {index} names {named}, not {expected}: the \
         endpoint serves another trust domain's bundle (check bundle_endpoint_url)"
    )]
    ForeignAuthority {
        /// The authority's position in the bundle.
        index: usize,
        /// The trust domain it names.
        named: String,
        /// The relationship's trust domain.
        expected: TrustDomain,
    },
    /// An X.509 authority's names cannot be read as SPIFFE IDs: a `spiffe` URI SAN that is
    /// not one, or a subjectAltName that does not parse.
    #[error(
        "rule trust-domain: x509 authority {index} {reason}; an authority may name only the \
         relationship's trust domain"
    )]
    UnreadableName {
        /// The authority's position in the bundle.
        index: usize,
        /// What cannot be read.
        reason: String,
    },
    /// `spiffe_sequence` is lower than the stored bundle's.
    #[error(
        "rule sequence: spiffe_sequence {got} is lower than the stored bundle's {stored} (an \
         old bundle replayed, or the peer's state reset; to accept it, set the bundle again \
         with `ironroot-server bundle set`)"
    )]
    SequenceWentBack {
        /// The fetched bundle's sequence.
        got: u64,
        /// The stored bundle's sequence.
        stored: u64,
    },
    /// The keys changed but the sequence did not.
    #[error(
        "rule sequence: the keys differ from the stored bundle's but spiffe_sequence is \
         still {0}"
    )]
    SequenceNotRaised(u64),
}

impl BundleRefusal {
    /// The rule's name, as the message says it (a metrics label).
    pub(crate) fn rule(&self) -> &'static str {
        match self {
            BundleRefusal::Malformed(_) => "well-formed",
            BundleRefusal::Empty => "not-empty",
            BundleRefusal::NoX509Authority => "x509-authority",
            BundleRefusal::ForeignAuthority { .. } | BundleRefusal::UnreadableName { .. } => {
                "trust-domain"
            }
            BundleRefusal::SequenceWentBack { .. } | BundleRefusal::SequenceNotRaised(_) => {
                "sequence"
            }
        }
    }
}

/// What to do with a fetched bundle that passed the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Store it: new keys or a higher sequence.
    Changed(TrustBundle),
    /// The stored bundle is current.
    Unchanged(TrustBundle),
}

impl Verdict {
    /// The fetched bundle.
    pub(crate) fn bundle(&self) -> &TrustBundle {
        match self {
            Verdict::Changed(b) | Verdict::Unchanged(b) => b,
        }
    }
}

/// Whether two bundles hold the same authorities (order and `expires_at`, which the JWKS
/// form does not carry, aside).
fn same_keys(a: &TrustBundle, b: &TrustBundle) -> bool {
    let mut ax = a.x509_authorities.clone();
    let mut bx = b.x509_authorities.clone();
    ax.sort();
    bx.sort();
    let jwt = |t: &TrustBundle| {
        let mut v: Vec<(String, Vec<u8>)> = t
            .jwt_authorities
            .iter()
            .map(|j| (j.key_id.clone(), j.public_key_der.clone()))
            .collect();
        v.sort();
        v
    };
    ax == bx && jwt(a) == jwt(b)
}

/// Judges `body`, fetched for `trust_domain`, against the `stored` bundle (none before the
/// first fetch of an https_web relationship). `needs_x509`: the relationship authenticates
/// its endpoint with the bundle's X.509 roots (https_spiffe).
pub(crate) fn judge(
    trust_domain: &TrustDomain,
    body: &[u8],
    stored: Option<&TrustBundle>,
    needs_x509: bool,
) -> Result<Verdict, BundleRefusal> {
    let text = std::str::from_utf8(body)
        .map_err(|e| BundleRefusal::Malformed(BundleError::Json(format!("not UTF-8: {e}"))))?;
    let fetched = TrustBundle::from_jwks_json(trust_domain.clone(), text)
        .map_err(BundleRefusal::Malformed)?;
    if fetched.x509_authorities.is_empty() && fetched.jwt_authorities.is_empty() {
        return Err(BundleRefusal::Empty);
    }
    if needs_x509 && fetched.x509_authorities.is_empty() {
        return Err(BundleRefusal::NoX509Authority);
    }
    for (index, cert) in fetched.x509_authorities.iter().enumerate() {
        // A CA certificate without a SPIFFE ID (an upstream root) names no trust domain;
        // one with several names is judged by each.
        let uris =
            spiffe_uris(cert).map_err(|reason| BundleRefusal::UnreadableName { index, reason })?;
        for uri in uris {
            let id = SpiffeId::parse(&uri).map_err(|e| BundleRefusal::UnreadableName {
                index,
                reason: format!("has URI SAN {uri:?}, which is not a SPIFFE ID ({e})"),
            })?;
            if id.trust_domain() != trust_domain {
                return Err(BundleRefusal::ForeignAuthority {
                    index,
                    named: id.trust_domain().to_string(),
                    expected: trust_domain.clone(),
                });
            }
        }
    }
    let Some(stored) = stored else {
        return Ok(Verdict::Changed(fetched));
    };
    let (got, have) = (fetched.sequence_number, stored.sequence_number);
    if got < have {
        return Err(BundleRefusal::SequenceWentBack { got, stored: have });
    }
    match (got == have, same_keys(&fetched, stored)) {
        (true, true) => Ok(Verdict::Unchanged(fetched)),
        // A peer that publishes no sequence: nothing to judge a change by.
        (true, false) if got == 0 => Ok(Verdict::Changed(fetched)),
        (true, false) => Err(BundleRefusal::SequenceNotRaised(got)),
        // A higher sequence is stored even with the same keys: the stored sequence is what
        // the next fetch is judged against.
        (false, _) => Ok(Verdict::Changed(fetched)),
    }
}

/// Every URI SAN of `cert_der` whose scheme is `spiffe` in any case (RFC 3986: schemes are
/// case-insensitive, so `SPIFFE://other.org` names other.org too), from every
/// subjectAltName extension it has.
fn spiffe_uris(cert_der: &[u8]) -> Result<Vec<String>, String> {
    let cert = Certificate::from_der(cert_der)
        .map_err(|e| format!("is not a DER X.509 certificate ({e})"))?;
    let mut uris = Vec::new();
    for ext in cert.tbs_certificate.extensions.iter().flatten() {
        if ext.extn_id != SubjectAltName::OID {
            continue;
        }
        let san = SubjectAltName::from_der(ext.extn_value.as_bytes())
            .map_err(|e| format!("has a subjectAltName that does not parse ({e})"))?;
        for name in san.0 {
            if let GeneralName::UniformResourceIdentifier(uri) = name {
                let uri = uri.to_string();
                let scheme = uri.split_once(':').map(|(s, _)| s).unwrap_or_default();
                if scheme.eq_ignore_ascii_case("spiffe") {
                    uris.push(uri);
                }
            }
        }
    }
    Ok(uris)
}

/// The wait before the next fetch after a good one: the bundle's refresh hint (or
/// `without_hint` when it has none), within `[min, max]`.
pub(crate) fn next_refresh(refresh_hint_secs: u64, bounds: &RefreshBounds) -> Duration {
    let wanted = match refresh_hint_secs {
        0 => bounds.without_hint,
        s => Duration::from_secs(s),
    };
    wanted.clamp(bounds.min, bounds.max)
}

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;
