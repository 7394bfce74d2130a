//! Servers on PostgreSQL (`[store] kind = "postgres"`): two server processes of one trust
//! domain on one database and one HSM token (one SoftHSM token directory both processes
//! open) answer from the same store and the same CA, and rotate its keys as one.

use std::time::{Duration, Instant};

use ironroot_api::bundle::TrustBundle;
use ironroot_api::jwt_svid::verify_jwt_svid;
use ironroot_testkit::cluster::ServerCluster;
use ironroot_testkit::postgres::Postgres;
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use ironroot_testkit::svid::{now, webpki_verify};
use ironroot_testkit::wait_until;

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

const ID: &str = "spiffe://example.org/workload/shared";

fn jwks(server: &ServerProcess) -> TrustBundle {
    TrustBundle::from_jwks_json(
        td(),
        &server.cli_ok(&["bundle", "show", "--format", "jwks"]),
    )
    .unwrap()
}

fn active_x509(server: &ServerProcess) -> String {
    server.health()["active_x509_authority"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Three servers of one trust domain on one database and one token rotate the CA as one:
/// each step is made once (one new X.509 and one JWT key, whichever server makes it), the
/// others follow within seconds, all publish the same bundle with as many keys as one server
/// would, and an SVID one issues verifies against another's bundle. Two servers check the
/// schedule every 200 ms and race for each step; the third checks it hourly, so it keeps up
/// only by following the store's feed.
#[test]
fn servers_of_one_trust_domain_rotate_once_and_publish_one_bundle() {
    // Lifetime 24 s: prepare at 12 s, activate at 20 s.
    let ca = |check: &str| {
        format!(
            "[ca]\nca_ttl = \"24s\"\ndefault_x509_svid_ttl = \"1h\"\n\
             rotation_check_interval = \"{check}\"\n"
        )
    };
    let (racing, follower) = (ca("200ms"), ca("1h"));
    let cluster = ServerCluster::start("pg_rotation", &[&racing, &racing, &follower], "");
    let servers: Vec<&ServerProcess> = cluster.servers.iter().collect();
    let (a, b, c) = (servers[0], servers[1], servers[2]);
    let dir = cluster.dir.path();
    let agree = |f: &dyn Fn(&ServerProcess) -> Vec<Vec<u8>>| {
        let first = f(a);
        servers.iter().all(|s| f(s) == first)
    };
    let jwks_der = |s: &ServerProcess| -> Vec<Vec<u8>> {
        jwks(s)
            .jwt_authorities
            .into_iter()
            .map(|k| k.public_key_der)
            .collect()
    };

    // One CA: the same root and JWT key on all, one key of each kind in the token.
    let first = active_x509(a);
    for s in &servers {
        assert_eq!(active_x509(s), first);
    }
    assert!(agree(&ServerProcess::bundle_roots) && agree(&jwks_der));
    assert_eq!(a.bundle_roots().len(), 1);
    assert_eq!(cluster.token_keys("-x509-"), vec![first.clone()]);
    assert_eq!(cluster.token_keys("-jwt-").len(), 1);

    // An SVID from A verifies against C's bundle and one from C against B's.
    let t = now();
    let from_a = a.mint_x509(ID, &dir.join("svid-a"));
    let from_c = c.mint_x509(ID, &dir.join("svid-c"));
    webpki_verify(&from_a, &c.bundle_roots(), t).expect("A's SVID verifies against C's bundle");
    webpki_verify(&from_c, &b.bundle_roots(), t).expect("C's SVID verifies against B's bundle");
    let jwt = a
        .cli_ok(&["jwt", "mint", "--spiffe-id", ID, "--audience", "x"])
        .trim()
        .to_owned();
    verify_jwt_svid(&jwt, &jwks(c), "x", t as i64).expect("A's JWT verifies with C's keys");

    // Prepared: whichever server made the step, the others publish it too.
    wait_until(
        "a prepared key",
        Duration::from_secs(30),
        || cluster.log_tails(),
        || servers.iter().any(|s| s.bundle_roots().len() == 2),
    );
    let seen = Instant::now();
    wait_until(
        "every bundle to agree",
        Duration::from_secs(5),
        || cluster.log_tails(),
        || agree(&ServerProcess::bundle_roots) && agree(&jwks_der),
    );
    eprintln!(
        "every server published the prepared key {:?} after the first",
        seen.elapsed()
    );
    let prepared = a.bundle_roots();
    assert_eq!(prepared.len(), 2, "one new root, not one per server");
    assert_eq!(jwks(a).jwt_authorities.len(), 2);
    // A server that lost the race destroyed its key: the token holds the journal's.
    assert_eq!(cluster.token_keys("-x509-").len(), 2);
    assert_eq!(cluster.token_keys("-jwt-").len(), 2);

    // Activated: all sign with the same new key.
    wait_until(
        "the new key to sign on all",
        Duration::from_secs(15),
        || cluster.log_tails(),
        || {
            let active = active_x509(a);
            active != first && servers.iter().all(|s| active_x509(s) == active)
        },
    );
    let active = active_x509(c);
    assert!(cluster.token_keys("-x509-").contains(&active));
    assert!(agree(&ServerProcess::bundle_roots));
    assert_eq!(c.bundle_roots(), prepared);
    let t = now();
    let new_from_c = c.mint_x509(ID, &dir.join("svid-c2"));
    webpki_verify(&new_from_c, &prepared[1..], t).expect("C signs with the new root");
    webpki_verify(&from_a, &c.bundle_roots(), t).expect("the old root is still published");
    assert_eq!(cluster.token_keys("-x509-").len(), 2);
    assert_eq!(cluster.token_keys("-jwt-").len(), 2);
}
