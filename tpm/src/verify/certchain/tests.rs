//! Every rule of [`rules`](super::rules), each failure asserting its variant, on paths made
//! with rcgen: leaf → (intermediates) → anchor.

use base64::Engine as _;
use der::Encode as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, PublicKeyData, SubjectPublicKeyInfo,
};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::SubjectAltName;

use super::{verify, Anchors, CertProfile, CertRuleError, ChainError};

/// An RSA-2048 public key (SubjectPublicKeyInfo): rcgen on ring cannot make RSA keys, and
/// a leaf only needs the public half.
const RSA_SPKI: &str =
    "MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAuslETJ8cQQhLgNtNMsVbeoXlRwMUqNgW\
8wPT0RSvMlyzQN+Wl+RDi1t10dtEgMRlnWJ/9HYiDQ07yU+oBVLtECYWZsWyxfPpcsmNhM7vpkRt\
pusekjcBGTO1EI4U1HTjZ7nAYCz0Wyw8+f5k7lqQymwRxi92gs0XFYrXprLHKbg3gPGGB78fNzZm\
5pjM75myq6jb2w4rlk3VsgjVlPXQLoVwZWFF/kWcUWwMN0CjBfXqHmRnVS2kwt9sYMcqcyOmWKHo\
uaVH/655+We1+xH7pNU0xYKH3qzAauaunF51nyGmjwCBpIOPjtrfZ87l5n94ETOno/Ee8VJb3hSl\
QZ+VLQIDAQAB";

const TCG_EKU: &[u64] = &[2, 23, 133, 8, 1];

fn rsa_key() -> SubjectPublicKeyInfo {
    let der = base64::engine::general_purpose::STANDARD
        .decode(RSA_SPKI)
        .unwrap();
    SubjectPublicKeyInfo::from_der(&der).unwrap()
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn dn(parts: &[(DnType, &str)]) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    for (t, v) in parts {
        d.push(t.clone(), *v);
    }
    d
}

/// A CA certificate and its issuer handle.
pub(crate) struct Ca {
    der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&[
        (DnType::OrganizationName, "ironroot"),
        (DnType::CommonName, cn),
    ]);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    p
}

/// A CA named `cn`, self-signed when `parent` is `None`.
pub(crate) fn ca(cn: &str, parent: Option<&Ca>, tweak: impl FnOnce(&mut CertificateParams)) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = ca_params(cn);
    tweak(&mut p);
    let cert = match parent {
        None => p.self_signed(&key).unwrap(),
        Some(parent) => p.signed_by(&key, &parent.issuer).unwrap(),
    };
    Ca {
        der: cert.der().to_vec(),
        issuer: Issuer::new(p, key),
    }
}

/// An EK leaf as the TCG profile wants it: RSA key, critical keyEncipherment, the TCG EKU,
/// cA=false, an empty subject with a critical directoryName SAN (as swtpm writes).
pub(crate) fn ek_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::Other(TCG_EKU.to_vec())];
    p.custom_extensions = vec![tpm_san()];
    p
}

/// A critical subjectAltName with one directoryName (TPM manufacturer, model, version).
fn tpm_san() -> CustomExtension {
    let name: x509_cert::name::Name = "CN=tpm,O=ironroot".parse().unwrap();
    let san = SubjectAltName(vec![GeneralName::DirectoryName(name)]);
    let mut e = CustomExtension::from_oid_content(&[2, 5, 29, 17], san.to_der().unwrap());
    e.set_criticality(true);
    e
}

fn devid_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(&[
        (DnType::OrganizationName, "ironroot"),
        (DnType::CommonName, "gw-1"),
    ]);
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p
}

pub(crate) fn leaf(p: CertificateParams, key: &impl PublicKeyData, issuer: &Ca) -> Vec<u8> {
    p.signed_by(key, &issuer.issuer).unwrap().der().to_vec()
}

pub(crate) fn anchors(of: &[&Ca]) -> Anchors {
    let mut a = Anchors::default();
    for c in of {
        a.add_der(&c.der).unwrap();
    }
    a
}

/// Verifies `leaf` against `root` (the anchor) through `intermediates`.
fn check(
    profile: CertProfile,
    leaf: &[u8],
    intermediates: &[&Ca],
    root: &Ca,
) -> Result<(), ChainError> {
    let mids: Vec<Vec<u8>> = intermediates.iter().map(|c| c.der.clone()).collect();
    verify(leaf, &mids, &anchors(&[root]), now(), profile).map(|_| ())
}

