use std::time::Duration;

use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::spiffe_id::TrustDomain;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, PublicKeyData, SanType};

use super::*;

fn td(name: &str) -> TrustDomain {
    TrustDomain::parse(name).unwrap()
}

/// A self-signed CA certificate whose URI SAN is `uri` (none when `None`).
fn ca_cert(uri: Option<&str>) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    if let Some(u) = uri {
        p.subject_alt_names = vec![SanType::URI(u.try_into().unwrap())];
    }
    p.self_signed(&key).unwrap().der().to_vec()
}

fn jwt_key() -> JwtAuthority {
    let key = KeyPair::generate().unwrap();
    JwtAuthority {
        key_id: "k1".into(),
        public_key_der: key.subject_public_key_info(),
        expires_at: 0,
    }
}

fn bundle(td_name: &str, roots: Vec<Vec<u8>>, seq: u64) -> TrustBundle {
    TrustBundle {
        trust_domain: td(td_name),
        x509_authorities: roots,
        jwt_authorities: vec![jwt_key()],
        sequence_number: seq,
        refresh_hint_secs: 60,
    }
}

fn body(b: &TrustBundle) -> Vec<u8> {
    b.to_jwks_json().unwrap().into_bytes()
}

#[test]
fn the_first_bundle_is_stored() {
    let b = bundle("td-b.test", vec![ca_cert(Some("spiffe://td-b.test"))], 3);
    let v = judge(&td("td-b.test"), &body(&b), None).unwrap();
    assert!(
        matches!(v, Verdict::Changed(ref f) if f.sequence_number == 3 && f.x509_authorities == b.x509_authorities)
    );
}

#[test]
fn malformed_documents_are_refused_by_rule() {
    for junk in [&b"not json"[..], b"{\"keys\": 5}", b"\xff\xfe", b"[]"] {
        let e = judge(&td("td-b.test"), junk, None).unwrap_err();
        assert!(matches!(e, BundleRefusal::Malformed(_)), "{e}");
        assert!(e.to_string().starts_with("rule well-formed"), "{e}");
    }
    let e = judge(&td("td-b.test"), br#"{"keys": []}"#, None).unwrap_err();
    assert_eq!(e, BundleRefusal::Empty);
}

#[test]
fn an_authority_of_another_trust_domain_is_refused() {
    let b = bundle(
        "td-b.test",
        vec![ca_cert(None), ca_cert(Some("spiffe://td-c.test"))],
        1,
    );
    let e = judge(&td("td-b.test"), &body(&b), None).unwrap_err();
    assert!(
        matches!(e, BundleRefusal::ForeignAuthority { index: 1, ref named, .. } if named == "td-c.test"),
        "{e}"
    );
    // A root without a SPIFFE ID names no trust domain: accepted.
    let upstream = bundle("td-b.test", vec![ca_cert(None)], 1);
    judge(&td("td-b.test"), &body(&upstream), None).unwrap();
}

#[test]
fn sequence_never_goes_back_and_moves_with_the_keys() {
    let root = ca_cert(Some("spiffe://td-b.test"));
    let stored = bundle("td-b.test", vec![root.clone()], 5);
    let t = td("td-b.test");

    let mut same = stored.clone();
    assert_eq!(
        judge(&t, &body(&same), Some(&stored)).unwrap(),
        Verdict::Unchanged(stored.clone())
    );

    same.sequence_number = 4;
    assert_eq!(
        judge(&t, &body(&same), Some(&stored)).unwrap_err(),
        BundleRefusal::SequenceWentBack { got: 4, stored: 5 }
    );

    let mut rotated = stored.clone();
    rotated
        .x509_authorities
        .push(ca_cert(Some("spiffe://td-b.test")));
    assert_eq!(
        judge(&t, &body(&rotated), Some(&stored)).unwrap_err(),
        BundleRefusal::SequenceNotRaised(5)
    );
    rotated.sequence_number = 6;
    assert!(matches!(
        judge(&t, &body(&rotated), Some(&stored)).unwrap(),
        Verdict::Changed(ref b) if b.x509_authorities.len() == 2
    ));

    // A bootstrap by PEM (sequence 0, no JWT keys) is replaced by the first fetch.
    let bootstrap = TrustBundle {
        jwt_authorities: Vec::new(),
        sequence_number: 0,
        ..stored.clone()
    };
    assert!(matches!(
        judge(&t, &body(&stored), Some(&bootstrap)).unwrap(),
        Verdict::Changed(_)
    ));
}

#[test]
fn refresh_follows_the_hint_within_bounds() {
    let bounds = RefreshBounds {
        min: Duration::from_secs(5),
        max: Duration::from_secs(600),
        without_hint: Duration::from_secs(300),
    };
    assert_eq!(next_refresh(60, &bounds), Duration::from_secs(60));
    assert_eq!(next_refresh(1, &bounds), Duration::from_secs(5));
    assert_eq!(next_refresh(86_400, &bounds), Duration::from_secs(600));
    assert_eq!(next_refresh(0, &bounds), Duration::from_secs(300));
}
