//! The endpoint's answers without a network: paths, methods, headers, and the JWK Set's
//! shape (JWT authorities only, `use: "sig"`, `alg`).

use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, StatusCode};
use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::spiffe_id::TrustDomain;
use rcgen::PublicKeyData;
use serde_json::Value;

use super::*;
use crate::ca::CaError;
use crate::config::OidcConfig;

fn config() -> OidcConfig {
    OidcConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        issuer: "https://oidc.example.org".into(),
        jwks_uri: "https://oidc.example.org/keys".into(),
        tls: None,
        cache_max_age: Duration::from_secs(120),
        limits: crate::http1::ListenerLimits::defaults("oidc"),
    }
}

fn p256_spki() -> Vec<u8> {
    rcgen::KeyPair::generate()
        .unwrap()
        .subject_public_key_info()
}

fn bundle() -> TrustBundle {
    let mut b = TrustBundle::new(TrustDomain::parse("example.org").unwrap());
    // An X.509 root must not reach the JWK Set: relying parties verify JWTs only.
    let root = rcgen::CertificateParams::new(vec![])
        .unwrap()
        .self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap();
    b.x509_authorities.push(root.der().to_vec());
    for kid in ["kid-a", "kid-b"] {
        b.jwt_authorities.push(JwtAuthority {
            key_id: kid.into(),
            public_key_der: p256_spki(),
            expires_at: 0,
        });
    }
    b.sequence_number = 3;
    b
}

fn endpoint() -> Endpoint {
    let b = bundle();
    Endpoint::new(&config(), Box::new(move || Ok(b.clone())))
}

async fn body(r: Response<Full<Bytes>>) -> Vec<u8> {
    r.into_body().collect().await.unwrap().to_bytes().to_vec()
}

#[tokio::test]
async fn discovery_document_names_issuer_keys_and_es256() {
    let r = endpoint().respond(&Method::GET, DISCOVERY_PATH);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    assert_eq!(r.headers()[CACHE_CONTROL], "public, max-age=120");
    let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
    assert_eq!(doc["issuer"], "https://oidc.example.org");
    assert_eq!(doc["jwks_uri"], "https://oidc.example.org/keys");
    assert_eq!(
        doc["id_token_signing_alg_values_supported"],
        serde_json::json!(["ES256"])
    );
    assert_eq!(
        doc["response_types_supported"],
        serde_json::json!(["id_token"])
    );
    assert_eq!(
        doc["subject_types_supported"],
        serde_json::json!(["public"])
    );
}

#[tokio::test]
async fn keys_are_the_jwt_authorities_only_with_use_sig_and_alg() {
    let r = endpoint().respond(&Method::GET, KEYS_PATH);
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CONTENT_TYPE], "application/json");
    let doc: Value = serde_json::from_slice(&body(r).await).unwrap();
    let keys = doc["keys"].as_array().unwrap();
    let kids: Vec<&str> = keys.iter().map(|k| k["kid"].as_str().unwrap()).collect();
    assert_eq!(kids, ["kid-a", "kid-b"]);
    for k in keys {
        assert_eq!(k["use"], "sig");
        assert_eq!(k["alg"], "ES256");
        assert_eq!(k["kty"], "EC");
        assert_eq!(k["crv"], "P-256");
        assert!(k.get("x5c").is_none(), "no X.509 material: {k}");
    }
    assert!(doc.get("spiffe_sequence").is_none());
}

#[tokio::test]
async fn other_paths_are_404_and_other_methods_405() {
    let e = endpoint();
    for path in [
        "/",
        "/keys/",
        "/.well-known/openid-configuration/x",
        "/bundle",
    ] {
        let r = e.respond(&Method::GET, path);
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    }
    for m in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let r = e.respond(&m, KEYS_PATH);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m}");
        assert_eq!(r.headers()[ALLOW], "GET, HEAD");
    }
    assert_eq!(e.respond(&Method::HEAD, KEYS_PATH).status(), StatusCode::OK);
}

#[tokio::test]
async fn a_bundle_that_cannot_be_read_is_503_not_an_empty_key_set() {
    let e = Endpoint::new(
        &config(),
        Box::new(|| Err(CaError::InvalidRequest("state unavailable".into()))),
    );
    let r = e.respond(&Method::GET, KEYS_PATH);
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    assert!(
        serde_json::from_slice::<Value>(&body(r).await).is_err(),
        "no JSON key set"
    );
}
