//! A private OpenBao dev server per test (`bao server -dev`): in memory, plain HTTP on a free
//! loopback port, root token `root`, killed by PID on drop. The binary is `$IRONROOT_BAO`, else
//! the one `scripts/install-deps.sh` installs (`/usr/local/lib/ironroot/bao`), else `bao` on
//! `PATH`. A missing binary skips the test with a notice outside CI and fails it in CI
//! ([`OpenBao::start_or_skip`]).
//!
//! Set-up goes through the real `bao` CLI against the server (`BAO_ADDR`, `BAO_TOKEN`), so the
//! tests configure OpenBao the way an operator would (docs/vault.md).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "root";

/// Where `scripts/install-deps.sh` puts the pinned binary.
pub const INSTALLED_BAO: &str = "/usr/local/lib/ironroot/bao";

/// The `bao` binary: `$IRONROOT_BAO`, the installed one, or `bao` on `PATH`; `None` if none
/// exists.
pub fn bao_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("IRONROOT_BAO") {
        return Some(PathBuf::from(p));
    }
    if Path::new(INSTALLED_BAO).is_file() {
        return Some(PathBuf::from(INSTALLED_BAO));
    }
    crate::on_path("bao").then(|| PathBuf::from("bao"))
}

/// A running `bao server -dev` owned by the test.
pub struct OpenBao {
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    log_dir: PathBuf,
    /// The dev server's single unseal key (read from its log), for [`OpenBao::unseal`].
    unseal_key: String,
    starts: u32,
    /// With `-dev-tls`: the directory of its generated CA and certificate.
    tls_dir: Option<PathBuf>,
}

impl OpenBao {
    /// Starts a dev server, or returns `None` after saying the test is skipped when no `bao`
    /// binary exists (a panic naming the fix in CI, env `CI` set).
    pub fn start_or_skip() -> Option<OpenBao> {
        Self::find_or_skip().map(|bin| OpenBao::start(bin, false))
    }

    /// [`OpenBao::start_or_skip`] with HTTPS (`-dev-tls`): the server's certificate, for
    /// 127.0.0.1 and localhost, is issued by a CA the dev server generates ([`OpenBao::ca_file`]).
    pub fn start_tls_or_skip() -> Option<OpenBao> {
        Self::find_or_skip().map(|bin| OpenBao::start(bin, true))
    }

    fn find_or_skip() -> Option<PathBuf> {
        let Some(bin) = bao_binary() else {
            let problem = format!(
                "no OpenBao binary (set IRONROOT_BAO, or run scripts/install-deps.sh: it \
                 installs {INSTALLED_BAO})"
            );
            if std::env::var_os("CI").is_some() {
                panic!("{problem}");
            }
            crate::python::skipped(&format!("{problem}; in CI this fails"));
            return None;
        };
        Some(bin)
    }

    /// Starts a dev server from `bin` on a free port, over HTTPS when `tls`.
    pub fn start(bin: PathBuf, tls: bool) -> OpenBao {
        let log_dir = crate::test_log_dir(&crate::current_test_name());
        let mut bao = OpenBao {
            bin,
            port: crate::free_port(),
            child: None,
            tls_dir: tls.then(|| log_dir.join("bao-tls")),
            log_dir,
            unseal_key: String::new(),
            starts: 0,
        };
        bao.spawn();
        bao
    }

    fn log_file(&self) -> PathBuf {
        self.log_dir.join(format!("bao-{}.log", self.starts))
    }

    fn spawn(&mut self) {
        self.starts += 1;
        let log = self.log_file();
        let out =
            File::create(&log).unwrap_or_else(|e| panic!("cannot create {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "server",
            "-dev",
            &format!("-dev-root-token-id={ROOT_TOKEN}"),
            &format!("-dev-listen-address=127.0.0.1:{}", self.port),
            "-dev-no-store-token",
        ]);
        if let Some(dir) = &self.tls_dir {
            std::fs::create_dir_all(dir).expect("TLS dir");
            cmd.arg("-dev-tls")
                .arg(format!("-dev-tls-cert-dir={}", dir.display()));
        }
        let child = cmd
            .env_remove("BAO_ADDR")
            .env_remove("VAULT_ADDR")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        self.child = Some(child);
        crate::wait_until(
            "the OpenBao dev server to answer",
            Duration::from_secs(30),
            || crate::tail(&log, 30),
            || {
                // The log says the unseal key after the listener is up: wait for both.
                std::fs::read_to_string(&log).is_ok_and(|t| t.contains("Unseal Key: "))
                    && self
                        .bao_output(&["status", "-format=json"])
                        .is_ok_and(|o| o.status.success())
            },
        );
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        self.unseal_key = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Unseal Key: "))
            .map(|k| k.trim().to_owned())
            .unwrap_or_else(|| panic!("no unseal key in the dev server's log {}", log.display()));
    }

