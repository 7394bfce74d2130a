//! The rules of `check_intermediate`, each broken once by a crafted answer.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};

use super::*;

const NOW: i64 = 1_800_000_000;

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn ca_params(cn: &str, uri: Option<&str>) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 60).unwrap();
    p.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 3600).unwrap();
    if let Some(u) = uri {
        p.subject_alt_names = vec![SanType::URI(u.try_into().unwrap())];
    }
    p
}

/// A self-signed root: its certificate and an issuer for it.
fn root(cn: &str) -> (Vec<u8>, Issuer<'static, KeyPair>) {
    let key = KeyPair::generate().unwrap();
    let params = ca_params(cn, None);
    let cert = params.self_signed(&key).unwrap().der().to_vec();
    (cert, Issuer::new(params, key))
}

fn signed(params: CertificateParams, key: &KeyPair, issuer: &Issuer<'_, KeyPair>) -> Vec<u8> {
    params.signed_by(key, issuer).unwrap().der().to_vec()
}

#[test]
fn an_intermediate_for_our_key_under_a_root_is_accepted() {
    let (root_der, issuer) = root("OpenBao root");
    let ours = KeyPair::generate().unwrap();
    let cert = signed(
        ca_params("ours", Some("spiffe://example.org")),
        &ours,
        &issuer,
    );
    let c = check_intermediate(
        &cert,
        std::slice::from_ref(&root_der),
        ours.der_bytes(),
        &td(),
        NOW,
    )
    .unwrap();
    assert_eq!(c.cert_der, cert);
    assert!(c.chain.is_empty());
    assert_eq!(c.roots, vec![root_der]);
    assert_eq!(c.not_after, NOW + 3600);
}

#[test]
fn a_mid_level_issuer_goes_into_the_chain_and_the_root_into_the_bundle() {
    let (root_der, root_issuer) = root("root");
    let mid_key = KeyPair::generate().unwrap();
    let mid_params = ca_params("mid", None);
    let mid_der = signed(mid_params.clone(), &mid_key, &root_issuer);
    let mid = Issuer::new(mid_params, mid_key);
    let ours = KeyPair::generate().unwrap();
    let cert = signed(ca_params("ours", None), &ours, &mid);
    let c = check_intermediate(
        &cert,
        &[mid_der.clone(), root_der.clone()],
        ours.der_bytes(),
        &td(),
        NOW,
    )
    .unwrap();
    assert_eq!(c.chain, vec![mid_der.clone()]);
    assert_eq!(c.roots, vec![root_der]);
    // Without the root, the bundle would have nothing to publish.
    assert_eq!(
        check_intermediate(&cert, &[mid_der], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::NoRoot)
    );
}

#[test]
fn a_certificate_for_another_key_is_refused() {
    let (root_der, issuer) = root("root");
    let ours = KeyPair::generate().unwrap();
    let other = KeyPair::generate().unwrap();
    let cert = signed(ca_params("other", None), &other, &issuer);
    assert_eq!(
        check_intermediate(&cert, &[root_der], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::WrongKey)
    );
}

#[test]
fn a_leaf_or_a_ca_without_key_cert_sign_is_refused() {
    let (root_der, issuer) = root("root");
    let ours = KeyPair::generate().unwrap();
    let mut leaf = ca_params("leaf", None);
    leaf.is_ca = IsCa::ExplicitNoCa;
    let cert = signed(leaf, &ours, &issuer);
    assert_eq!(
        check_intermediate(
            &cert,
            std::slice::from_ref(&root_der),
            ours.der_bytes(),
            &td(),
            NOW
        ),
        Err(IntermediateRefused::NotCa)
    );
    let mut no_sign = ca_params("no keyCertSign", None);
    no_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = signed(no_sign, &ours, &issuer);
    assert_eq!(
        check_intermediate(&cert, &[root_der], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::NoKeyCertSign)
    );
}

#[test]
fn a_uri_san_of_another_trust_domain_is_refused() {
    let (root_der, issuer) = root("root");
    let ours = KeyPair::generate().unwrap();
    let cert = signed(
        ca_params("ours", Some("spiffe://evil.example")),
        &ours,
        &issuer,
    );
    assert!(matches!(
        check_intermediate(&cert, &[root_der], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::ForeignUriSan { uri, .. }) if uri == "spiffe://evil.example"
    ));
}

#[test]
fn a_chain_to_another_root_or_an_expired_certificate_is_refused() {
    let (_, issuer) = root("root");
    let (other_root, _) = root("root");
    let ours = KeyPair::generate().unwrap();
    let cert = signed(ca_params("ours", None), &ours, &issuer);
    // Same name, other key: only the signature tells them apart.
    assert_eq!(
        check_intermediate(&cert, &[other_root], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::BrokenChain { position: 0 })
    );
    assert_eq!(
        check_intermediate(&cert, &[], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::NoRoot)
    );
    assert!(matches!(
        check_intermediate(&cert, &[], ours.der_bytes(), &td(), NOW + 7200),
        Err(IntermediateRefused::NotValidNow { .. })
    ));
}

#[test]
fn garbage_is_named_not_a_panic() {
    assert!(matches!(
        check_intermediate(b"not a certificate", &[], b"", &td(), NOW),
        Err(IntermediateRefused::Unparseable { what, .. }) if what == "the certificate"
    ));
}
