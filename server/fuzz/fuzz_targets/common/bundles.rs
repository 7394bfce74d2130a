#![allow(dead_code)] // each target uses part of it
//! Real bundle material for the federation targets, made once per process as the unit
//! tests make it (rcgen CA certificates, SPKI JWT keys), and the fuzzer's ways of
//! combining and damaging it.

use std::sync::OnceLock;

use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::spiffe_id::TrustDomain;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PublicKeyData, SanType};
use x509_parser::certificate::TbsCertificate;
use x509_parser::prelude::{FromDer, ParsedExtension};

/// The relationship's trust domain.
pub const TD: &str = "td-b.test";

pub fn td() -> TrustDomain {
    TrustDomain::parse(TD).unwrap()
}

pub struct Material {
    /// CA certificates, each naming something else in its URI SANs (see `material`).
    pub certs: Vec<Vec<u8>>,
    /// JWT keys, kids k0.. .
    pub jwt: Vec<JwtAuthority>,
}

fn ca_cert(alg: &'static rcgen::SignatureAlgorithm, uris: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    p.self_signed(&key).unwrap().der().to_vec()
}

pub fn material() -> &'static Material {
    static M: OnceLock<Material> = OnceLock::new();
    M.get_or_init(|| {
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let p384 = &rcgen::PKCS_ECDSA_P384_SHA384;
        let certs = vec![
            ca_cert(p256, &["spiffe://td-b.test"]),
            ca_cert(p256, &[]),
            ca_cert(p256, &["spiffe://td-c.test"]),
            ca_cert(p256, &["spiffe://td-b.test", "spiffe://td-c.test"]),
            ca_cert(p256, &["spiffe://td-c.test", "spiffe://td-d.test"]),
            ca_cert(p256, &["SPIFFE://td-c.test"]),
            ca_cert(p256, &["spiffe://td-c.test/path"]),
            ca_cert(p256, &["https://td-c.test"]),
            ca_cert(p384, &["spiffe://td-b.test"]),
        ];
        let jwt = (0..3)
            .map(|i| {
                let alg = if i == 2 { p384 } else { p256 };
                JwtAuthority {
                    key_id: format!("k{i}"),
                    public_key_der: KeyPair::generate_for(alg)
                        .unwrap()
                        .subject_public_key_info(),
                    expires_at: 0,
                }
            })
            .collect();
        Material { certs, jwt }
    })
}

/// A bundle of `td` from the material, as the fuzzer chooses.
pub fn bundle(u: &mut Unstructured<'_>) -> Result<TrustBundle> {
    let m = material();
    let mut b = TrustBundle::new(td());
    for _ in 0..u.int_in_range(0..=3)? {
        b.x509_authorities.push(u.choose(&m.certs)?.clone());
    }
    let jwt_mask: u8 = u.arbitrary()?;
    for (i, a) in m.jwt.iter().enumerate() {
        if jwt_mask & (1 << i) != 0 {
            b.jwt_authorities.push(a.clone());
        }
    }
    b.sequence_number = if u.ratio(1, 8)? {
        u.arbitrary()?
    } else {
        u.int_in_range(0..=4)?
    };
    b.refresh_hint_secs = u.arbitrary::<u16>()?.into();
    Ok(b)
}

/// `text` with up to four fuzzer-chosen insertions, deletions and byte replacements.
pub fn damage(u: &mut Unstructured<'_>, text: &[u8]) -> Result<Vec<u8>> {
    let mut out = text.to_vec();
    for _ in 0..u.int_in_range(1..=4)? {
        let at = u.int_in_range(0..=out.len())?;
        match u.int_in_range(0..=2)? {
            0 => {
                let n = u.int_in_range(0..=8)?;
                let bytes = u.bytes(n.min(u.len()))?.to_vec();
                out.splice(at..at, bytes);
            }
            1 => {
                let end = u.int_in_range(at..=out.len().min(at + 16))?;
                out.drain(at..end);
            }
            _ => {
                if at < out.len() {
                    out[at] = u.arbitrary()?;
                }
            }
        }
    }
    Ok(out)
}

/// Whether two bundles hold the same authorities, order aside (an independent copy of the
/// judge's notion: X.509 DERs, JWT kid and key).
pub fn same_keys(a: &TrustBundle, b: &TrustBundle) -> bool {
    let mut ax = a.x509_authorities.clone();
    let mut bx = b.x509_authorities.clone();
    ax.sort();
    bx.sort();
    let jwt = |t: &TrustBundle| {
        let mut v: Vec<_> = t
            .jwt_authorities
            .iter()
            .map(|j| (j.key_id.clone(), j.public_key_der.clone()))
            .collect();
        v.sort();
        v
    };
    ax == bx && jwt(a) == jwt(b)
}

/// The trust domains an X.509 authority names: the authority part of every URI SAN whose
/// scheme is `spiffe` (in any case, RFC 3986 §3.1), read by x509-parser, not by the code
/// under test.
pub fn named_trust_domains(der: &[u8]) -> Vec<String> {
    let tbs = tbs(der);
    let mut out = Vec::new();
    for ext in tbs.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let x509_parser::extensions::GeneralName::URI(uri) = name {
                    if uri.len() >= 9 && uri[..9].eq_ignore_ascii_case("spiffe://") {
                        let rest = &uri[9..];
                        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                        out.push(rest[..end].to_owned());
                    }
                }
            }
        }
    }
    out
}

/// The signed part of a certificate, read by x509-parser. Only that: a trust anchor's own
/// signature is checked by no relying party (webpki, Go's crypto/x509 keep it as bytes), so
/// a bundle authority whose signature value is damaged is still a usable anchor.
pub fn tbs(der: &[u8]) -> TbsCertificate<'_> {
    // Skip the outer SEQUENCE's tag and length: the TBSCertificate comes first inside it.
    assert_eq!(der.first(), Some(&0x30), "an authority is a SEQUENCE");
    let len = *der.get(1).expect("a length");
    let header = if len < 0x80 {
        2
    } else {
        2 + usize::from(len & 0x7f)
    };
    TbsCertificate::from_der(&der[header.min(der.len())..])
        .unwrap_or_else(|e| panic!("an accepted authority's TBSCertificate parses: {e}"))
        .1
}
