//! `[ca] signing = "memory"` end to end: the HSM's CA key certifies an in-memory signing
//! key, which signs X.509-SVIDs; chains carry its certificate and verify (openssl,
//! rustls-webpki) against the unchanged bundle; the key is replaced before it expires; and
//! when the HSM goes away (p11-kit remoting cut) X.509-SVIDs are still signed until the
//! key's certificate expires, then no more, and again once the HSM is back.

use std::path::Path;
use std::time::{Duration, Instant};

use der::{Decode, Encode};
use ironroot_testkit::p11kit::P11KitServer;
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use ironroot_testkit::svid::{
    assert_svid_leaf, is_ca, not_after, now, openssl_verify, parse, serial, webpki_verify,
};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages, SubjectAltName};

const ID: &str = "spiffe://example.org/workload/memory";

/// `x509 mint --write out`: (succeeded, chain, bundle roots, stderr).
fn mint(server: &ServerProcess, out: &Path) -> (bool, Vec<Vec<u8>>, Vec<Vec<u8>>, String) {
    let o = server.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        ID,
        "--write",
        out.to_str().unwrap(),
    ]);
    if !o.status.success() {
        return (
            false,
            Vec::new(),
            Vec::new(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        );
    }
    let read = |f: &str| pem_ders(&std::fs::read_to_string(out.join(f)).unwrap());
    (true, read("svid.pem"), read("bundle.pem"), String::new())
}

fn extension<'a>(c: &'a x509_cert::Certificate, oid: &str) -> &'a [u8] {
    c.tbs_certificate
        .extensions
        .as_ref()
        .and_then(|exts| exts.iter().find(|e| e.extn_id.to_string() == oid))
        .unwrap_or_else(|| panic!("extension {oid} missing"))
        .extn_value
        .as_bytes()
}

/// The profile of the in-memory key's certificate: a CA that can sign leaves only.
fn assert_signing_key_certificate(der: &[u8]) {
    let c = parse(der);
    let bc = BasicConstraints::from_der(extension(&c, "2.5.29.19")).unwrap();
    assert!(bc.ca, "the signing key's certificate is a CA");
    assert_eq!(bc.path_len_constraint, Some(0), "pathLen 0: no CA below it");
    let ku = KeyUsage::from_der(extension(&c, "2.5.29.15")).unwrap();
    assert!(ku.0.contains(KeyUsages::KeyCertSign));
    assert!(!ku.0.contains(KeyUsages::DigitalSignature));
    let san = SubjectAltName::from_der(extension(&c, "2.5.29.17")).unwrap();
    let uris: Vec<String> = san
        .0
        .iter()
        .filter_map(|g| match g {
            x509_cert::ext::pkix::name::GeneralName::UniformResourceIdentifier(u) => {
                Some(u.to_string())
            }
            _ => None,
        })
        .collect();
    assert_eq!(uris, ["spiffe://example.org"]);
}

