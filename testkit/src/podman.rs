//! Rootful podman for tests, configured as in shared/notes/podman.md, with nothing shared
//! with the host's podman or with other tests' podmans:
//!
//! - [`PodmanCli::configure`]: private containers.conf and storage.conf (runc, cgroupfs,
//!   file events and locks, ulimits podman may set here), store, run and tmp dirs;
//! - [`cached_image_store`]: a read-only image store made once (on disk under
//!   `target/tmp/ironroot-testkit/podman/`, shared by every test process, because nextest runs
//!   each test in its own process) and used through `additionalimagestores`;
//! - [`import_rootfs`] and [`copy_with_libraries`]: images without a registry, from a rootfs
//!   dir holding host binaries and the libraries `ldd` lists for them;
//! - [`PodmanService`]: `podman system service` on a private socket serving the libpod and the
//!   Docker-compatible APIs (what testcontainers talks to), killed by PID on drop, its log
//!   under `target/test-logs/<test>/`.
//!
//! - [`workloads`]: the test image (busybox and socat), and containers and pods of it whose
//!   process is connected to the test, on a private podman service per test.
//!
//! The `with-podman` binary of this crate runs a command with `DOCKER_HOST` pointing at such a
//! service (scripts/test.sh uses it to run the TPM tests with swtpm in containers).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub mod workloads;

use crate::INSTALL_HINT;

/// Fails (never skips) when rootful podman cannot run here: podman, runc and conmon missing,
/// or not root.
pub fn require_podman() {
    if let Err(e) = check_podman() {
        panic!("{e}");
    }
}

/// Why rootful podman cannot run here, if it cannot.
pub fn check_podman() -> Result<(), String> {
    for tool in ["podman", "runc", "conmon"] {
        let found = crate::on_path(tool) || Path::new("/usr/libexec/podman").join(tool).is_file();
        if !found {
            return Err(format!("{tool} not found: {INSTALL_HINT}"));
        }
    }
    if !nix::unistd::geteuid().is_root() {
        return Err("rootful podman needs root".into());
    }
    Ok(())
}

/// The `podman` CLI bound to one private configuration, or to a podman service (remote).
#[derive(Clone, Debug)]
pub struct PodmanCli {
    env: Vec<(&'static str, OsString)>,
    url: Option<String>,
}

impl PodmanCli {
    /// Writes containers.conf and storage.conf for a store under `dir` (created), also
    /// reading images from `image_stores`.
    pub fn configure(dir: &Path, image_stores: &[&Path]) -> PodmanCli {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let d = dir.display();
        let containers = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
             [engine]\n\
             runtime = \"runc\"\n\
             cgroup_manager = \"cgroupfs\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             tmp_dir = \"{d}/tmp\"\n\
             lock_type = \"file\"\n\
             [network]\n\
             network_backend = \"netavark\"\n\
             network_config_dir = \"{d}/networks\"\n"
        );
        let mut storage = format!(
            "[storage]\ndriver = \"overlay\"\ngraphroot = \"{d}/store\"\nrunroot = \"{d}/run\"\n"
        );
        if !image_stores.is_empty() {
            let stores: Vec<String> = image_stores
                .iter()
                .map(|s| format!("\"{}\"", s.display()))
                .collect();
            storage.push_str(&format!(
                "[storage.options]\nadditionalimagestores = [{}]\n",
                stores.join(", ")
            ));
        }
        write(&dir.join("containers.conf"), &containers);
        write(&dir.join("storage.conf"), &storage);
        PodmanCli {
            env: vec![
                ("CONTAINERS_CONF", dir.join("containers.conf").into()),
                ("CONTAINERS_STORAGE_CONF", dir.join("storage.conf").into()),
            ],
            url: None,
        }
    }

    /// The CLI as a client of the podman service at `url` (`unix:///path/podman.sock`):
    /// `podman --url URL`, whatever store that service runs on.
    pub fn remote(url: &str) -> PodmanCli {
        PodmanCli {
            env: Vec::new(),
            url: Some(url.to_owned()),
        }
    }

