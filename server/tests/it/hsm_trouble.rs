//! The server refuses to start when its HSM is not usable, and says why; an HSM that goes
//! away at runtime (p11-kit remoting cut) stops signing, not the CA, and comes back by itself.
//!
//! Sessions closed or a token logged out *under* the server cannot be caused from outside
//! with SoftHSM: behind p11-kit every client gets its own `p11-kit-remote` process, with its
//! own SoftHSM state, sessions and login. Those cases are tested in the key manager's own
//! tests (`hsm/tests/it/pkcs11_outage.rs`, `pkcs11.rs`), from inside the same process.

use std::time::Duration;

use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::{SoftHsm, MODULE};
use ironroot_testkit::svid::openssl_verify;

/// Starts a server with `extra` config lines on top of a fresh token and
/// returns its exit status and log.
fn start_fails(
    test: &str,
    token_in_config: &str,
    pin: Option<&str>,
    module: Option<&str>,
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    if let Some(p) = pin {
        std::fs::write(&hsm.pin_file, format!("{p}\n")).unwrap();
    }
    let conf = server_config(dir.path(), &hsm, token_in_config, "");
    if let Some(m) = module {
        let text = std::fs::read_to_string(&conf).unwrap().replace(MODULE, m);
        std::fs::write(&conf, text).unwrap();
    }
    let mut server = ServerProcess::spawn(test, &conf, &hsm, &dir.path().join("admin.sock"));
    let (status, log) = server.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "server started despite a broken HSM:\n{log}"
    );
    assert!(
        !dir.path().join("admin.sock").exists(),
        "no socket may be served"
    );
    log
}

#[test]
fn wrong_pin_is_named() {
    let log = start_fails("hsm_wrong_pin", "ca", Some("9999"), None);
    assert!(log.contains("cannot open the CA key HSM"), "{log}");
    assert!(log.to_lowercase().contains("pin"), "{log}");
    assert!(log.contains("'ca'"), "the message names the token: {log}");
    assert!(!log.contains("9999"), "the PIN must never be logged: {log}");
}

#[test]
fn missing_token_is_named() {
    let log = start_fails("hsm_missing_token", "no-such-token", None, None);
    assert!(log.contains("no-such-token"), "{log}");
    assert!(
        log.contains("ca"),
        "the message lists the tokens present: {log}"
    );
}

#[test]
fn missing_module_is_named() {
    let log = start_fails(
        "hsm_missing_module",
        "ca",
        None,
        Some("/nonexistent/libpkcs11.so"),
    );
    assert!(log.contains("/nonexistent/libpkcs11.so"), "{log}");
}

#[test]
fn missing_pin_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    std::fs::remove_file(&hsm.pin_file).unwrap();
    let conf = server_config(dir.path(), &hsm, "ca", "");
    let mut server = ServerProcess::spawn(
        "hsm_missing_pin_file",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );
    let (status, log) = server.wait_exit(Duration::from_secs(30));
    assert!(!status.success());
    assert!(log.contains(hsm.pin_file.to_str().unwrap()), "{log}");
}

#[test]
fn bad_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("server.toml");
    std::fs::write(&conf, "trust_domain = \"example.org\"\n").unwrap();
    let out = std::process::Command::new(server_bin())
        .args(["run", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("must live in an HSM"), "{e}");
}

#[test]
fn insecure_software_keys_work_and_warn_loudly() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    let conf = dir.path().join("server.toml");
    std::fs::write(
        &conf,
        format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"{}\"\ninsecure_software_keys = true\n\n\
             [admin]\nsocket_path = \"{}\"\n\n[node_api]\nlisten = \"\"\n",
            dir.path().join("data").display(),
            dir.path().join("admin.sock").display()
        ),
    )
    .unwrap();
    let server = ServerProcess::start("insecure_keys", &conf, &hsm, &dir.path().join("admin.sock"));
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("INSECURE: insecure_software_keys = true"),
        "{log}"
    );
    let h = server.cli_ok(&["healthcheck", "--output", "json"]);
    assert!(h.contains("INSECURE software keys"), "{h}");
    let out = dir.path().join("out");
    server.cli_ok(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/dev",
        "--write",
        out.to_str().unwrap(),
    ]);
    let (ok, text) = openssl_verify(&out.join("bundle.pem"), None, &out.join("svid.pem"));
    assert!(ok, "{text}");
}