/// Checks an SVID chain of memory mode: leaf, then the signing key's certificate; verified by
/// rustls-webpki and by `openssl verify` against `bundle` (and not without the intermediate);
/// no certificate outlives its issuer.
fn check_chain(dir: &Path, chain: &[Vec<u8>], roots: &[Vec<u8>]) {
    assert_eq!(chain.len(), 2, "leaf then the in-memory key's certificate");
    assert_eq!(roots.len(), 1, "the bundle holds the HSM CA's root only");
    assert_svid_leaf(&chain[0], ID);
    assert!(is_ca(&chain[1]));
    assert_signing_key_certificate(&chain[1]);
    let (leaf, signing, root) = (parse(&chain[0]), parse(&chain[1]), parse(&roots[0]));
    assert!(
        not_after(&leaf) <= not_after(&signing),
        "SVID outlives its issuer"
    );
    assert!(
        not_after(&signing) <= not_after(&root),
        "signing key outlives the CA"
    );
    webpki_verify(chain, roots, now()).expect("rustls-webpki accepts the chain");
    assert!(
        webpki_verify(&chain[..1], roots, now()).is_err(),
        "the leaf alone does not verify"
    );
    let pem = |ders: &[Vec<u8>]| {
        ders.iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect::<String>()
    };
    let (leaf_f, inter_f, root_f) = (
        dir.join("leaf.pem"),
        dir.join("intermediate.pem"),
        dir.join("root.pem"),
    );
    std::fs::write(&leaf_f, pem(&chain[..1])).unwrap();
    std::fs::write(&inter_f, pem(&chain[1..])).unwrap();
    std::fs::write(&root_f, pem(roots)).unwrap();
    let (ok, text) = openssl_verify(&root_f, Some(&inter_f), &leaf_f);
    assert!(ok, "openssl verify: {text}");
    let (ok, _) = openssl_verify(&root_f, None, &leaf_f);
    assert!(
        !ok,
        "openssl must not verify the leaf without the intermediate"
    );
    // The certificate of the in-memory key is signed by the HSM root.
    assert_eq!(
        signing.tbs_certificate.issuer.to_der().unwrap(),
        root.tbs_certificate.subject.to_der().unwrap()
    );
}

