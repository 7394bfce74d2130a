//! A software TPM (swtpm) per test, with a real EK certificate from a private local CA.
//!
//! Manufacturing a TPM (`swtpm_setup` with certificates) takes about a second, so
//! [`SwtpmState::shared`] does it once and every test copies the result
//! ([`SwtpmState::spawn`]): parallel tests never share a running TPM.
//!
//! ```no_run
//! use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};
//! let state = SwtpmState::shared("default", &SwtpmOptions::default());
//! let tpm = state.spawn(); // own state copy, own ports; killed on drop
//! let tcti = tpm.tcti(); // "swtpm:host=127.0.0.1,port=N"
//! ```
//!
//! # Backends
//!
//! Where swtpm runs is chosen once per test process by `IRONROOT_SWTPM_BACKEND`
//! ([`backend`]):
//!
//! - `process` (the default): `swtpm socket --daemon`, a process of the host, killed by PID on
//!   drop.
//! - `container`: swtpm in a container started through testcontainers on the engine it
//!   resolves (`DOCKER_HOST`, e.g. `unix:///…/podman.sock` of a `podman system service`; else
//!   `/var/run/docker.sock`), from a local image `localhost/ironroot-swtpm:<hash>` made from
//!   the host's swtpm and the libraries `ldd` lists for it (`podman import`, no registry;
//!   built once into the engine's store, tagged by a hash of its inputs). The per-test state
//!   copy is bind-mounted, the container shares the host's network (why: see
//!   `container::start`) and swtpm listens on 127.0.0.1 as the process does, so
//!   [`Swtpm::tcti`] is the same. The container is removed on drop (also when the test
//!   panics) and labelled `ironroot.testkit=swtpm` with its owner process: containers of a
//!   killed test process are swept by the next one ([`sweep_leftover_containers`]). When the
//!   engine does not answer, starting a TPM **panics** with what to do: never a silent
//!   fallback, so a run that asked for containers really ran them.
//! - `auto`: the container backend when the engine answers, else the process backend.
//!
//! `scripts/test.sh` runs the TPM suites a second time with `container`, under
//! `cargo run -p ironroot-testkit --bin with-podman` (a private podman service, `DOCKER_HOST`
//! pointing at it). By hand:
//!
//! ```sh
//! IRONROOT_SWTPM_BACKEND=container cargo run -p ironroot-testkit --bin with-podman -- \
//!     cargo nextest run -p ironroot-tpm
//! ```

use std::collections::HashMap;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod container;

pub use crate::tail;
pub use container::{LABEL as CONTAINER_LABEL, TEST_LABEL as CONTAINER_TEST_LABEL};

use crate::INSTALL_HINT;
/// The environment variable choosing the backend: `process` (default), `container`, `auto`.
pub const BACKEND_ENV: &str = "IRONROOT_SWTPM_BACKEND";
/// Bumped when the manufacturing recipe changes, so cached states are made again.
const RECIPE_VERSION: u32 = 1;
/// How many port pairs [`Swtpm::start`] tries.
const MAX_ATTEMPTS: usize = 8;
/// The one file swtpm keeps a TPM 2.0's state in (`--tpmstate dir=`).
const STATE_FILE: &str = "tpm2-00.permall";

/// Where a [`Swtpm`] runs (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// A daemon process of the host.
    Process,
    /// A container through testcontainers.
    Container,
}

/// The backend of this test process, from `IRONROOT_SWTPM_BACKEND` (resolved once). Panics
/// when the variable holds something else than `process`, `container` or `auto`, and for
/// `container` when the engine does not answer.
pub fn backend() -> Backend {
    static BACKEND: OnceLock<Result<Backend, String>> = OnceLock::new();
    let chosen = BACKEND.get_or_init(|| {
        let value = std::env::var(BACKEND_ENV).ok();
        choose_backend(value.as_deref(), container::engine_answers)
    });
    match chosen {
        Ok(b) => *b,
        Err(e) => panic!("{e}"),
    }
}

