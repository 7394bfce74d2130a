use super::*;
use crate::cache::CachedEntry;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, CertificateValidationContext, SpiffeCertValidatorConfig, TlsCertificate,
};
use ironroot_api::bundle::TrustBundle;
use ironroot_api::spiffe_id::TrustDomain;

const NOW: i64 = 1_000_000;

fn ca_der(cn: &str) -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    let key = rcgen::KeyPair::generate().unwrap();
    p.self_signed(&key).unwrap().der().to_vec()
}

fn entry(id: &str, spiffe_id: &str, uid: u32) -> CachedEntry {
    CachedEntry {
        id: id.into(),
        spiffe_id: spiffe_id.into(),
        hint: String::new(),
        revision_number: 0,
        selectors: vec![Selector::new("unix", format!("uid:{uid}")).unwrap()],
        federates_with: vec![],
    }
}

fn svid(entry_id: &str, spiffe_id: &str, expires_at: i64) -> CachedSvid {
    CachedSvid {
        entry_id: entry_id.into(),
        spiffe_id: spiffe_id.into(),
        chain: vec![
            format!("leaf of {entry_id}").into_bytes(),
            b"intermediate".to_vec(),
        ],
        key_pkcs8: format!("key of {entry_id}").into_bytes(),
        issued_at: NOW - 10,
        expires_at,
        entry_revision: 0,
    }
}

const WEB: &str = "spiffe://example.org/web";
const API: &str = "spiffe://example.org/api";
const OTHER: &str = "spiffe://example.org/other";

/// uid 1000 has `web` (entry e-b) and `api` (entry e-a, which federates with
/// partner.org); uid 2000 has `other`; one federated trust domain, partner.org.
fn snapshot(own_root: &[u8], partner_root: &[u8]) -> Snapshot {
    let mut partner = TrustBundle::new(TrustDomain::parse("partner.org").unwrap());
    partner.x509_authorities.push(partner_root.to_vec());
    let mut s = Snapshot {
        trust_domain: "example.org".into(),
        entries: vec![
            entry("e-b", WEB, 1000),
            CachedEntry {
                federates_with: vec!["partner.org".into()],
                ..entry("e-a", API, 1000)
            },
            entry("e-c", OTHER, 2000),
        ],
        roots: vec![own_root.to_vec()],
        ..Default::default()
    };
    for (e, id) in [("e-b", WEB), ("e-a", API), ("e-c", OTHER)] {
        s.svids.insert(e.into(), svid(e, id, NOW + 100));
    }
    s.federated.insert("partner.org".into(), partner);
    s
}

fn caller(uid: u32) -> Vec<Selector> {
    vec![Selector::new("unix", format!("uid:{uid}")).unwrap()]
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn inline(d: &Option<DataSource>) -> Vec<u8> {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("inline bytes expected, got {other:?}"),
    }
}

fn pem_contents(bytes: &[u8]) -> Vec<Vec<u8>> {
    pem::parse_many(bytes)
        .unwrap()
        .into_iter()
        .map(|p| p.into_contents())
        .collect()
}

fn tls(s: &Secret) -> &TlsCertificate {
    match &s.r#type {
        Some(secret::Type::TlsCertificate(t)) => t,
        other => panic!("{}: TLS certificate expected, got {other:?}", s.name),
    }
}

fn context(s: &Secret) -> &CertificateValidationContext {
    match &s.r#type {
        Some(secret::Type::ValidationContext(v)) => v,
        other => panic!("{}: validation context expected, got {other:?}", s.name),
    }
}

/// (trust domain, roots) of a SPIFFE validator context.
fn spiffe_domains(s: &Secret) -> Vec<(String, Vec<Vec<u8>>)> {
    let c = context(s)
        .custom_validator_config
        .as_ref()
        .expect("custom validator");
    assert_eq!(c.name, "envoy.tls.cert_validator.spiffe");
    let any = c.typed_config.as_ref().unwrap();
    assert_eq!(
        any.type_url,
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig"
    );
    let cfg: SpiffeCertValidatorConfig = prost::Message::decode(&any.value[..]).unwrap();
    cfg.trust_domains
        .iter()
        .map(|t| (t.name.clone(), pem_contents(&inline(&t.trust_bundle))))
        .collect()
}

struct Fixture {
    own: Vec<u8>,
    partner: Vec<u8>,
    snap: Snapshot,
    cfg: SdsConfig,
}

