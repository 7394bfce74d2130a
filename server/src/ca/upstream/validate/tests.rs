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

/// A root, a mid-level issuer made from `mid` under it, and our certificate under the mid.
fn under_mid(mid: CertificateParams) -> (Vec<u8>, Vec<u8>, Vec<u8>, KeyPair) {
    let (root_der, root_issuer) = root("root");
    let mid_key = KeyPair::generate().unwrap();
    let mid_der = signed(mid.clone(), &mid_key, &root_issuer);
    let mid = Issuer::new(mid, mid_key);
    let ours = KeyPair::generate().unwrap();
    let cert = signed(ca_params("ours", None), &ours, &mid);
    (cert, mid_der, root_der, ours)
}

#[test]
fn an_issuer_that_may_not_issue_ca_certificates_is_refused() {
    let mut leaf = ca_params("mid", None);
    leaf.is_ca = IsCa::ExplicitNoCa;
    let (cert, mid, root, ours) = under_mid(leaf);
    assert_eq!(
        check_intermediate(&cert, &[mid, root], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::IssuerNotCa { position: 1 })
    );

    let mut no_sign = ca_params("mid", None);
    no_sign.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let (cert, mid, root, ours) = under_mid(no_sign);
    assert_eq!(
        check_intermediate(&cert, &[mid, root], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::IssuerNoKeyCertSign { position: 1 })
    );

    // pathLen 0: it may sign end-entity certificates only, and ours is a CA.
    let mut path_len_0 = ca_params("mid", None);
    path_len_0.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    let (cert, mid, root, ours) = under_mid(path_len_0);
    assert_eq!(
        check_intermediate(&cert, &[mid, root], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::IssuerPathLength {
            position: 1,
            allowed: 0,
            cas_below: 1
        })
    );

    // pathLen 1 allows ours below it.
    let mut path_len_1 = ca_params("mid", None);
    path_len_1.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    let (cert, mid, root, ours) = under_mid(path_len_1);
    assert!(check_intermediate(&cert, &[mid, root], ours.der_bytes(), &td(), NOW).is_ok());
}

#[test]
fn a_root_whose_path_length_leaves_no_room_for_ours_is_refused() {
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = ca_params("root", None);
    root_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    let root_der = root_params.self_signed(&root_key).unwrap().der().to_vec();
    let root_issuer = Issuer::new(root_params, root_key);
    let mid_key = KeyPair::generate().unwrap();
    let mid_params = ca_params("mid", None);
    let mid_der = signed(mid_params.clone(), &mid_key, &root_issuer);
    let mid = Issuer::new(mid_params, mid_key);
    let ours = KeyPair::generate().unwrap();
    let cert = signed(ca_params("ours", None), &ours, &mid);
    // Below the root: the mid and ours, two CAs where it allows one.
    assert_eq!(
        check_intermediate(&cert, &[mid_der, root_der], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::IssuerPathLength {
            position: 2,
            allowed: 1,
            cas_below: 2
        })
    );
}

#[test]
fn an_expired_issuer_is_refused_and_the_earliest_not_after_is_the_cas() {
    let mut expired = ca_params("mid", None);
    expired.not_before = time::OffsetDateTime::from_unix_timestamp(NOW - 7200).unwrap();
    expired.not_after = time::OffsetDateTime::from_unix_timestamp(NOW - 60).unwrap();
    let (cert, mid, root, ours) = under_mid(expired);
    assert!(matches!(
        check_intermediate(&cert, &[mid, root], ours.der_bytes(), &td(), NOW),
        Err(IntermediateRefused::IssuerNotValidNow { position: 1, not_after, .. })
            if not_after == NOW - 60
    ));

    // A mid that ends before ours: SVIDs stop verifying then, so that is the CA's end.
    let mut short = ca_params("mid", None);
    short.not_after = time::OffsetDateTime::from_unix_timestamp(NOW + 600).unwrap();
    let (cert, mid, root, ours) = under_mid(short);
    let c = check_intermediate(&cert, &[mid, root], ours.der_bytes(), &td(), NOW).unwrap();
    assert_eq!(c.not_after, NOW + 600);
}

#[test]
fn a_pinned_root_must_be_the_one_the_chain_ends_in() {
    let (root_der, issuer) = root("OpenBao root");
    let (other_root, _) = root("OpenBao root");
    let ours = KeyPair::generate().unwrap();
    let cert = signed(ca_params("ours", None), &ours, &issuer);
    let c = check_intermediate(
        &cert,
        std::slice::from_ref(&root_der),
        ours.der_bytes(),
        &td(),
        NOW,
    )
    .unwrap();
    // No pin: any root the chain verifies to.
    check_pinned_root(&c, &[]).unwrap();
    check_pinned_root(&c, &[other_root.clone(), root_der.clone()]).unwrap();
    // Pinned to another root (same name, other key): refused, naming the returned root.
    let want = hex::encode(ring::digest::digest(&ring::digest::SHA256, &root_der));
    assert_eq!(
        check_pinned_root(&c, std::slice::from_ref(&other_root)),
        Err(IntermediateRefused::RootNotPinned { root_sha256: want })
    );
}
