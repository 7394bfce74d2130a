//! aws_iid: the RSA-2048 PKCS#7 path, identity from the signed content only.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ironroot_cloud_attest::aws_iid::{self, AttestationData, AwsIidConfig, AwsIidError};
use ironroot_cloud_attest::pkcs7::Pkcs7Error;
use ironroot_cloud_attest::test_support::{
    aws_document, base64_wrapped, pkcs7_sign, Pkcs7Options, TestCert, TestKey, Validity,
};

pub(crate) const ACCOUNT: &str = "123456789012";
pub(crate) const REGION: &str = "us-west-2";
pub(crate) const INSTANCE: &str = "i-0b22a22eec53b9321";

/// AWS's stand-in: one self-signed certificate per region (CN and serial as SPIRE's test).
pub(crate) fn aws_cert() -> &'static TestCert {
    static CERT: OnceLock<TestCert> = OnceLock::new();
    CERT.get_or_init(|| TestCert::self_signed("test", 1, Validity::around_now(365)))
}

pub(crate) fn config() -> AwsIidConfig {
    let mut c = AwsIidConfig::new();
    c.add_region_certificate(REGION, aws_cert().pem().as_bytes())
        .unwrap();
    c
}

pub(crate) fn evidence(document: &str, signer: &TestCert, opts: &Pkcs7Options) -> AttestationData {
    AttestationData {
        document: document.to_owned(),
        signature: String::new(),
        rsa2048: base64_wrapped(&pkcs7_sign(signer, document.as_bytes(), opts)),
    }
}

/// The honest evidence, built once (BER-streamed, as AWS sends it).
pub(crate) fn honest() -> &'static AttestationData {
    static E: OnceLock<AttestationData> = OnceLock::new();
    E.get_or_init(|| {
        evidence(
            &aws_document(ACCOUNT, REGION, INSTANCE),
            aws_cert(),
            &Pkcs7Options::default(),
        )
    })
}

fn now() -> SystemTime {
    SystemTime::now()
}

#[test]
fn honest_document_yields_spire_selectors_and_agent_path() {
    let e = honest();
    let der = base64::engine::general_purpose::STANDARD
        .decode(e.rsa2048.replace('\n', ""))
        .unwrap();
    assert_eq!(
        &der[..2],
        &[0x30, 0x80],
        "the fixture is BER with indefinite lengths, as AWS sends"
    );
    let id = aws_iid::verify(&config(), e, now()).unwrap();
    assert_eq!(id.account_id, ACCOUNT);
    assert_eq!(id.region, REGION);
    assert_eq!(id.availability_zone, "us-west-2b");
    assert_eq!(id.instance_id, INSTANCE);
    assert_eq!(id.image_id, "ami-5fb8c835");
    assert_eq!(id.instance_type.as_deref(), Some("t2.micro"));
    assert_eq!(id.signed_document, e.document.as_bytes());
    assert!(id.signing_time.is_some(), "openssl adds signingTime");
    assert_eq!(
        id.selectors(),
        [
            "account_id:123456789012",
            "az:us-west-2b",
            "image:id:ami-5fb8c835",
            "instance:id:i-0b22a22eec53b9321",
            "region:us-west-2",
        ]
    );
    assert_eq!(
        id.agent_path().unwrap(),
        "/spire/agent/aws_iid/123456789012/us-west-2/i-0b22a22eec53b9321"
    );
    assert!(!id.can_reattest());
}

#[test]
fn der_detached_and_attribute_free_signatures_verify() {
    let doc = aws_document(ACCOUNT, REGION, INSTANCE);
    for opts in [
        Pkcs7Options {
            ber_stream: false,
            ..Default::default()
        },
        Pkcs7Options {
            embed_signer: false,
            ..Default::default()
        },
        Pkcs7Options {
            signed_attributes: false,
            ber_stream: false,
            ..Default::default()
        },
        Pkcs7Options {
            digest: "sha384",
            ..Default::default()
        },
    ] {
        let e = evidence(&doc, aws_cert(), &opts);
        let id =
            aws_iid::verify(&config(), &e, now()).unwrap_or_else(|err| panic!("{opts:?}: {err}"));
        assert_eq!(id.instance_id, INSTANCE);
    }
    // Detached: the document sent is what the signature covers.
    let detached = evidence(
        &doc,
        aws_cert(),
        &Pkcs7Options {
            detached: true,
            ber_stream: false,
            ..Default::default()
        },
    );
    assert_eq!(
        aws_iid::verify(&config(), &detached, now())
            .unwrap()
            .instance_id,
        INSTANCE
    );
    let mut no_doc = detached.clone();
    no_doc.document.clear();
    assert_eq!(
        aws_iid::verify(&config(), &no_doc, now()).unwrap_err(),
        AwsIidError::DocumentMissing
    );
    // Detached, with another document than the one signed: the digest does not match.
    let mut other = detached;
    other.document = aws_document(ACCOUNT, REGION, "i-00000000000000001");
    assert_eq!(
        aws_iid::verify(&config(), &other, now()).unwrap_err(),
        AwsIidError::Pkcs7(Pkcs7Error::DigestMismatch)
    );
}

