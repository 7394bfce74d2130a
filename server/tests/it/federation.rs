//! Federated bundles through the admin API and CLI: set (JWKS or PEM), list,
//! delete; the server's own trust domain and bad input are refused.

use ironroot_testkit::server::*;

#[test]
fn federated_bundles_are_set_listed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, server) = ServerProcess::start_on_new_token("federation", dir.path(), "");
    let dir2 = tempfile::tempdir().unwrap();
    let (_h2, other) = ServerProcess::start_on_new_token("federation_other", dir2.path(), "");
    let jwks = dir.path().join("other.jwks");
    std::fs::write(&jwks, other.cli_ok(&["bundle", "show", "--format", "jwks"])).unwrap();
    let pem = dir.path().join("other.pem");
    std::fs::write(&pem, other.cli_ok(&["bundle", "show"])).unwrap();

    server.cli_ok(&[
        "bundle",
        "set",
        "--id",
        "spiffe://other.org",
        "--path",
        jwks.to_str().unwrap(),
    ]);
    server.cli_ok(&[
        "bundle",
        "set",
        "--id",
        "third.org",
        "--path",
        pem.to_str().unwrap(),
        "--format",
        "pem",
    ]);
    let list: serde_json::Value =
        serde_json::from_str(&server.cli_ok(&["bundle", "list", "--output", "json"])).unwrap();
    let tds: Vec<&str> = list["bundles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["trust_domain"].as_str().unwrap())
        .collect();
    assert_eq!(tds, vec!["other.org", "third.org"]);
    assert_eq!(list["bundles"][0]["x509_authorities"], 1);
    // the JWT key of the other server came along with the JWKS form
    assert!(
        list["bundles"][0]["jwks"]["keys"].as_array().unwrap().len() >= 2,
        "{list}"
    );

    // Refused: our own trust domain, bad PEM, bad trust domain name.
    let o = server.cli(&[
        "bundle",
        "set",
        "--id",
        "spiffe://example.org",
        "--path",
        jwks.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("own trust domain"),
        "{o:?}"
    );
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let o = server.cli(&[
        "bundle",
        "set",
        "--id",
        "x.org",
        "--path",
        junk.to_str().unwrap(),
        "--format",
        "pem",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("pem"), "{o:?}");
    let o = server.cli(&[
        "bundle",
        "set",
        "--id",
        "Bad.Org",
        "--path",
        jwks.to_str().unwrap(),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("trust_domain"),
        "{o:?}"
    );

    server.cli_ok(&["bundle", "delete", "--id", "third.org"]);
    let o = server.cli(&["bundle", "delete", "--id", "third.org"]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("no federated bundle"),
        "{o:?}"
    );
    let list = server.cli_ok(&["bundle", "list"]);
    assert!(
        list.contains("other.org") && !list.contains("third.org"),
        "{list}"
    );
}
