//! The server reaches PostgreSQL over TLS (`[store] tls_ca_file`): the database's certificate
//! is verified against the operator's CA and the name the server dialled, with no fallback to
//! the clear. A private PostgreSQL with `ssl = on` and a `pg_hba.conf` that rejects TCP
//! without TLS; its certificate comes from a CA made with openssl.

use std::time::Duration;

use ironroot_testkit::certs;
use ironroot_testkit::postgres::{Postgres, PostgresOptions};
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;

fn tls_postgres() -> Postgres {
    let pg = Postgres::start_with(PostgresOptions {
        tls: true,
        ..Default::default()
    });
    pg.create_database("ironroot");
    pg
}

fn store(url: &str, ca: &std::path::Path) -> String {
    format!(
        "[store]\nkind = \"postgres\"\nurl = \"{url}\"\ntls_ca_file = \"{}\"\nconnect_timeout = \"3s\"\n",
        ca.display()
    )
}

/// Starts a server on a fresh token with `store`; returns its exit status and log if it
/// fails to start within the deadline, `None` (and the server) if it answers.
fn start(test: &str, dir: &std::path::Path, store: &str) -> (SoftHsm, ServerProcess) {
    let hsm = SoftHsm::new(&dir.join("hsm"));
    hsm.init_token("ca");
    let conf = server_config(dir, &hsm, "ca", store);
    let server = ServerProcess::spawn(test, &conf, &hsm, &dir.join("admin.sock"));
    (hsm, server)
}

#[test]
fn the_server_reaches_postgres_over_verified_tls() {
    let pg = tls_postgres();
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let conf = server_config(
        dir.path(),
        &hsm,
        "ca",
        &store(&pg.tcp_url("ironroot"), pg.tls_ca()),
    );
    let server = ServerProcess::start(
        "pg_tls_verified",
        &conf,
        &hsm,
        &dir.path().join("admin.sock"),
    );
    server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        "spiffe://example.org/spire/agent/tpm/node1",
        "--selector",
        "unix:uid:1000",
    ]);
    assert_eq!(pg.psql("ironroot", "SELECT count(*) FROM entries"), "1");
    // Every connection of the server (the pool's and the feed listener's) is over TLS.
    let sessions = pg.psql(
        "ironroot",
        "SELECT count(*) FILTER (WHERE s.ssl) || '/' || count(*) \
         FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
         WHERE a.application_name = 'ironroot-server'",
    );
    let (tls, all) = sessions.split_once('/').unwrap();
    assert_eq!(tls, all, "{sessions} of the server's sessions use TLS");
    assert!(
        all.parse::<u32>().unwrap() >= 2,
        "pool and listener: {sessions}"
    );
}

/// The refusals: a certificate from another CA, and a name the certificate does not carry.
#[test]
fn a_database_that_does_not_prove_itself_is_refused() {
    let pg = tls_postgres();
    let dir = tempfile::tempdir().unwrap();
    let other = certs::ca(dir.path(), "another-ca");
    let cases = [
        (
            "pg_tls_wrong_ca",
            store(&pg.tcp_url("ironroot"), &other.cert),
            "invalid peer certificate: UnknownIssuer",
        ),
        (
            "pg_tls_wrong_name",
            // Dial 127.0.0.1 but expect the certificate to name db.example.org.
            store(
                &pg.tcp_url("ironroot")
                    .replace("host=localhost", "host=db.example.org hostaddr=127.0.0.1"),
                pg.tls_ca(),
            ),
            "certificate not valid for name \"db.example.org\"",
        ),
    ];
    for (test, store, why) in cases {
        let sdir = dir.path().join(test);
        std::fs::create_dir_all(&sdir).unwrap();
        let (_hsm, mut server) = start(test, &sdir, &store);
        let (status, log) = server.wait_exit(Duration::from_secs(60));
        assert!(!status.success(), "{test}: the server started");
        assert!(
            log.contains(why),
            "{test}: the log does not say {why}:\n{log}"
        );
    }
    // No row was written by either.
    assert_eq!(
        pg.psql(
            "ironroot",
            "SELECT count(*) FROM information_schema.tables WHERE table_name = 'entries'"
        ),
        "0"
    );
}
