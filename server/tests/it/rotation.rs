//! CA rotation with short TTLs against a real SoftHSM2 token: the next key is
//! prepared at 1/2 of the CA lifetime and activated at 1/6 remaining; during
//! the overlap both roots are in the bundle and SVIDs from both verify.

use std::time::{Duration, Instant};

use ironroot_api::bundle::TrustBundle;
use ironroot_api::jwt_svid::verify_jwt_svid;
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use ironroot_testkit::svid::{now, webpki_verify};
use ironroot_testkit::wait_until;

const ID: &str = "spiffe://example.org/workload/rotating";

#[test]
fn ca_rotates_on_schedule_with_overlapping_roots() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    // lifetime 30s: prepare at 15s, activate at 25s, old root expires at 30s.
    let conf = server_config(
        dir.path(),
        &hsm,
        "ca",
        "[ca]\nca_ttl = \"30s\"\ndefault_x509_svid_ttl = \"1h\"\nrotation_check_interval = \"200ms\"",
    );
    let server = ServerProcess::start("ca_rotation", &conf, &hsm, &dir.path().join("admin.sock"));
    let started = Instant::now();
    let h0 = server.health();
    let first = h0["active_x509_authority"].as_str().unwrap().to_string();
    let first_kid = h0["active_jwt_key_id"].as_str().unwrap().to_string();
    assert_eq!(server.bundle_roots().len(), 1);

    // An SVID from the first CA; its TTL is cut to the CA's remaining life.
    let svid_a = server.mint_x509(ID, &dir.path().join("a"));
    let jwt_a = server
        .cli_ok(&["jwt", "mint", "--spiffe-id", ID, "--audience", "x"])
        .trim()
        .to_string();

    // Prepared: a second root appears while the first key still signs.
    wait_until(
        "the next CA key to be prepared",
        Duration::from_secs(40),
        || server.log_tail(),
        || server.bundle_roots().len() == 2,
    );
    let prepared_after = started.elapsed();
    assert_eq!(
        server.health()["active_x509_authority"].as_str().unwrap(),
        first
    );
    assert!(
        prepared_after >= Duration::from_secs(8),
        "prepared too early: {prepared_after:?}"
    );
    let both = server.bundle_roots();
    let jwks = TrustBundle::from_jwks_json(
        td(),
        &server.cli_ok(&["bundle", "show", "--format", "jwks"]),
    )
    .unwrap();
    assert_eq!(jwks.jwt_authorities.len(), 2, "next JWT key published too");

    // Activated: the new key signs; the old root is still published.
    wait_until(
        "the prepared key to be activated",
        Duration::from_secs(40),
        || server.log_tail(),
        || server.health()["active_x509_authority"].as_str().unwrap() != first,
    );
    let h1 = server.health();
    assert_ne!(h1["active_jwt_key_id"].as_str().unwrap(), first_kid);
    let svid_b = server.mint_x509(ID, &dir.path().join("b"));
    let overlap = server.bundle_roots();
    assert_eq!(overlap.len(), 2, "both roots during the overlap");
    assert_eq!(overlap, both);

    // SVIDs from both CAs verify against the bundle; each only against its own root.
    let t = now();
    webpki_verify(&svid_a, &overlap, t).expect("old SVID verifies during overlap");
    webpki_verify(&svid_b, &overlap, t).expect("new SVID verifies");
    assert!(webpki_verify(&svid_b, &overlap[..1], t).is_err());
    assert!(webpki_verify(&svid_a, &overlap[1..], t).is_err());
    let jwks = TrustBundle::from_jwks_json(
        td(),
        &server.cli_ok(&["bundle", "show", "--format", "jwks"]),
    )
    .unwrap();
    verify_jwt_svid(&jwt_a, &jwks, "x", t as i64).expect("old JWT verifies during overlap");

    // The old root leaves the bundle once it expires, and its key is destroyed.
    // (The schedule prepares the next key right when the old one expires, so the
    // bundle need not ever hold a single root: look for the old one leaving.)
    wait_until(
        "the old root to expire",
        Duration::from_secs(30),
        || server.log_tail(),
        || !server.bundle_roots().contains(&overlap[0]),
    );
    assert!(
        server.bundle_roots().contains(&overlap[1]),
        "the new root stays"
    );
    wait_until(
        "the expired key to leave the token",
        Duration::from_secs(5),
        || server.log_tail(),
        || {
            !hsm.pkcs11_tool("ca", &["--list-objects", "--type", "privkey"])
                .contains(&first)
        },
    );
}
