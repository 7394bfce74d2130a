//! gcp_iit: RS256 instance identity tokens against Google's certificate set.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use ironroot_cloud_attest::gcp_iit::{self, GcpIitConfig, GcpIitError, DEFAULT_AUDIENCE};
use ironroot_cloud_attest::jwt::{ClaimError, JwkSet, JwtError};
use ironroot_cloud_attest::test_support::{
    gcp_claims, google_certs_json, jwks_json, TestCert, TestKey, Validity,
};
use serde_json::json;

const KID: &str = "2f3c4b9e1a7d6c5b4a3928170615f4e3d2c1b0a9";
const PROJECT: &str = "ironroot-prod";
const INSTANCE_ID: &str = "2097313394758289395";

/// Google's stand-in: a signing key and the certificate published for it.
fn google() -> &'static TestCert {
    static C: OnceLock<TestCert> = OnceLock::new();
    C.get_or_init(|| TestCert::self_signed("Google stand-in", 3, Validity::around_now(30)))
}

fn config() -> GcpIitConfig {
    let keys =
        JwkSet::from_google_certs_json(google_certs_json(&[(KID, google())]).as_bytes()).unwrap();
    GcpIitConfig::new(keys, [PROJECT.to_owned()])
}

fn token_at(now: SystemTime) -> String {
    google().key.sign_jwt(
        KID,
        &gcp_claims(DEFAULT_AUDIENCE, PROJECT, INSTANCE_ID, now),
    )
}

#[test]
fn honest_token_yields_spire_selectors_and_agent_path() {
    let now = SystemTime::now();
    let id = gcp_iit::verify(&config(), &token_at(now), now).unwrap();
    assert_eq!(id.project_id, PROJECT);
    assert_eq!(id.project_number, Some(123_456_789));
    assert_eq!(id.instance_id, INSTANCE_ID);
    assert_eq!(id.zone, "us-central1-a");
    assert_eq!(
        id.selectors(),
        [
            "project-id:ironroot-prod",
            "zone:us-central1-a",
            "instance-name:web-1",
            "sa:123456789-compute@developer.gserviceaccount.com",
        ]
    );
    assert_eq!(
        id.agent_path().unwrap(),
        "/spire/agent/gcp_iit/ironroot-prod/2097313394758289395"
    );
    assert!(!id.can_reattest());
}

#[test]
fn jwks_format_key_sets_verify_too() {
    let now = SystemTime::now();
    let keys = JwkSet::from_jwks_json(jwks_json(&[(KID, &google().key)]).as_bytes()).unwrap();
    let cfg = GcpIitConfig::new(keys, [PROJECT.to_owned()]);
    assert!(gcp_iit::verify(&cfg, &token_at(now), now).is_ok());
}

#[test]
fn wrong_signer_is_refused() {
    let now = SystemTime::now();
    let claims = gcp_claims(DEFAULT_AUDIENCE, PROJECT, INSTANCE_ID, now);
    let forger = TestKey::rsa2048();
    assert_eq!(
        gcp_iit::verify(&config(), &forger.sign_jwt(KID, &claims), now).unwrap_err(),
        GcpIitError::Token(JwtError::BadSignature { kid: KID.into() })
    );
    assert_eq!(
        gcp_iit::verify(&config(), &forger.sign_jwt("other-kid", &claims), now).unwrap_err(),
        GcpIitError::Token(JwtError::UnknownKeyId {
            kid: "other-kid".into()
        })
    );
    // Genuine signature, claims swapped for another project's.
    let genuine = token_at(now);
    let mut parts: Vec<&str> = genuine.split('.').collect();
    let forged_claims = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        gcp_claims(DEFAULT_AUDIENCE, "other-project", INSTANCE_ID, now).to_string(),
    );
    parts[1] = &forged_claims;
    assert!(matches!(
        gcp_iit::verify(&config(), &parts.join("."), now).unwrap_err(),
        GcpIitError::Token(JwtError::BadSignature { .. })
    ));
}

