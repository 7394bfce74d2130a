//! Several real servers of one trust domain, as a high-availability deployment runs them:
//! one private PostgreSQL database ([`crate::postgres`]), one SoftHSM token (one token
//! directory every server process opens: SoftHSM's file store is shared between processes),
//! and each server with its own data dir, admin socket and Node API port.

use std::path::PathBuf;

use crate::postgres::Postgres;
use crate::server::{server_config, ServerProcess};
use crate::softhsm::SoftHsm;

/// The servers of a [`ServerCluster`]: its Node API addresses, logs and bundle. Fields drop
/// in order: the servers stop before the database and the token go.
pub struct ServerCluster {
    /// The server processes, in start order.
    pub servers: Vec<ServerProcess>,
    /// Their Node API addresses (`127.0.0.1:PORT`), in the same order: an agent's
    /// `server_addresses`.
    pub addresses: Vec<String>,
    /// The trust bundle (PEM) as the first server published it at start: an agent's
    /// `trust_bundle_path`.
    pub bundle: PathBuf,
    /// The shared token (label `ca`).
    pub hsm: SoftHsm,
    /// The shared database server.
    pub postgres: Postgres,
    /// Configs, data dirs, sockets, the token; agents' files may go here too.
    pub dir: tempfile::TempDir,
}

impl ServerCluster {
    /// Starts one server per item of `extras` (its TOML sections other than `[store]` and
    /// `[node_api]`), one after the other (each waits until it answers), on one new database
    /// and one new token; every `[node_api]` gets `node_api_extra` (TOML lines). Server `i`'s
    /// log is `target/test-logs/<test>.server-<i>/server.log`.
    pub fn start(test: &str, extras: &[&str], node_api_extra: &str) -> ServerCluster {
        let n = extras.len();
        let postgres = Postgres::start();
        postgres.create_database("ironroot");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let hsm = SoftHsm::new(&dir.path().join("hsm"));
        hsm.init_token("ca");
        let mut servers = Vec::with_capacity(n);
        let mut addresses = Vec::with_capacity(n);
        for (i, extra) in extras.iter().enumerate() {
            let sdir = dir.path().join(format!("server-{i}"));
            std::fs::create_dir_all(&sdir).unwrap_or_else(|e| panic!("{}: {e}", sdir.display()));
            let address = format!("127.0.0.1:{}", crate::free_port());
            let toml = format!(
                "[store]\nkind = \"postgres\"\nurl = \"{}\"\n\n\
                 [node_api]\nlisten = \"{address}\"\n{node_api_extra}\n\n{extra}\n",
                postgres.url("ironroot")
            );
            let conf = server_config(&sdir, &hsm, "ca", &toml);
            servers.push(ServerProcess::start(
                &format!("{test}.server-{i}"),
                &conf,
                &hsm,
                &sdir.join("admin.sock"),
            ));
            addresses.push(address);
        }
        let bundle = dir.path().join("bootstrap-bundle.pem");
        if let Some(first) = servers.first() {
            std::fs::write(&bundle, first.cli_ok(&["bundle", "show"]))
                .unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
        }
        ServerCluster {
            servers,
            addresses,
            bundle,
            hsm,
            postgres,
            dir,
        }
    }

    /// The labels of the private keys in the shared token whose label contains `kind`
    /// (`"-x509-"`, `"-jwt-"`).
    pub fn token_keys(&self, kind: &str) -> Vec<String> {
        self.hsm
            .pkcs11_tool("ca", &["--list-objects", "--type", "privkey"])
            .lines()
            .filter_map(|l| l.trim().strip_prefix("label:"))
            .map(|l| l.trim().to_owned())
            .filter(|l| l.contains(kind))
            .collect()
    }

    /// The last 40 lines of every server's log, headed by its index.
    pub fn log_tails(&self) -> String {
        self.servers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("--- server {i} ---\n{}\n", s.log_tail()))
            .collect()
    }
}