fn fixture() -> Fixture {
    let own = ca_der("own root");
    let partner = ca_der("partner root");
    let snap = snapshot(&own, &partner);
    Fixture {
        own,
        partner,
        snap,
        cfg: SdsConfig::default(),
    }
}

impl Fixture {
    fn resolve(
        &self,
        uid: u32,
        req: &[&str],
        format: BundleFormat,
    ) -> Result<Vec<Secret>, SdsError> {
        CallerSecrets::new(&self.snap, &caller(uid), NOW)
            .unwrap()
            .resolve(&names(req), &self.cfg, format)
    }
}

#[test]
fn default_is_the_first_svid_by_entry_id_under_the_alias() {
    let f = fixture();
    let r = f
        .resolve(1000, &["default"], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].name, "default");
    let t = tls(&r[0]);
    assert_eq!(
        pem_contents(&inline(&t.certificate_chain)),
        vec![b"leaf of e-a".to_vec(), b"intermediate".to_vec()],
        "entry e-a sorts before e-b"
    );
    assert_eq!(
        pem_contents(&inline(&t.private_key)),
        vec![b"key of e-a".to_vec()]
    );
    let key = String::from_utf8(inline(&t.private_key)).unwrap();
    assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{key}");
}

#[test]
fn an_svid_by_its_spiffe_id_only_for_its_own_caller() {
    let f = fixture();
    let r = f
        .resolve(1000, &[WEB], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(r[0].name, WEB);
    assert_eq!(
        pem_contents(&inline(&tls(&r[0]).private_key)),
        vec![b"key of e-b".to_vec()]
    );
    // Another caller's SPIFFE ID: the whole request is refused, naming it.
    let e = f
        .resolve(1000, &[WEB, OTHER, "ROOTCA"], BundleFormat::SpiffeValidator)
        .unwrap_err();
    match &e {
        SdsError::NotAuthorized { names, .. } => assert_eq!(names, &[OTHER.to_string()]),
        other => panic!("NotAuthorized expected, got {other:?}"),
    }
    assert!(e.to_string().contains("not authorized"), "{e}");
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::InvalidArgument);
}

#[test]
fn rootca_and_the_trust_domain_id_are_the_own_bundle() {
    let f = fixture();
    for name in ["ROOTCA", "spiffe://example.org"] {
        let r = f
            .resolve(1000, &[name], BundleFormat::SpiffeValidator)
            .unwrap();
        assert_eq!(r[0].name, name);
        assert_eq!(
            spiffe_domains(&r[0]),
            vec![("example.org".to_string(), vec![f.own.clone()])]
        );
        let r = f.resolve(1000, &[name], BundleFormat::TrustedCa).unwrap();
        assert_eq!(
            pem_contents(&inline(&context(&r[0]).trusted_ca)),
            vec![f.own.clone()]
        );
        assert!(context(&r[0]).custom_validator_config.is_none());
    }
}

