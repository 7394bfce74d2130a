//! The server a case's guests attest to: the fixture's CA (SoftHSM token and data dir,
//! copied), on the port baked into the image.

use std::path::{Path, PathBuf};

use ironroot_testkit::server::{ServerProcess, TD};
use ironroot_testkit::softhsm::{SoftHsm, MODULE};

use crate::guest::copy_dir;
use crate::wait::tail;
use crate::Case;

/// The token label of the fixture's CA keys.
pub(crate) const TOKEN: &str = "edge";

pub struct EdgeServer {
    pub process: ServerProcess,
    pub dir: PathBuf,
    /// The admin socket's directory: short, since a unix socket path must fit in
    /// sun_path (108 bytes) and the run's directory may be deep.
    _sockets: tempfile::TempDir,
}

impl EdgeServer {
    /// A copy of the fixture's server state under `case.dir/server`, started.
    pub fn start(case: &Case, default_policy: &str, tpm_extra: &str, node_api_extra: &str) -> Self {
        let f = case.fixture;
        let dir = case.dir.join("server");
        let hsm = SoftHsm::new(&dir.join("hsm"));
        copy_dir(
            &f.server_template.join("hsm/tokens"),
            &hsm.dir.join("tokens"),
        );
        copy_dir(&f.server_template.join("data"), &dir.join("data"));
        Self::start_in(
            &dir,
            &hsm,
            f,
            default_policy,
            tpm_extra,
            node_api_extra,
            &case.name,
        )
    }

    /// Starts a server on the state in `dir` (the fixture's, or a case's copy).
    pub(crate) fn start_in(
        dir: &Path,
        hsm: &SoftHsm,
        f: &crate::Fixture,
        default_policy: &str,
        tpm_extra: &str,
        node_api_extra: &str,
        log_name: &str,
    ) -> Self {
        let policy = if default_policy.is_empty() {
            String::new()
        } else {
            format!("default_policy = \"{default_policy}\"\n")
        };
        let extra = format!(
            "[node_api]\nlisten = \"127.0.0.1:{port}\"\n{node_api_extra}\n\
             [node_attestors.tpm]\nek_ca_bundle = \"{ek_ca}\"\npolicies_dir = \"{policies}\"\n\
             devid_issuer = true\n{policy}{tpm_extra}\n",
            port = f.port,
            ek_ca = f.tpm_template.join("ek-ca.pem").display(),
            policies = f.policies_dir.display(),
        );
        let sockets = tempfile::Builder::new()
            .prefix("ironroot-qemu-")
            .tempdir()
            .expect("socket dir");
        let socket = sockets.path().join("admin.sock");
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "trust_domain = \"{TD}\"\ndata_dir = \"{data}\"\nlog_level = \"info\"\n\n\
                 [admin]\nsocket_path = \"{sock}\"\n\n\
                 [key_manager.pkcs11]\nmodule = \"{MODULE}\"\ntoken_label = \"{TOKEN}\"\n\
                 pin_file = \"{pin}\"\n\n{extra}",
                data = dir.join("data").display(),
                sock = socket.display(),
                pin = hsm.pin_file.display(),
            ),
        )
        .expect("server.toml");
        let process =
            ServerProcess::start(&format!("qemu-tests-{log_name}"), &config, hsm, &socket);
        EdgeServer {
            process,
            dir: dir.into(),
            _sockets: sockets,
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.process.log).unwrap_or_default()
    }

    /// The reasons of every rejected node attestation so far, in order.
    pub fn rejections(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("node attestation rejected"))
            .map(str::to_owned)
            .collect()
    }

    /// The log lines of every accepted node attestation so far, in order.
    pub fn attestations(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("node attested"))
            .map(str::to_owned)
            .collect()
    }

    /// `agent list --output json`: the attested agents.
    pub fn agents(&self) -> Vec<serde_json::Value> {
        let out = self.process.cli_ok(&["agent", "list", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("agent list is not JSON ({e}): {out}"));
        v["agents"].as_array().cloned().unwrap_or_default()
    }

    /// Registers `spiffe_id` for uid 0 under `parent` (an agent ID).
    pub fn register_root_workload(&self, spiffe_id: &str, parent: &str, x509_ttl: u32) {
        self.process.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            spiffe_id,
            "--parent-id",
            parent,
            "--selector",
            "unix:uid:0",
            "--x509-svid-ttl",
            &x509_ttl.to_string(),
        ]);
    }

    /// The trust bundle (`bundle show`), PEM.
    pub fn bundle_pem(&self) -> String {
        self.process.cli_ok(&["bundle", "show"])
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.process.log, 30)
    }
}

impl Drop for EdgeServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
