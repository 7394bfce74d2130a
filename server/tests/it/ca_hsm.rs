//! The HSM-backed CA end to end: real SoftHSM2 token, the real server binary,
//! the CLI; SVIDs checked with rustls-webpki, openssl and field by field.

use ironroot_api::bundle::TrustBundle;
use ironroot_api::jwt_svid::verify_jwt_svid;
use ironroot_testkit::server::*;
use ironroot_testkit::svid::{
    assert_svid_leaf, not_after, now, openssl_verify, parse, serial, webpki_verify,
};

const ID: &str = "spiffe://example.org/workload/web";

#[test]
fn x509_svids_verify_and_follow_the_spec() {
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, server) = ServerProcess::start_on_new_token("x509_svids_verify", dir.path(), "");
    let out = dir.path().join("out");
    let out_s = out.to_str().unwrap();
    server.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        ID,
        "--dns-name",
        "web.example.org",
        "--write",
        out_s,
    ]);

    let chain = pem_ders(&std::fs::read_to_string(out.join("svid.pem")).unwrap());
    let roots = pem_ders(&std::fs::read_to_string(out.join("bundle.pem")).unwrap());
    assert_eq!(chain.len(), 1, "a root CA sends the leaf only");
    assert_eq!(roots.len(), 1);
    assert_svid_leaf(&chain[0], ID);
    webpki_verify(&chain, &roots, now()).expect("rustls-webpki accepts the SVID");
    let (ok, text) = openssl_verify(&out.join("bundle.pem"), None, &out.join("svid.pem"));
    assert!(ok, "openssl verify: {text}");
    assert!(text.contains("OK"), "{text}");
    // the key file is private
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(out.join("svid.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // A second SVID has another serial; an absurd TTL is cut to the CA's notAfter.
    let out2 = dir.path().join("out2");
    server.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        ID,
        "--ttl",
        "100000000",
        "--write",
        out2.to_str().unwrap(),
    ]);
    let chain2 = pem_ders(&std::fs::read_to_string(out2.join("svid.pem")).unwrap());
    assert_ne!(serial(&chain[0]), serial(&chain2[0]));
    let ca_not_after = not_after(&parse(&roots[0]));
    assert!(
        not_after(&parse(&chain2[0])) <= ca_not_after,
        "SVID outlives its CA"
    );
    // default TTL is 1h
    let leaf_life = not_after(&parse(&chain[0])) as i64 - now() as i64;
    assert!(
        (3500..=3600).contains(&leaf_life),
        "default TTL: {leaf_life}"
    );

    // A root from another server does not verify these SVIDs.
    let dir2 = tempfile::tempdir().unwrap();
    let (_h2, other) =
        ServerProcess::start_on_new_token("x509_svids_verify_other", dir2.path(), "");
    let other_roots = pem_ders(&other.cli_ok(&["bundle", "show"]));
    assert!(webpki_verify(&chain, &other_roots, now()).is_err());
    std::fs::write(
        dir.path().join("other.pem"),
        other.cli_ok(&["bundle", "show"]),
    )
    .unwrap();
    let (ok, _) = openssl_verify(&dir.path().join("other.pem"), None, &out.join("svid.pem"));
    assert!(!ok, "openssl must reject an SVID from another CA");

    // Outside the trust domain: refused with a reason.
    let o = server.cli(&["x509", "mint", "--spiffe-id", "spiffe://other.org/x"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not in trust domain example.org"));
}

#[test]
fn jwt_svids_verify_against_the_jwks_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, server) = ServerProcess::start_on_new_token("jwt_svids_verify", dir.path(), "");
    let token = server
        .cli_ok(&[
            "jwt",
            "mint",
            "--spiffe-id",
            ID,
            "--audience",
            "db",
            "--audience",
            "cache",
        ])
        .trim()
        .to_string();
    let jwks = server.cli_ok(&["bundle", "show", "--format", "jwks"]);
    let bundle = TrustBundle::from_jwks_json(td(), &jwks).expect("bundle parses");
    assert_eq!(bundle.jwt_authorities.len(), 1);
    assert_eq!(bundle.x509_authorities.len(), 1);

    let t = now() as i64;
    let claims = verify_jwt_svid(&token, &bundle, "db", t).expect("valid token");
    assert_eq!(claims.sub.to_string(), ID);
    assert!(
        claims.exp > t && claims.exp <= t + 300,
        "default JWT TTL is 5m"
    );

    let e = verify_jwt_svid(&token, &bundle, "payments", t).unwrap_err();
    assert!(e.to_string().contains("audience"), "{e}");
    let e = verify_jwt_svid(&token, &bundle, "db", claims.exp + 1).unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    // A signature byte flipped: rejected.
    let (head, sig) = token.rsplit_once('.').unwrap();
    let mut sig = sig.as_bytes().to_vec();
    sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
    let forged = format!("{head}.{}", String::from_utf8(sig).unwrap());
    let e = verify_jwt_svid(&forged, &bundle, "db", t).unwrap_err();
    assert!(e.to_string().to_lowercase().contains("signature"), "{e}");

    // Another server's bundle does not know this key.
    let dir2 = tempfile::tempdir().unwrap();
    let (_h2, other) = ServerProcess::start_on_new_token("jwt_svids_verify_other", dir2.path(), "");
    let other_bundle =
        TrustBundle::from_jwks_json(td(), &other.cli_ok(&["bundle", "show", "--format", "jwks"]))
            .unwrap();
    assert!(verify_jwt_svid(&token, &other_bundle, "db", t).is_err());

    // No audience: refused.
    let o = server.cli(&["jwt", "mint", "--spiffe-id", ID, "--audience", ""]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("audience"));
}

