//! The server refuses to start when its HSM is not usable, and says why.

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