#[test]
fn expiry_is_enforced_with_the_skew() {
    let issued = SystemTime::now();
    let token = token_at(issued);
    let exp = issued + Duration::from_secs(3600);
    assert!(
        gcp_iit::verify(&config(), &token, exp + Duration::from_secs(30)).is_ok(),
        "within skew"
    );
    assert!(matches!(
        gcp_iit::verify(&config(), &token, exp + Duration::from_secs(61)).unwrap_err(),
        GcpIitError::Claims(ClaimError::Expired { .. })
    ));
    assert!(matches!(
        gcp_iit::verify(&config(), &token, issued - Duration::from_secs(120)).unwrap_err(),
        GcpIitError::Claims(ClaimError::IssuedInFuture { .. })
    ));
    let mut claims = gcp_claims(DEFAULT_AUDIENCE, PROJECT, INSTANCE_ID, issued);
    claims.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        gcp_iit::verify(&config(), &google().key.sign_jwt(KID, &claims), issued).unwrap_err(),
        GcpIitError::Claims(ClaimError::Missing {
            claim: "exp",
            expected: "a number"
        })
    );
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let now = SystemTime::now();
    let t = google().key.sign_jwt(
        KID,
        &gcp_claims("https://example.com", PROJECT, INSTANCE_ID, now),
    );
    assert_eq!(
        gcp_iit::verify(&config(), &t, now).unwrap_err(),
        GcpIitError::Claims(ClaimError::WrongAudience {
            expected: DEFAULT_AUDIENCE.into(),
            found: vec!["https://example.com".into()]
        })
    );
    let mut claims = gcp_claims(DEFAULT_AUDIENCE, PROJECT, INSTANCE_ID, now);
    claims["iss"] = json!("https://evil.example");
    assert!(matches!(
        gcp_iit::verify(&config(), &google().key.sign_jwt(KID, &claims), now).unwrap_err(),
        GcpIitError::Claims(ClaimError::WrongIssuer { .. })
    ));
}

#[test]
fn project_not_allowed_is_refused() {
    let now = SystemTime::now();
    let t = google().key.sign_jwt(
        KID,
        &gcp_claims(DEFAULT_AUDIENCE, "someone-elses", INSTANCE_ID, now),
    );
    assert_eq!(
        gcp_iit::verify(&config(), &t, now).unwrap_err(),
        GcpIitError::ProjectNotAllowed {
            project: "someone-elses".into()
        }
    );
    let mut empty = config();
    empty.project_allow_list.clear();
    assert!(matches!(
        gcp_iit::verify(&empty, &token_at(now), now).unwrap_err(),
        GcpIitError::ProjectNotAllowed { .. }
    ));
}

#[test]
fn a_replayed_token_maps_to_the_same_agent_path_for_tofu() {
    let now = SystemTime::now();
    let a = gcp_iit::verify(&config(), &token_at(now), now).unwrap();
    let b = gcp_iit::verify(
        &config(),
        &token_at(now + Duration::from_secs(5)),
        now + Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(a.agent_path().unwrap(), b.agent_path().unwrap());
    assert_ne!(
        a.issued_at, b.issued_at,
        "the tokens differ; the TOFU key does not"
    );
}

#[test]
fn malformed_tokens_get_a_clear_error() {
    let now = SystemTime::now();
    // The `standard` format has no google.compute_engine claims.
    let mut claims = gcp_claims(DEFAULT_AUDIENCE, PROJECT, INSTANCE_ID, now);
    claims.as_object_mut().unwrap().remove("google");
    assert!(matches!(
        gcp_iit::verify(&config(), &google().key.sign_jwt(KID, &claims), now).unwrap_err(),
        GcpIitError::MalformedComputeEngineClaims { .. }
    ));
    let mut claims = gcp_claims(DEFAULT_AUDIENCE, PROJECT, INSTANCE_ID, now);
    claims["google"]["compute_engine"]["instance_id"] = json!(42);
    assert!(matches!(
        gcp_iit::verify(&config(), &google().key.sign_jwt(KID, &claims), now).unwrap_err(),
        GcpIitError::MalformedComputeEngineClaims { .. }
    ));
    for bad in ["", "x", "a.b.c", "....", "eyJhbGciOiJSUzI1NiJ9..", "\u{0}"] {
        assert!(
            matches!(
                gcp_iit::verify(&config(), bad, now).unwrap_err(),
                GcpIitError::Token(_)
            ),
            "{bad:?}"
        );
    }
    let none = google()
        .key
        .sign_jwt_with_header(&json!({"alg": "none", "kid": KID}), &claims);
    assert_eq!(
        gcp_iit::verify(&config(), &none, now).unwrap_err(),
        GcpIitError::Token(JwtError::UnsupportedAlgorithm {
            found: "none".into()
        })
    );
    assert!(matches!(
        JwkSet::from_google_certs_json(b"{\"k\": \"not a cert\"}").unwrap_err(),
        ironroot_cloud_attest::jwt::KeySetError::BadKey { .. }
    ));
}
