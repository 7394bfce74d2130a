//! azure_imds: attested data signed by a `*.metadata.azure.com` certificate whose own
//! chain must reach the configured roots.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ironroot_cloud_attest::azure_imds::{
    AgentMetadata, AttestedDocument, AzureImdsConfig, AzureImdsError, ChallengeResponse,
    ParsedAttestedDocument, TenantConfig,
};
use ironroot_cloud_attest::pkcs7::Pkcs7Error;
use ironroot_cloud_attest::test_support::{
    azure_attested_content, pkcs7_sign, unix, Pkcs7Options, TestCert, Validity,
};
use rustls_pki_types::CertificateDer;

const DOMAIN: &str = "contoso.onmicrosoft.com";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SUB: &str = "d5b9d4b7-6fc1-46c5-bafe-38effaed19b2";
const VM_ID: &str = "02aab8a4-74ef-476e-8182-f6d2ba4166a6";
const NONCE: &str = "Qm9yZWRBbmRQcm91ZDEyMzQ1Njc4OTBh";
const AIA: &str = "http://www.microsoft.com/pkiops/certs/Microsoft%20Azure%20RSA%20TLS%20Issuing%20CA%2003%20-%20xsign.crt";

/// Azure's stand-in PKI: root, issuing CA, the IMDS signing leaf.
struct Pki {
    root: TestCert,
    intermediate: TestCert,
    leaf: TestCert,
}

fn pki() -> &'static Pki {
    static P: OnceLock<Pki> = OnceLock::new();
    P.get_or_init(|| {
        let v = Validity::around_now(365);
        let root = TestCert::ca("DigiCert Global Root G2", None, v);
        let intermediate = TestCert::ca("Microsoft Azure RSA TLS Issuing CA 03", Some(&root), v);
        let leaf = TestCert::tls_leaf(
            0x33,
            "metadata.azure.com",
            &["westus.metadata.azure.com", "metadata.azure.com"],
            Some(AIA),
            &intermediate,
            v,
        );
        Pki {
            root,
            intermediate,
            leaf,
        }
    })
}

fn config() -> AzureImdsConfig {
    AzureImdsConfig::new(
        vec![CertificateDer::from(pki().root.der.clone())],
        BTreeMap::from([(
            DOMAIN.to_owned(),
            TenantConfig {
                tenant_id: TENANT.to_owned(),
                restrict_to_subscriptions: Default::default(),
            },
        )]),
    )
}

fn metadata() -> AgentMetadata {
    AgentMetadata {
        agent_domain: DOMAIN.to_owned(),
        vmss_name: None,
    }
}

fn document_signed_by(signer: &TestCert, content: &str, opts: &Pkcs7Options) -> AttestedDocument {
    AttestedDocument {
        encoding: "pkcs7".to_owned(),
        signature: base64::engine::general_purpose::STANDARD.encode(pkcs7_sign(
            signer,
            content.as_bytes(),
            opts,
        )),
    }
}

fn content(nonce: &str, now: SystemTime) -> String {
    let t = unix(now);
    azure_attested_content(nonce, SUB, VM_ID, t - 10, t + 300)
}

fn der_opts() -> Pkcs7Options {
    Pkcs7Options {
        ber_stream: false,
        ..Default::default()
    }
}

fn honest(now: SystemTime) -> AttestedDocument {
    document_signed_by(&pki().leaf, &content(NONCE, now), &der_opts())
}

fn intermediates() -> Vec<CertificateDer<'static>> {
    vec![CertificateDer::from(pki().intermediate.der.clone())]
}

fn verify(
    doc: &AttestedDocument,
    cfg: &AzureImdsConfig,
    nonce: &str,
    now: SystemTime,
) -> Result<ironroot_cloud_attest::azure_imds::AzureVmIdentity, AzureImdsError> {
    ParsedAttestedDocument::parse(doc)?.verify(cfg, &intermediates(), nonce, &metadata(), now)
}

#[test]
fn honest_document_yields_agent_path_and_selectors() {
    let now = SystemTime::now();
    let response = serde_json::json!({"document": honest(now), "metadata": {"agentDomain": DOMAIN, "vmssName": null}});
    let response = ChallengeResponse::from_json(response.to_string().as_bytes()).unwrap();
    let parsed = ParsedAttestedDocument::parse(&response.document).unwrap();
    assert_eq!(parsed.issuer_url().unwrap(), AIA);
    let id = parsed
        .verify(&config(), &intermediates(), NONCE, &response.metadata, now)
        .unwrap();
    assert_eq!(id.tenant_id, TENANT);
    assert_eq!(id.subscription_id, SUB);
    assert_eq!(id.vm_id, VM_ID);
    assert_eq!(id.nonce, NONCE);
    assert_eq!(id.selectors(), [format!("subscription-id:{SUB}")]);
    assert_eq!(
        id.agent_path().unwrap(),
        format!("/spire/agent/azure_imds/{TENANT}/{SUB}/{VM_ID}")
    );
    assert!(!id.can_reattest());
}

