//! Chain checks for hardware certificates (TPM EK and DevID certificates).
//! These are not TLS certificates: EK certificates carry critical extensions (a
//! directoryName SAN, TPM specification attributes) and key usages (keyEncipherment,
//! keyAgreement, the TCG EKU) that a TLS verifier such as rustls-webpki refuses or does not
//! know, so nothing here goes through webpki and every check is explicit: issuer name,
//! signature and validity up to a configured anchor (this file), then the profile and
//! path rules of `rules` (leaf keyUsage and EK extendedKeyUsage, basicConstraints,
//! keyCertSign, pathLenConstraint, name constraints, unknown critical extensions) over
//! the path found, anchor included.

mod names;
mod rules;

use der::{Decode, Encode};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::Certificate;

pub use rules::{cert_name, check_leaf, check_path, CertProfile, CertRuleError};

/// Longest chain accepted (leaf + intermediates + anchor).
pub const MAX_DEPTH: usize = 6;

/// A set of trust anchors (every certificate of the configured bundle). Reading the bundle
/// is the caller's business: this module sees DER only.
#[derive(Default)]
pub struct Anchors {
    certs: Vec<Certificate>,
}

/// An anchor that is not an X.509 certificate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorError {
    /// The DER does not decode as a certificate.
    #[error("a certificate does not parse: {0}")]
    Unparseable(#[source] der::Error),
}

impl Anchors {
    /// Anchors from DER certificates (a PEM bundle, decoded).
    pub fn from_der<D: AsRef<[u8]>>(
        ders: impl IntoIterator<Item = D>,
    ) -> Result<Self, AnchorError> {
        let mut anchors = Anchors::default();
        for d in ders {
            anchors.add_der(d.as_ref())?;
        }
        Ok(anchors)
    }

    /// Adds one anchor (the server's own DevID CA).
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), AnchorError> {
        let c = Certificate::from_der(der).map_err(AnchorError::Unparseable)?;
        self.certs.push(c);
        Ok(())
    }

    /// True when no anchor is configured: every chain is then refused.
    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

/// Why a hardware certificate was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainError {
    /// No anchor to check against.
    #[error("no CA bundle is configured to check the {profile}")]
    NoAnchors {
        /// What the leaf was checked as.
        profile: CertProfile,
    },
    /// The leaf is not X.509.
    #[error("the {profile} does not parse as X.509: {detail}")]
    Unparseable {
        /// What the leaf was checked as.
        profile: CertProfile,
        /// Why it does not decode.
        detail: String,
    },
    /// A certificate of the path before its notBefore.
    #[error("{role} '{cert}' is not valid before {not_before} (unix time)")]
    NotYetValid {
        /// Where the certificate stands in the path ("the EK certificate", "intermediate").
        role: String,
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// Its notBefore, unix seconds.
        not_before: u64,
    },
    /// A certificate of the path after its notAfter.
    #[error("{role} '{cert}' expired at {not_after} (unix time)")]
    Expired {
        /// Where the certificate stands in the path ("the EK certificate", "intermediate").
        role: String,
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// Its notAfter, unix seconds.
        not_after: u64,
    },
    /// No path to an anchor.
    #[error("the {profile} '{cert}' does not chain to the configured CA bundle (issuer '{issuer}' is not trusted)")]
    Untrusted {
        /// What the leaf was checked as.
        profile: CertProfile,
        /// The certificate, named as [`cert_name`] names it.
        cert: String,
        /// The issuer the last certificate of the path names, which no anchor matches.
        issuer: String,
    },
    /// The path would be longer than [`MAX_DEPTH`].
    #[error("the {profile} chain is longer than {max} certificates")]
    TooLong {
        /// What the leaf was checked as.
        profile: CertProfile,
        /// The longest path accepted.
        max: usize,
    },
    /// The path breaks a profile or path rule.
    #[error(transparent)]
    Rule(#[from] CertRuleError),
}