    /// `http://127.0.0.1:<port>` (`https://` with TLS).
    pub fn address(&self) -> String {
        let scheme = if self.tls_dir.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// With TLS: the PEM file of the CA that issued the server's certificate.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls_dir.as_ref().map(|d| d.join("vault-ca.pem"))
    }

    /// The port the server listens on (the same across [`OpenBao::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The `bao` binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.bin
    }

    fn bao_output(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        let mut cmd = Command::new(&self.bin);
        if let Some(ca) = self.ca_file() {
            cmd.env("BAO_CACERT", ca);
        }
        cmd.args(args)
            .env("BAO_ADDR", self.address())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .stdin(Stdio::null())
            .output()
    }

    /// A `bao` CLI command against this server with no token (as a client that has yet to log
    /// in, e.g. a workload): `BAO_ADDR`, and `BAO_CACERT` with TLS, set; nothing else.
    pub fn client_command(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        if let Some(ca) = self.ca_file() {
            cmd.env("BAO_CACERT", ca);
        }
        cmd.env("BAO_ADDR", self.address())
            .env_remove("BAO_TOKEN")
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN");
        cmd
    }

    /// Runs the `bao` CLI as root against this server; panics with its output unless it
    /// succeeds. Its stdout.
    pub fn bao(&self, args: &[&str]) -> String {
        let out = self
            .bao_output(args)
            .unwrap_or_else(|e| panic!("cannot run {} {args:?}: {e}", self.bin.display()));
        assert!(
            out.status.success(),
            "bao {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `bao secrets enable -path=<mount> transit`.
    pub fn enable_transit(&self, mount: &str) {
        self.bao(&["secrets", "enable", &format!("-path={mount}"), "transit"]);
    }

    /// Writes the ACL policy `name` from HCL text.
    pub fn write_policy(&self, name: &str, hcl: &str) {
        let file = self.log_dir.join(format!("policy-{name}.hcl"));
        std::fs::write(&file, hcl).expect("write policy file");
        self.bao(&["policy", "write", name, &file.to_string_lossy()]);
    }

    /// A new renewable token with exactly these policies (not even `default`) and time to
    /// live `ttl` (e.g. "1h").
    pub fn create_token(&self, policies: &[&str], ttl: &str) -> String {
        let mut args = vec![
            "token".to_owned(),
            "create".to_owned(),
            "-field=token".to_owned(),
            "-no-default-policy".to_owned(),
            format!("-ttl={ttl}"),
        ];
        args.extend(policies.iter().map(|p| format!("-policy={p}")));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.bao(&args).trim().to_owned()
    }

    /// Enables AppRole (once per server) and creates `role` with these policies, token time
    /// to live `token_ttl` and at most `token_max_ttl` with renewals; its role ID and a new
    /// secret ID.
    pub fn approle(
        &self,
        role: &str,
        policies: &[&str],
        token_ttl: &str,
        token_max_ttl: &str,
    ) -> (String, String) {
        let listed = self.bao(&["auth", "list", "-format=json"]);
        if !listed.contains("\"approle/\"") {
            self.bao(&["auth", "enable", "approle"]);
        }
        self.bao(&[
            "write",
            &format!("auth/approle/role/{role}"),
            &format!("token_policies={}", policies.join(",")),
            &format!("token_ttl={token_ttl}"),
            &format!("token_max_ttl={token_max_ttl}"),
        ]);
        let role_id = self.bao(&[
            "read",
            "-field=role_id",
            &format!("auth/approle/role/{role}/role-id"),
        ]);
        let secret_id = self.bao(&[
            "write",
            "-f",
            "-field=secret_id",
            &format!("auth/approle/role/{role}/secret-id"),
        ]);
        (role_id.trim().to_owned(), secret_id.trim().to_owned())
    }

    /// `bao operator seal`: every request but health now gets 503 "Vault is sealed".
    pub fn seal(&self) {
        self.bao(&["operator", "seal"]);
    }

    /// Unseals with the dev server's key.
    pub fn unseal(&self) {
        self.bao(&["operator", "unseal", &self.unseal_key]);
    }

    /// Kills the server (SIGKILL by PID) and reaps it: the port stops answering.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait();
        }
    }

    /// Starts a fresh dev server on the same port (a dev server keeps nothing: mounts, keys,
    /// policies and tokens other than root are gone).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}
