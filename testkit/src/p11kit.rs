//! A network HSM that can go away: `p11-kit server` in front of a private SoftHSM token
//! ([`crate::softhsm`]), reached over a unix socket through p11-kit's client module. Real
//! PKCS#11 remoting, so an HSM outage and its end can be tested without a mock
//! (/work/shared/notes/hsm-softhsm.md has what was seen of it).
//!
//! The client side is the module [`CLIENT_MODULE`] with `P11_KIT_SERVER_ADDRESS` set to
//! [`P11KitServer::address`] in the client's environment. `p11-kit server` forks one
//! `p11-kit-remote` per client connection, and killing the listener alone changes nothing for
//! a connected client: [`P11KitServer::cut`] kills the connection's `p11-kit-remote` children
//! by PID, then the listener (every call of the client then fails with CKR_DEVICE_ERROR, and
//! it cannot open sessions again until it is re-initialised), and [`P11KitServer::restore`]
//! starts a listener on the same socket ("the HSM is back").

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::softhsm::{SoftHsm, MODULE};
use crate::INSTALL_HINT;

/// p11-kit's client module on Debian (package `p11-kit-modules`).
pub const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// The variable that tells [`CLIENT_MODULE`] where the server listens.
pub const ADDRESS_ENV: &str = "P11_KIT_SERVER_ADDRESS";

/// `p11-kit server` exporting one token of a [`SoftHsm`] on a unix socket. Killed (with its
/// `p11-kit-remote` children) on drop.
#[derive(Debug)]
pub struct P11KitServer {
    socket: PathBuf,
    softhsm_conf: PathBuf,
    token: String,
    log: PathBuf,
    child: Option<Child>,
}

impl P11KitServer {
    /// Exports `token` of `hsm` on `hsm.dir/p11.sock` and waits until the socket accepts
    /// connections. Its log goes to `target/test-logs/<test>/p11-kit-server.log`.
    pub fn start(test: &str, hsm: &SoftHsm, token: &str) -> Self {
        assert!(
            Path::new(CLIENT_MODULE).is_file(),
            "{CLIENT_MODULE} is missing (package p11-kit-modules; {INSTALL_HINT})"
        );
        let mut server = P11KitServer {
            socket: hsm.dir.join("p11.sock"),
            softhsm_conf: hsm.conf.clone(),
            token: token.to_owned(),
            log: crate::test_log_dir(test).join("p11-kit-server.log"),
            child: None,
        };
        server.restore();
        server
    }

    /// A server (`ironroot-server run`) on this remoted token, its config (with `extra`
    /// TOML), data and admin socket under `dir`, its log under `test`'s log dir; started and
    /// answering.
    pub fn start_server(
        &self,
        test: &str,
        dir: &Path,
        hsm: &SoftHsm,
        extra: &str,
    ) -> crate::server::ServerProcess {
        let conf = crate::server::server_config(dir, hsm, "ca", extra);
        let text = std::fs::read_to_string(&conf)
            .unwrap_or_else(|e| panic!("{}: {e}", conf.display()))
            .replace(MODULE, CLIENT_MODULE);
        std::fs::write(&conf, text).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        crate::server::ServerProcess::start_with_env(
            test,
            &conf,
            hsm,
            &dir.join("admin.sock"),
            &[(ADDRESS_ENV, self.address())],
        )
    }

    /// The socket's address as the client module wants it in [`ADDRESS_ENV`].
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// Points this process's [`ADDRESS_ENV`] at this server, for tests that load
    /// [`CLIENT_MODULE`] themselves. Only sound with one test per process (nextest), like
    /// [`SoftHsm::use_in_this_process`].
    pub fn use_in_this_process(&self) {
        assert!(
            std::env::var_os("NEXTEST").is_some()
                || std::env::var("RUST_TEST_THREADS").as_deref() == Ok("1"),
            "this test sets {ADDRESS_ENV} for its process: run it with `cargo nextest run`"
        );
        // Edition 2021: set_var is safe; the test calls this before it starts any thread.
        std::env::set_var(ADDRESS_ENV, self.address());
    }

    /// The HSM goes away: kills every `p11-kit-remote` serving a client (by PID), then the
    /// listener, and removes the socket. Nothing when it is already down.
    pub fn cut(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        for pid in children_of(child.id()) {
            kill(pid);
        }
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }

    /// The HSM is back: a new listener on the same socket path; waits until it accepts
    /// connections. Nothing when it is already up.
    pub fn restore(&mut self) {
        if self.child.is_some() {
            return;
        }
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("{}: {e}", self.log.display()));
        let child = Command::new("p11-kit")
            .args(["server", "-f", "-n"])
            .arg(&self.socket)
            .args(["--provider", MODULE])
            .arg(format!("pkcs11:token={}", self.token))
            .env("SOFTHSM2_CONF", &self.softhsm_conf)
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run p11-kit (package p11-kit; {INSTALL_HINT}): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "p11-kit server exited ({status}):\n{}",
                    crate::tail(&self.log, 20)
                );
            }
            assert!(
                Instant::now() < deadline,
                "p11-kit server did not listen on {}:\n{}",
                self.socket.display(),
                crate::tail(&self.log, 20)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// PIDs of the `p11-kit-remote` processes serving clients now (one per connection).
    pub fn remote_pids(&self) -> Vec<u32> {
        self.child
            .as_ref()
            .map(|c| children_of(c.id()))
            .unwrap_or_default()
    }
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        self.cut();
    }
}

/// The processes whose parent is `parent`, from `/proc/*/stat`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                // "pid (comm) state ppid ...": comm may hold spaces, so split after ')'.
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                })
                == Some(parent)
        })
        .collect()
}

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}
