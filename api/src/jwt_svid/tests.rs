use super::*;
use crate::bundle::JwtAuthority;
use crate::fixtures_for_tests::{der, RSA_CERT_PEM, RSA_KEY_PEM};
use crate::spiffe_id::TrustDomain;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, EcdsaSigningAlgorithm, KeyPair, RsaEncoding, RsaKeyPair,
    ECDSA_P256_SHA256_FIXED_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, RSA_PKCS1_SHA256,
    RSA_PKCS1_SHA384, RSA_PSS_SHA256,
};

const NOW: i64 = 1_700_000_000;

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

struct Fixture {
    rng: SystemRandom,
    p256: Signer,
    p384: Signer,
    rsa: Signer,
    bundle: TrustBundle,
}

fn ec_key(alg: &'static EcdsaSigningAlgorithm, rng: &SystemRandom) -> (EcdsaKeyPair, Vec<u8>) {
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), rng).unwrap();
    let key_alg = if std::ptr::eq(alg, &ECDSA_P256_SHA256_FIXED_SIGNING) {
        KeyAlg::EcP256
    } else {
        KeyAlg::EcP384
    };
    let spki = PublicKey {
        alg: key_alg,
        raw: kp.public_key().as_ref().to_vec(),
    }
    .to_spki_der()
    .unwrap();
    (kp, spki)
}

fn authority(kid: &str, spki: Vec<u8>) -> JwtAuthority {
    JwtAuthority {
        key_id: kid.into(),
        public_key_der: spki,
        expires_at: 0,
    }
}

fn fixture() -> Fixture {
    let rng = SystemRandom::new();
    let (p256, p256_spki) = ec_key(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng);
    let (p384, p384_spki) = ec_key(&ECDSA_P384_SHA384_FIXED_SIGNING, &rng);
    let rsa = RsaKeyPair::from_pkcs8(&der(RSA_KEY_PEM)).unwrap();
    let rsa_spki = crate::pubkey::certificate_key(&der(RSA_CERT_PEM))
        .unwrap()
        .to_spki_der()
        .unwrap();
    let mut bundle = TrustBundle::new(TrustDomain::parse("example.org").unwrap());
    bundle.jwt_authorities = vec![
        authority("p256", p256_spki),
        authority("p384", p384_spki),
        authority("rsa", rsa_spki),
    ];
    Fixture {
        rng,
        p256: Signer::Ec(p256),
        p384: Signer::Ec(p384),
        rsa: Signer::Rsa(rsa),
        bundle,
    }
}

impl Fixture {
    fn sign(&self, signer: &Signer, rsa_enc: &'static dyn RsaEncoding, input: &str) -> String {
        let sig = match signer {
            Signer::Ec(kp) => kp
                .sign(&self.rng, input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::Rsa(kp) => {
                let mut sig = vec![0; kp.public().modulus_len()];
                kp.sign(rsa_enc, &self.rng, input.as_bytes(), &mut sig)
                    .unwrap();
                sig
            }
        };
        assemble_jwt(input, &sig)
    }

    /// A token with a hand-written header and claims, signed by the P-256 key.
    fn raw(&self, header: Value, claims: Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        self.sign(&self.p256, &RSA_PKCS1_SHA256, &input)
    }

    fn verify(&self, token: &str) -> Result<JwtSvidClaims, JwtSvidError> {
        verify_jwt_svid(token, &self.bundle, "reports", NOW)
    }
}

fn claims() -> JwtSvidClaims {
    JwtSvidClaims {
        sub: SpiffeId::parse("spiffe://example.org/web").unwrap(),
        aud: vec!["reports".into()],
        exp: NOW + 300,
        iat: Some(NOW),
    }
}

fn header(alg: JwtAlgorithm, kid: &str) -> JwtHeader {
    JwtHeader {
        alg,
        kid: kid.into(),
        typ: Some("JWT".into()),
    }
}

fn good_claims() -> Value {
    json!({"sub": "spiffe://example.org/web", "aud": "reports", "exp": NOW + 300})
}

#[test]
fn verifies_every_accepted_algorithm() {
    let f = fixture();
    let cases: [(JwtAlgorithm, &str, &Signer, &'static dyn RsaEncoding); 5] = [
        (JwtAlgorithm::Es256, "p256", &f.p256, &RSA_PKCS1_SHA256),
        (JwtAlgorithm::Es384, "p384", &f.p384, &RSA_PKCS1_SHA256),
        (JwtAlgorithm::Rs256, "rsa", &f.rsa, &RSA_PKCS1_SHA256),
        (JwtAlgorithm::Rs384, "rsa", &f.rsa, &RSA_PKCS1_SHA384),
        (JwtAlgorithm::Ps256, "rsa", &f.rsa, &RSA_PSS_SHA256),
    ];
    for (alg, kid, signer, enc) in cases {
        let token = f.sign(
            signer,
            enc,
            &jwt_signing_input(&header(alg, kid), &claims()),
        );
        assert_eq!(f.verify(&token).unwrap(), claims(), "{alg:?}");
    }
}

#[test]
fn signing_input_encoding() {
    let input = jwt_signing_input(&header(JwtAlgorithm::Es256, "k1"), &claims());
    let (h, c) = input.split_once('.').unwrap();
    assert!(!input.contains('='));
    let h: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap();
    assert_eq!(h, json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}));
    let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap();
    assert_eq!(
        c,
        json!({"sub": "spiffe://example.org/web", "aud": "reports", "exp": NOW + 300, "iat": NOW})
    );
    let mut many = claims();
    many.aud = vec!["a".into(), "b".into()];
    many.iat = None;
    let input = jwt_signing_input(&header(JwtAlgorithm::Es256, "k1"), &many);
    let c = input.split_once('.').unwrap().1;
    let c: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).unwrap()).unwrap();
    assert_eq!(c["aud"], json!(["a", "b"]));
    assert!(c.get("iat").is_none());
}

