//! The rules a CA certificate returned by an upstream (OpenBao PKI) must meet before this
//! server signs anything under it. Pure: no I/O, the time is an argument. Every refusal is
//! an [`IntermediateRefused`] naming the rule.

use der::oid::AssociatedOid;
use der::Decode;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_tpm::verify::certchain;
use ring::signature;
use serde::Deserialize;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, SubjectAltName};
use x509_cert::Certificate;

use super::super::IntermediateRefused;
use super::Certified;

/// What `sign-intermediate` answers (PEM, `format = "pem"`).
#[derive(Deserialize)]
struct Signed {
    certificate: String,
    #[serde(default)]
    issuing_ca: String,
    #[serde(default)]
    ca_chain: Vec<String>,
}

/// Checks OpenBao's `sign-intermediate` answer (its `data`): the PEM certificate and the
/// PEM chain it returned (`ca_chain`, or `issuing_ca` when that is empty), by
/// [`check_intermediate`].
pub(crate) fn check_answer(
    data: serde_json::Value,
    our_key: &[u8],
    trust_domain: &TrustDomain,
    now: i64,
) -> Result<Certified, IntermediateRefused> {
    let signed: Signed =
        serde_json::from_value(data).map_err(|e| IntermediateRefused::Unparseable {
            what: "the answer".into(),
            reason: e.to_string(),
        })?;
    let cert = pem_certificates(&signed.certificate, "the certificate")?
        .into_iter()
        .next()
        .unwrap_or_default();
    let chain_pems = if signed.ca_chain.is_empty() {
        vec![signed.issuing_ca]
    } else {
        signed.ca_chain
    };
    let mut chain = Vec::new();
    for (i, pem) in chain_pems.iter().enumerate() {
        chain.extend(pem_certificates(pem, &format!("ca_chain entry {i}"))?);
    }
    check_intermediate(&cert, &chain, our_key, trust_domain, now)
}

fn pem_certificates(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, IntermediateRefused> {
    ironroot_api::bundle::certificates_from_pem(pem.as_bytes()).map_err(|e| {
        IntermediateRefused::Unparseable {
            what: what.to_owned(),
            reason: e.to_string(),
        }
    })
}

/// Checks `cert_der` (our new CA certificate) and `ca_chain` (its issuer first, up to the
/// root) as returned by the upstream:
/// * the certificate is for `our_key` (the subjectPublicKey bits of the new CA key);
/// * basicConstraints CA:true and keyUsage keyCertSign;
/// * every URI SAN, if any, is `spiffe://<trust_domain>`;
/// * valid at `now`;
/// * each certificate is issued and signed by the next, and the last is a self-signed root.
///
/// * every certificate of `ca_chain` is a CA (basicConstraints CA:true, keyCertSign when it
///   has a keyUsage, a pathLenConstraint that allows the CAs below it) valid at `now`.
///
/// Returns the certificate with the chain between it and the root, and the root; its
/// `not_after` is the earliest of the chain's, when SVIDs under it stop verifying.
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
    // Every issuer above ours must itself be allowed to issue it: a relying party walking
    // the chain (RFC 5280 6.1) refuses an issuer that is no CA, lacks keyCertSign, allows
    // fewer CAs below it than there are, or has expired; SVIDs under it would not verify.
    let mut not_after = not_after;
    for (position, issuer) in certs.iter().enumerate().skip(1) {
        check_issuer(issuer, position, &certs[..position], now)?;
        not_after = not_after.min(unix(&issuer.tbs_certificate.validity.not_after));
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

/// The rules for the issuer at chain `position` (1: the first of `ca_chain`), with `below`
/// the certificates it stands above (ours first).
fn check_issuer(
    issuer: &Certificate,
    position: usize,
    below: &[Certificate],
    now: i64,
) -> Result<(), IntermediateRefused> {
    let basic: Option<BasicConstraints> = extension(issuer)?;
    let Some(basic) = basic.filter(|b| b.ca) else {
        return Err(IntermediateRefused::IssuerNotCa { position });
    };
    let usage: Option<KeyUsage> = extension(issuer)?;
    if usage.is_some_and(|u| !u.key_cert_sign()) {
        return Err(IntermediateRefused::IssuerNoKeyCertSign { position });
    }
    if let Some(allowed) = basic.path_len_constraint {
        // CAs below it that count: all of them (ours signs SVIDs, so it is an intermediate
        // too), except self-issued ones (RFC 5280 4.2.1.9).
        let cas_below = below
            .iter()
            .filter(|c| c.tbs_certificate.issuer != c.tbs_certificate.subject)
            .count();
        if cas_below > usize::from(allowed) {
            return Err(IntermediateRefused::IssuerPathLength {
                position,
                allowed,
                cas_below,
            });
        }
    }
    let not_before = unix(&issuer.tbs_certificate.validity.not_before);
    let not_after = unix(&issuer.tbs_certificate.validity.not_after);
    if now < not_before || now >= not_after {
        return Err(IntermediateRefused::IssuerNotValidNow {
            position,
            not_before,
            not_after,
            now,
        });
    }
    Ok(())
}

/// With `pinned` roots (`[upstream] root_file`), refuses a certified chain whose root is
/// none of them (compared byte for byte as DER); without, accepts any root the chain
/// verified to.
pub(crate) fn check_pinned_root(
    certified: &Certified,
    pinned: &[Vec<u8>],
) -> Result<(), IntermediateRefused> {
    let Some(root) = certified.roots.first() else {
        return Err(IntermediateRefused::NoRoot);
    };
    if pinned.is_empty() || pinned.contains(root) {
        return Ok(());
    }
    Err(IntermediateRefused::RootNotPinned {
        root_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, root)),
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

/// Ed25519's signature algorithm OID.
const ED25519: &str = "1.3.101.112";

/// Whether `issuer`'s key made `cert`'s signature: the algorithms of the certificate-path
/// check (`ironroot_tpm::verify::certchain::signed_by`), and Ed25519, which OpenBao's PKI
/// issuers may sign with.
fn signed_by(cert: &Certificate, issuer: &Certificate) -> bool {
    if cert.signature_algorithm.oid.to_string() == ED25519 {
        certchain::signed_with(cert, issuer, &signature::ED25519)
    } else {
        certchain::signed_by(cert, issuer)
    }
}

#[cfg(test)]
mod tests;