/// The rule error of a failed check, with its message naming the rule.
fn rule(r: Result<(), ChainError>, tag: &str) -> CertRuleError {
    match r {
        Err(ChainError::Rule(e)) => {
            assert!(e.to_string().contains(tag), "{e} does not name {tag}");
            e
        }
        other => panic!("expected a {tag} rule error, got {other:?}"),
    }
}

#[test]
fn profile_conforming_paths_pass() {
    let root = ca("root", None, |_| {});
    let mid = ca("mid", Some(&root), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    });
    let rsa = leaf(ek_params(), &rsa_key(), &mid);
    check(CertProfile::Ek, &rsa, &[&mid], &root).unwrap();

    let mut ecc = ek_params();
    ecc.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    check(CertProfile::Ek, &leaf(ecc, &key, &root), &[], &root).unwrap();

    let devid = leaf(devid_params(), &KeyPair::generate().unwrap(), &mid);
    check(CertProfile::DevId, &devid, &[&mid], &root).unwrap();
}

#[test]
fn ek_key_usage_must_match_the_key_type() {
    let root = ca("root", None, |_| {});
    let mut p = ek_params();
    p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
    let e = rule(
        check(CertProfile::Ek, &leaf(p, &rsa_key(), &root), &[], &root),
        "[leaf-key-usage]",
    );
    assert!(
        matches!(e, CertRuleError::LeafKeyUsage { required, .. } if required.starts_with("keyEncipherment"))
    );

    let mut p = ek_params();
    p.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    let key = KeyPair::generate().unwrap();
    let e = rule(
        check(CertProfile::Ek, &leaf(p, &key, &root), &[], &root),
        "keyAgreement (an ECC EK)",
    );
    assert!(matches!(e, CertRuleError::LeafKeyUsage { .. }));

    let mut p = ek_params();
    p.key_usages = vec![];
    let e = rule(
        check(CertProfile::Ek, &leaf(p, &rsa_key(), &root), &[], &root),
        "no keyUsage extension",
    );
    assert!(matches!(
        e,
        CertRuleError::LeafKeyUsage {
            profile: CertProfile::Ek,
            ..
        }
    ));
}

#[test]
fn ek_needs_an_rsa_or_ecc_key() {
    let root = ca("root", None, |_| {});
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let e = rule(
        check(CertProfile::Ek, &leaf(ek_params(), &key, &root), &[], &root),
        "[ek-key-algorithm]",
    );
    assert!(matches!(e, CertRuleError::EkKeyAlgorithm { oid, .. } if oid == "1.3.101.112"));
}

#[test]
fn ek_needs_the_tcg_extended_key_usage() {
    let root = ca("root", None, |_| {});
    let mut p = ek_params();
    p.extended_key_usages = vec![];
    let e = rule(
        check(CertProfile::Ek, &leaf(p, &rsa_key(), &root), &[], &root),
        "[ek-extended-key-usage]",
    );
    assert!(matches!(e, CertRuleError::EkExtendedKeyUsage { .. }));

    // A TLS certificate is not an EK certificate, whatever its key usage.
    let mut p = ek_params();
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let e = rule(
        check(CertProfile::Ek, &leaf(p, &rsa_key(), &root), &[], &root),
        "it has 1.3.6.1.5.5.7.3.1",
    );
    assert!(matches!(e, CertRuleError::EkExtendedKeyUsage { .. }));

    // A DevID needs no EKU.
    let devid = leaf(devid_params(), &KeyPair::generate().unwrap(), &root);
    check(CertProfile::DevId, &devid, &[], &root).unwrap();
}

#[test]
fn devid_needs_digital_signature() {
    let root = ca("root", None, |_| {});
    for usages in [vec![], vec![KeyUsagePurpose::KeyEncipherment]] {
        let mut p = devid_params();
        p.key_usages = usages;
        let e = rule(
            check(
                CertProfile::DevId,
                &leaf(p, &KeyPair::generate().unwrap(), &root),
                &[],
                &root,
            ),
            "the DevID certificate 'CN=gw-1,O=ironroot' must have a keyUsage with digitalSignature",
        );
        assert!(matches!(
            e,
            CertRuleError::LeafKeyUsage {
                profile: CertProfile::DevId,
                ..
            }
        ));
    }
}

#[test]
fn a_ca_is_not_a_leaf() {
    let root = ca("root", None, |_| {});
    let mut p = devid_params();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let e = rule(
        check(
            CertProfile::DevId,
            &leaf(p, &KeyPair::generate().unwrap(), &root),
            &[],
            &root,
        ),
        "[leaf-not-ca]",
    );
    assert!(matches!(e, CertRuleError::LeafIsCa { .. }));
}