/// Byte patterns that start a DER private key: PKCS#8 (EC and RSA) and SEC1.
const PRIVATE_KEY_MARKERS: &[&[u8]] = &[
    b"PRIVATE KEY",
    &[
        0x02, 0x01, 0x00, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01,
    ],
    &[
        0x02, 0x01, 0x00, 0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01,
        0x01,
    ],
    &[0x30, 0x77, 0x02, 0x01, 0x01, 0x04, 0x20],
];

fn scan_for_private_keys(dir: &std::path::Path, found: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            scan_for_private_keys(&p, found);
        } else if let Ok(bytes) = std::fs::read(&p) {
            for m in PRIVATE_KEY_MARKERS {
                if bytes.windows(m.len()).any(|w| w == *m) {
                    found.push(format!("{} contains {:02x?}", p.display(), &m[..4]));
                }
            }
        }
    }
}

#[test]
fn ca_keys_stay_in_the_hsm_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (hsm, mut server) =
        ServerProcess::start_on_new_token("ca_keys_stay_in_hsm", dir.path(), "");
    let h1 = server.health();
    let label = h1["active_x509_authority"].as_str().unwrap().to_string();
    let kid = h1["active_jwt_key_id"].as_str().unwrap().to_string();
    let bundle1 = server.cli_ok(&["bundle", "show", "--format", "jwks"]);
    assert!(
        h1["key_manager"].as_str().unwrap().contains("pkcs11"),
        "{h1}"
    );

    // Both CA private keys: sensitive and never extractable, read from the token.
    let objs = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"]);
    assert!(objs.contains(&label), "{objs}");
    let keys: Vec<&str> = objs.split("Private Key Object").skip(1).collect();
    assert_eq!(
        ca_keys(&objs),
        2,
        "one X.509 and one JWT key (and at most the audit log's checkpoint key): {objs}"
    );
    for k in keys {
        assert!(k.contains("sensitive"), "{k}");
        assert!(k.contains("never extractable"), "{k}");
    }

    // No private key material in the data dir.
    let mut found = Vec::new();
    scan_for_private_keys(&dir.path().join("data"), &mut found);
    assert!(
        found.is_empty(),
        "private key material in data_dir: {found:?}"
    );

    // Restart: the same keys are found by label; the bundle is unchanged.
    server.stop();
    let conf = server.conf.clone();
    let server = ServerProcess::start(
        "ca_keys_stay_in_hsm_restart",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );
    let h2 = server.health();
    assert_eq!(h2["active_x509_authority"].as_str().unwrap(), label);
    assert_eq!(h2["active_jwt_key_id"].as_str().unwrap(), kid);
    assert_eq!(
        server.cli_ok(&["bundle", "show", "--format", "jwks"]),
        bundle1
    );
    // still exactly two CA private keys: nothing was re-created (the clean stop signed an
    // audit checkpoint, whose key is the only other one)
    let objs = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"]);
    assert_eq!(ca_keys(&objs), 2, "{objs}");
    assert_eq!(
        objs.matches("Private Key Object").count(),
        3,
        "the CA's two and the audit checkpoint key: {objs}"
    );
}

/// Private keys in a `pkcs11-tool --list-objects` listing, the audit checkpoint key left out.
fn ca_keys(objs: &str) -> usize {
    objs.split("Private Key Object")
        .skip(1)
        .filter(|k| !k.contains("ironroot-audit"))
        .count()
}

#[test]
fn rsa_ca_key_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let (hsm, server) = ServerProcess::start_on_new_token(
        "rsa_ca_key",
        dir.path(),
        "[ca]\nkey_algorithm = \"rsa-3072\"",
    );
    let out = dir.path().join("out");
    server.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        ID,
        "--write",
        out.to_str().unwrap(),
    ]);
    let chain = pem_ders(&std::fs::read_to_string(out.join("svid.pem")).unwrap());
    let roots = pem_ders(&std::fs::read_to_string(out.join("bundle.pem")).unwrap());
    webpki_verify(&chain, &roots, now()).expect("RSA-signed SVID verifies");
    let (ok, text) = openssl_verify(&out.join("bundle.pem"), None, &out.join("svid.pem"));
    assert!(ok, "{text}");
    let objs = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"]);
    assert!(objs.contains("RSA"), "{objs}");
}
