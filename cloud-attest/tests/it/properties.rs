//! Property tests: random input and mutations of valid evidence never panic, and never
//! verify to another identity.
//!
//! "Never verify at all" is too strong for mutations and is not what is asserted: a few
//! bytes are not covered by any signature by design (the SignedData version and digest
//! algorithm set, an unused base64url bit in the last character of a JWT segment), so a
//! mutation there can still verify. What matters, and what is asserted, is that such a
//! mutation yields exactly the original identity.

use std::sync::OnceLock;
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ironroot_cloud_attest::aws_iid::{self, AttestationData};
use ironroot_cloud_attest::gcp_iit::{self, GcpIitConfig, DEFAULT_AUDIENCE};
use ironroot_cloud_attest::jwt::JwkSet;
use ironroot_cloud_attest::k8s_psat::{verify_token_review, K8sPsatConfig};
use ironroot_cloud_attest::pkcs7::ParsedSignedData;
use ironroot_cloud_attest::test_support::{gcp_claims, jwks_json, TestKey, TokenReviewFixture};
use proptest::prelude::*;

use crate::aws_iid::{config as aws_config, honest as aws_honest, INSTANCE};

fn aws_der() -> Vec<u8> {
    STANDARD
        .decode(aws_honest().rsa2048.replace('\n', ""))
        .unwrap()
}

fn with_der(der: &[u8]) -> AttestationData {
    AttestationData {
        document: String::new(),
        signature: String::new(),
        rsa2048: STANDARD.encode(der),
    }
}

struct Gcp {
    config: GcpIitConfig,
    token: String,
}

fn gcp() -> &'static Gcp {
    static G: OnceLock<Gcp> = OnceLock::new();
    G.get_or_init(|| {
        let key = TestKey::rsa2048();
        let config = GcpIitConfig::new(
            JwkSet::from_jwks_json(jwks_json(&[("k", &key)]).as_bytes()).unwrap(),
            ["p".to_owned()],
        );
        let token = key.sign_jwt(
            "k",
            &gcp_claims(DEFAULT_AUDIENCE, "p", "42", SystemTime::now()),
        );
        Gcp { config, token }
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_parse_into_verified_aws_evidence(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ParsedSignedData::from_ber(&bytes);
        prop_assert!(aws_iid::verify(&aws_config(), &with_der(&bytes), SystemTime::now()).is_err());
        let _ = AttestationData::from_json(&bytes);
    }

    #[test]
    fn mutated_aws_signatures_never_verify_to_another_identity(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        let mut der = aws_der();
        for (at, value) in &edits {
            let i = at.index(der.len());
            der[i] = *value;
        }
        if truncate {
            der.truncate(cut.index(der.len()));
        }
        if let Ok(id) = aws_iid::verify(&aws_config(), &with_der(&der), SystemTime::now()) {
            prop_assert_eq!(id.instance_id.as_str(), INSTANCE);
            prop_assert_eq!(id.signed_document.as_slice(), aws_honest().document.as_bytes());
            prop_assert!(!truncate || cut.index(aws_der().len()) == aws_der().len());
        }
    }

    #[test]
    fn mutated_gcp_tokens_never_verify_to_another_identity(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<char>()), 1..3),
    ) {
        let g = gcp();
        let mut chars: Vec<char> = g.token.chars().collect();
        for (at, c) in &edits {
            let i = at.index(chars.len());
            chars[i] = *c;
        }
        let token: String = chars.into_iter().collect();
        if let Ok(id) = gcp_iit::verify(&g.config, &token, SystemTime::now()) {
            let original = gcp_iit::verify(&g.config, &g.token, SystemTime::now()).unwrap();
            prop_assert_eq!(id, original);
        }
    }

    #[test]
    fn random_tokens_never_verify(s in "\\PC{0,600}", parts in proptest::collection::vec("[A-Za-z0-9_-]{0,300}", 3)) {
        let g = gcp();
        prop_assert!(gcp_iit::verify(&g.config, &s, SystemTime::now()).is_err());
        prop_assert!(gcp_iit::verify(&g.config, &parts.join("."), SystemTime::now()).is_err());
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","kid":"k"}"#);
        let forged = format!("{header}.{}.{}", parts[1], parts[2]);
        prop_assert!(gcp_iit::verify(&g.config, &forged, SystemTime::now()).is_err());
    }

    #[test]
    fn token_review_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1024), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let config = K8sPsatConfig {
            clusters: [("c".to_owned(), ironroot_cloud_attest::k8s_psat::ClusterConfig::new(["ns:sa".to_owned()]))].into(),
        };
        let _ = verify_token_review(&config, "c", &bytes);
        // A TokenReview is not signed (it is the API server's answer over TLS), so a
        // mutation may legitimately still pass; only the absence of panics is asserted.
        let mut valid = TokenReviewFixture::bound("ns", "sa", "p", "u", "n", "nu").to_json().into_bytes();
        let i = at.index(valid.len());
        valid[i] = b;
        let _ = verify_token_review(&config, "c", &valid);
    }
}
