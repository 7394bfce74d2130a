//! The real server binary as a child process per test: its config on a private SoftHSM
//! token ([`crate::softhsm`]), killed on drop, its log under `target/test-logs/<test>/`; the
//! admin CLI run as a subprocess against it; and [`NodeApiServer`], a server with the Node
//! API and the TPM attestors as agents attest to it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::softhsm::{SoftHsm, MODULE};

/// The trust domain of every test server.
pub const TD: &str = "example.org";

/// [`TD`] parsed.
pub fn td() -> ironroot_api::spiffe_id::TrustDomain {
    ironroot_api::spiffe_id::TrustDomain::parse(TD).expect("trust domain")
}

/// The server binary cargo built beside the test (`target/debug/ironroot-server`), or
/// `$IRONROOT_SERVER_BIN` ([`crate::workspace_bin`]).
pub fn server_bin() -> PathBuf {
    crate::workspace_bin("ironroot-server", "IRONROOT_SERVER_BIN")
}

/// A server of trust domain `td` (not [`TD`]) on a new SoftHSM token under `dir`, with
/// `extra` TOML: one side of a federation test.
pub fn start_trust_domain(
    test: &str,
    dir: &Path,
    td: &str,
    extra: &str,
) -> (SoftHsm, ServerProcess) {
    let hsm = SoftHsm::new(&dir.join("hsm"));
    hsm.init_token("ca");
    let conf = server_config(dir, &hsm, "ca", extra);
    let text = std::fs::read_to_string(&conf)
        .expect("server config")
        .replace(
            &format!("trust_domain = \"{TD}\""),
            &format!("trust_domain = \"{td}\""),
        );
    std::fs::write(&conf, text).expect("server config");
    let server = ServerProcess::start(test, &conf, &hsm, &dir.join("admin.sock"));
    (hsm, server)
}

