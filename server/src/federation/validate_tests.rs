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
    ca_cert_uris(uri.as_slice())
}

/// A self-signed CA certificate whose URI SANs are `uris`.
fn ca_cert_uris(uris: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::default();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
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
    let v = judge(&td("td-b.test"), &body(&b), None, true).unwrap();
    assert!(
        matches!(v, Verdict::Changed(ref f) if f.sequence_number == 3 && f.x509_authorities == b.x509_authorities)
    );
}

#[test]
fn malformed_documents_are_refused_by_rule() {
    for junk in [&b"not json"[..], b"{\"keys\": 5}", b"\xff\xfe", b"[]"] {
        let e = judge(&td("td-b.test"), junk, None, true).unwrap_err();
        assert!(matches!(e, BundleRefusal::Malformed(_)), "{e}");
        assert!(e.to_string().starts_with("rule well-formed"), "{e}");
    }
    let e = judge(&td("td-b.test"), br#"{"keys": []}"#, None, true).unwrap_err();
    assert_eq!(e, BundleRefusal::Empty);
}

#[test]
fn an_authority_of_another_trust_domain_is_refused() {
    let b = bundle(
        "td-b.test",
        vec![ca_cert(None), ca_cert(Some("spiffe://td-c.test"))],
        1,
    );
    let e = judge(&td("td-b.test"), &body(&b), None, true).unwrap_err();
    assert!(
        matches!(e, BundleRefusal::ForeignAuthority { index: 1, ref named, .. } if named == "td-c.test"),
        "{e}"
    );
    // A root without a SPIFFE ID names no trust domain: accepted.
    let upstream = bundle("td-b.test", vec![ca_cert(None)], 1);
    judge(&td("td-b.test"), &body(&upstream), None, true).unwrap();
}

#[test]
fn every_spiffe_uri_of_an_authority_must_name_the_trust_domain() {
    // The federation_judge fuzz target's invariant: an authority whose URI SANs were not
    // exactly one SPIFFE ID (two, or one with its scheme in capitals) named no trust
    // domain for the rule, so another trust domain's CA was accepted.
    let t = td("td-b.test");
    for uris in [
        &["spiffe://td-b.test", "spiffe://td-c.test"][..],
        &["spiffe://td-c.test", "spiffe://td-d.test"],
    ] {
        let b = bundle("td-b.test", vec![ca_cert(None), ca_cert_uris(uris)], 1);
        let e = judge(&t, &body(&b), None, true).unwrap_err();
        assert!(
            matches!(e, BundleRefusal::ForeignAuthority { index: 1, .. }),
            "{uris:?}: {e}"
        );
        assert_eq!(e.rule(), "trust-domain");
    }
    // A spiffe URI that is no SPIFFE ID (its scheme in capitals, a trailing slash) names
    // nothing this rule can allow.
    for uri in ["SPIFFE://td-c.test", "spiffe://td-b.test/"] {
        let b = bundle("td-b.test", vec![ca_cert_uris(&[uri])], 1);
        let e = judge(&t, &body(&b), None, true).unwrap_err();
        assert!(
            matches!(e, BundleRefusal::UnreadableName { index: 0, .. }),
            "{uri}: {e}"
        );
        assert!(e.to_string().starts_with("rule trust-domain"), "{e}");
    }
    // Its own SPIFFE ID, alone or beside a URI of another scheme, is allowed.
    let b = bundle(
        "td-b.test",
        vec![ca_cert_uris(&["spiffe://td-b.test", "https://td-c.test"])],
        1,
    );
    judge(&t, &body(&b), None, true).unwrap();
}

#[test]
fn sequence_never_goes_back_and_moves_with_the_keys() {
    let root = ca_cert(Some("spiffe://td-b.test"));
    let stored = bundle("td-b.test", vec![root.clone()], 5);
    let t = td("td-b.test");

    let mut same = stored.clone();
    assert_eq!(
        judge(&t, &body(&same), Some(&stored), true).unwrap(),
        Verdict::Unchanged(stored.clone())
    );

    same.sequence_number = 4;
    assert_eq!(
        judge(&t, &body(&same), Some(&stored), true).unwrap_err(),
        BundleRefusal::SequenceWentBack { got: 4, stored: 5 }
    );

    let mut rotated = stored.clone();
    rotated
        .x509_authorities
        .push(ca_cert(Some("spiffe://td-b.test")));
    assert_eq!(
        judge(&t, &body(&rotated), Some(&stored), true).unwrap_err(),
        BundleRefusal::SequenceNotRaised(5)
    );
    rotated.sequence_number = 6;
    assert!(matches!(
        judge(&t, &body(&rotated), Some(&stored), true).unwrap(),
        Verdict::Changed(ref b) if b.x509_authorities.len() == 2
    ));

    // A bootstrap by PEM (sequence 0, no JWT keys) is replaced by the first fetch.
    let bootstrap = TrustBundle {
        jwt_authorities: Vec::new(),
        sequence_number: 0,
        ..stored.clone()
    };
    assert!(matches!(
        judge(&t, &body(&stored), Some(&bootstrap), true).unwrap(),
        Verdict::Changed(_)
    ));
}

#[test]
fn a_peer_without_sequences_has_its_key_changes_accepted_until_it_publishes_one() {
    let t = td("td-b.test");
    // A PEM bootstrap (sequence 0) and a peer that publishes no spiffe_sequence (0).
    let bootstrap = TrustBundle {
        jwt_authorities: Vec::new(),
        ..bundle("td-b.test", vec![ca_cert(Some("spiffe://td-b.test"))], 0)
    };
    let fetched = bundle("td-b.test", bootstrap.x509_authorities.clone(), 0);
    assert!(matches!(
        judge(&t, &body(&fetched), Some(&bootstrap), true).unwrap(),
        Verdict::Changed(_)
    ));
    let mut rotated = fetched.clone();
    rotated
        .x509_authorities
        .push(ca_cert(Some("spiffe://td-b.test")));
    assert!(matches!(
        judge(&t, &body(&rotated), Some(&fetched), true).unwrap(),
        Verdict::Changed(ref b) if b.x509_authorities.len() == 2
    ));
    // Once it has published a sequence, 0 is a sequence that went back.
    let sequenced = TrustBundle {
        sequence_number: 3,
        ..rotated.clone()
    };
    assert_eq!(
        judge(&t, &body(&fetched), Some(&sequenced), true).unwrap_err(),
        BundleRefusal::SequenceWentBack { got: 0, stored: 3 }
    );
}

#[test]
fn an_https_spiffe_relationship_refuses_a_bundle_without_x509_roots() {
    let t = td("td-b.test");
    let jwt_only = bundle("td-b.test", Vec::new(), 2);
    let e = judge(&t, &body(&jwt_only), None, true).unwrap_err();
    assert_eq!(e, BundleRefusal::NoX509Authority);
    assert_eq!(e.rule(), "x509-authority");
    assert!(e.to_string().contains("rule x509-authority"), "{e}");
    // https_web authenticates the endpoint with the Web PKI: JWT keys alone are a bundle.
    assert!(matches!(
        judge(&t, &body(&jwt_only), None, false).unwrap(),
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
