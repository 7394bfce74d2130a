//! OIDC discovery for JWT-SVIDs, end to end: a real server on SoftHSM2 serves the discovery
//! document and JWK Set over HTTP, and a JWT-SVID minted by its CLI is verified by an
//! independent JWT library (`jsonwebtoken`) using only what discovery returned: the issuer
//! from the document, the key by `kid` from `jwks_uri`, the audience the relying party
//! expects. A CA rotation brings the next key into the set before it signs.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use ironroot_testkit::{free_port, wait_until};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use serde_json::Value;

const ID: &str = "spiffe://example.org/workload/vault-client";
const AUDIENCE: &str = "vault";

/// One HTTP/1.1 exchange: status, headers (names lower-cased), body.
struct HttpAnswer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
}

fn http(address: &str, method: &str, path: &str) -> HttpAnswer {
    let mut s = TcpStream::connect(address).unwrap_or_else(|e| panic!("{address}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    HttpAnswer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

/// What a relying party learns from discovery: the issuer and the key set at `jwks_uri`.
struct Discovered {
    issuer: String,
    keys: JwkSet,
}

fn discover(address: &str) -> Discovered {
    let doc = http(address, "GET", "/.well-known/openid-configuration");
    assert_eq!(doc.status, 200);
    assert_eq!(doc.header("content-type"), Some("application/json"));
    let doc = doc.json();
    let issuer = doc["issuer"].as_str().unwrap().to_string();
    let jwks_uri = doc["jwks_uri"].as_str().unwrap();
    let path = jwks_uri
        .strip_prefix(&format!("http://{address}"))
        .unwrap_or_else(|| panic!("jwks_uri {jwks_uri} is not on {address}"));
    let keys = http(address, "GET", path);
    assert_eq!(keys.status, 200);
    assert_eq!(keys.header("content-type"), Some("application/json"));
    Discovered {
        issuer,
        keys: serde_json::from_slice(&keys.body).expect("a JWK Set jsonwebtoken reads"),
    }
}

/// Verifies `token` as a relying party configured with `issuer` and `audience` would.
fn verify(
    d: &Discovered,
    token: &str,
    issuer: &str,
    audience: &str,
) -> Result<Value, jsonwebtoken::errors::Error> {
    let kid = decode_header(token)?.kid.expect("JWT-SVIDs carry a kid");
    let Some(jwk) = d.keys.find(&kid) else {
        return Err(ErrorKind::InvalidKeyFormat.into());
    };
    let key = DecodingKey::from_jwk(jwk)?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[issuer]);
    v.set_audience(&[audience]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    decode::<Value>(token, &key, &v).map(|t| t.claims)
}

fn kids(d: &Discovered) -> Vec<String> {
    d.keys
        .keys
        .iter()
        .map(|k| k.common.key_id.clone().unwrap())
        .collect()
}

#[test]
fn jwt_svid_verifies_through_oidc_discovery_with_an_independent_library() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let port = free_port();
    let address = format!("127.0.0.1:{port}");
    let issuer = format!("http://{address}");
    // ca_ttl 30s: the next key is prepared at 15s and signs from 25s.
    let conf = server_config(
        dir.path(),
        &hsm,
        "ca",
        &format!(
            "[ca]\nca_ttl = \"30s\"\nrotation_check_interval = \"200ms\"\n\
             [oidc]\nlisten = \"{address}\"\nissuer = \"{issuer}\"\ncache_max_age = \"5s\""
        ),
    );
    let server = ServerProcess::start(
        "oidc_discovery",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );

    let doc = http(&address, "GET", "/.well-known/openid-configuration");
    assert_eq!(doc.header("cache-control"), Some("public, max-age=5"));
    let doc = doc.json();
    assert_eq!(doc["issuer"], issuer.as_str());
    assert_eq!(doc["jwks_uri"], format!("{issuer}/keys").as_str());
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

    let d = discover(&address);
    assert_eq!(d.issuer, issuer);
    let first_kid = server.health()["active_jwt_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        kids(&d),
        std::slice::from_ref(&first_kid),
        "the JWT authorities, and only them"
    );
    let raw_keys = http(&address, "GET", "/keys").json();
    assert_eq!(raw_keys["keys"][0]["use"], "sig");
    assert_eq!(raw_keys["keys"][0]["alg"], "ES256");

    // The token, verified by the independent library from discovery alone.
    let token = server
        .cli_ok(&["jwt", "mint", "--spiffe-id", ID, "--audience", AUDIENCE])
        .trim()
        .to_string();
    let claims = verify(&d, &token, &d.issuer, AUDIENCE).expect("the JWT-SVID verifies");
    assert_eq!(claims["sub"], ID);
    assert_eq!(claims["iss"], issuer.as_str());

    // A relying party expecting another audience refuses it.
    let e = verify(&d, &token, &d.issuer, "someone-else").unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::InvalidAudience);
    // One configured for another issuer refuses it: iss is compared with the issuer.
    let e = verify(&d, &token, "https://elsewhere.example.org", AUDIENCE).unwrap_err();
    assert_eq!(e.kind(), &ErrorKind::InvalidIssuer);

    // A token signed by a key outside the set: with the genuine kid its signature fails,
    // with its own kid there is no key for it.
    let forger = rcgen::KeyPair::generate().unwrap();
    let encoding = jsonwebtoken::EncodingKey::from_ec_der(&forger.serialize_der());
    let forged_claims: Value = serde_json::from_str(
        &String::from_utf8(base64_url_decode(token.split('.').nth(1).unwrap())).unwrap(),
    )
    .unwrap();
    for (kid, refusal) in [
        (first_kid.clone(), ErrorKind::InvalidSignature),
        ("not-in-the-set".to_string(), ErrorKind::InvalidKeyFormat),
    ] {
        let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        let forged = jsonwebtoken::encode(&header, &forged_claims, &encoding).unwrap();
        let e = verify(&d, &forged, &d.issuer, AUDIENCE).unwrap_err();
        assert_eq!(e.kind(), &refusal, "forged token with kid {kid}");
    }

    // The wire rules: HEAD has GET's headers and no body; other methods and paths refused.
    let get = http(&address, "GET", "/keys");
    let head = http(&address, "HEAD", "/keys");
    assert_eq!(head.status, 200);
    assert!(head.body.is_empty());
    assert_eq!(head.header("content-type"), Some("application/json"));
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    let post = http(&address, "POST", "/keys");
    assert_eq!(post.status, 405);
    assert_eq!(post.header("allow"), Some("GET, HEAD"));
    assert_eq!(http(&address, "GET", "/bundle").status, 404);
    assert_eq!(http(&address, "GET", "/").status, 404);

    // Rotation: the next key is in the set before it signs, and its tokens verify.
    wait_until(
        "the next JWT key in the discovery key set",
        Duration::from_secs(40),
        || server.log_tail(),
        || kids(&discover(&address)).len() == 2,
    );
    assert!(kids(&discover(&address)).contains(&first_kid));
    assert_eq!(
        server.health()["active_jwt_key_id"].as_str().unwrap(),
        first_kid,
        "published before it signs"
    );
    wait_until(
        "the next JWT key to sign",
        Duration::from_secs(40),
        || server.log_tail(),
        || server.health()["active_jwt_key_id"].as_str().unwrap() != first_kid,
    );
    let next_kid = server.health()["active_jwt_key_id"]
        .as_str()
        .unwrap()
        .to_string();
    let d = discover(&address);
    assert!(kids(&d).contains(&next_kid), "{:?}", kids(&d));
    let token = server
        .cli_ok(&["jwt", "mint", "--spiffe-id", ID, "--audience", AUDIENCE])
        .trim()
        .to_string();
    assert_eq!(
        decode_header(&token).unwrap().kid.as_deref(),
        Some(next_kid.as_str())
    );
    verify(&d, &token, &d.issuer, AUDIENCE).expect("a token of the rotated key verifies");
}

fn base64_url_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap()
}

