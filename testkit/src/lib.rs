//! Test support for ironroot: real components run per test.
//!
//! Every helper here owns the processes it starts and kills them **by PID** when dropped
//! (also when the test panics; swtpm on the container backend: removes its container), waits
//! for readiness by polling with a deadline, and keeps the child's log under
//! `target/test-logs/<test name>/`. A missing system package is a failure that names the fix
//! (`scripts/install-deps.sh`), never a silent skip (outside CI, the few tests that need
//! optional inputs say plainly that they did not run).
//!
//! Only a dev-dependency: nothing here is meant for production code.
//!
//! # What lives where
//!
//! Here: everything that starts or owns a real component, or finds one on the machine, so
//! that each exists once for the whole workspace:
//!
//! - [`swtpm`]: a manufactured TPM shared read-only, a swtpm per test (process or container);
//!   [`tpm2_tools`]: a swtpm driven with tpm2-tools, and tpm2-tools' credential files;
//! - [`softhsm`]: a private SoftHSM2 installation and its tokens; [`p11kit`]: one of its
//!   tokens behind `p11-kit server`, a network HSM that a test can cut off and bring back;
//! - [`server`]: the real server binary per test, its admin CLI, and a server with the Node
//!   API as agents attest to it; [`cluster`]: several servers of one trust domain on one
//!   database and one token; [`agent`]: the real agent binary (`ironroot-agent run`);
//! - [`podman`]: a private rootful podman service, cached image stores, and test containers
//!   and pods ([`podman::workloads`]); [`cgroup`]: cgroups of a test's own;
//! - [`kube`]: a Kubernetes API server and kubelet stand-in (HTTPS, test CA, real JSON);
//! - [`postgres`]: a private PostgreSQL per test (initdb/pg_ctl as `postgres`, unix socket only);
//! - [`openbao`]: a private OpenBao dev server per test (`bao server -dev`, driven by its CLI);
//! - [`python`]: the Python venv with the gRPC clients;
//! - [`fixtures`]: the shared firmware event-log fixtures; [`shared_bin`]: a copy of a binary
//!   other uids can run; [`svid`]: independent checks of X.509-SVIDs (rustls-webpki, openssl);
//! - this module: free ports, log dirs, log tails, binaries beside the test, commands that
//!   must succeed.
//!
//! In each crate's single integration-test binary (`<crate>/tests/it/`): scenario helpers that
//! drive that crate's own internals, which this crate cannot name without depending on the
//! crate under test (a dev-dependency cycle gives the test two copies of every type):
//! the agent's attestation set-ups and workload-attestor fixtures (`ironroot_agent::attest`,
//! `workload::caller`), the TPM device rig (`ironroot_tpm::device::Tpm`), the HSM tests'
//! `Pkcs11Config` and raw cryptoki checks. They build on the helpers here.
#![warn(missing_docs)]

pub mod agent;
pub mod bench;
pub mod certs;
pub mod cgroup;
pub mod cloud_metadata;
pub mod cluster;
pub mod fixtures;
pub mod key_endpoint;
pub mod kube;
pub mod openbao;
pub mod p11kit;
pub mod podman;
pub mod postgres;
pub mod python;
pub mod server;
pub mod shared_bin;
pub mod softhsm;
pub mod svid;
pub mod swtpm;
pub mod tpm2_tools;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub(crate) const INSTALL_HINT: &str = "install it with scripts/install-deps.sh";

/// The cargo target dir of the running test binary: `$CARGO_TARGET_DIR`, else the ancestor of
/// the test executable that holds cargo's `CACHEDIR.TAG`, else the system temp dir.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
            return dir.to_path_buf();
        }
    }
    std::env::temp_dir()
}

/// Polls `f` every 50 ms until it holds; past `within`, panics naming `what` with
/// `context()` (the logs of whatever was waited on).
pub fn wait_until(
    what: &str,
    within: std::time::Duration,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) {
    let deadline = std::time::Instant::now() + within;
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// `target/test-logs/<name>/`, created. `name` is made filesystem-safe.
pub fn test_log_dir(name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = target_dir().join("test-logs").join(safe);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create test log dir {}: {e}", dir.display());
    }
    dir
}

/// The current test's name as libtest (and nextest) set it on the test thread, or a
/// process-unique fallback.
pub fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => format!("pid-{}", std::process::id()),
    }
}

/// The last `n` lines of a log file (or why it cannot be read).
pub fn tail(p: &Path, n: usize) -> String {
    match std::fs::read(p) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}

/// A loopback TCP port free when asked (bound to port 0, then released), for a child
/// process to listen on.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"))
}

/// The page a Prometheus endpoint on loopback `port` answers to `GET /metrics`, status
/// line and headers included. Panics when it cannot be read.
pub fn metrics_page(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))
        .unwrap_or_else(|e| panic!("metrics endpoint on port {port}: {e}"));
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("read timeout");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .unwrap_or_else(|e| panic!("metrics endpoint on port {port}: {e}"));
    let mut page = String::new();
    s.read_to_string(&mut page)
        .unwrap_or_else(|e| panic!("metrics endpoint on port {port}: {e}"));
    page
}

/// A binary of the workspace that cargo built beside the running test or bench
/// (`target/<profile>/deps/<test>` → `target/<profile>/<name>`), or the path in the
/// environment variable `env`. Panics, naming the fix, when it is missing.
pub fn workspace_bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join(name))
        .expect("target dir");
    assert!(
        p.is_file(),
        "{} is missing: build the workspace (cargo build --workspace; for benches, \
         cargo build --release -p ironroot-server -p ironroot-agent) or set {env}",
        p.display()
    );
    p
}

/// Runs `cmd`, panicking with its output unless it succeeds; its stdout and stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({INSTALL_HINT}): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

/// Whether `tool` is a file in a directory of `PATH`.
pub(crate) fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        .unwrap_or(false)
}