#[test]
fn audience_array_and_fractional_dates() {
    let f = fixture();
    let t = f.raw(
        json!({"alg": "ES256", "kid": "p256", "typ": "JOSE"}),
        json!({"sub": "spiffe://example.org/web", "aud": ["other", "reports"], "exp": (NOW as f64) + 0.5, "nbf": NOW, "iat": 1.9}),
    );
    let c = f.verify(&t).unwrap();
    assert_eq!(c.aud, vec!["other", "reports"]);
    assert_eq!(c.exp, NOW + 1);
    assert_eq!(c.iat, Some(1));
}

#[test]
fn rejects_bad_algorithms() {
    let f = fixture();
    for alg in ["none", "HS256", "ES512", "RS512", "es256"] {
        let t = f.raw(json!({"alg": alg, "kid": "p256"}), good_claims());
        assert_eq!(
            f.verify(&t).unwrap_err(),
            JwtSvidError::UnsupportedAlgorithm { alg: alg.into() }
        );
    }
    let t = f.raw(json!({"kid": "p256"}), good_claims());
    assert_eq!(f.verify(&t).unwrap_err(), JwtSvidError::MissingAlgorithm);
    // alg=none with an empty signature, the classic attack.
    let input = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(json!({"alg": "none", "kid": "p256"}).to_string()),
        URL_SAFE_NO_PAD.encode(good_claims().to_string())
    );
    let e = f.verify(&input).unwrap_err();
    assert_eq!(
        e.to_string(),
        "header 'alg' is 'none'; only ES256, ES384, RS256, RS384 and PS256 are accepted"
    );
    // A key of the wrong kind for alg.
    let t = f.raw(json!({"alg": "ES384", "kid": "p256"}), good_claims());
    assert_eq!(
        f.verify(&t).unwrap_err(),
        JwtSvidError::AlgorithmKeyMismatch {
            kid: "p256".into(),
            alg: "ES384"
        }
    );
    let t = f.raw(json!({"alg": "RS256", "kid": "p256"}), good_claims());
    assert!(matches!(
        f.verify(&t).unwrap_err(),
        JwtSvidError::AlgorithmKeyMismatch { .. }
    ));
}

#[test]
fn rejects_bad_headers() {
    let f = fixture();
    let t = f.raw(json!({"alg": "ES256"}), good_claims());
    assert_eq!(f.verify(&t).unwrap_err(), JwtSvidError::MissingKeyId);
    let t = f.raw(json!({"alg": "ES256", "kid": "nope"}), good_claims());
    let e = f.verify(&t).unwrap_err();
    assert_eq!(
        e,
        JwtSvidError::UnknownKeyId {
            kid: "nope".into(),
            trust_domain: "example.org".into()
        }
    );
    assert!(e.to_string().starts_with("unknown kid 'nope'"));
    let t = f.raw(
        json!({"alg": "ES256", "kid": "p256", "typ": "at+jwt"}),
        good_claims(),
    );
    assert_eq!(
        f.verify(&t).unwrap_err(),
        JwtSvidError::BadType {
            typ: "at+jwt".into()
        }
    );
    for extra in ["jku", "jwk", "crit", "x5u"] {
        let mut h = json!({"alg": "ES256", "kid": "p256"});
        h[extra] = json!("x");
        let t = f.raw(h, good_claims());
        assert_eq!(
            f.verify(&t).unwrap_err(),
            JwtSvidError::UnexpectedHeader { name: extra.into() }
        );
    }
}

#[test]
fn rejects_bad_signatures() {
    let f = fixture();
    let t = f.raw(json!({"alg": "ES256", "kid": "p256"}), good_claims());
    // Swap in other claims under the same signature.
    let mut parts: Vec<String> = t.split('.').map(str::to_owned).collect();
    let mut evil = good_claims();
    evil["sub"] = json!("spiffe://example.org/admin");
    parts[1] = URL_SAFE_NO_PAD.encode(evil.to_string());
    let e = f.verify(&parts.join(".")).unwrap_err();
    assert_eq!(e, JwtSvidError::BadSignature { kid: "p256".into() });
    assert_eq!(
        e.to_string(),
        "bad signature: it does not verify with key 'p256'"
    );
    // Signed by another P-256 key under the same kid.
    let other = fixture();
    let t = other.raw(json!({"alg": "ES256", "kid": "p256"}), good_claims());
    assert_eq!(
        f.verify(&t).unwrap_err(),
        JwtSvidError::BadSignature { kid: "p256".into() }
    );
    // A DER-encoded ECDSA signature is not the JWS form.
    let (input, _) = t.rsplit_once('.').unwrap();
    let der_sig = assemble_jwt(input, &[0x30, 0x06, 0x02, 0x01, 0x01, 0x02, 0x01, 0x01]);
    assert!(matches!(
        other.verify(&der_sig).unwrap_err(),
        JwtSvidError::BadSignature { .. }
    ));
}