    /// `podman ARGS` with this configuration.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new("podman");
        if let Some(url) = &self.url {
            c.args(["--url", url]);
        }
        c.args(args).stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `podman ARGS`, whatever the outcome.
    pub fn output(&self, args: &[&str]) -> Output {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run podman: {e} ({INSTALL_HINT})"))
    }

    /// Runs `podman ARGS`, which must succeed; its trimmed stdout.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {} failed ({}):\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

/// A cached read-only image store and the id of the image made in it.
#[derive(Debug)]
pub struct ImageStore {
    /// The store (a podman graphroot) to use as `additionalimagestores`.
    pub store: PathBuf,
    /// Id of the image, as `podman import` reported it (64 hex).
    pub image_id: String,
}

/// The image store `name`, made once (on disk, shared by all test processes) by `make`, which
/// gets a CLI on the new store and a scratch dir, and returns the id of the image it made.
///
/// The store is keyed by `name`, `recipe_version` (bump it when what `make` does changes)
/// and the podman version. It is made in a private dir and renamed into place, so concurrent
/// test processes never see half a store (the loser of a race drops its own).
pub fn cached_image_store(
    name: &str,
    recipe_version: u32,
    make: impl FnOnce(&PodmanCli, &Path) -> String,
) -> ImageStore {
    require_podman();
    let version = Command::new("podman")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let version: String = version
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let root = crate::target_dir().join("tmp/ironroot-testkit/podman");
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
    let dir = root.join(format!("{name}-v{recipe_version}-{version}"));
    if !dir.join("ready").is_file() {
        let work = tempfile::Builder::new()
            .prefix(".making-")
            .tempdir_in(&root)
            .unwrap_or_else(|e| panic!("temp dir in {}: {e}", root.display()));
        let cli = PodmanCli::configure(work.path(), &[]);
        let scratch = work.path().join("scratch");
        fs::create_dir_all(&scratch).unwrap_or_else(|e| panic!("mkdir {}: {e}", scratch.display()));
        let image_id = make(&cli, &scratch);
        fs::remove_dir_all(&scratch).ok();
        write(&work.path().join("image-id"), &image_id);
        write(&work.path().join("ready"), "");
        let work = work.keep();
        if fs::rename(&work, &dir).is_err() {
            fs::remove_dir_all(&work).ok();
        }
    }
    let image_id = fs::read_to_string(dir.join("image-id"))
        .unwrap_or_else(|e| panic!("image id in {}: {e}", dir.display()))
        .trim()
        .to_owned();
    ImageStore {
        store: dir.join("store"),
        image_id,
    }
}

/// `binary` and every library `ldd` lists for it (the dynamic loader included), as absolute
/// host paths: what a rootfs needs to run it.
pub fn ldd_closure(binary: &Path) -> Vec<PathBuf> {
    let ldd = Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ldd {}: {e}", binary.display()));
    assert!(
        ldd.status.success(),
        "ldd {} failed: {}",
        binary.display(),
        String::from_utf8_lossy(&ldd.stderr)
    );
    let mut files = vec![binary.to_owned()];
    files.extend(
        String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
            .map(PathBuf::from),
    );
    files
}

/// Copies `binary` and every library `ldd` lists for it (the dynamic loader included) into
/// `rootfs`, each at its host path.
pub fn copy_with_libraries(binary: &Path, rootfs: &Path) {
    for file in ldd_closure(binary) {
        let to = rootfs.join(file.strip_prefix("/").unwrap_or(&file));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        copy(&file, &to);
    }
}

/// `tar -C ROOTFS -c . | podman import --change 'ENTRYPOINT [..]' - IMAGE`: the image's id
/// (64 hex).
pub fn import_rootfs(cli: &PodmanCli, rootfs: &Path, entrypoint: &[&str], image: &str) -> String {
    let entrypoint = serde_json::to_string(entrypoint).expect("a list of strings is JSON");
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(rootfs)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run tar: {e}"));
    let tar_out = tar.stdout.take().expect("tar's stdout is piped");
    let out = cli
        .command([
            "import",
            "--quiet",
            "--change",
            &format!("ENTRYPOINT {entrypoint}"),
            "-",
            image,
        ])
        .stdin(tar_out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman import: {e} ({INSTALL_HINT})"));
    let tar_status = tar.wait().unwrap_or_else(|e| panic!("tar: {e}"));
    assert!(
        tar_status.success(),
        "tar -C {} -c . failed ({tar_status})",
        rootfs.display()
    );
    assert!(
        out.status.success(),
        "podman import of {} as {image} failed ({}):\n{}",
        rootfs.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let imported = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let image_id = imported.trim_start_matches("sha256:").to_owned();
    assert_eq!(image_id.len(), 64, "podman import printed {imported:?}");
    image_id
}

/// A private rootful `podman system service`, killed by PID on drop (after removing every
/// pod and container of its private store).
pub struct PodmanService {
    dir: TempDir,
    cli: PodmanCli,
    socket: PathBuf,
    service: Option<Child>,
    log: PathBuf,
}

impl PodmanService {
    /// Starts a podman API service on a private store (also reading images from
    /// `image_stores`), logging to `log`, and waits until its socket accepts connections.
    /// The service gets SIGTERM when the thread that started it ends (PR_SET_PDEATHSIG): keep
    /// it on the thread that owns it, not in a static shared across tests.
    pub fn start(image_stores: &[&Path], log: &Path) -> PodmanService {
        require_podman();
        let dir = tempfile::Builder::new()
            .prefix("ironroot-podman-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let cli = PodmanCli::configure(dir.path(), image_stores);
        let socket = dir.path().join("podman.sock");
        let log_file = fs::File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err_file = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let mut command = cli.command(["system", "service", "--time=0"]);
        command
            .arg(format!("unix://{}", socket.display()))
            .stdout(log_file)
            .stderr(err_file);
        // The service goes with the thread that started it even when that dies without
        // dropping this (a test process killed by a timeout).
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory.
        // pre_exec is unsafe by signature: the closure runs between fork and exec.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let service = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start podman system service: {e} ({INSTALL_HINT})"));
        let mut podman = PodmanService {
            dir,
            cli,
            socket,
            service: Some(service),
            log: log.to_owned(),
        };
        podman.wait_for_socket(Duration::from_secs(20));
        podman
    }

    fn wait_for_socket(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return;
            }
            if let Some(Ok(Some(status))) = self.service.as_mut().map(Child::try_wait) {
                panic!(
                    "podman system service exited ({status}):\n{}",
                    crate::tail(&self.log, 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "podman API socket {} not ready within {limit:?}:\n{}",
                self.socket.display(),
                crate::tail(&self.log, 30)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The API socket as a `DOCKER_HOST` value (`unix:///…/podman.sock`).
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// The CLI on this podman's store.
    pub fn cli(&self) -> &PodmanCli {
        &self.cli
    }

    /// A private dir for the caller's own files (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The service's log.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The service's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.service.as_ref().map(Child::id)
    }

    /// Stops the API service (kill by PID, then reap).
    pub fn stop_service(&mut self) {
        if let Some(mut child) = self.service.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

impl Drop for PodmanService {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- tail of {} ---\n{}",
                self.log.display(),
                crate::tail(&self.log, 30)
            );
        }
        // Whatever a failed test left (this store is private to us).
        let _ = self
            .cli
            .output(&["pod", "rm", "--all", "--force", "--time", "0"]);
        let _ = self.cli.output(&["rm", "--all", "--force", "--time", "0"]);
        self.stop_service();
    }
}

fn write(p: &Path, text: &str) {
    let r = fs::File::create(p).and_then(|mut f| f.write_all(text.as_bytes()));
    r.unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}