#[test]
fn cert_bag_forgery_is_refused_the_signer_chain_is_what_counts() {
    // SPIRE's 2026 fix: the attacker signs with their own certificate and puts Azure's
    // genuine leaf in the bag too. The signer (named by the SignerInfo) must chain.
    let now = SystemTime::now();
    let v = Validity::around_now(30);
    let attacker_ca = TestCert::ca("Attacker CA", None, v);
    let attacker = TestCert::tls_leaf(
        0x44,
        "metadata.azure.com",
        &["metadata.azure.com"],
        Some(AIA),
        &attacker_ca,
        v,
    );
    let opts = Pkcs7Options {
        extra_certs: vec![pki().leaf.der.clone(), pki().intermediate.der.clone()],
        ..der_opts()
    };
    let doc = document_signed_by(&attacker, &content(NONCE, now), &opts);
    assert!(matches!(
        verify(&doc, &config(), NONCE, now).unwrap_err(),
        AzureImdsError::UntrustedSigner { .. }
    ));

    // The attacker's certificate copies the genuine leaf's issuer and serial, and only the
    // genuine leaf is in the bag: the SignerInfo names Azure's certificate, whose key did
    // not sign.
    let lookalike_ca = TestCert::ca("Microsoft Azure RSA TLS Issuing CA 03", None, v);
    let lookalike = TestCert::tls_leaf(
        0x33,
        "metadata.azure.com",
        &["metadata.azure.com"],
        Some(AIA),
        &lookalike_ca,
        v,
    );
    let opts = Pkcs7Options {
        embed_signer: false,
        extra_certs: vec![pki().leaf.der.clone()],
        ..der_opts()
    };
    let doc = document_signed_by(&lookalike, &content(NONCE, now), &opts);
    assert!(matches!(
        verify(&doc, &config(), NONCE, now).unwrap_err(),
        AzureImdsError::Pkcs7(Pkcs7Error::BadSignature { .. })
    ));
}

#[test]
fn chain_must_reach_the_configured_roots() {
    let now = SystemTime::now();
    let doc = honest(now);
    let parsed = ParsedAttestedDocument::parse(&doc).unwrap();
    // Without the issuing CA.
    assert!(matches!(
        parsed
            .verify(&config(), &[], NONCE, &metadata(), now)
            .unwrap_err(),
        AzureImdsError::UntrustedSigner { .. }
    ));
    // Another root configured.
    let other_root = TestCert::ca("Other Root", None, Validity::around_now(30));
    let mut cfg = config();
    cfg.roots = vec![CertificateDer::from(other_root.der.clone())];
    assert!(matches!(
        parsed
            .verify(&cfg, &intermediates(), NONCE, &metadata(), now)
            .unwrap_err(),
        AzureImdsError::UntrustedSigner { .. }
    ));
    // The signer's certificate has expired.
    assert!(matches!(
        parsed
            .verify(
                &config(),
                &intermediates(),
                NONCE,
                &metadata(),
                now + Duration::from_secs(400 * 86_400)
            )
            .unwrap_err(),
        AzureImdsError::UntrustedSigner { .. }
    ));
}

#[test]
fn signer_name_outside_allowed_domains_is_refused() {
    let now = SystemTime::now();
    let v = Validity::around_now(30);
    let leaf = TestCert::tls_leaf(
        0x55,
        "evil",
        &["metadata.azure.com.evil.example", "xmetadata.azure.com"],
        Some(AIA),
        &pki().intermediate,
        v,
    );
    let doc = document_signed_by(&leaf, &content(NONCE, now), &der_opts());
    assert!(matches!(
        verify(&doc, &config(), NONCE, now).unwrap_err(),
        AzureImdsError::SignerNameNotAllowed { .. }
    ));
}

#[test]
fn replayed_document_fails_the_nonce_check() {
    let now = SystemTime::now();
    assert_eq!(
        verify(
            &honest(now),
            &config(),
            "AnotherChallengeNonce0123456789a",
            now
        )
        .unwrap_err(),
        AzureImdsError::NonceMismatch {
            expected: "AnotherChallengeNonce0123456789a".into(),
            found: NONCE.into()
        }
    );
}