/// The backend `value` (of `IRONROOT_SWTPM_BACKEND`) asks for, given whether the engine
/// answers (asked only when it matters).
pub fn choose_backend(
    value: Option<&str>,
    engine_answers: impl FnOnce() -> Result<(), String>,
) -> Result<Backend, String> {
    match value.map(str::trim).unwrap_or("") {
        "" | "process" => Ok(Backend::Process),
        "container" => match engine_answers() {
            Ok(()) => Ok(Backend::Container),
            Err(e) => Err(format!(
                "{BACKEND_ENV}=container, but no container engine answers: {e}.\n\
                 Start one and point DOCKER_HOST at it, e.g. run the tests under \
                 `cargo run -p ironroot-testkit --bin with-podman -- cargo nextest run …` \
                 (a private rootful podman service), or \
                 `podman system service --time=0 unix:///run/podman/podman.sock &` and \
                 DOCKER_HOST=unix:///run/podman/podman.sock; \
                 or set {BACKEND_ENV}=process (or auto) to run swtpm as a process"
            )),
        },
        "auto" => Ok(match engine_answers() {
            Ok(()) => Backend::Container,
            Err(_) => Backend::Process,
        }),
        other => Err(format!(
            "{BACKEND_ENV}={other:?} is not a swtpm backend: use process (the default), \
             container or auto"
        )),
    }
}

/// Removes swtpm containers whose owning test process is gone (killed before its [`Swtpm`]
/// was dropped); how many. The container backend does it once per process by itself.
pub fn sweep_leftover_containers() -> Result<usize, String> {
    container::sweep_leftovers()
}

/// What to manufacture. swtpm always creates both EKs of a TPM 2.0: RSA-2048 (persisted at
/// 0x81010001, certificate in NV 0x01c00002) and ECC P-384 (0x81010016, NV 0x01c00016).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SwtpmOptions {
    /// Active PCR banks, as swtpm_setup's `active_pcr_banks` (`sha256` or `sha1,sha256`).
    pub pcr_banks: String,
    /// RSA EK size (2048; 3072 where libtpms supports it).
    pub rsa_keysize: u32,
}

impl Default for SwtpmOptions {
    fn default() -> Self {
        Self {
            pcr_banks: "sha256".into(),
            rsa_keysize: 2048,
        }
    }
}

impl SwtpmOptions {
    /// Options with the given PCR banks (`"sha1,sha256"`).
    pub fn with_banks(banks: &str) -> Self {
        Self {
            pcr_banks: banks.into(),
            ..Self::default()
        }
    }

    fn cache_key(&self) -> String {
        format!(
            "v{RECIPE_VERSION}-{}-rsa{}",
            self.pcr_banks.replace(',', "+"),
            self.rsa_keysize
        )
    }
}

/// A manufactured TPM state with its private CA. Read-only: copy it before running a TPM.
#[derive(Debug)]
pub struct SwtpmState {
    /// The directory holding everything below.
    pub dir: PathBuf,
    /// swtpm's state dir (holds `tpm2-00.permall`).
    pub state_dir: PathBuf,
    /// The local CA's root certificate (PEM): the trust anchor for the EK certificates.
    pub ca_root_cert: PathBuf,
    /// The local CA's intermediate that signed the EK certificates (PEM).
    pub issuer_cert: PathBuf,
}

