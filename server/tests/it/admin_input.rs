//! Bad input on the admin API: each request is refused with a message naming
//! the problem, and the store is left exactly as it was. Non-root callers are
//! refused by the socket mode and, behind it, by the peer-uid check.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::Command;

use ironroot_api::admin as pb;
use ironroot_server::cli::{ClientArgs, Output};
use ironroot_testkit::server::*;

const PARENT: &str = "spiffe://example.org/spire/agent/join_token/t1";

fn entries(server: &ServerProcess) -> serde_json::Value {
    serde_json::from_str(&server.cli_ok(&["entry", "show", "--output", "json"])).unwrap()
}

/// Runs `entry create` that must fail; returns stderr.
fn create_fails(
    server: &ServerProcess,
    spiffe_id: &str,
    parent: &str,
    selectors: &[&str],
) -> String {
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        spiffe_id,
        "--parent-id",
        parent,
    ];
    for s in selectors {
        args.push("--selector");
        args.push(s);
    }
    let out = server.cli(&args);
    assert!(!out.status.success(), "accepted: {args:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_entries_are_refused_and_the_store_is_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, server) = ServerProcess::start_on_new_token("bad_entries", dir.path(), "");
    let good = server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1000",
        "--output",
        "json",
    ]);
    let good: serde_json::Value = serde_json::from_str(&good).unwrap();
    let id = good["entries"][0]["id"].as_str().unwrap().to_string();
    let before = entries(&server);
    assert_eq!(before["entries"].as_array().unwrap().len(), 1);

    // (SPIFFE ID, words the error must contain)
    let bad_ids = [
        ("spiffe://Example.org/web", "spiffe_id"),
        ("http://example.org/web", "scheme"),
        ("spiffe://example.org/a/../b", ".."),
        ("spiffe://example.org/web/", "trailing"),
        ("spiffe://example.org/we b", "spiffe_id"),
        ("spiffe://other.org/web", "trust domain"),
        ("", "spiffe_id"),
    ];
    for (bad, words) in bad_ids {
        let e = create_fails(&server, bad, PARENT, &["unix:uid:1"]);
        assert!(e.contains("InvalidArgument"), "{bad}: {e}");
        assert!(
            e.to_lowercase().contains(&words.to_lowercase()),
            "{bad}: {e}"
        );
    }
    let e = create_fails(
        &server,
        "spiffe://example.org/web2",
        "spiffe://example.org/x?y",
        &["unix:uid:1"],
    );
    assert!(e.contains("parent_id"), "{e}");

    // Selectors: empty value, empty type, no colon (caught by the CLI), bad type chars.
    for (sel, words) in [("unix:", "value"), (":uid", "type"), ("UNIX:uid:1", "type")] {
        let e = create_fails(&server, "spiffe://example.org/web3", PARENT, &[sel]);
        assert!(e.to_lowercase().contains("selector"), "{sel}: {e}");
        assert!(e.to_lowercase().contains(words), "{sel}: {e}");
    }
    let e = create_fails(&server, "spiffe://example.org/web3", PARENT, &["nocolon"]);
    assert!(e.contains("type:value"), "{e}");

    // Duplicate: same SPIFFE ID, parent and selectors.
    let e = create_fails(
        &server,
        "spiffe://example.org/web",
        PARENT,
        &["unix:uid:1000"],
    );
    assert!(e.contains("AlreadyExists"), "{e}");
    assert!(e.contains(&id), "the message names the existing entry: {e}");

    // Update and delete of unknown ids.
    let out = server.cli(&["entry", "delete", "--entry-id", "no-such-entry"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("NotFound"));
    let out = server.cli(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--expected-revision",
        "7",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("revision"),
        "{out:?}"
    );

    assert_eq!(
        entries(&server),
        before,
        "the store changed after refused requests"
    );
}