/// With `tls_cert_file`/`tls_key_file` the endpoint speaks HTTPS with that certificate,
/// and nothing in the clear.
#[test]
fn discovery_over_https_presents_the_configured_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let tls = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("oidc.crt"), dir.path().join("oidc.key"));
    std::fs::write(&cert, tls.cert.pem()).unwrap();
    std::fs::write(&key, tls.signing_key.serialize_pem()).unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let conf = server_config(
        dir.path(),
        &hsm,
        "ca",
        &format!(
            "[oidc]\nlisten = \"{address}\"\nissuer = \"https://localhost\"\n\
             tls_cert_file = \"{}\"\ntls_key_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    let server = ServerProcess::start("oidc_https", &conf, &hsm, &dir.path().join("admin.sock"));

    let text = https_get(&address, tls.cert.der()).unwrap();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"issuer\":\"https://localhost\""), "{text}");

    // Renewed in place (as an ACME client does): served without a restart, the old
    // certificate no longer.
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&key, renewed.signing_key.serialize_pem()).unwrap();
    std::fs::write(&cert, renewed.cert.pem()).unwrap();
    ironroot_testkit::wait_until(
        "the renewed certificate",
        Duration::from_secs(30),
        || server.log_tail(),
        || https_get(&address, renewed.cert.der()).is_ok(),
    );
    assert!(https_get(&address, tls.cert.der()).is_err());
    assert!(std::fs::read_to_string(&server.log)
        .unwrap()
        .contains("TLS certificate reloaded"));

    // Plain HTTP on the HTTPS port gets no answer.
    let mut plain = TcpStream::connect(&address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(plain, "GET /keys HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    let _ = plain.read_to_end(&mut raw);
    assert!(
        !raw.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&raw)
    );
}

/// `GET /.well-known/openid-configuration` over HTTPS trusting only `trusted`: the answer,
/// or why the handshake or the request failed.
fn https_get(address: &str, trusted: &[u8]) -> Result<String, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from(trusted.to_vec()))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(address).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    write!(
        stream,
        "GET /.well-known/openid-configuration HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    // The server closes without close_notify after Connection: close; what came is enough.
    let read = stream.read_to_end(&mut raw);
    if raw.is_empty() {
        return Err(format!("no answer: {read:?}"));
    }
    Ok(String::from_utf8_lossy(&raw).into_owned())
}