impl SwtpmState {
    /// Runs `swtpm_setup` into `dir` with a private local CA (no file outside `dir` is
    /// touched: its temp files go there too). Panics with swtpm_setup's output on failure.
    pub fn manufacture(dir: &Path, opts: &SwtpmOptions) -> SwtpmState {
        require_tool("swtpm_setup");
        require_tool("swtpm");
        let dir = absolute(dir);
        let state_dir = dir.join("state");
        mkdir(&state_dir);
        let localca_conf = dir.join("swtpm-localca.conf");
        let localca_opts = dir.join("swtpm-localca.options");
        let setup_conf = dir.join("swtpm_setup.conf");
        let d = dir.display();
        write(
            &localca_conf,
            &format!(
                "statedir = {d}\nsigningkey = {d}/signkey.pem\n\
                 issuercert = {d}/issuercert.pem\ncertserial = {d}/certserial\n"
            ),
        );
        write(
            &localca_opts,
            "--platform-manufacturer ironroot\n--platform-version 2.1\n\
             --platform-model swtpm-test\n",
        );
        write(
            &setup_conf,
            &format!(
                "create_certs_tool = /usr/bin/swtpm_localca\n\
                 create_certs_tool_config = {}\ncreate_certs_tool_options = {}\n\
                 active_pcr_banks = {}\n",
                localca_conf.display(),
                localca_opts.display(),
                opts.pcr_banks
            ),
        );
        let out = Command::new("swtpm_setup")
            .args(["--tpm2", "--tpmstate"])
            .arg(&state_dir)
            .args([
                "--create-ek-cert",
                "--create-platform-cert",
                "--lock-nvram",
                "--overwrite",
                "--rsa-keysize",
            ])
            .arg(opts.rsa_keysize.to_string())
            .arg("--config")
            .arg(&setup_conf)
            .env("TMPDIR", &dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run swtpm_setup ({INSTALL_HINT}): {e}"));
        if !out.status.success() || !state_dir.join(STATE_FILE).is_file() {
            panic!(
                "swtpm_setup failed ({}) in {d}:\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let state = SwtpmState {
            ca_root_cert: dir.join("swtpm-localca-rootca-cert.pem"),
            issuer_cert: dir.join("issuercert.pem"),
            state_dir,
            dir,
        };
        for f in [&state.ca_root_cert, &state.issuer_cert] {
            assert!(f.is_file(), "swtpm_setup did not write {}", f.display());
        }
        state
    }

    /// A state manufactured once and shared read-only, keyed by `name` and `opts`.
    ///
    /// Once per process (a `OnceLock`), and cached on disk under
    /// `target/tmp/ironroot-testkit/swtpm/` because nextest runs every test in its own
    /// process: without the disk cache each test would pay for manufacturing.
    pub fn shared(name: &str, opts: &SwtpmOptions) -> &'static SwtpmState {
        static STATES: OnceLock<Mutex<HashMap<String, &'static SwtpmState>>> = OnceLock::new();
        let key = format!("{name}-{}", opts.cache_key());
        let mut map = STATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&key) {
            return s;
        }
        let state: &'static SwtpmState = Box::leak(Box::new(cached_state(&key, opts)));
        map.insert(key, state);
        state
    }

    /// A PEM file with the local CA's root and the issuer that signed the EK certificates:
    /// what a server's `ek_ca_bundle` names to trust this TPM. Written once beside the state
    /// (renamed into place, so a reader never sees half a file).
    pub fn ek_ca_bundle(&self) -> PathBuf {
        let p = self.dir.join("ek-ca-bundle.pem");
        if !p.exists() {
            let read = |f: &Path| {
                std::fs::read_to_string(f).unwrap_or_else(|e| panic!("{}: {e}", f.display()))
            };
            let mut pem = read(&self.ca_root_cert);
            pem.push_str(&read(&self.issuer_cert));
            let tmp = self
                .dir
                .join(format!("ek-ca-bundle.{}.tmp", std::process::id()));
            write(&tmp, &pem);
            if let Err(e) = std::fs::rename(&tmp, &p) {
                panic!("cannot rename {} to {}: {e}", tmp.display(), p.display());
            }
        }
        p
    }

    /// Copies the TPM state into `dest/state` (created) and returns that dir, ready for
    /// [`Swtpm::start`].
    pub fn copy_state(&self, dest: &Path) -> PathBuf {
        let to = absolute(dest).join("state");
        mkdir(&to);
        let (from_file, to_file) = (self.state_dir.join(STATE_FILE), to.join(STATE_FILE));
        if let Err(e) = std::fs::copy(&from_file, &to_file) {
            panic!(
                "cannot copy {} to {}: {e}",
                from_file.display(),
                to_file.display()
            );
        }
        to
    }

    /// A running swtpm on a private copy of this state (in a temp dir the [`Swtpm`] owns), on
    /// this process's [`backend`].
    pub fn spawn(&self) -> Swtpm {
        self.spawn_on(backend())
    }