#[test]
fn oversized_requests_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, server) = ServerProcess::start_on_new_token("oversized", dir.path(), "");
    let before = entries(&server);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let args = ClientArgs {
        socket_path: Some(server.socket.clone()),
        config: None,
        tls: Default::default(),
        output: Output::Text,
    };
    let status = rt.block_on(async {
        let mut c = ironroot_server::client::connect(&args).await.unwrap();
        c.create_entry(pb::CreateEntryRequest {
            entry: Some(pb::EntryFields {
                spiffe_id: "spiffe://example.org/big".into(),
                parent_id: PARENT.into(),
                selectors: vec![pb::Selector {
                    r#type: "unix".into(),
                    value: "uid:1".into(),
                }],
                hint: "x".repeat(2 * 1024 * 1024),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err()
    });
    assert!(status.message().contains("too large"), "{status:?}");
    // Under the byte limit but over the field limits: named.
    let status = rt.block_on(async {
        let mut c = ironroot_server::client::connect(&args).await.unwrap();
        c.create_entry(pb::CreateEntryRequest {
            entry: Some(pb::EntryFields {
                spiffe_id: "spiffe://example.org/many".into(),
                parent_id: PARENT.into(),
                selectors: (0..500)
                    .map(|i| pb::Selector {
                        r#type: "unix".into(),
                        value: format!("uid:{i}"),
                    })
                    .collect(),
                ..Default::default()
            }),
        })
        .await
        .unwrap_err()
    });
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("selectors"), "{status:?}");
    assert_eq!(entries(&server), before);
}

/// Runs the CLI as nobody: a copy nobody can reach, wherever the checkout
/// lives (the target dir of a clone in root's home is not).
fn run_as_nobody(args: &[&str]) -> std::process::Output {
    let cli = ironroot_testkit::shared_bin::SharedBinary::copy_of(&server_bin());
    Command::new(cli.path())
        .args(args)
        .uid(65534)
        .gid(65534)
        .output()
        .expect("run cli as nobody")
}

#[test]
fn non_root_callers_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The temp dir must be traversable by the unprivileged caller.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_hsm, server) = ServerProcess::start_on_new_token("non_root", dir.path(), "");
    let sock = server.socket.to_str().unwrap().to_string();
    let mode = std::fs::metadata(&server.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin socket must be root-only");
    let out = run_as_nobody(&["healthcheck", "-s", &sock]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot connect to the admin socket"), "{e}");
    drop(server);

    // With the file mode opened up, the peer-uid check still refuses.
    let dir2 = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir2.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_hsm2, server) = ServerProcess::start_on_new_token("non_root_peer_check", dir2.path(), "");
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let sock = server.socket.to_str().unwrap().to_string();
    let out = run_as_nobody(&["entry", "show", "-s", &sock]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("uid 65534 may not use the admin API"), "{e}");
    assert!(e.contains("PermissionDenied"), "{e}");
    // root still gets in
    server.cli_ok(&["entry", "show"]);
}

/// `entry create --data` keeps several batches in flight, so a later batch may be written
/// first. Whatever the order of writing: one result per entry at its index, and of two
/// entries with one identity in the file, the first is the one created.
#[test]
fn a_data_file_of_several_batches_settles_duplicates_in_file_order() {
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, server) = ServerProcess::start_on_new_token("data_batches", dir.path(), "");
    let count = 2_500; // three batches of at most 1,000
    let mut list: Vec<serde_json::Value> = (0..count)
        .map(|i| {
            serde_json::json!({
                "spiffe_id": format!("spiffe://example.org/w/{i}"),
                "parent_id": PARENT,
                "selectors": [{"type": "unix", "value": format!("uid:{}", 1000 + i)}],
                "hint": format!("entry {i}"),
            })
        })
        .collect();
    // In the third batch: the identity of entries[10] (another hint), and a foreign ID.
    list[2_400] = serde_json::json!({
        "spiffe_id": "spiffe://example.org/w/10",
        "parent_id": PARENT,
        "selectors": [{"type": "unix", "value": "uid:1010"}],
        "hint": "the second one",
    });
    list[1_200]["spiffe_id"] = "spiffe://elsewhere.org/w/1200".into();
    let file = dir.path().join("entries.json");
    std::fs::write(&file, serde_json::json!({ "entries": list }).to_string()).unwrap();

    let out = server.cli(&[
        "entry",
        "create",
        "--data",
        file.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(!out.status.success(), "two entries must be reported failed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<(u64, String)> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["index"].as_u64().unwrap(),
                f["error"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!(failed[0].0, 1_200);
    assert!(failed[0].1.contains("trust domain"), "{}", failed[0].1);
    assert_eq!(failed[1].0, 2_400);
    assert!(failed[1].1.contains("entries[10]"), "{}", failed[1].1);
    // Created in file order, the failed ones left out.
    let created: Vec<String> = report["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["spiffe_id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (0..count)
        .filter(|i| *i != 1_200 && *i != 2_400)
        .map(|i| format!("spiffe://example.org/w/{i}"))
        .collect();
    assert_eq!(created, expected);
    // The store holds the first of the two, with its hint.
    let stored = entries(&server);
    let stored = stored["entries"].as_array().unwrap();
    assert_eq!(stored.len(), count - 2);
    let tenth: Vec<&serde_json::Value> = stored
        .iter()
        .filter(|e| e["spiffe_id"] == "spiffe://example.org/w/10")
        .collect();
    assert_eq!(tenth.len(), 1);
    assert_eq!(tenth[0]["hint"], "entry 10");
}
