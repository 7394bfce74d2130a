//! The CA on OpenBao's transit engine (`[key_manager.transit]`) as on PKCS#11: the real server
//! binary on a real `bao server -dev`, under the least-privilege policy of docs/vault.md. It
//! signs X.509- and JWT-SVIDs, finds the same keys after a restart (no new key made), rotates
//! on schedule (the next key created in transit, both roots published, the old key deleted
//! from transit once expired), and starts again after the rotation on the rotated keys.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use ironroot_api::bundle::TrustBundle;
use ironroot_api::jwt_svid::verify_jwt_svid;
use ironroot_testkit::openbao::OpenBao;
use ironroot_testkit::server::*;
use ironroot_testkit::svid::{now, webpki_verify};
use ironroot_testkit::wait_until;

const ID: &str = "spiffe://example.org/workload/on-transit";

/// The ```hcl block of docs/vault.md.
fn documented_policy() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vault.md"))
        .expect("docs/vault.md");
    let start = doc.find("```hcl\n").expect("an ```hcl block") + 7;
    let len = doc[start..].find("```").expect("closed block");
    doc[start..start + len].to_owned()
}

/// The keys in transit (`bao list transit/keys`).
fn all_transit_keys(bao: &OpenBao) -> Vec<String> {
    let out = bao.bao(&["list", "-format=json", "transit/keys"]);
    let mut keys: Vec<String> = serde_json::from_str(&out).expect("bao list prints JSON");
    keys.sort();
    keys
}

/// The CA's keys in transit (the audit checkpoint key, made at the first checkpoint, left out).
fn transit_keys(bao: &OpenBao) -> Vec<String> {
    let mut keys = all_transit_keys(bao);
    keys.retain(|k| !k.ends_with("-audit"));
    keys
}

fn jwks(server: &ServerProcess) -> TrustBundle {
    TrustBundle::from_jwks_json(
        td(),
        &server.cli_ok(&["bundle", "show", "--format", "jwks"]),
    )
    .expect("JWKS")
}

#[test]
fn ca_on_transit_signs_restarts_on_its_keys_and_rotates() {
    let Some(bao) = OpenBao::start_or_skip() else {
        return;
    };
    bao.enable_transit("transit");
    bao.write_policy("ironroot-ca", &documented_policy());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("bao-token");
    std::fs::write(&token_file, bao.create_token(&["ironroot-ca"], "1h")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let conf = transit_server_config(
        dir.path(),
        &bao.address(),
        &token_file,
        "[ca]\nca_ttl = \"30s\"\ndefault_x509_svid_ttl = \"1h\"\nrotation_check_interval = \"200ms\"",
    );
    let sock = dir.path().join("admin.sock");
    let mut server = ServerProcess::start_without_hsm("ca_on_transit", &conf, &sock);

    let h0 = server.health();
    assert!(
        h0["key_manager"]
            .as_str()
            .unwrap()
            .contains("transit mount 'transit'"),
        "{h0}"
    );
    let first = h0["active_x509_authority"].as_str().unwrap().to_owned();
    let first_kid = h0["active_jwt_key_id"].as_str().unwrap().to_owned();
    let keys0 = transit_keys(&bao);
    assert!(
        !keys0.is_empty() && keys0.iter().all(|k| k.starts_with("ironroot-")),
        "{keys0:?}"
    );
    assert!(
        keys0.iter().any(|k| k.ends_with(&first)),
        "{keys0:?} holds {first}"
    );
    for k in &keys0 {
        let exportable = bao.bao(&["read", "-field=exportable", &format!("transit/keys/{k}")]);
        assert_eq!(exportable.trim(), "false", "{k}");
    }

    // Signing: an X.509-SVID and a JWT-SVID, each verified independently.
    let roots0 = server.bundle_roots();
    assert_eq!(roots0.len(), 1);
    let svid_a = server.mint_x509(ID, &dir.path().join("a"));
    webpki_verify(&svid_a, &roots0, now()).expect("X.509-SVID signed through transit");
    let jwt_a = server
        .cli_ok(&["jwt", "mint", "--spiffe-id", ID, "--audience", "vault"])
        .trim()
        .to_owned();
    verify_jwt_svid(&jwt_a, &jwks(&server), "vault", now() as i64)
        .expect("JWT-SVID signed through transit");

    // Restart: the same keys are found in transit, none is made.
    let keys_before = transit_keys(&bao);
    server.stop();
    let server = ServerProcess::start_without_hsm("ca_on_transit", &conf, &sock);
    let h = server.health();
    assert_eq!(h["active_x509_authority"].as_str().unwrap(), first);
    assert_eq!(h["active_jwt_key_id"].as_str().unwrap(), first_kid);
    assert_eq!(
        transit_keys(&bao),
        keys_before,
        "no key created by the restart"
    );
    assert_eq!(server.bundle_roots(), roots0);

    // Rotation: the next keys are created in transit and activated on schedule.
    wait_until(
        "the CA to rotate to a new key",
        Duration::from_secs(60),
        || server.log_tail(),
        || server.health()["active_x509_authority"].as_str().unwrap() != first,
    );
    let h1 = server.health();
    let second = h1["active_x509_authority"].as_str().unwrap().to_owned();
    assert_ne!(h1["active_jwt_key_id"].as_str().unwrap(), first_kid);
    assert!(transit_keys(&bao).iter().any(|k| k.ends_with(&second)));
    let overlap = server.bundle_roots();
    assert_eq!(overlap.len(), 2, "both roots during the overlap");
    let svid_b = server.mint_x509(ID, &dir.path().join("b"));
    webpki_verify(&svid_b, &overlap, now()).expect("new SVID verifies");
    assert!(
        webpki_verify(&svid_b, &roots0, now()).is_err(),
        "signed by the new key"
    );
    webpki_verify(&svid_a, &overlap, now()).expect("old SVID verifies during the overlap");

    // The expired key is deleted from transit (deletion_allowed, then DELETE, under the policy).
    wait_until(
        "the expired CA key to be deleted from transit",
        Duration::from_secs(30),
        || server.log_tail(),
        || !transit_keys(&bao).iter().any(|k| k.ends_with(&first)),
    );

    // The audit log signs its checkpoints with a key in transit too.
    wait_until(
        "the audit checkpoint key in transit",
        Duration::from_secs(60),
        || server.log_tail(),
        || all_transit_keys(&bao).contains(&"ironroot-ironroot-audit".to_owned()),
    );

    // And the server starts again on the rotated keys.
    let mut server = server;
    server.stop();
    let server = ServerProcess::start_without_hsm("ca_on_transit", &conf, &sock);
    let roots = server.bundle_roots();
    assert!(
        roots.contains(&overlap[1]),
        "the rotated root is still published"
    );
    let svid_c = server.mint_x509(ID, &dir.path().join("c"));
    webpki_verify(&svid_c, &roots, now()).expect("signs after the restart");
}