#[test]
fn unsigned_copy_that_differs_is_refused_by_name() {
    // SPIRE's 2026 bypass: a genuine signature over one instance's document, sent with
    // another document as the unsigned copy. The identity must never come from the copy.
    let mut e = honest().clone();
    e.document = aws_document("999999999999", REGION, "i-0attacker000000001");
    assert_eq!(
        aws_iid::verify(&config(), &e, now()).unwrap_err(),
        AwsIidError::UnsignedCopyDiffers
    );
    // Even a whitespace-only difference: the comparison is byte for byte.
    let mut e = honest().clone();
    e.document.push('\n');
    assert_eq!(
        aws_iid::verify(&config(), &e, now()).unwrap_err(),
        AwsIidError::UnsignedCopyDiffers
    );
    // Without the copy, the signed content alone is used.
    let mut e = honest().clone();
    e.document.clear();
    assert_eq!(
        aws_iid::verify(&config(), &e, now()).unwrap().instance_id,
        INSTANCE
    );
}

#[test]
fn content_altered_inside_the_signature_is_refused() {
    let doc = aws_document(ACCOUNT, REGION, INSTANCE);
    let mut der = pkcs7_sign(
        aws_cert(),
        doc.as_bytes(),
        &Pkcs7Options {
            ber_stream: false,
            ..Default::default()
        },
    );
    let at = der
        .windows(INSTANCE.len())
        .position(|w| w == INSTANCE.as_bytes())
        .unwrap();
    der[at + INSTANCE.len() - 1] ^= 0x01;
    let e = AttestationData {
        document: String::new(),
        signature: String::new(),
        rsa2048: base64::engine::general_purpose::STANDARD.encode(&der),
    };
    assert_eq!(
        aws_iid::verify(&config(), &e, now()).unwrap_err(),
        AwsIidError::Pkcs7(Pkcs7Error::DigestMismatch)
    );
}

#[test]
fn wrong_signer_is_refused() {
    let doc = aws_document(ACCOUNT, REGION, INSTANCE);
    // Another certificate altogether (another CN and serial).
    let other = TestCert::self_signed("someone else", 7, Validity::around_now(365));
    let e = evidence(&doc, &other, &Pkcs7Options::default());
    assert_eq!(
        aws_iid::verify(&config(), &e, now()).unwrap_err(),
        AwsIidError::WrongSigner {
            region: REGION.into()
        }
    );
    // A forger's certificate with the same issuer and serial as AWS's, its own key: the
    // SignerInfo names AWS's certificate, the signature is not AWS's.
    let forger =
        TestCert::self_signed_with_key(TestKey::rsa2048(), "test", 1, Validity::around_now(365));
    let e = evidence(&doc, &forger, &Pkcs7Options::default());
    assert!(matches!(
        aws_iid::verify(&config(), &e, now()).unwrap_err(),
        AwsIidError::Pkcs7(Pkcs7Error::BadSignature { .. })
    ));
}

#[test]
fn region_without_certificate_is_refused() {
    let e = evidence(
        &aws_document(ACCOUNT, "eu-west-1", INSTANCE),
        aws_cert(),
        &Pkcs7Options::default(),
    );
    assert_eq!(
        aws_iid::verify(&config(), &e, now()).unwrap_err(),
        AwsIidError::UnknownRegion {
            region: "eu-west-1".into()
        }
    );
}