#[test]
fn rejects_bad_claims() {
    let f = fixture();
    let h = json!({"alg": "ES256", "kid": "p256"});
    let with = |k: &str, v: Value| {
        let mut c = good_claims();
        c[k] = v;
        f.verify(&f.raw(h.clone(), c)).unwrap_err()
    };
    let without = |k: &str| {
        let mut c = good_claims();
        c.as_object_mut().unwrap().remove(k);
        f.verify(&f.raw(h.clone(), c)).unwrap_err()
    };
    assert_eq!(without("sub"), JwtSvidError::MissingClaim { claim: "sub" });
    assert_eq!(without("aud"), JwtSvidError::MissingClaim { claim: "aud" });
    assert_eq!(without("exp"), JwtSvidError::MissingClaim { claim: "exp" });
    assert_eq!(
        with("exp", json!(NOW)),
        JwtSvidError::Expired { exp: NOW, now: NOW }
    );
    let e = with("exp", json!(NOW - 10));
    assert_eq!(
        e.to_string(),
        format!("token expired at {} (now {NOW})", NOW - 10)
    );
    assert!(matches!(
        with("exp", json!("soon")),
        JwtSvidError::InvalidClaim { claim: "exp", .. }
    ));
    assert!(matches!(
        with("exp", json!(1e300)),
        JwtSvidError::InvalidClaim { claim: "exp", .. }
    ));
    assert_eq!(
        with("nbf", json!(NOW + 1)),
        JwtSvidError::NotYetValid {
            nbf: NOW + 1,
            now: NOW
        }
    );
    let e = with("aud", json!(["a", "b"]));
    assert_eq!(e.to_string(), "audience 'reports' not in ['a', 'b']");
    assert!(matches!(
        with("aud", json!([])),
        JwtSvidError::InvalidClaim { claim: "aud", .. }
    ));
    assert!(matches!(
        with("aud", json!([1])),
        JwtSvidError::InvalidClaim { claim: "aud", .. }
    ));
    assert!(matches!(
        with("aud", json!(7)),
        JwtSvidError::InvalidClaim { claim: "aud", .. }
    ));
    assert_eq!(
        with("sub", json!("spiffe://other.org/web")),
        JwtSvidError::ForeignSubject {
            sub: "spiffe://other.org/web".into(),
            trust_domain: "example.org".into()
        }
    );
    let e = with("sub", json!("spiffe://example.org/a/../b"));
    assert!(e
        .to_string()
        .starts_with("claim 'sub' is invalid: not a SPIFFE ID: path segment 2 is '..'"));
    assert!(matches!(
        with("sub", json!(1)),
        JwtSvidError::InvalidClaim { claim: "sub", .. }
    ));
}

#[test]
fn rejects_malformed_tokens() {
    let f = fixture();
    let long = "a".repeat(MAX_TOKEN_LEN + 1);
    assert_eq!(
        f.verify(&long).unwrap_err(),
        JwtSvidError::TooLong {
            len: MAX_TOKEN_LEN + 1,
            max: MAX_TOKEN_LEN
        }
    );
    for t in ["", "a.b", "a.b.c.d", "e30.e30"] {
        assert!(
            matches!(f.verify(t).unwrap_err(), JwtSvidError::Malformed(_)),
            "{t}"
        );
    }
    let good = f.raw(json!({"alg": "ES256", "kid": "p256"}), good_claims());
    let (h, rest) = good.split_once('.').unwrap();
    let padded = format!("{h}=.{rest}");
    assert_eq!(
        f.verify(&padded).unwrap_err(),
        JwtSvidError::Malformed("header is not unpadded base64url".into())
    );
    let not_obj = format!("{}.{rest}", URL_SAFE_NO_PAD.encode("[1]"));
    assert_eq!(
        f.verify(&not_obj).unwrap_err(),
        JwtSvidError::Malformed("header is not a JSON object".into())
    );
    let bad_sig = format!("{}.!!", good.rsplit_once('.').unwrap().0);
    assert_eq!(
        f.verify(&bad_sig).unwrap_err(),
        JwtSvidError::Malformed("signature is not unpadded base64url".into())
    );
}

#[test]
fn rejects_unusable_bundle_key() {
    let mut f = fixture();
    f.bundle.jwt_authorities[0].public_key_der = vec![1, 2, 3];
    let t = f.raw(json!({"alg": "ES256", "kid": "p256"}), good_claims());
    assert!(matches!(
        f.verify(&t).unwrap_err(),
        JwtSvidError::BadKey { .. }
    ));
}
