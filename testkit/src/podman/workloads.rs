//! Containers and pods as workloads, on a private rootful podman per test ([`Podman`]: a
//! [`PodmanService`] on a private store, killed by PID on drop, its log under
//! `target/test-logs/<test>/`), with the test image in a store made once and cached under
//! `target/tmp/ironroot-testkit/podman/` ([`image_store`]: imported from a rootfs of static
//! busybox plus socat and its libraries, and podman's pod pause image), used read-only by
//! every test through `additionalimagestores`. What the agent's podman attestor tests run.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{ImageStore, PodmanCli, PodmanService};
use crate::INSTALL_HINT;

/// The test image (imported, never pulled).
pub const IMAGE: &str = "localhost/ironroot-test:latest";
/// Bumped when the image recipe changes, so cached stores are made again.
const RECIPE_VERSION: u32 = 1;
const BUSYBOX: &str = "/bin/busybox";
const SOCAT: &str = "/usr/bin/socat";

/// Fails (never skips) when rootful podman or the test image's inputs are
/// missing.
pub fn require() {
    super::require_podman();
    assert!(
        Path::new(SOCAT).is_file(),
        "{SOCAT} missing (package socat): {INSTALL_HINT}"
    );
    assert!(
        Path::new(BUSYBOX).is_file(),
        "{BUSYBOX} missing (package busybox-static): {INSTALL_HINT}"
    );
}

/// The image store, made once (on disk, shared by all test processes).
pub fn image_store() -> &'static ImageStore {
    static STORE: OnceLock<ImageStore> = OnceLock::new();
    STORE.get_or_init(|| {
        require();
        super::cached_image_store("images", RECIPE_VERSION, |cli, scratch| {
            let rootfs = scratch.join("rootfs");
            build_rootfs(&rootfs);
            let image_id = super::import_rootfs(cli, &rootfs, &["/bin/sh", "-c"], IMAGE);
            // Creating a pod builds podman's pause image (from catatonit) into
            // this store, so tests never pay for it.
            cli.run(&["pod", "create", "--name", "warm-up", "--network", "none"]);
            cli.run(&["pod", "rm", "--force", "warm-up"]);
            image_id
        })
    })
}

/// A root filesystem with static busybox (`sh`, `sleep`, `cat`) and socat
/// with the libraries `ldd` lists for it.
fn build_rootfs(rootfs: &Path) {
    let bin = rootfs.join("bin");
    std::fs::create_dir_all(&bin).unwrap_or_else(|e| panic!("mkdir {}: {e}", bin.display()));
    std::fs::copy(BUSYBOX, bin.join("busybox")).unwrap_or_else(|e| panic!("copy {BUSYBOX}: {e}"));
    for applet in ["sh", "sleep", "cat", "echo"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet))
            .unwrap_or_else(|e| panic!("symlink {applet}: {e}"));
    }
    super::copy_with_libraries(Path::new(SOCAT), rootfs);
    std::fs::create_dir_all(rootfs.join("tmp")).ok();
}

/// A private rootful podman with its API service running, and the test
/// image in its image stores.
pub struct Podman {
    service: PodmanService,
    /// What the test image's id is.
    pub image_id: String,
}

impl Podman {
    /// Starts a podman API service on a private store (images from
    /// [`image_store`]) and waits until its socket accepts connections.
    pub fn start() -> Podman {
        let images = image_store();
        let log_dir = crate::test_log_dir(&crate::current_test_name());
        let service = PodmanService::start(&[&images.store], &log_dir.join("podman-service.log"));
        Podman {
            service,
            image_id: images.image_id.clone(),
        }
    }

    /// The API socket.
    pub fn socket(&self) -> &Path {
        self.service.socket()
    }

    /// The CLI on this podman's store.
    pub fn cli(&self) -> &PodmanCli {
        self.service.cli()
    }

    /// A private dir for the test's own files.
    pub fn dir(&self) -> &Path {
        self.service.dir()
    }

    /// Stops the API service (kill by PID, then reap).
    pub fn stop_service(&mut self) {
        self.service.stop_service();
    }

    /// Creates a pod (no network) with `labels` (`k=v`), removed on drop.
    pub fn pod(&self, name: &str, labels: &[&str]) -> Pod {
        let mut args = vec!["pod", "create", "--name", name, "--network", "none"];
        for l in labels {
            args.extend(["--label", l]);
        }
        let id = self.cli().run(&args);
        Pod {
            cli: self.cli().clone(),
            id,
        }
    }

    /// Runs a container of [`IMAGE`] whose process connects to a unix socket
    /// bind-mounted from the host, and accepts that connection. `args` go
    /// before the image (`--name`, `--label`, `--pod`, ...).
    pub fn run_workload(&self, args: &[&str]) -> Workload {
        let sock_dir = tempfile::Builder::new()
            .prefix("wl-")
            .tempdir_in(self.dir())
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
        let id = self.cli().run(&run);
        let container = Container {
            cli: self.cli().clone(),
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
                let logs = self.cli().output(&["logs", &id]);
                let ps = self.cli().output(&["ps", "--all"]);
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
        self.cli().run(&["inspect", "--format", format, id])
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