#[test]
fn expired_and_future_documents_are_refused() {
    let now = SystemTime::now();
    let doc = honest(now);
    // expiresOn is now+300 s; the skew is 300 s.
    assert!(verify(&doc, &config(), NONCE, now + Duration::from_secs(500)).is_ok());
    assert!(matches!(
        verify(&doc, &config(), NONCE, now + Duration::from_secs(601)).unwrap_err(),
        AzureImdsError::Expired { .. }
    ));
    let t = unix(now);
    let future = document_signed_by(
        &pki().leaf,
        &azure_attested_content(NONCE, SUB, VM_ID, t + 3600, t + 7200),
        &der_opts(),
    );
    assert!(matches!(
        verify(&future, &config(), NONCE, now).unwrap_err(),
        AzureImdsError::CreatedInFuture { .. }
    ));
}

#[test]
fn tenant_and_subscription_allow_lists_are_enforced() {
    let now = SystemTime::now();
    let parsed = ParsedAttestedDocument::parse(&honest(now)).unwrap();
    let other = AgentMetadata {
        agent_domain: "fabrikam.onmicrosoft.com".into(),
        vmss_name: None,
    };
    assert_eq!(
        parsed
            .verify(&config(), &intermediates(), NONCE, &other, now)
            .unwrap_err(),
        AzureImdsError::TenantNotAllowed {
            domain: "fabrikam.onmicrosoft.com".into()
        }
    );
    let mut cfg = config();
    cfg.tenants
        .get_mut(DOMAIN)
        .unwrap()
        .restrict_to_subscriptions = ["00000000-0000-0000-0000-000000000000".to_owned()].into();
    assert_eq!(
        parsed
            .verify(&cfg, &intermediates(), NONCE, &metadata(), now)
            .unwrap_err(),
        AzureImdsError::SubscriptionNotAllowed {
            subscription: SUB.into()
        }
    );
}

#[test]
fn malformed_documents_get_a_clear_error() {
    let now = SystemTime::now();
    let mut d = honest(now);
    d.encoding = "base64".into();
    assert!(matches!(
        ParsedAttestedDocument::parse(&d).unwrap_err(),
        AzureImdsError::MalformedDocument { .. }
    ));
    let mut d = honest(now);
    d.signature = "%%%".into();
    assert!(matches!(
        ParsedAttestedDocument::parse(&d).unwrap_err(),
        AzureImdsError::MalformedDocument { .. }
    ));
    // No certificate in the bag: the signer cannot be found.
    let d = document_signed_by(
        &pki().leaf,
        &content(NONCE, now),
        &Pkcs7Options {
            embed_signer: false,
            ..der_opts()
        },
    );
    assert_eq!(
        ParsedAttestedDocument::parse(&d).unwrap_err(),
        AzureImdsError::Pkcs7(Pkcs7Error::SignerCertificateMissing)
    );
    // vmId that is not a UUID.
    let t = unix(now);
    let d = document_signed_by(
        &pki().leaf,
        &azure_attested_content(NONCE, SUB, "../../x", t, t + 300),
        &der_opts(),
    );
    assert!(matches!(
        verify(&d, &config(), NONCE, now).unwrap_err(),
        AzureImdsError::MalformedContent { .. }
    ));
    // Content that is not the attested-data JSON.
    let d = document_signed_by(&pki().leaf, "{\"nonce\": 1}", &der_opts());
    assert!(matches!(
        verify(&d, &config(), NONCE, now).unwrap_err(),
        AzureImdsError::MalformedContent { .. }
    ));
    assert!(matches!(
        ChallengeResponse::from_json(b"{}").unwrap_err(),
        AzureImdsError::MalformedPayload { .. }
    ));
    // An issuing-certificate URL off www.microsoft.com is not followed.
    let v = Validity::around_now(30);
    let leaf = TestCert::tls_leaf(
        0x66,
        "m",
        &["metadata.azure.com"],
        Some("http://www.microsoft.com.evil.example/ca.crt"),
        &pki().intermediate,
        v,
    );
    let d = document_signed_by(&leaf, &content(NONCE, now), &der_opts());
    assert!(matches!(
        ParsedAttestedDocument::parse(&d)
            .unwrap()
            .issuer_url()
            .unwrap_err(),
        AzureImdsError::IssuerUrl { .. }
    ));
}