#[test]
fn all_holds_every_trust_domain_and_needs_the_spiffe_validator() {
    let f = fixture();
    let r = f
        .resolve(1000, &["ALL"], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(r[0].name, "ALL");
    assert_eq!(
        spiffe_domains(&r[0]),
        vec![
            ("example.org".to_string(), vec![f.own.clone()]),
            ("partner.org".to_string(), vec![f.partner.clone()]),
        ]
    );
    let e = f
        .resolve(1000, &["ALL"], BundleFormat::TrustedCa)
        .unwrap_err();
    assert!(
        matches!(e, SdsError::AllBundlesNeedSpiffeValidator { .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("request \"ROOTCA\""), "{e}");
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::FailedPrecondition
    );
}

#[test]
fn a_federated_bundle_by_its_trust_domain_id() {
    let f = fixture();
    let r = f
        .resolve(
            1000,
            &["spiffe://partner.org"],
            BundleFormat::SpiffeValidator,
        )
        .unwrap();
    assert_eq!(
        spiffe_domains(&r[0]),
        vec![("partner.org".to_string(), vec![f.partner.clone()])]
    );
    let e = f
        .resolve(
            1000,
            &["spiffe://unknown.org"],
            BundleFormat::SpiffeValidator,
        )
        .unwrap_err();
    assert!(
        matches!(e, SdsError::NotAuthorized { ref names, .. } if names == &["spiffe://unknown.org"])
    );
}

#[test]
fn a_federated_bundle_only_for_a_caller_whose_entry_federates_with_it() {
    let f = fixture();
    let e = f
        .resolve(
            2000,
            &["spiffe://partner.org"],
            BundleFormat::SpiffeValidator,
        )
        .unwrap_err();
    assert!(
        matches!(e, SdsError::NotAuthorized { ref names, .. } if names == &["spiffe://partner.org"]),
        "{e:?}"
    );
    let all = f
        .resolve(2000, &["ALL"], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(
        spiffe_domains(&all[0])
            .into_iter()
            .map(|(td, _)| td)
            .collect::<Vec<_>>(),
        ["example.org"]
    );
    let every: Vec<String> = f
        .resolve(2000, &[], BundleFormat::SpiffeValidator)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(every, ["spiffe://example.org", OTHER]);
    // A caller with no entry at all: the agent's bundle only.
    let none = f
        .resolve(
            4242,
            &["spiffe://partner.org"],
            BundleFormat::SpiffeValidator,
        )
        .unwrap_err();
    assert!(matches!(none, SdsError::NotAuthorized { .. }), "{none:?}");
}

#[test]
fn no_names_is_every_bundle_and_every_own_svid_without_aliases() {
    let f = fixture();
    let r = f.resolve(1000, &[], BundleFormat::SpiffeValidator).unwrap();
    let got: Vec<&str> = r.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        got,
        ["spiffe://example.org", "spiffe://partner.org", API, WEB]
    );
    // Empty strings are no names either (SPIRE ignores them).
    let r2 = f
        .resolve(1000, &[""], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(r2, r);
}

#[test]
fn a_caller_without_svids_gets_bundles_but_no_default() {
    let f = fixture();
    let r = f
        .resolve(4242, &["ROOTCA"], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(r.len(), 1);
    let e = f
        .resolve(4242, &["default"], BundleFormat::SpiffeValidator)
        .unwrap_err();
    assert!(matches!(e, SdsError::NotAuthorized { ref names, .. } if names == &["default"]));
    let r = f.resolve(4242, &[], BundleFormat::SpiffeValidator).unwrap();
    assert!(r
        .iter()
        .all(|s| matches!(s.r#type, Some(secret::Type::ValidationContext(_)))));
}

#[test]
fn expired_svids_are_not_served() {
    let mut f = fixture();
    f.snap.svids.insert("e-a".into(), svid("e-a", API, NOW));
    let r = f
        .resolve(1000, &["default"], BundleFormat::SpiffeValidator)
        .unwrap();
    assert_eq!(
        pem_contents(&inline(&tls(&r[0]).private_key)),
        vec![b"key of e-b".to_vec()],
        "the expired e-a is skipped"
    );
    assert!(f
        .resolve(1000, &[API], BundleFormat::SpiffeValidator)
        .is_err());
}

#[test]
fn nothing_is_served_before_the_first_sync() {
    let snap = Snapshot {
        trust_domain: "example.org".into(),
        ..Default::default()
    };
    let e = CallerSecrets::new(&snap, &caller(1000), NOW).unwrap_err();
    assert_eq!(e, SdsError::NotSynced);
    assert_eq!(tonic::Status::from(e).code(), tonic::Code::Unavailable);
}

#[test]
fn the_digest_follows_only_what_the_caller_may_see() {
    let f = fixture();
    let digest = |s: &Snapshot, uid| CallerSecrets::new(s, &caller(uid), NOW).unwrap().digest();
    let before = digest(&f.snap, 1000);
    assert_eq!(before, digest(&f.snap.clone(), 1000), "deterministic");

    // Another caller's SVID rotates: no change for uid 1000.
    let mut other = f.snap.clone();
    other.svids.get_mut("e-c").unwrap().key_pkcs8 = b"new key".to_vec();
    assert_eq!(digest(&other, 1000), before);
    assert_ne!(digest(&other, 2000), digest(&f.snap, 2000));

    // Its own SVID rotates, a bundle changes: new digest.
    let mut rotated = f.snap.clone();
    rotated.svids.get_mut("e-a").unwrap().chain[0] = b"new leaf".to_vec();
    assert_ne!(digest(&rotated, 1000), before);
    let mut fed = f.snap.clone();
    fed.federated.clear();
    assert_ne!(digest(&fed, 1000), before);
    // A bundle the caller may not have changes nothing for it.
    assert_eq!(digest(&fed, 2000), digest(&f.snap, 2000));
}