#[test]
fn svids_chain_to_the_unchanged_bundle_through_a_rotating_in_memory_key() {
    let dir = tempfile::tempdir().unwrap();
    // The key is replaced at half of 8 s; checks every 200 ms.
    let (hsm, server) = ServerProcess::start_on_new_token(
        "ca_memory_rotation",
        dir.path(),
        "[ca]\nsigning = \"memory\"\nmemory_key_ttl = \"8s\"\nrotation_check_interval = \"200ms\"\n",
    );
    let bundle_before = pem_ders(&server.cli_ok(&["bundle", "show"]));
    let (ok, first, roots, err) = mint(&server, &dir.path().join("a"));
    assert!(ok, "{err}");
    check_chain(dir.path(), &first, &roots);
    assert_eq!(
        roots, bundle_before,
        "the bundle is the HSM CA's, unchanged"
    );
    // Asked for the default hour, cut to the in-memory key's life.
    let life = not_after(&parse(&first[0])) as i64 - now() as i64;
    assert!(life <= 8, "SVID not cut to its issuer: {life} s left");

    // Replaced before it expires: a new intermediate within the key's half life (4 s) plus
    // slack, still under the same root.
    let deadline = Instant::now() + Duration::from_secs(15);
    let second = loop {
        let (ok, chain, roots, err) = mint(&server, &dir.path().join("b"));
        assert!(ok, "signing never stops across a key replacement: {err}");
        if serial(&chain[1]) != serial(&first[1]) {
            check_chain(dir.path(), &chain, &roots);
            break chain;
        }
        assert!(
            Instant::now() < deadline,
            "in-memory key not replaced:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_ne!(second[1], first[1]);
    assert_eq!(pem_ders(&server.cli_ok(&["bundle", "show"])), bundle_before);
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("signing=\"memory\"") || log.contains("signing=memory"),
        "{}",
        server.log_tail()
    );
    assert!(
        log.matches("new in-memory X.509 signing key certified by the HSM")
            .count()
            >= 2,
        "{}",
        server.log_tail()
    );

    // The in-memory key is nowhere in the token: only the X.509 CA and the JWT key (and,
    // once a checkpoint was signed, the audit log's key).
    let objects = hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"]);
    assert_eq!(
        objects
            .split("Private Key Object")
            .skip(1)
            .filter(|k| !k.contains("ironroot-audit"))
            .count(),
        2,
        "{objects}"
    );

    // JWT-SVIDs are still signed in the HSM and verify against the JWKS bundle.
    let token = server
        .cli_ok(&["jwt", "mint", "--spiffe-id", ID, "--audience", "db"])
        .trim()
        .to_string();
    let jwks = ironroot_api::bundle::TrustBundle::from_jwks_json(
        td(),
        &server.cli_ok(&["bundle", "show", "--format", "jwks"]),
    )
    .unwrap();
    ironroot_api::jwt_svid::verify_jwt_svid(&token, &jwks, "db", now() as i64)
        .expect("JWT-SVID verifies");
}

/// The operator's benefit of memory mode: with the HSM gone, X.509-SVIDs are still signed
/// (the health check says degraded, not unhealthy, and names until when), JWT-SVIDs are not;
/// once the in-memory key's certificate expires signing stops with a clear error (unhealthy);
/// the HSM back, a new key is certified and signing resumes without a restart.
#[test]
fn hsm_loss_in_memory_mode_signs_until_the_intermediate_expires() {
    let test = "ca_memory_hsm_loss";
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let mut remote = P11KitServer::start(test, &hsm, "ca");
    let server = remote.start_server(test, dir.path(), &hsm, "[ca]\nsigning = \"memory\"\nmemory_key_ttl = \"12s\"\nrotation_check_interval = \"200ms\"\n");
    let (ok, chain, roots, err) = mint(&server, &dir.path().join("before"));
    assert!(ok, "{err}");
    check_chain(dir.path(), &chain, &roots);

    remote.cut();
    let (ok, chain, roots, err) = mint(&server, &dir.path().join("during"));
    assert!(ok, "X.509-SVIDs go on without the HSM: {err}");
    check_chain(dir.path(), &chain, &roots);
    let until = not_after(&parse(&chain[1]));
    let h = server.cli(&["healthcheck", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert!(h.status.success(), "degraded, not unhealthy: {json}");
    assert_eq!(json["state"], "degraded", "{json}");
    let problems = json["problems"].to_string();
    assert!(
        problems.contains("HSM unreachable since")
            && problems.contains("still signed by the in-memory signing key until"),
        "{problems}"
    );
    let jwt = server.cli(&["jwt", "mint", "--spiffe-id", ID, "--audience", "db"]);
    assert!(!jwt.status.success(), "JWT-SVIDs are signed in the HSM");

    // Past the intermediate's notAfter: no SVID, and the reason.
    let wait = (until + 1).saturating_sub(now());
    std::thread::sleep(Duration::from_secs(wait));
    let (ok, _, _, err) = mint(&server, &dir.path().join("expired"));
    assert!(!ok, "no SVID from an expired signing key");
    assert!(
        err.contains("in-memory X.509 signing key expired at"),
        "{err}"
    );
    let h = server.cli(&["healthcheck", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert!(!h.status.success(), "{json}");
    assert_eq!(json["state"], "unhealthy", "{json}");
    // The same for people: what is wrong, one line each on stderr, and the exit code.
    let problems: Vec<String> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(!problems.is_empty(), "{json}");
    let h = server.cli(&["healthcheck"]);
    let (out, err) = (
        String::from_utf8_lossy(&h.stdout),
        String::from_utf8_lossy(&h.stderr),
    );
    assert!(!h.status.success(), "{out}");
    assert!(out.starts_with("Server is unhealthy"), "{out}");
    // Compared up to the first digit: problems carry times that move between the calls.
    let errors: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("error: ") && !l.starts_with("error: server is unhealthy ("))
        .collect();
    assert!(
        err.contains(&format!(
            "error: server is unhealthy ({} problem",
            problems.len()
        )),
        "{err}"
    );
    assert_eq!(errors.len(), problems.len(), "{err}");
    for (line, p) in errors.iter().zip(&problems) {
        let stable = &p[..p.find(|c: char| c.is_ascii_digit()).unwrap_or(p.len())];
        assert!(
            line["error: ".len()..].starts_with(stable),
            "{p:?} vs {line:?}"
        );
    }

    remote.restore();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (ok, chain, roots, _) = mint(&server, &dir.path().join("after"));
        if ok {
            check_chain(dir.path(), &chain, &roots);
            assert!(not_after(&parse(&chain[1])) > until, "a new signing key");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SVID 20 s after the HSM came back:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
