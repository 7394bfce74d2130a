//! Rootful podman for tests, configured as in shared/notes/podman.md, with
//! nothing shared with the host's podman or with other tests' podmans:
//!
//! - an image store made once and cached under
//!   `target/tmp/ironroot-testkit/podman/` (the test image, imported from a
//!   rootfs of static busybox plus socat and its libraries, and podman's pod
//!   pause image), used read-only by every test through
//!   `additionalimagestores` (nextest runs each test in its own process, so a
//!   process-wide cache alone would not save anything);
//! - per [`Podman`]: private containers.conf and storage.conf, store, run
//!   and tmp dirs (file locks, not the host-wide shm lock), and a
//!   `podman system service` on a private socket, killed by PID on drop, its
//!   log under `target/test-logs/<test>/`.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

mod test_cgroup;
#[allow(unused_imports)] // not every test binary uses it
pub use test_cgroup::TestCgroup;

/// The test image (imported, never pulled).
pub const IMAGE: &str = "localhost/ironroot-test:latest";
/// Bumped when the image recipe changes, so cached stores are made again.
const RECIPE_VERSION: u32 = 1;
const INSTALL_HINT: &str = "install it with scripts/install-deps.sh";
const BUSYBOX: &str = "/bin/busybox";
const SOCAT: &str = "/usr/bin/socat";

/// Fails (never skips) when rootful podman cannot run here.
pub fn require_podman() {
    for tool in ["podman", "runc", "conmon", "socat"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
            || Path::new("/usr/libexec/podman").join(tool).is_file();
        assert!(found, "{tool} not found: {INSTALL_HINT}");
    }
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing (package busybox-static): {INSTALL_HINT}"
    );
    assert!(
        nix::unistd::geteuid().is_root(),
        "the podman tests need root (rootful podman)"
    );
}

/// The `podman` CLI bound to one private configuration.
#[derive(Clone, Debug)]
pub struct PodmanCli {
    env: Vec<(&'static str, OsString)>,
}

impl PodmanCli {
    /// Writes containers.conf and storage.conf for a store under `dir`,
    /// optionally reading images from `image_store` too.
    fn configure(dir: &Path, image_store: Option<&Path>) -> PodmanCli {
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
        if let Some(images) = image_store {
            storage.push_str(&format!(
                "[storage.options]\nadditionalimagestores = [\"{}\"]\n",
                images.display()
            ));
        }
        write(&dir.join("containers.conf"), &containers);
        write(&dir.join("storage.conf"), &storage);
        PodmanCli {
            env: vec![
                ("CONTAINERS_CONF", dir.join("containers.conf").into()),
                ("CONTAINERS_STORAGE_CONF", dir.join("storage.conf").into()),
            ],
        }
    }

    /// `podman ARGS` with this configuration.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut c = Command::new("podman");
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

/// The cached read-only image store and the id of [`IMAGE`] in it.
pub struct ImageStore {
    /// The store (a podman graphroot) to use as `additionalimagestores`.
    pub store: PathBuf,
    /// Id of [`IMAGE`], as `podman import` reported it (64 hex).
    pub image_id: String,
}

/// The image store, made once (on disk, shared by all test processes).
pub fn image_store() -> &'static ImageStore {
    static STORE: OnceLock<ImageStore> = OnceLock::new();
    STORE.get_or_init(|| {
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
        let root = ironroot_testkit::target_dir().join("tmp/ironroot-testkit/podman");
        fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        let dir = root.join(format!("images-v{RECIPE_VERSION}-{version}"));
        if !dir.join("ready").is_file() {
            make_image_store(&root, &dir);
        }
        let image_id = fs::read_to_string(dir.join("image-id"))
            .unwrap_or_else(|e| panic!("image id in {}: {e}", dir.display()))
            .trim()
            .to_owned();
        ImageStore {
            store: dir.join("store"),
            image_id,
        }
    })
}

/// Builds the store in a private dir and renames it to `dir`, so concurrent
/// test processes never see half a store (the loser of a race drops its own).
fn make_image_store(root: &Path, dir: &Path) {
    let work = tempfile::Builder::new()
        .prefix(".making-")
        .tempdir_in(root)
        .unwrap_or_else(|e| panic!("temp dir in {}: {e}", root.display()));
    let cli = PodmanCli::configure(work.path(), None);
    let rootfs = work.path().join("rootfs");
    build_rootfs(&rootfs);
    let tar = work.path().join("rootfs.tar");
    let status = Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .unwrap_or_else(|e| panic!("tar: {e}"));
    assert!(status.success(), "tar of the test rootfs failed");
    let imported = cli.run(&[
        "import",
        "--quiet",
        "--change",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        &tar.to_string_lossy(),
        IMAGE,
    ]);
    let image_id = imported.trim_start_matches("sha256:").to_owned();
    assert_eq!(image_id.len(), 64, "podman import printed {imported:?}");
    // Creating a pod builds podman's pause image (from catatonit) into this
    // store, so tests never pay for it.
    cli.run(&["pod", "create", "--name", "warm-up", "--network", "none"]);
    cli.run(&["pod", "rm", "--force", "warm-up"]);
    write(&work.path().join("image-id"), &image_id);
    fs::remove_dir_all(&rootfs).ok();
    fs::remove_file(&tar).ok();
    write(&work.path().join("ready"), "");
    let work = work.keep();
    if fs::rename(&work, dir).is_err() {
        fs::remove_dir_all(&work).ok();
    }
}

/// A root filesystem with static busybox (`sh`, `sleep`, `cat`) and socat
/// with the libraries `ldd` lists for it.
fn build_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("mkdir {}: {e}", bin.display()));
    copy(Path::new(BUSYBOX), &bin.join("busybox"));
    for applet in ["sh", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .unwrap_or_else(|e| panic!("symlink {applet}: {e}"));
    }
    let ldd = Command::new("ldd")
        .arg(SOCAT)
        .output()
        .unwrap_or_else(|e| panic!("ldd {SOCAT}: {e}"));
    assert!(ldd.status.success(), "ldd {SOCAT} failed");
    let libs = String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
        .map(PathBuf::from)
        .collect::<Vec<_>>();
    for file in libs.iter().map(PathBuf::as_path).chain([Path::new(SOCAT)]) {
        let to = rootfs.join(file.strip_prefix("/").unwrap_or(file));
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("mkdir {}: {e}", parent.display()));
        }
        copy(file, &to);
    }
    fs::create_dir_all(rootfs.join("tmp")).ok();
}

