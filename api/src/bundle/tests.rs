use super::*;
use crate::fixtures_for_tests::*;
use serde_json::{json, Value};

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn p256_spki() -> Vec<u8> {
    certificate_key(&der(P256_CERT_PEM))
        .unwrap()
        .to_spki_der()
        .unwrap()
}

fn bundle() -> TrustBundle {
    TrustBundle {
        trust_domain: td(),
        x509_authorities: vec![der(P256_CERT_PEM), der(RSA_CERT_PEM), der(P384_CERT_PEM)],
        jwt_authorities: vec![JwtAuthority {
            key_id: "kid-1".into(),
            public_key_der: p256_spki(),
            expires_at: 0,
        }],
        sequence_number: 7,
        refresh_hint_secs: 300,
    }
}

fn parse(v: Value) -> Result<TrustBundle, BundleError> {
    TrustBundle::from_jwks_json(td(), &v.to_string())
}

#[test]
fn jwks_matches_the_spec_and_openssl() {
    let json: Value = serde_json::from_str(&bundle().to_jwks_json().unwrap()).unwrap();
    assert_eq!(json["spiffe_sequence"], 7);
    assert_eq!(json["spiffe_refresh_hint"], 300);
    let keys = json["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 4);

    let ec = &keys[0];
    assert_eq!(ec["use"], "x509-svid");
    assert_eq!(ec["kty"], "EC");
    assert_eq!(ec["crv"], "P-256");
    assert_eq!(ec["x"], P256_X);
    assert_eq!(ec["y"], P256_Y);
    assert!(
        ec.get("kid").is_none(),
        "x509-svid keys must not have a kid"
    );
    let x5c = ec["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    assert_eq!(
        STANDARD.decode(x5c[0].as_str().unwrap()).unwrap(),
        der(P256_CERT_PEM)
    );

    let rsa = &keys[1];
    assert_eq!(rsa["kty"], "RSA");
    assert_eq!(rsa["n"], RSA_N);
    assert_eq!(rsa["e"], "AQAB");
    assert_eq!(keys[2]["crv"], "P-384");
    assert_eq!(keys[2]["x"].as_str().unwrap().len(), 64); // 48 bytes

    let jwt = &keys[3];
    assert_eq!(jwt["use"], "jwt-svid");
    assert_eq!(jwt["kid"], "kid-1");
    assert_eq!(jwt["x"], P256_X);
    assert!(jwt.get("x5c").is_none());
}

#[test]
fn jwks_round_trip() {
    let b = bundle();
    let back = TrustBundle::from_jwks_json(td(), &b.to_jwks_json().unwrap()).unwrap();
    assert_eq!(back, b);
}

#[test]
fn refresh_hint_zero_is_omitted_and_defaults_apply() {
    let mut b = bundle();
    b.refresh_hint_secs = 0;
    let json: Value = serde_json::from_str(&b.to_jwks_json().unwrap()).unwrap();
    assert!(json.get("spiffe_refresh_hint").is_none());
    let empty = parse(json!({"keys": []})).unwrap();
    assert_eq!(empty, TrustBundle::new(td()));
}

#[test]
fn ignores_what_the_spec_says_to_ignore() {
    let x5c = STANDARD.encode(der(P256_CERT_PEM));
    let b = parse(json!({"keys": [
        {"kty": "EC", "use": "something-else", "crv": "P-256", "x": P256_X, "y": P256_Y},
        {"kty": "OKP", "use": "jwt-svid", "kid": "ed", "crv": "Ed25519", "x": "AA"},
        {"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y},
        {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": P256_X, "y": P256_Y},
        {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": P256_X, "y": P256_Y, "x5c": []},
        // Only the first x5c value counts; members we do not know are ignored.
        {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": P256_X, "y": P256_Y,
         "x5c": [x5c, "not even base64"], "alg": "ES256"},
    ], "extra": true}))
    .unwrap();
    assert_eq!(b.x509_authorities, vec![der(P256_CERT_PEM)]);
    assert!(b.jwt_authorities.is_empty());
}

#[test]
fn rejects_malformed_keys() {
    let x5c = STANDARD.encode(der(P256_CERT_PEM));
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"kty": "EC", "use": "jwt-svid", "crv": "P-256", "x": P256_X, "y": P256_Y}),
            "keys[0]: a jwt-svid key must have a 'kid'",
        ),
        (
            json!({"kty": "EC", "use": "jwt-svid", "kid": "k", "crv": "P-256", "x": P256_X}),
            "keys[0]: 'y' is missing",
        ),
        (
            json!({"kty": "EC", "use": "jwt-svid", "kid": "k", "crv": "P-256", "x": "AAAA", "y": P256_Y}),
            "keys[0]: 'x' and 'y' of a P-256 key must be 32 bytes each",
        ),
        (
            json!({"kty": "EC", "use": "jwt-svid", "kid": "k", "crv": "secp256k1", "x": P256_X, "y": P256_Y}),
            "keys[0]: unsupported curve 'secp256k1'",
        ),
        (
            json!({"use": "jwt-svid", "kid": "k"}),
            "keys[0]: 'kty' is missing",
        ),
        (
            json!({"kty": "RSA", "use": "jwt-svid", "kid": "k", "n": "AQAB", "e": "AQ=="}),
            "keys[0]: 'e' is not unpadded base64url",
        ),
        (
            json!({"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": P256_X, "y": P256_Y, "x5c": ["%%%"]}),
            "keys[0]: x5c[0] is not base64",
        ),
        (
            json!({"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": P256_X, "y": P256_Y, "x5c": ["AAAA"]}),
            "keys[0]: x5c[0]: not a valid DER X.509 certificate",
        ),
        (
            json!({"kty": "RSA", "use": "x509-svid", "n": RSA_N, "e": "AQAB", "x5c": [x5c]}),
            "keys[0]: the key parameters do not match the x5c certificate's key",
        ),
        (
            json!({"kty": 5, "use": "x509-svid"}),
            "keys[0]: invalid type",
        ),
    ];
    for (key, want) in cases {
        let e = parse(json!({"keys": [key]})).unwrap_err();
        assert!(matches!(e, BundleError::Key { index: 0, .. }), "{e:?}");
        assert!(e.to_string().starts_with(want), "got '{e}', want '{want}'");
    }
}

