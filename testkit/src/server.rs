//! A private SoftHSM token per test, the real server binary as a child
//! process (killed on drop, log kept under target/test-logs/), and the CLI
//! run as a subprocess.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";
pub const TD: &str = "example.org";

pub fn td() -> ironroot_api::spiffe_id::TrustDomain {
    ironroot_api::spiffe_id::TrustDomain::parse(TD).expect("trust domain")
}

/// The server binary cargo built beside the test (`target/debug/ironroot-server`),
/// or `$IRONROOT_SERVER_BIN`.
pub fn server_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONROOT_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    // target/debug/deps/<test> -> target/debug/ironroot-server
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("ironroot-server"))
        .expect("target dir");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace (cargo build --workspace) before this test",
        p.display()
    );
    p
}

pub fn log_dir(test: &str) -> PathBuf {
    crate::test_log_dir(test)
}

/// A SoftHSM2 configuration with its own token directory.
pub struct SoftHsm {
    pub conf: PathBuf,
    pub pin_file: PathBuf,
    pub dir: PathBuf,
}

impl SoftHsm {
    pub fn new(dir: &Path) -> Self {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens).expect("token dir");
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .expect("softhsm conf");
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n")).expect("pin");
        SoftHsm {
            conf,
            pin_file,
            dir: dir.to_owned(),
        }
    }

    pub fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", "12345678", "--pin", PIN])
            .output()
            .expect("softhsm2-util must be installed (scripts/install-deps.sh)");
        assert!(out.status.success(), "init-token: {out:?}");
    }

    pub fn pkcs11_tool(&self, label: &str, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args([
                "--module",
                MODULE,
                "--token-label",
                label,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args)
            .output()
            .expect("pkcs11-tool (opensc) must be installed");
        assert!(out.status.success(), "pkcs11-tool: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// A config for a server on `token` with its data and socket under `dir`.
pub fn server_config(dir: &Path, hsm: &SoftHsm, token: &str, extra: &str) -> PathBuf {
    let path = dir.join("server.toml");
    // Parallel tests must not share the default Node API port.
    let node_api = if extra.contains("[node_api]") {
        String::new()
    } else {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
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

pub struct ServerProcess {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub conf: PathBuf,
}

impl ServerProcess {
    /// The server's PID while it runs (benchmarks read its CPU and RSS).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Starts the server and waits (with a deadline) until its health check answers.
    pub fn start(test: &str, config: &Path, hsm: &SoftHsm, socket: &Path) -> Self {
        let mut s = Self::spawn(test, config, hsm, socket);
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

    /// Starts the server without waiting (for start-up failure tests).
    pub fn spawn(test: &str, config: &Path, hsm: &SoftHsm, socket: &Path) -> Self {
        let log = log_dir(test).join("server.log");
        let logf = std::fs::File::create(&log).expect("log file");
        let child = Command::new(server_bin())
            .args(["run", "-c"])
            .arg(config)
            .env("SOFTHSM2_CONF", &hsm.conf)
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

    pub fn log_tail(&self) -> String {
        let s = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
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

pub fn openssl_verify(ca_file: &Path, untrusted: Option<&Path>, cert: &Path) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(ca_file);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    let out = cmd.arg(cert).output().expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