/// A config for a server on `token` with its data and socket under `dir`.
pub fn server_config(dir: &Path, hsm: &SoftHsm, token: &str, extra: &str) -> PathBuf {
    let path = dir.join("server.toml");
    // Parallel tests must not share the default Node API port.
    let node_api = if extra.contains("[node_api]") {
        String::new()
    } else {
        let port = crate::free_port();
        format!("[node_api]\nlisten = \"127.0.0.1:{port}\"\n")
    };
    let text = format!(
        r#"trust_domain = "{TD}"
data_dir = "{data}"
log_level = "info"

[admin]
socket_path = "{sock}"

[key_manager.pkcs11]
module = "{MODULE}"
token_label = "{token}"
pin_file = "{pin}"

{node_api}
{extra}
"#,
        data = dir.join("data").display(),
        sock = dir.join("admin.sock").display(),
        pin = hsm.pin_file.display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// A config for a server whose CA keys live in the transit engine at `address` (plain http:
/// a test's dev server, `insecure_http = true`), authenticated with the token in `token_file`,
/// with its data and socket under `dir`.
pub fn transit_server_config(dir: &Path, address: &str, token_file: &Path, extra: &str) -> PathBuf {
    let path = dir.join("server.toml");
    let port = crate::free_port();
    let text = format!(
        r#"trust_domain = "{TD}"
data_dir = "{data}"
log_level = "info"

[admin]
socket_path = "{sock}"

[key_manager.transit]
address = "{address}"
insecure_http = true
token_file = "{token}"

[node_api]
listen = "127.0.0.1:{port}"

{extra}
"#,
        data = dir.join("data").display(),
        sock = dir.join("admin.sock").display(),
        token = token_file.display(),
    );
    std::fs::write(&path, text).expect("config");
    path
}

/// `ironroot-server run` as a child process: SIGTERM, then SIGKILL, on [`stop`](Self::stop)
/// and on drop.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    /// The admin API socket.
    pub socket: PathBuf,
    /// The server's log (stdout and stderr), `target/test-logs/<test>/server.log`.
    pub log: PathBuf,
    /// The config file it runs with.
    pub conf: PathBuf,
}

impl ServerProcess {
    /// The server's PID while it runs (benchmarks read its CPU and RSS).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the server and waits (with a deadline) until its health check answers.
    pub fn start(test: &str, config: &Path, hsm: &SoftHsm, socket: &Path) -> Self {
        Self::start_with_env(test, config, hsm, socket, &[])
    }

    /// [`start`](Self::start) with `env` (name, value) added to the server's environment, e.g.
    /// [`crate::p11kit::ADDRESS_ENV`] for a server on [`crate::p11kit::CLIENT_MODULE`].
    pub fn start_with_env(
        test: &str,
        config: &Path,
        hsm: &SoftHsm,
        socket: &Path,
        env: &[(&str, String)],
    ) -> Self {
        Self::spawn_with_env(test, config, hsm, socket, env).wait_ready()
    }

    /// Starts a server whose config names no PKCS#11 token (e.g. `[key_manager.transit]`,
    /// see [`transit_server_config`]) and waits until its health check answers.
    pub fn start_without_hsm(test: &str, config: &Path, socket: &Path) -> Self {
        Self::spawn_process(test, config, None, socket, &[]).wait_ready()
    }

    fn wait_ready(self) -> Self {
        let mut s = self;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = s.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "server exited during start-up ({status}):\n{}",
                    s.log_tail()
                );
            }
            if s.cli(&["healthcheck"]).status.success() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready:\n{}",
                s.log_tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A SoftHSM installation with token `ca` under `dir/hsm`, and a server on it with its
    /// config (plus `extra` TOML), data and admin socket under `dir`, started as
    /// [`start`](Self::start) does.
    pub fn start_on_new_token(test: &str, dir: &Path, extra: &str) -> (SoftHsm, ServerProcess) {
        let hsm = SoftHsm::new(&dir.join("hsm"));
        hsm.init_token("ca");
        let conf = server_config(dir, &hsm, "ca", extra);
        let server = ServerProcess::start(test, &conf, &hsm, &dir.join("admin.sock"));
        (hsm, server)
    }

    /// Starts the server without waiting (for start-up failure tests).
    pub fn spawn(test: &str, config: &Path, hsm: &SoftHsm, socket: &Path) -> Self {
        Self::spawn_with_env(test, config, hsm, socket, &[])
    }

    /// [`spawn`](Self::spawn) with `env` (name, value) added to the server's environment.
    pub fn spawn_with_env(
        test: &str,
        config: &Path,
        hsm: &SoftHsm,
        socket: &Path,
        env: &[(&str, String)],
    ) -> Self {
        Self::spawn_process(test, config, Some(&hsm.conf), socket, env)
    }

    fn spawn_process(
        test: &str,
        config: &Path,
        softhsm_conf: Option<&Path>,
        socket: &Path,
        env: &[(&str, String)],
    ) -> Self {
        let log = crate::test_log_dir(test).join("server.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(server_bin());
        if let Some(conf) = softhsm_conf {
            cmd.env("SOFTHSM2_CONF", conf);
        }
        let child = cmd
            .args(["run", "-c"])
            .arg(config)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // plain text: tests read the log
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(logf.try_clone().expect("log")))
            .stderr(Stdio::from(logf))
            .spawn()
            .expect("spawn server");
        ServerProcess {
            child: Some(child),
            socket: socket.to_owned(),
            log,
            conf: config.to_owned(),
        }
    }

    /// Waits for the server to exit by itself; returns its status and log.
    pub fn wait_exit(&mut self, within: Duration) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + within;
        let child = self.child.as_mut().expect("child");
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                return (st, log);
            }
            assert!(
                Instant::now() < deadline,
                "server did not exit:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The last 40 lines of the server's log.
    pub fn log_tail(&self) -> String {
        crate::tail(&self.log, 40)
    }

    /// Runs an admin CLI verb against this server (the socket flag goes
    /// after the subcommand words).
    pub fn cli(&self, args: &[&str]) -> Output {
        let words = if args.first() == Some(&"healthcheck") {
            1
        } else {
            2
        };
        let (verb, rest) = args.split_at(words.min(args.len()));
        Command::new(server_bin())
            .args(verb)
            .arg("-s")
            .arg(&self.socket)
            .args(rest)
            .output()
            .expect("run cli")
    }

    /// The trust bundle's X.509 authorities (`bundle show`), as DER.
    pub fn bundle_roots(&self) -> Vec<Vec<u8>> {
        pem_ders(&self.cli_ok(&["bundle", "show"]))
    }

    /// An X.509-SVID for `spiffe_id` (`x509 mint --write DIR`): its chain as DER, leaf first.
    pub fn mint_x509(&self, spiffe_id: &str, dir: &Path) -> Vec<Vec<u8>> {
        let dir_arg = dir.to_str().expect("UTF-8 path");
        self.cli_ok(&["x509", "mint", "--spiffe-id", spiffe_id, "--write", dir_arg]);
        let pem = dir.join("svid.pem");
        pem_ders(
            &std::fs::read_to_string(&pem).unwrap_or_else(|e| panic!("{}: {e}", pem.display())),
        )
    }

    /// `healthcheck --output json`, parsed.
    pub fn health(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli_ok(&["healthcheck", "--output", "json"]))
            .expect("healthcheck prints JSON")
    }

    /// A fresh single-use join token (`token generate`).
    pub fn join_token(&self) -> String {
        let out = self.cli_ok(&["token", "generate", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("token generate prints JSON");
        v["token"]
            .as_str()
            .expect("token generate prints a token")
            .to_owned()
    }

    /// Stores the federated bundle of `trust_domain` from the PEM roots in `pem`
    /// (`bundle set --format pem`), as an operator's bootstrap does.
    pub fn set_federated_bundle_pem(&self, trust_domain: &str, pem: &Path) -> String {
        self.cli_ok(&[
            "bundle",
            "set",
            "--id",
            trust_domain,
            "--path",
            pem.to_str().expect("a UTF-8 path"),
            "--format",
            "pem",
        ])
    }

    /// Runs a CLI verb that must succeed; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "`{}` failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills the server with SIGKILL, as a crash would (no clean shutdown, connections
    /// reset), and reaps it; nothing when it is gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stops the server (SIGTERM, SIGKILL after 10 s) and reaps it; nothing when it is gone.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM for a clean stop, then make sure.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// CERTIFICATE blocks of a PEM text, as DER.
pub fn pem_ders(text: &str) -> Vec<Vec<u8>> {
    pem::parse_many(text)
        .expect("pem")
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| p.into_contents())
        .collect()
}

/// A running server on its own SoftHSM token (`ca`) with the Node API on a free loopback port
/// and the TPM node attestors, as agents attest to it: what the agent's tests and benches
/// start. Fields drop in order: the server stops before its directory goes.
#[derive(Debug)]
pub struct NodeApiServer {
    /// The server process.
    pub server: ServerProcess,
    /// Its SoftHSM installation (under `dir`).
    pub hsm: SoftHsm,
    /// The Node API address (`127.0.0.1:PORT`), an agent's `server_address`.
    pub address: String,
    /// The server's trust bundle (PEM), an agent's `trust_bundle_path`.
    pub bundle: PathBuf,
    /// The `policies_dir` of `[node_attestors.tpm]`.
    pub policies: PathBuf,
    /// The directory holding the server's config, data, token and sockets; agents' files may
    /// go here too.
    pub dir: tempfile::TempDir,
}

impl NodeApiServer {
    /// Starts a server whose `[node_attestors.tpm]` section is `policies_dir` plus
    /// `tpm_section` (TOML lines, e.g. `ek_ca_bundle = "…"`), with `policies` (name, TOML)
    /// written into its policies dir and `node_api_extra` (TOML lines, e.g.
    /// `agent_svid_ttl = "8s"`) added to its `[node_api]` section. Waits until it answers;
    /// its log goes to `target/test-logs/<test>/server.log`.
    pub fn start(
        test: &str,
        tpm_section: &str,
        policies: &[(&str, String)],
        node_api_extra: &str,
    ) -> NodeApiServer {
        Self::start_with_attestors(test, tpm_section, policies, node_api_extra, "")
    }

    /// [`start`](Self::start) with `attestor_sections` (TOML tables, e.g.
    /// `[node_attestors.k8s_psat.clusters.c]` and its options) added to the configuration.
    pub fn start_with_attestors(
        test: &str,
        tpm_section: &str,
        policies: &[(&str, String)],
        node_api_extra: &str,
        attestor_sections: &str,
    ) -> NodeApiServer {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let hsm = SoftHsm::new(&dir.path().join("hsm"));
        hsm.init_token("ca");
        let pdir = dir.path().join("policies");
        std::fs::create_dir_all(&pdir).unwrap_or_else(|e| panic!("{}: {e}", pdir.display()));
        for (name, text) in policies {
            let p = pdir.join(format!("{name}.toml"));
            std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        }
        let port = crate::free_port();
        let extra = format!(
            "[node_api]\nlisten = \"127.0.0.1:{port}\"\n{node_api_extra}\n\n\
             [node_attestors.tpm]\npolicies_dir = \"{}\"\n{tpm_section}\n\n{attestor_sections}\n",
            pdir.display()
        );
        let conf = server_config(dir.path(), &hsm, "ca", &extra);
        let server = ServerProcess::start(test, &conf, &hsm, &dir.path().join("admin.sock"));
        let bundle = dir.path().join("bootstrap-bundle.pem");
        std::fs::write(&bundle, server.cli_ok(&["bundle", "show"]))
            .unwrap_or_else(|e| panic!("{}: {e}", bundle.display()));
        NodeApiServer {
            server,
            hsm,
            address: format!("127.0.0.1:{port}"),
            bundle,
            policies: pdir,
            dir,
        }
    }
}
