//! Servers on PostgreSQL (`[store] kind = "postgres"`): two server processes of one trust
//! domain on one database and one HSM token answer from the same store and the same CA.

use ironroot_testkit::postgres::Postgres;
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;

const PARENT: &str = "spiffe://example.org/spire/agent/tpm/node1";

fn entries(server: &ServerProcess) -> serde_json::Value {
    serde_json::from_str(&server.cli_ok(&["entry", "show", "--output", "json"])).unwrap()
}

#[test]
fn two_servers_share_one_database() {
    let pg = Postgres::start();
    pg.create_database("ironroot");
    let store = format!(
        "[store]\nkind = \"postgres\"\nurl = \"{}\"\n",
        pg.url("ironroot")
    );
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    std::fs::create_dir_all(&b_dir).unwrap();

    let a_conf = server_config(&a_dir, &hsm, "ca", &store);
    let a = ServerProcess::start("pg_server_a", &a_conf, &hsm, &a_dir.join("admin.sock"));
    let created = a.cli_ok(&[
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
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let id = created["entries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(pg.psql("ironroot", "SELECT id FROM entries"), id);

    // The second server opens the same database and CA journal, and the same keys.
    let b_conf = server_config(&b_dir, &hsm, "ca", &store);
    let b = ServerProcess::start("pg_server_b", &b_conf, &hsm, &b_dir.join("admin.sock"));
    let listed = entries(&b);
    assert_eq!(listed["entries"][0]["id"].as_str(), Some(id.as_str()));
    assert_eq!(a.cli_ok(&["bundle", "show"]), b.cli_ok(&["bundle", "show"]));
    // The rules hold across servers: B refuses a duplicate of A's entry.
    let out = b.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1000",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&id), "{err}");
    // And A sees what B writes.
    b.cli_ok(&["entry", "delete", "--entry-id", &id]);
    assert!(entries(&a)["entries"]
        .as_array()
        .is_none_or(|e| e.is_empty()));
}
