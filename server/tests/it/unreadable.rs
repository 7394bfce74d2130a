//! A record that does not decode (disk damage, a bad restore) is a task for
//! the operator, not an outage: the server starts, serves everything else,
//! and `healthcheck` names the record until it is deleted.

use ironroot_testkit::server::{server_config, ServerProcess};
use ironroot_testkit::softhsm::SoftHsm;

#[test]
fn an_unreadable_entry_is_named_by_healthcheck_and_cleared_by_deleting_it() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let conf = server_config(dir.path(), &hsm, "ca", "");
    let socket = dir.path().join("admin.sock");
    let mut server = ServerProcess::start("unreadable_entry", &conf, &hsm, &socket);
    let create = |server: &ServerProcess, path: &str| -> String {
        let out = server.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://example.org{path}"),
            "--parent-id",
            "spiffe://example.org/spire/agent/tpm/node1",
            "--selector",
            "unix:uid:1",
            "--output",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["entries"][0]["id"].as_str().unwrap().to_owned()
    };
    let good = create(&server, "/good");
    let bad = create(&server, "/bad");
    server.stop();
    {
        let db = sled::open(dir.path().join("data/store")).unwrap();
        // Schema 4: one tree, entries under `e`.
        db.open_tree("store")
            .unwrap()
            .insert(
                [b"e".as_slice(), bad.as_bytes()].concat(),
                &b"{\"spiffe_id\": 7"[..],
            )
            .unwrap();
        db.flush().unwrap();
    }
    let server = ServerProcess::start("unreadable_entry_2", &conf, &hsm, &socket);
    let health = server.health();
    let records = health["unreadable_records"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{health}");
    assert!(records[0].as_str().unwrap().contains(&bad), "{health}");
    let text = server.cli(&["healthcheck"]);
    assert!(text.status.success(), "still healthy: {text:?}");
    assert!(
        String::from_utf8_lossy(&text.stderr).contains(&bad),
        "the text output names it: {text:?}"
    );
    // Everything else is served.
    let listed = server.cli_ok(&["entry", "show", "--output", "json"]);
    assert!(listed.contains(&good) && !listed.contains(&bad), "{listed}");
    // Deleting it clears the report.
    let out = server.cli(&["entry", "delete", "--entry-id", &bad]);
    assert!(
        !out.status.success(),
        "its delete says it was unreadable: {out:?}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !server.health()["unreadable_records"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(std::time::Instant::now() < deadline, "report not cleared");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(server
        .cli_ok(&["entry", "show", "--entry-id", &good, "--output", "json"])
        .contains(&good));
}
