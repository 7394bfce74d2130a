//! Chain checks for hardware certificates (TPM EK and DevID certificates).
//! These are not TLS certificates: EK certificates carry critical extensions
//! (a directoryName SAN, TPM specification attributes) that a TLS verifier
//! refuses, so the check here is explicit: issuer name, signature, validity,
//! and CA basicConstraints on every issuer, up to a configured anchor.

use std::path::Path;

use der::{Decode, Encode};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::ext::pkix::BasicConstraints;
use x509_cert::Certificate;

/// Longest chain accepted (leaf + intermediates + anchor).
const MAX_DEPTH: usize = 6;

/// A set of trust anchors (every certificate of the configured bundle).
#[derive(Default)]
pub struct Anchors {
    certs: Vec<Certificate>,
}

impl Anchors {
    pub fn from_pem_file(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let certs = ironroot_api::bundle::certificates_from_pem(&text)
            .map_err(|e| format!("{} {e}", path.display()))?
            .iter()
            .map(|d| Certificate::from_der(d))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: a certificate does not parse: {e}", path.display()))?;
        Ok(Anchors { certs })
    }

    /// Adds one anchor (the server's own DevID CA).
    pub fn add_der(&mut self, der: &[u8]) -> Result<(), String> {
        let c = Certificate::from_der(der).map_err(|e| format!("anchor does not parse: {e}"))?;
        self.certs.push(c);
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }
}

fn subject_cn(c: &Certificate) -> String {
    c.tbs_certificate.subject.to_string()
}

fn check_validity(c: &Certificate, now: u64, what: &str) -> Result<(), String> {
    let v = &c.tbs_certificate.validity;
    let nb = v.not_before.to_unix_duration().as_secs();
    let na = v.not_after.to_unix_duration().as_secs();
    if now < nb {
        return Err(format!(
            "{what} '{}' is not valid before {nb}",
            subject_cn(c)
        ));
    }
    if now > na {
        return Err(format!("{what} '{}' expired at {na}", subject_cn(c)));
    }
    Ok(())
}

fn is_ca(c: &Certificate) -> bool {
    let oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.19");
    c.tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == oid))
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .is_some_and(|b| b.ca)
}

/// keyUsage keyCertSign, when the certificate has a keyUsage at all.
fn may_sign_certs(c: &Certificate) -> bool {
    use x509_cert::ext::pkix::{KeyUsage, KeyUsages};
    let oid = der::asn1::ObjectIdentifier::new_unwrap("2.5.29.15");
    match c
        .tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id == oid))
    {
        None => true,
        Some(e) => KeyUsage::from_der(e.extn_value.as_bytes())
            .map(|ku| ku.0.contains(KeyUsages::KeyCertSign))
            .unwrap_or(false),
    }
}

/// Whether `issuer`'s key made `cert`'s signature.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    // The outer algorithm must be the one the signed part names.
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return false;
    }
    if !may_sign_certs(issuer) {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let key = spki.subject_public_key.raw_bytes();
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
    UnparsedPublicKey::new(alg, key).verify(&tbs, sig).is_ok()
}

/// Verifies `leaf` up to one of `anchors`, using `intermediates` (the
/// certificates the peer sent) as needed. Returns the leaf, parsed.
/// `what` names the certificate in errors ("EK certificate", "DevID certificate").
pub fn verify(
    leaf_der: &[u8],
    intermediates_der: &[Vec<u8>],
    anchors: &Anchors,
    now: u64,
    what: &str,
) -> Result<Certificate, String> {
    if anchors.is_empty() {
        return Err(format!("no CA bundle is configured to check the {what}"));
    }
    let leaf = Certificate::from_der(leaf_der)
        .map_err(|e| format!("the {what} does not parse as X.509: {e}"))?;
    check_validity(&leaf, now, what)?;
    if is_ca(&leaf) {
        return Err(format!(
            "the {what} '{}' is a CA certificate, not a device certificate",
            subject_cn(&leaf)
        ));
    }
    let intermediates: Vec<Certificate> = intermediates_der
        .iter()
        .filter_map(|d| Certificate::from_der(d).ok())
        .collect();
    let mut current = leaf.clone();
    for _ in 0..MAX_DEPTH {
        let issuer_name = &current.tbs_certificate.issuer;
        if anchors
            .certs
            .iter()
            .any(|a| &a.tbs_certificate.subject == issuer_name && signed_by(&current, a))
        {
            return Ok(leaf);
        }
        let Some(next) = intermediates
            .iter()
            .find(|i| &i.tbs_certificate.subject == issuer_name && signed_by(&current, i))
        else {
            return Err(format!(
                "the {what} '{}' does not chain to the configured CA bundle (issuer '{}' is not trusted)",
                subject_cn(&leaf),
                issuer_name
            ));
        };
        if !is_ca(next) {
            return Err(format!("intermediate '{}' is not a CA", subject_cn(next)));
        }
        check_validity(next, now, "intermediate")?;
        current = next.clone();
    }
    Err(format!("the {what} chain is longer than {MAX_DEPTH}"))
}