#[test]
fn rejects_bad_documents() {
    assert!(matches!(
        TrustBundle::from_jwks_json(td(), "{").unwrap_err(),
        BundleError::Json(_)
    ));
    let e = parse(json!({"spiffe_sequence": 1})).unwrap_err();
    assert!(e.to_string().contains("missing field `keys`"), "{e}");
    let e = parse(json!({"keys": [], "spiffe_sequence": -1})).unwrap_err();
    assert!(matches!(e, BundleError::Json(_)));
    let big = " ".repeat(MAX_BUNDLE_JSON_LEN + 1);
    assert_eq!(
        TrustBundle::from_jwks_json(td(), &big).unwrap_err(),
        BundleError::TooLarge {
            len: MAX_BUNDLE_JSON_LEN + 1,
            max: MAX_BUNDLE_JSON_LEN
        }
    );
    let k = json!({"kty": "EC", "use": "jwt-svid", "kid": "dup", "crv": "P-256", "x": P256_X, "y": P256_Y});
    assert_eq!(
        parse(json!({"keys": [k.clone(), k]})).unwrap_err(),
        BundleError::DuplicateKeyId {
            index: 1,
            kid: "dup".into()
        }
    );
}

#[test]
fn to_jwks_rejects_bad_authorities() {
    let mut b = bundle();
    b.x509_authorities.push(vec![1, 2, 3]);
    assert!(matches!(
        b.to_jwks_json().unwrap_err(),
        BundleError::X509Authority { index: 3, .. }
    ));
    let mut b = bundle();
    b.jwt_authorities[0].public_key_der = vec![0x30, 0x00];
    let e = b.to_jwks_json().unwrap_err();
    assert!(matches!(e, BundleError::JwtAuthority { index: 0, .. }));
    assert!(e
        .to_string()
        .starts_with("jwt_authorities[0] (kid 'kid-1'): not a valid SubjectPublicKeyInfo"));
}

#[test]
fn pem_output() {
    let pem = bundle().to_pem();
    assert_eq!(pem.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    assert!(pem.lines().all(|l| l.len() <= 64));
    // Our PEM decodes to the same DER, and the first block is byte-identical
    // to openssl's.
    assert!(pem.starts_with(P256_CERT_PEM));
    let first_end = pem.find("-----END CERTIFICATE-----\n").unwrap() + 26;
    assert_eq!(der(&pem[..first_end]), der(P256_CERT_PEM));
    assert_eq!(TrustBundle::new(td()).to_pem(), "");
}

#[test]
fn serde_and_admin_form() {
    let b = bundle();
    let json = serde_json::to_string(&b).unwrap();
    assert!(json.contains("\"trust_domain\":\"example.org\""));
    assert_eq!(serde_json::from_str::<TrustBundle>(&json).unwrap(), b);
    let a = b.to_admin_bundle().unwrap();
    assert_eq!(a.trust_domain, "example.org");
    assert_eq!(a.sequence_number, 7);
    assert_eq!(a.x509_authorities.len(), 3);
    assert_eq!(TrustBundle::from_jwks_json(td(), &a.jwks_json).unwrap(), b);
}

/// `cert` with the value of its basicConstraints extension made a SET instead of a
/// SEQUENCE: the certificate's framing still parses, the extension does not.
fn with_broken_basic_constraints(mut cert: Vec<u8>) -> Vec<u8> {
    let oid = [0x06, 0x03, 0x55, 0x1d, 0x13];
    let at = cert
        .windows(oid.len())
        .position(|w| w == oid)
        .expect("the fixture has basicConstraints");
    // OID, critical TRUE, OCTET STRING header, then the value's SEQUENCE tag.
    let tag = at + oid.len() + 3 + 2;
    assert_eq!(cert[tag], 0x30);
    cert[tag] = 0x31;
    cert
}

#[test]
fn rejects_a_certificate_whose_extension_does_not_parse() {
    // Found by the jwks_bundle fuzz target: only the certificate's framing and key were
    // read, so a CA certificate with a malformed extension was a bundle authority that
    // relying parties which decode extensions (Go's crypto/x509, x509-parser) cannot parse,
    // failing the whole bundle for them.
    let broken = with_broken_basic_constraints(der(P256_CERT_PEM));
    let json = json!({"keys": [
        {"kty": "EC", "use": "x509-svid", "crv": "P-256", "x": P256_X, "y": P256_Y,
         "x5c": [STANDARD.encode(&broken)]}
    ]});
    let e = parse(json).unwrap_err();
    assert!(matches!(e, BundleError::Key { index: 0, .. }), "{e:?}");
    assert!(
        e.to_string().contains("extension 2.5.29.19"),
        "names the extension: {e}"
    );
}