#[test]
fn every_issuer_is_a_ca_that_may_sign_certificates() {
    let root = ca("root", None, |_| {});
    let not_ca = ca("not-a-ca", Some(&root), |p| p.is_ca = IsCa::ExplicitNoCa);
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &not_ca);
    let e = rule(
        check(CertProfile::DevId, &l, &[&not_ca], &root),
        "[issuer-is-ca]",
    );
    assert!(
        matches!(e, CertRuleError::IssuerNotCa { cert, .. } if cert == "CN=not-a-ca,O=ironroot")
    );

    // No basicConstraints at all: not a CA either.
    let bare = ca("bare", Some(&root), |p| p.is_ca = IsCa::NoCa);
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &bare);
    let e = rule(
        check(CertProfile::DevId, &l, &[&bare], &root),
        "[issuer-is-ca]",
    );
    assert!(matches!(e, CertRuleError::IssuerNotCa { .. }));

    // The anchor is held to it too.
    let anchor = ca("anchor", None, |p| p.is_ca = IsCa::ExplicitNoCa);
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &anchor);
    let e = rule(
        check(CertProfile::DevId, &l, &[], &anchor),
        "[issuer-is-ca]",
    );
    assert!(matches!(e, CertRuleError::IssuerNotCa { .. }));

    let no_sign = ca("no-sign", Some(&root), |p| {
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    });
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &no_sign);
    let e = rule(
        check(CertProfile::DevId, &l, &[&no_sign], &root),
        "[issuer-key-usage]",
    );
    assert!(matches!(e, CertRuleError::IssuerKeyUsage { .. }));
}

#[test]
fn path_length_constraints_hold_along_the_chain() {
    let root = ca("root", None, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    });
    let mid = ca("mid", Some(&root), |_| {});
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &mid);
    let e = rule(
        check(CertProfile::DevId, &l, &[&mid], &root),
        "[path-length]",
    );
    assert_eq!(
        e,
        CertRuleError::PathLength {
            cert: "CN=root,O=ironroot".into(),
            allowed: 0,
            found: 1
        }
    );
    // pathLen 0 on the intermediate itself is fine: no CA below it.
    let root1 = ca("root1", None, |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(1));
    });
    let mid1 = ca("mid1", Some(&root1), |p| {
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    });
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &mid1);
    check(CertProfile::DevId, &l, &[&mid1], &root1).unwrap();
    // ... but not with a second intermediate under it.
    let low = ca("low", Some(&mid1), |_| {});
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &low);
    let e = rule(
        check(CertProfile::DevId, &l, &[&mid1, &low], &root1),
        "[path-length]",
    );
    assert!(matches!(
        e,
        CertRuleError::PathLength {
            allowed: 0,
            found: 1,
            ..
        }
    ));
}

fn constrained_root(nc: NameConstraints) -> Ca {
    ca("root", None, |p| p.name_constraints = Some(nc))
}

fn permit_org(org: &str) -> NameConstraints {
    NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DirectoryName(dn(&[(
            DnType::OrganizationName,
            org,
        )]))],
        excluded_subtrees: vec![],
    }
}

#[test]
fn permitted_directory_names_are_enforced() {
    let root = constrained_root(permit_org("ironroot"));
    let ok = leaf(devid_params(), &KeyPair::generate().unwrap(), &root);
    check(CertProfile::DevId, &ok, &[], &root).unwrap();

    let mut p = devid_params();
    p.distinguished_name = dn(&[
        (DnType::OrganizationName, "evil"),
        (DnType::CommonName, "gw-1"),
    ]);
    let bad = leaf(p, &KeyPair::generate().unwrap(), &root);
    let e = rule(
        check(CertProfile::DevId, &bad, &[], &root),
        "[name-constraints]",
    );
    assert!(
        matches!(e, CertRuleError::NameConstraintViolated { name, .. } if name.contains("O=evil"))
    );

    // An EK's names are in its subjectAltName: checked there when the subject is empty.
    let ek = leaf(ek_params(), &rsa_key(), &root);
    check(CertProfile::Ek, &ek, &[], &root).unwrap();
    let other_root = constrained_root(permit_org("elsewhere"));
    let ek = leaf(ek_params(), &rsa_key(), &other_root);
    let e = rule(
        check(CertProfile::Ek, &ek, &[], &other_root),
        "[name-constraints]",
    );
    assert!(
        matches!(e, CertRuleError::NameConstraintViolated { cert, .. } if cert.starts_with("serial "))
    );
}