fn check_validity(c: &Certificate, now: u64, role: &str) -> Result<(), ChainError> {
    let v = &c.tbs_certificate.validity;
    let not_before = v.not_before.to_unix_duration().as_secs();
    let not_after = v.not_after.to_unix_duration().as_secs();
    if now < not_before {
        return Err(ChainError::NotYetValid {
            role: role.to_string(),
            cert: cert_name(c),
            not_before,
        });
    }
    if now > not_after {
        return Err(ChainError::Expired {
            role: role.to_string(),
            cert: cert_name(c),
            not_after,
        });
    }
    Ok(())
}

/// Whether `issuer`'s key made `cert`'s signature, for the algorithms certificate paths use
/// here: RSA PKCS#1 v1.5 (SHA-256/384/512) and ECDSA P-256/P-384 (SHA-256/384).
pub fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<der::asn1::ObjectIdentifier>().ok())
        .map(|o| o.to_string());
    let alg: &dyn VerificationAlgorithm = match (
        cert.signature_algorithm.oid.to_string().as_str(),
        curve.as_deref(),
    ) {
        ("1.2.840.113549.1.1.11", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &signature::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &signature::RSA_PKCS1_2048_8192_SHA512,
        ("1.2.840.10045.4.3.2", Some("1.2.840.10045.3.1.7")) => &signature::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some("1.2.840.10045.3.1.7")) => &signature::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.2", Some("1.3.132.0.34")) => &signature::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some("1.3.132.0.34")) => &signature::ECDSA_P384_SHA384_ASN1,
        _ => return false,
    };
    signed_with(cert, issuer, alg)
}

/// Whether `issuer`'s key made `cert`'s signature with `alg`: the outer algorithm must be
/// the one the signed part names, and the signature must verify over the signed part.
pub fn signed_with(
    cert: &Certificate,
    issuer: &Certificate,
    alg: &'static dyn VerificationAlgorithm,
) -> bool {
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    let key = issuer
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    UnparsedPublicKey::new(alg, key).verify(&tbs, sig).is_ok()
}

/// Verifies `leaf` up to one of `anchors`, using `intermediates` (the certificates the
/// peer sent) as needed, then the rules of `profile` over the path found. Returns the
/// leaf, parsed.
pub fn verify(
    leaf_der: &[u8],
    intermediates_der: &[Vec<u8>],
    anchors: &Anchors,
    now: u64,
    profile: CertProfile,
) -> Result<Certificate, ChainError> {
    if anchors.is_empty() {
        return Err(ChainError::NoAnchors { profile });
    }
    let leaf = Certificate::from_der(leaf_der).map_err(|e| ChainError::Unparseable {
        profile,
        detail: e.to_string(),
    })?;
    check_validity(&leaf, now, &format!("the {profile}"))?;
    let intermediates: Vec<Certificate> = intermediates_der
        .iter()
        .filter_map(|d| Certificate::from_der(d).ok())
        .collect();
    let mut path = vec![leaf];
    for _ in 0..MAX_DEPTH {
        let Some(current) = path.last() else { break };
        let issuer_name = &current.tbs_certificate.issuer;
        if let Some(anchor) = anchors
            .certs
            .iter()
            .find(|a| &a.tbs_certificate.subject == issuer_name && signed_by(current, a))
        {
            path.push(anchor.clone());
            check_path(profile, &path)?;
            return Ok(path.swap_remove(0));
        }
        let Some(next) = intermediates
            .iter()
            .find(|i| &i.tbs_certificate.subject == issuer_name && signed_by(current, i))
        else {
            return Err(ChainError::Untrusted {
                profile,
                cert: cert_name(&path[0]),
                issuer: issuer_name.to_string(),
            });
        };
        check_validity(next, now, "intermediate")?;
        path.push(next.clone());
    }
    Err(ChainError::TooLong {
        profile,
        max: MAX_DEPTH,
    })
}

#[cfg(test)]
pub(crate) mod tests;