/// `healthcheck --output json` whatever its exit status: (succeeded, parsed output).
fn health_any(server: &ServerProcess) -> (bool, serde_json::Value) {
    let out = server.cli(&["healthcheck", "--output", "json"]);
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "healthcheck printed no JSON ({e}): {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), json)
}

fn mint(server: &ServerProcess, out: &std::path::Path) -> std::process::Output {
    server.cli(&[
        "x509",
        "mint",
        "--spiffe-id",
        "spiffe://example.org/workload/hsm-outage",
        "--write",
        out.to_str().unwrap(),
    ])
}

/// The HSM behind p11-kit remoting goes away at runtime (its `p11-kit-remote` killed by PID)
/// and comes back on the same socket: signing fails with an error naming the HSM, the
/// health check says unhealthy naming it at once, rotation checks (every 200 ms) keep the
/// active CA, and SVIDs are signed again within seconds of the HSM's return, with the same
/// CA key and no restart.
#[test]
fn remote_hsm_cut_keeps_the_ca_reports_it_and_recovers_without_restart() {
    use ironroot_testkit::p11kit::P11KitServer;

    let test = "hsm_remote_cut_server";
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let mut remote = P11KitServer::start(test, &hsm, "ca");
    let server = remote.start_server(
        test,
        dir.path(),
        &hsm,
        "[ca]\nrotation_check_interval = \"200ms\"\n",
    );
    let (ok, h0) = health_any(&server);
    assert!(ok && h0["state"] == "healthy", "{h0}");
    let authority = h0["active_x509_authority"].as_str().unwrap().to_owned();
    let before = dir.path().join("before");
    assert!(mint(&server, &before).status.success());

    remote.cut();
    // At once, before any signature fails: the health check probes the token.
    let (ok, h) = health_any(&server);
    assert!(!ok, "an unreachable HSM fails the health check: {h}");
    assert_eq!(h["state"], "unhealthy", "{h}");
    assert_eq!(h["healthy"], false, "{h}");
    let problems = h["problems"].to_string();
    assert!(
        problems.contains("HSM unreachable since") && problems.contains("CKR_DEVICE_ERROR"),
        "{problems}"
    );

    let out = mint(&server, &dir.path().join("during"));
    assert!(!out.status.success(), "no SVID without the HSM");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("PKCS#11 token 'ca' unreachable since") && err.contains("reconnecting"),
        "{err}"
    );

    // Rotation checks run meanwhile and fail; the active authority stays.
    std::thread::sleep(Duration::from_secs(2));
    let (_, h) = health_any(&server);
    assert_eq!(
        h["active_x509_authority"], authority,
        "the active CA is kept: {h}"
    );
    assert!(
        h["problems"]
            .to_string()
            .contains("CA rotation check failing since"),
        "{h}"
    );
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("the current CA keys stay active"),
        "{}",
        server.log_tail()
    );
    assert!(!log.contains("is not initialised"), "{}", server.log_tail());

    remote.restore();
    let after = dir.path().join("after");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !mint(&server, &after).status.success() {
        assert!(
            std::time::Instant::now() < deadline,
            "no SVID 20 s after the HSM came back:\n{}",
            server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // Same CA, same bundle: the new SVID verifies against the bundle from before the cut.
    let (ok, text) = openssl_verify(&before.join("bundle.pem"), None, &after.join("svid.pem"));
    assert!(ok, "{text}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, h) = health_any(&server);
        if ok && h["state"] == "healthy" {
            assert_eq!(h["active_x509_authority"], authority);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health not back to healthy: {h}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("PKCS#11 token reachable again"),
        "{}",
        server.log_tail()
    );
}
