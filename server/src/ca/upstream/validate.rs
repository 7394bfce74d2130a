//! The rules a CA certificate returned by an upstream (OpenBao PKI) must meet before this
//! server signs anything under it. Pure: no I/O, the time is an argument. Every refusal is
//! an [`IntermediateRefused`] naming the rule.

use der::asn1::ObjectIdentifier;
use der::oid::AssociatedOid;
use der::{Decode, Encode};
use ironroot_api::spiffe_id::TrustDomain;
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::super::IntermediateRefused;
use super::Certified;

/// Checks `cert_der` (our new CA certificate) and `ca_chain` (its issuer first, up to the
/// root) as returned by the upstream:
/// * the certificate is for `our_key` (the subjectPublicKey bits of the new CA key);
/// * basicConstraints CA:true and keyUsage keyCertSign;
/// * every URI SAN, if any, is `spiffe://<trust_domain>`;
/// * valid at `now`;
/// * each certificate is issued and signed by the next, and the last is a self-signed root.
///
/// Returns the certificate with the chain between it and the root, and the root.
pub(crate) fn check_intermediate(
    cert_der: &[u8],
    ca_chain: &[Vec<u8>],
    our_key: &[u8],
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<Certified, IntermediateRefused> {
    let cert = parse(cert_der, "the certificate")?;
    let tbs = &cert.tbs_certificate;
    if tbs.subject_public_key_info.subject_public_key.raw_bytes() != our_key {
        return Err(IntermediateRefused::WrongKey);
    }
    let basic: Option<BasicConstraints> = extension(&cert)?;
    if !basic.is_some_and(|b| b.ca) {
        return Err(IntermediateRefused::NotCa);
    }
    let usage: Option<KeyUsage> = extension(&cert)?;
    if !usage.is_some_and(|u| u.key_cert_sign()) {
        return Err(IntermediateRefused::NoKeyCertSign);
    }
    let expected = format!("spiffe://{trust_domain}");
    let sans: Option<SubjectAltName> = extension(&cert)?;
    for name in sans.map(|s| s.0).unwrap_or_default() {
        if let GeneralName::UniformResourceIdentifier(uri) = name {
            if uri.as_str() != expected {
                return Err(IntermediateRefused::ForeignUriSan {
                    uri: uri.as_str().to_owned(),
                    expected,
                });
            }
        }
    }
    let not_before = unix(&tbs.validity.not_before);
    let not_after = unix(&tbs.validity.not_after);
    if now < not_before || now >= not_after {
        return Err(IntermediateRefused::NotValidNow {
            not_before,
            not_after,
            now,
        });
    }

    // Our certificate, then the chain OpenBao sent (without a copy of ours, if any).
    let mut ders: Vec<&[u8]> = vec![cert_der];
    ders.extend(
        ca_chain
            .iter()
            .map(Vec::as_slice)
            .filter(|d| *d != cert_der),
    );
    ders.dedup();
    let mut certs = vec![cert.clone()];
    for (i, der) in ders.iter().enumerate().skip(1) {
        certs.push(parse(der, &format!("ca_chain entry {}", i - 1))?);
    }
    for position in 0..certs.len() - 1 {
        let (c, issuer) = (&certs[position], &certs[position + 1]);
        if c.tbs_certificate.issuer != issuer.tbs_certificate.subject || !signed_by(c, issuer) {
            return Err(IntermediateRefused::BrokenChain { position });
        }
    }
    let root = &certs[certs.len() - 1];
    if certs.len() < 2
        || root.tbs_certificate.issuer != root.tbs_certificate.subject
        || !signed_by(root, root)
    {
        return Err(IntermediateRefused::NoRoot);
    }
    let last = ders.len() - 1;
    Ok(Certified {
        cert_der: cert_der.to_vec(),
        chain: ders[1..last].iter().map(|d| d.to_vec()).collect(),
        roots: vec![ders[last].to_vec()],
        not_after,
    })
}

fn parse(der: &[u8], what: &str) -> Result<Certificate, IntermediateRefused> {
    Certificate::from_der(der).map_err(|e| IntermediateRefused::Unparseable {
        what: what.to_owned(),
        reason: e.to_string(),
    })
}

fn unix(t: &x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
}

/// The extension `T` of `cert`, decoded; `None` when absent.
fn extension<'a, T: AssociatedOid + Decode<'a>>(
    cert: &'a Certificate,
) -> Result<Option<T>, IntermediateRefused> {
    let Some(ext) = cert
        .tbs_certificate
        .extensions
        .iter()
        .flatten()
        .find(|e| e.extn_id == T::OID)
    else {
        return Ok(None);
    };
    T::from_der(ext.extn_value.as_bytes())
        .map(Some)
        .map_err(|e| IntermediateRefused::Unparseable {
            what: format!("the certificate's extension {}", T::OID),
            reason: e.to_string(),
        })
}

const EC_P256: &str = "1.2.840.10045.3.1.7";
const EC_P384: &str = "1.3.132.0.34";

/// Whether `issuer`'s key made `cert`'s signature (ECDSA P-256/P-384, RSA PKCS#1 v1.5,
/// Ed25519: what OpenBao's PKI issuers sign with).
fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    // The outer algorithm must be the one the signed part names.
    if cert.signature_algorithm != cert.tbs_certificate.signature {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate.to_der() else {
        return false;
    };
    let Some(sig) = cert.signature.as_bytes() else {
        return false;
    };
    let spki = &issuer.tbs_certificate.subject_public_key_info;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok())
        .map(|o| o.to_string());
    let alg: &dyn VerificationAlgorithm = match (
        cert.signature_algorithm.oid.to_string().as_str(),
        curve.as_deref(),
    ) {
        ("1.2.840.10045.4.3.2", Some(EC_P256)) => &signature::ECDSA_P256_SHA256_ASN1,
        ("1.2.840.10045.4.3.2", Some(EC_P384)) => &signature::ECDSA_P384_SHA256_ASN1,
        ("1.2.840.10045.4.3.3", Some(EC_P256)) => &signature::ECDSA_P256_SHA384_ASN1,
        ("1.2.840.10045.4.3.3", Some(EC_P384)) => &signature::ECDSA_P384_SHA384_ASN1,
        ("1.2.840.113549.1.1.11", _) => &signature::RSA_PKCS1_2048_8192_SHA256,
        ("1.2.840.113549.1.1.12", _) => &signature::RSA_PKCS1_2048_8192_SHA384,
        ("1.2.840.113549.1.1.13", _) => &signature::RSA_PKCS1_2048_8192_SHA512,
        ("1.3.101.112", _) => &signature::ED25519,
        _ => return false,
    };
    UnparsedPublicKey::new(alg, spki.subject_public_key.raw_bytes())
        .verify(&tbs, sig)
        .is_ok()
}

#[cfg(test)]
mod tests;