    /// [`spawn`](Self::spawn) on the given backend.
    pub fn spawn_on(&self, backend: Backend) -> Swtpm {
        let tmp = tempfile::Builder::new()
            .prefix("ironroot-swtpm-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let state_dir = self.copy_state(tmp.path());
        let mut tpm = Swtpm::start_on(&state_dir, backend);
        tpm.tmp = Some(tmp);
        tpm
    }
}

/// The on-disk cache entry for `key`, made when absent. Made in a private dir and renamed
/// into place, so concurrent test processes never see half a state.
fn cached_state(key: &str, opts: &SwtpmOptions) -> SwtpmState {
    let root = crate::target_dir().join("tmp/ironroot-testkit/swtpm");
    mkdir(&root);
    let dir = root.join(key);
    let ready = |d: &Path| d.join("state").join(STATE_FILE).is_file() && d.join("ready").is_file();
    if !ready(&dir) {
        let work = tempfile::Builder::new()
            .prefix(".making-")
            .tempdir_in(&root)
            .unwrap_or_else(|e| panic!("cannot create a temp dir in {}: {e}", root.display()));
        SwtpmState::manufacture(work.path(), opts);
        write(&work.path().join("ready"), "");
        let work = work.keep();
        // Another process may have won the race: then ours is simply discarded.
        if std::fs::rename(&work, &dir).is_err() {
            let _ = std::fs::remove_dir_all(&work);
        }
    }
    if !ready(&dir) {
        panic!("cached swtpm state {} is incomplete", dir.display());
    }
    // The CA config files name the dir they were made in; only the TPM state and the
    // certificates are used from the cache, and those are location independent.
    SwtpmState {
        state_dir: dir.join("state"),
        ca_root_cert: dir.join("swtpm-localca-rootca-cert.pem"),
        issuer_cert: dir.join("issuercert.pem"),
        dir,
    }
}

/// A running `swtpm socket` (TCP, data port and control port = data port + 1) on either
/// [`Backend`]. Killed by PID (process) or removed (container) when dropped, also during a
/// panic.
#[derive(Debug)]
pub struct Swtpm {
    pid: i32,
    port: u16,
    state_dir: PathBuf,
    log: PathBuf,
    container: Option<container::SwtpmContainer>,
    tmp: Option<TempDir>,
}

/// Why one attempt at starting swtpm failed: worth another try on new ports, or not.
enum Attempt {
    Retry(String),
    Fatal(String),
}

impl Swtpm {
    /// Starts swtpm on this process's [`backend`], on `state_dir` (a copy: swtpm writes to
    /// it) and two free loopback ports, and waits until it accepts connections. Logs to
    /// `target/test-logs/<test name>/swtpm.log`.
    pub fn start(state_dir: &Path) -> Swtpm {
        Swtpm::start_on(state_dir, backend())
    }

    /// [`start`](Self::start) on the given backend.
    pub fn start_on(state_dir: &Path, backend: Backend) -> Swtpm {
        require_tool("swtpm");
        let state_dir = absolute(state_dir);
        let log = crate::test_log_dir(&crate::current_test_name()).join("swtpm.log");
        let limit = match backend {
            Backend::Process => Duration::from_secs(15),
            Backend::Container => Duration::from_secs(60),
        };
        let deadline = Instant::now() + limit;
        // A port found free can be taken before swtpm binds it: retry with new ports (a few
        // times: a swtpm that fails for another reason fails the same way on every pair).
        let mut last_err = String::new();
        for _ in 0..MAX_ATTEMPTS {
            if Instant::now() >= deadline {
                break;
            }
            let port = free_port_pair();
            append(
                &log,
                &format!(
                    "=== ironroot-testkit: starting swtpm ({backend:?}) on 127.0.0.1:{port} \
                     (ctrl {}) state {}\n",
                    port + 1,
                    state_dir.display()
                ),
            );
            let attempt = match backend {
                Backend::Process => Swtpm::try_process(&state_dir, &log, port, deadline),
                Backend::Container => container::start(&state_dir, &log, port)
                    .map(|c| Swtpm {
                        pid: c.pid(),
                        port,
                        state_dir: state_dir.clone(),
                        log: log.clone(),
                        container: Some(c),
                        tmp: None,
                    })
                    .map_err(|e| match e {
                        container::StartError::Retry(e) => Attempt::Retry(e),
                        container::StartError::Fatal(e) => Attempt::Fatal(e),
                    }),
            };
            match attempt {
                Ok(tpm) => return tpm,
                Err(Attempt::Retry(e)) => last_err = e,
                Err(Attempt::Fatal(e)) => {
                    last_err = e;
                    break;
                }
            }
        }
        panic!(
            "could not start swtpm ({backend:?} backend) on {}: {last_err}\n\
             --- tail of {} ---\n{}",
            state_dir.display(),
            log.display(),
            tail(&log, 30)
        );
    }