/// A private rootful podman with its API service running.
pub struct Podman {
    dir: TempDir,
    cli: PodmanCli,
    socket: PathBuf,
    service: Option<Child>,
    log: PathBuf,
    /// What the test image's id is.
    pub image_id: String,
}

impl Podman {
    /// Starts a podman API service on a private store (images from
    /// [`image_store`]) and waits until its socket accepts connections.
    pub fn start() -> Podman {
        let images = image_store();
        let dir = tempfile::Builder::new()
            .prefix("ironroot-podman-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let cli = PodmanCli::configure(dir.path(), Some(&images.store));
        let socket = dir.path().join("podman.sock");
        let log_dir = ironroot_testkit::test_log_dir(&ironroot_testkit::current_test_name());
        let log = log_dir.join("podman-service.log");
        let log_file = fs::File::create(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let err_file = log_file
            .try_clone()
            .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
        let service = cli
            .command(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start podman system service: {e} ({INSTALL_HINT})"));
        let mut podman = Podman {
            dir,
            cli,
            socket,
            service: Some(service),
            log,
            image_id: images.image_id.clone(),
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
                    tail(&self.log, 30)
                );
            }
            assert!(
                Instant::now() < deadline,
                "podman API socket {} not ready within {limit:?}:\n{}",
                self.socket.display(),
                tail(&self.log, 30)
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The CLI on this podman's store.
    pub fn cli(&self) -> &PodmanCli {
        &self.cli
    }

    /// A private dir for the test's own files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the API service (kill by PID, then reap).
    pub fn stop_service(&mut self) {
        if let Some(mut child) = self.service.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Creates a pod (no network) with `labels` (`k=v`), removed on drop.
    pub fn pod(&self, name: &str, labels: &[&str]) -> Pod {
        let mut args = vec!["pod", "create", "--name", name, "--network", "none"];
        for l in labels {
            args.extend(["--label", l]);
        }
        let id = self.cli.run(&args);
        Pod {
            cli: self.cli.clone(),
            id,
        }
    }

    /// Runs a container of [`IMAGE`] whose process connects to a unix socket
    /// bind-mounted from the host, and accepts that connection. `args` go
    /// before the image (`--name`, `--label`, `--pod`, ...).
    pub fn run_workload(&self, args: &[&str]) -> Workload {
        let sock_dir = tempfile::Builder::new()
            .prefix("wl-")
            .tempdir_in(self.dir.path())
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let sock = sock_dir.path().join("workload.sock");
        let listener = UnixListener::bind(&sock).unwrap_or_else(|e| panic!("bind: {e}"));
        listener.set_nonblocking(true).ok();
        let volume = format!("{}:/ironroot", sock_dir.path().display());
        let mut run = vec!["run", "--detach", "--network", "none", "--volume", &volume];
        run.extend_from_slice(args);
        run.extend([
            IMAGE,
            "exec socat -u UNIX-CONNECT:/ironroot/workload.sock -",
        ]);
        let id = self.cli.run(&run);
        let container = Container {
            cli: self.cli.clone(),
            id: id.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let conn = loop {
            match listener.accept() {
                Ok((conn, _)) => break conn,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("accept: {e}"),
            }
            if Instant::now() > deadline {
                let logs = self.cli.output(&["logs", &id]);
                let ps = self.cli.output(&["ps", "--all"]);
                panic!(
                    "container {id} did not connect within 20 s\nlogs: {}{}\nps:\n{}",
                    String::from_utf8_lossy(&logs.stdout),
                    String::from_utf8_lossy(&logs.stderr),
                    String::from_utf8_lossy(&ps.stdout)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        conn.set_nonblocking(false).ok();
        Workload {
            conn,
            container,
            _sock_dir: sock_dir,
        }
    }

    /// `podman inspect --format FORMAT ID`.
    pub fn inspect(&self, id: &str, format: &str) -> String {
        self.cli.run(&["inspect", "--format", format, id])
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- tail of {} ---\n{}",
                self.log.display(),
                tail(&self.log, 30)
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

/// A pod, removed (with its containers) on drop.
pub struct Pod {
    cli: PodmanCli,
    /// The pod's id.
    pub id: String,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self
            .cli
            .output(&["pod", "rm", "--force", "--time", "0", &self.id]);
    }
}

/// A container, removed on drop.
pub struct Container {
    cli: PodmanCli,
    /// The container's id.
    pub id: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = self.cli.output(&["rm", "--force", "--time", "0", &self.id]);
    }
}

/// A container process connected to the host: `conn` is the host's end.
pub struct Workload {
    /// The accepted connection (SO_PEERCRED names the container process).
    pub conn: UnixStream,
    /// The container.
    pub container: Container,
    _sock_dir: TempDir,
}

fn write(p: &Path, text: &str) {
    fs::write(p, text).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn copy(from: &Path, to: &Path) {
    fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copy {} to {}: {e}", from.display(), to.display()));
}

/// The last `n` lines of a log file.
pub fn tail(p: &Path, n: usize) -> String {
    match fs::read(p) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}