#[test]
fn name_constraints_that_cannot_be_evaluated_fail_closed() {
    let excluded = NameConstraints {
        permitted_subtrees: vec![],
        excluded_subtrees: vec![GeneralSubtree::DirectoryName(dn(&[(
            DnType::OrganizationName,
            "evil",
        )]))],
    };
    let dns = NameConstraints {
        permitted_subtrees: vec![GeneralSubtree::DnsName("example.org".into())],
        excluded_subtrees: vec![],
    };
    for (nc, what) in [
        (excluded, "excludedSubtrees"),
        (dns, "a permitted dNSName subtree"),
    ] {
        let root = constrained_root(nc);
        let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &root);
        let e = rule(check(CertProfile::DevId, &l, &[], &root), what);
        assert!(matches!(e, CertRuleError::NameConstraintUnsupported { .. }));
    }
}

fn unknown_critical() -> CustomExtension {
    let mut e = CustomExtension::from_oid_content(&[1, 3, 6, 1, 4, 1, 99999, 1], vec![5, 0]);
    e.set_criticality(true);
    e
}

#[test]
fn unknown_critical_extensions_are_rejected_wherever_they_are() {
    let root = ca("root", None, |_| {});
    let mut p = devid_params();
    p.custom_extensions = vec![unknown_critical()];
    let l = leaf(p, &KeyPair::generate().unwrap(), &root);
    let e = rule(
        check(CertProfile::DevId, &l, &[], &root),
        "1.3.6.1.4.1.99999.1",
    );
    assert!(matches!(e, CertRuleError::UnknownCriticalExtension { .. }));

    let mid = ca("mid", Some(&root), |p| {
        p.custom_extensions = vec![unknown_critical()]
    });
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &mid);
    let e = rule(
        check(CertProfile::DevId, &l, &[&mid], &root),
        "[critical-extensions]",
    );
    assert!(
        matches!(e, CertRuleError::UnknownCriticalExtension { cert, .. } if cert == "CN=mid,O=ironroot")
    );

    // The same extension, not critical, is allowed.
    let mut p = devid_params();
    let mut ext = unknown_critical();
    ext.set_criticality(false);
    p.custom_extensions = vec![ext];
    let l = leaf(p, &KeyPair::generate().unwrap(), &root);
    check(CertProfile::DevId, &l, &[], &root).unwrap();
}

#[test]
fn duplicate_and_malformed_extensions_are_rejected() {
    let root = ca("root", None, |_| {});
    // A second basicConstraints saying cA=true after rcgen's cA=false.
    let mut p = devid_params();
    let mut bc =
        CustomExtension::from_oid_content(&[2, 5, 29, 19], vec![0x30, 0x03, 0x01, 0x01, 0xFF]);
    bc.set_criticality(true);
    p.custom_extensions = vec![bc];
    let l = leaf(p, &KeyPair::generate().unwrap(), &root);
    let e = rule(check(CertProfile::DevId, &l, &[], &root), "more than once");
    assert!(matches!(e, CertRuleError::DuplicateExtension { oid, .. } if oid == "2.5.29.19"));

    let mut p = devid_params();
    p.key_usages = vec![];
    let mut ku = CustomExtension::from_oid_content(&[2, 5, 29, 15], vec![0x04, 0x00]);
    ku.set_criticality(true);
    p.custom_extensions = vec![ku];
    let l = leaf(p, &KeyPair::generate().unwrap(), &root);
    let e = rule(
        check(CertProfile::DevId, &l, &[], &root),
        "malformed keyUsage",
    );
    assert!(matches!(
        e,
        CertRuleError::MalformedExtension {
            extension: "keyUsage",
            ..
        }
    ));
}

#[test]
fn chain_errors_name_what_failed() {
    let root = ca("root", None, |_| {});
    let rogue = ca("rogue", None, |_| {});
    let l = leaf(devid_params(), &KeyPair::generate().unwrap(), &rogue);
    let e = check(CertProfile::DevId, &l, &[], &root).unwrap_err();
    assert!(matches!(e, ChainError::Untrusted { .. }));
    assert!(
        e.to_string()
            .contains("does not chain to the configured CA bundle"),
        "{e}"
    );

    let mut p = devid_params();
    p.not_after = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    p.not_before = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let l = leaf(p, &KeyPair::generate().unwrap(), &root);
    assert!(matches!(
        check(CertProfile::DevId, &l, &[], &root),
        Err(ChainError::Expired { .. })
    ));
    assert!(matches!(
        verify(&l, &[], &Anchors::default(), now(), CertProfile::Ek),
        Err(ChainError::NoAnchors {
            profile: CertProfile::Ek
        })
    ));
    assert!(matches!(
        check(CertProfile::DevId, b"not a certificate", &[], &root),
        Err(ChainError::Unparseable { .. })
    ));
}