    fn try_process(
        state_dir: &Path,
        log: &Path,
        port: u16,
        deadline: Instant,
    ) -> Result<Swtpm, Attempt> {
        let pid_file = state_dir.join("swtpm.pid");
        let _ = std::fs::remove_file(&pid_file);
        let out = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state_dir.display()))
            .arg("--server")
            .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
            .arg("--ctrl")
            .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
            .args(["--flags", "not-need-init,startup-clear", "--pid"])
            .arg(format!("file={}", pid_file.display()))
            .arg("--log")
            .arg(format!("file={},level=1", log.display()))
            .arg("--daemon")
            .output()
            .unwrap_or_else(|e| panic!("cannot run swtpm ({INSTALL_HINT}): {e}"));
        if !out.status.success() {
            return Err(Attempt::Retry(format!(
                "swtpm exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let Some(pid) = wait_for_pid(&pid_file, deadline) else {
            return Err(Attempt::Retry(format!(
                "swtpm wrote no pid to {}",
                pid_file.display()
            )));
        };
        let tpm = Swtpm {
            pid,
            port,
            state_dir: state_dir.to_owned(),
            log: log.to_owned(),
            container: None,
            tmp: None,
        };
        if wait_for_port(port, deadline) && wait_for_port(port + 1, deadline) {
            return Ok(tpm);
        }
        Err(Attempt::Retry(format!(
            "swtpm (pid {pid}) never accepted connections on {port}"
        )))
    }

    /// Which backend runs this swtpm.
    pub fn backend(&self) -> Backend {
        if self.container.is_some() {
            Backend::Container
        } else {
            Backend::Process
        }
    }

    /// The container's id (64 hex), on the container backend.
    pub fn container_id(&self) -> Option<&str> {
        self.container.as_ref().map(container::SwtpmContainer::id)
    }

    /// The TCTI string for tss-esapi and tpm2-tools: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The TPM command port (the control port is this + 1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// swtpm's process id on the host (what [`Drop`] kills on the process backend; on the
    /// container backend the container's main process, gone once the container is removed).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The state dir this swtpm runs on.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// swtpm's log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// A scratch dir that lives as long as this swtpm (for key files and the like).
    pub fn scratch_dir(&self) -> &Path {
        self.state_dir.parent().unwrap_or(&self.state_dir)
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- tail of {} ---\n{}",
                self.log.display(),
                tail(&self.log, 30)
            );
        }
        // The container goes before the state dir it mounts (`tmp`, dropped after this).
        match self.container.take() {
            Some(c) => drop(c),
            None => kill_pid(self.pid, &self.state_dir),
        }
    }
}

/// Kills `pid` only if it is still our swtpm (its command line names our state dir, so a
/// recycled PID is never hit): SIGTERM, then SIGKILL after a grace period.
fn kill_pid(pid: i32, state_dir: &Path) {
    let ours = || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.contains("swtpm") && c.contains(&*state_dir.to_string_lossy())
            })
            .unwrap_or(false)
    };
    if pid <= 0 || !ours() {
        return;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(3);
    while ours() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if ours() {
        let _ = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
}

/// Two consecutive free loopback ports (swtpm and tpm2-tools put the control port at P+1).
fn free_port_pair() -> u16 {
    for _ in 0..50 {
        let a = TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
        let Ok(addr) = a.local_addr() else { continue };
        let p = addr.port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("found no two consecutive free loopback ports");
}

fn wait_for_pid(pid_file: &Path, deadline: Instant) -> Option<i32> {
    while Instant::now() < deadline {
        if let Ok(s) = std::fs::read_to_string(pid_file) {
            if let Ok(pid) = s.trim().parse() {
                return Some(pid);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

fn wait_for_port(port: u16, deadline: Instant) -> bool {
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Panics with the install hint when `tool` is not on PATH. In CI (env `CI` set) and out of
/// it alike: the deps script is the fix, and a skipped TPM test proves nothing.
fn require_tool(tool: &str) {
    if !crate::on_path(tool) {
        let ci = if std::env::var_os("CI").is_some() {
            " (CI)"
        } else {
            ""
        };
        panic!("{tool} not found on PATH{ci}: {INSTALL_HINT}");
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|e| panic!("cannot make {} absolute: {e}", p.display()))
}

fn mkdir(p: &Path) {
    if let Err(e) = std::fs::create_dir_all(p) {
        panic!("cannot create {}: {e}", p.display());
    }
}

fn write(p: &Path, s: &str) {
    if let Err(e) = std::fs::write(p, s) {
        panic!("cannot write {}: {e}", p.display());
    }
}

fn append(p: &Path, s: &str) {
    let r = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(p)
        .and_then(|mut f| f.write_all(s.as_bytes()));
    if let Err(e) = r {
        panic!("cannot write {}: {e}", p.display());
    }
}