#[test]
fn expired_certificate_and_signing_outside_validity_are_refused() {
    let e = honest();
    let later = now() + Duration::from_secs(400 * 86_400);
    assert!(matches!(
        aws_iid::verify(&config(), e, later).unwrap_err(),
        AwsIidError::CertificateExpired { ref region, .. } if region == REGION
    ));
    // Signed (now) before a certificate's notBefore.
    let start = now() + Duration::from_secs(86_400);
    let future = TestCert::self_signed(
        "future",
        2,
        Validity {
            not_before: start,
            not_after: start + Duration::from_secs(86_400 * 30),
        },
    );
    let mut cfg = AwsIidConfig::new();
    cfg.add_region_certificate(REGION, &future.der).unwrap();
    let e = evidence(
        &aws_document(ACCOUNT, REGION, INSTANCE),
        &future,
        &Pkcs7Options::default(),
    );
    assert!(matches!(
        aws_iid::verify(&cfg, &e, start + Duration::from_secs(3600)).unwrap_err(),
        AwsIidError::Pkcs7(Pkcs7Error::SignedOutsideCertificateValidity { .. })
    ));
}

#[test]
fn account_allow_list_is_enforced() {
    let mut cfg = config();
    cfg.account_allow_list = Some(["000000000000".to_owned()].into());
    assert_eq!(
        aws_iid::verify(&cfg, honest(), now()).unwrap_err(),
        AwsIidError::AccountNotAllowed {
            account: ACCOUNT.into()
        }
    );
    cfg.account_allow_list = Some([ACCOUNT.to_owned()].into());
    assert!(aws_iid::verify(&cfg, honest(), now()).is_ok());
}

#[test]
fn a_replayed_document_maps_to_the_same_agent_path_for_tofu() {
    // AWS signs one document per launch; a replay (or a re-fetch signed later) of the same
    // instance yields the same agent ID, which the server's TOFU check refuses.
    let first = aws_iid::verify(&config(), honest(), now()).unwrap();
    let again = evidence(
        &aws_document(ACCOUNT, REGION, INSTANCE),
        aws_cert(),
        &Pkcs7Options::default(),
    );
    let second = aws_iid::verify(&config(), &again, now()).unwrap();
    assert_eq!(first.agent_path().unwrap(), second.agent_path().unwrap());
    let other = evidence(
        &aws_document(ACCOUNT, REGION, "i-0ffffffffffffffff"),
        aws_cert(),
        &Pkcs7Options::default(),
    );
    let third = aws_iid::verify(&config(), &other, now()).unwrap();
    assert_ne!(first.agent_path().unwrap(), third.agent_path().unwrap());
}

#[test]
fn malformed_evidence_gets_a_clear_error() {
    let cfg = config();
    assert!(matches!(
        AttestationData::from_json(b"{\"document\": 5}").unwrap_err(),
        AwsIidError::MalformedPayload { .. }
    ));
    let parsed =
        AttestationData::from_json(serde_json::to_string(honest()).unwrap().as_bytes()).unwrap();
    assert_eq!(&parsed, honest());
    let with = |rsa2048: &str| AttestationData {
        rsa2048: rsa2048.into(),
        ..honest().clone()
    };
    assert_eq!(
        aws_iid::verify(&cfg, &with(""), now()).unwrap_err(),
        AwsIidError::Rsa2048Missing
    );
    assert!(matches!(
        aws_iid::verify(&cfg, &with("not base64!"), now()).unwrap_err(),
        AwsIidError::SignatureNotBase64 { .. }
    ));
    assert!(matches!(
        aws_iid::verify(&cfg, &with("AAAA"), now()).unwrap_err(),
        AwsIidError::Pkcs7(Pkcs7Error::Encoding(_))
    ));
    // A valid SignedData over something that is not an identity document.
    let e = evidence(
        "{\"accountId\": \"1\"}",
        aws_cert(),
        &Pkcs7Options::default(),
    );
    let err = aws_iid::verify(&cfg, &e, now()).unwrap_err();
    assert!(
        matches!(&err, AwsIidError::MalformedDocument { reason } if reason.contains("region")),
        "{err}"
    );
    // SHA-1 is refused, naming the algorithm.
    let e = evidence(
        &aws_document(ACCOUNT, REGION, INSTANCE),
        aws_cert(),
        &Pkcs7Options {
            digest: "sha1",
            ..Default::default()
        },
    );
    let err = aws_iid::verify(&cfg, &e, now()).unwrap_err();
    assert!(err.to_string().contains("SHA-1"), "{err}");
    // A signed instance ID that would split the agent ID path.
    let e = evidence(
        &aws_document(ACCOUNT, REGION, "i-1/../../x"),
        aws_cert(),
        &Pkcs7Options::default(),
    );
    assert!(matches!(
        aws_iid::verify(&cfg, &e, now()).unwrap_err(),
        AwsIidError::AgentPath(_)
    ));
}
