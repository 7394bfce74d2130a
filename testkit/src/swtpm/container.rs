//! The `container` backend of the swtpm harness: swtpm in a container started through
//! testcontainers, from a local image built from the host's swtpm (see the parent module).
//!
//! The engine is the one testcontainers itself resolves (`DOCKER_HOST`, else
//! `/var/run/docker.sock`): podman's Docker-compatible socket here. It must be local (the state
//! dir is bind-mounted and the container shares the host's network) and it must be podman (the
//! image is made with `podman --url … import`).
//!
//! testcontainers' async API runs on one runtime private to this module, so a [`Swtpm`] can be
//! started and dropped from any thread, inside a test's own tokio runtime too (testcontainers'
//! `SyncRunner` would panic there: it blocks on a runtime of its own).
//!
//! [`Swtpm`]: super::Swtpm

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use testcontainers::bollard::Docker;
use testcontainers::core::client::docker_client_instance;
use testcontainers::core::Mount;
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use crate::podman;

/// Label on every swtpm container of this harness (value `swtpm`): what a sweep looks for.
pub const LABEL: &str = "ironroot.testkit";
/// Label naming the test process that owns the container: `<hostname>:<pid>:<start time>`.
pub(super) const OWNER_LABEL: &str = "ironroot.testkit.owner";
/// Label naming the test that started the container.
pub const TEST_LABEL: &str = "ironroot.testkit.test";
/// The image's repository; its tag is a hash of everything that goes into it.
pub(super) const IMAGE_NAME: &str = "localhost/ironroot-swtpm";
/// Bumped when the image recipe changes (its tag changes with it).
const IMAGE_RECIPE: u32 = 1;
const ENTRYPOINT: &[&str] = &["/usr/bin/swtpm"];
/// Where the TPM state dir and the test's log dir are mounted in the container.
const STATE_MOUNT: &str = "/state";
const LOG_MOUNT: &str = "/log";
const ENGINE_TIMEOUT: Duration = Duration::from_secs(10);

/// The runtime every engine call runs on (never dropped: no test ever owns it).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("ironroot-testkit-engine")
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build a tokio runtime for testcontainers: {e}"))
    })
}

/// Runs `fut` on the module's runtime and waits for it, from any thread (a test's runtime
/// included: the caller only blocks on a channel).
fn block<T: Send + 'static>(fut: impl Future<Output = T> + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    runtime().spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv()
        .unwrap_or_else(|_| panic!("a testcontainers call panicked (see above)"))
}

/// Where testcontainers looks for the engine, for messages.
pub(super) fn engine_location() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => format!("DOCKER_HOST={h}"),
        _ => "unix:///var/run/docker.sock (DOCKER_HOST unset: testcontainers' default)".into(),
    }
}

/// The engine's URL for the podman CLI (`podman --url`).
fn engine_url() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if !h.is_empty() => h,
        _ => "unix:///var/run/docker.sock".into(),
    }
}

async fn client() -> Result<Docker, String> {
    docker_client_instance()
        .await
        .map_err(|e| format!("no container engine client for {}: {e}", engine_location()))
}

/// Whether the engine testcontainers would use answers a ping (within 10 s).
pub(super) fn engine_answers() -> Result<(), String> {
    block(async {
        let ping = async {
            let docker = docker_client_instance().await.map_err(|e| e.to_string())?;
            docker.ping().await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(ENGINE_TIMEOUT, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{} does not answer: {e}", engine_location())),
            Err(_) => Err(format!(
                "{} did not answer within {ENGINE_TIMEOUT:?}",
                engine_location()
            )),
        }
    })
}

/// `localhost/ironroot-swtpm:<hash>`, built into the engine's store when missing: a rootfs of
/// the host's swtpm and the libraries `ldd` lists for it, imported with `podman import`. The
/// tag hashes the recipe and every file's path and content, so a changed swtpm or library
/// makes a new image. Once per process; across processes a file lock lets one build it.
pub(super) fn image() -> Result<(String, String), String> {
    static IMAGE: OnceLock<Result<(String, String), String>> = OnceLock::new();
    IMAGE.get_or_init(ensure_image).clone()
}

fn ensure_image() -> Result<(String, String), String> {
    let swtpm = which("swtpm").ok_or_else(|| {
        "swtpm not found on PATH: install it with scripts/install-deps.sh".to_string()
    })?;
    let files = podman::ldd_closure(&swtpm);
    let mut h = Sha256::new();
    h.update(format!("ironroot-swtpm v{IMAGE_RECIPE} {ENTRYPOINT:?}\n"));
    for f in &files {
        let content = std::fs::read(f).map_err(|e| format!("cannot read {}: {e}", f.display()))?;
        h.update(f.to_string_lossy().as_bytes());
        h.update([0]);
        h.update((content.len() as u64).to_le_bytes());
        h.update(&content);
    }
    let tag = hex::encode(&h.finalize()[..8]);
    let image = format!("{IMAGE_NAME}:{tag}");
    if image_exists(&image)? {
        return Ok((IMAGE_NAME.into(), tag));
    }
    let lock_dir = crate::target_dir().join("tmp/ironroot-testkit");
    std::fs::create_dir_all(&lock_dir)
        .map_err(|e| format!("cannot create {}: {e}", lock_dir.display()))?;
    let lock_path = lock_dir.join("swtpm-image.lock");
    let lock_file = std::fs::File::create(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| format!("cannot lock {}: {e}", lock_path.display()))?;
    if image_exists(&image)? {
        return Ok((IMAGE_NAME.into(), tag));
    }
    let work = tempfile::Builder::new()
        .prefix("ironroot-swtpm-image-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let rootfs = work.path().join("rootfs");
    podman::copy_with_libraries(&swtpm, &rootfs);
    for dir in [STATE_MOUNT, LOG_MOUNT, "/tmp"] {
        let d = rootfs.join(dir.trim_start_matches('/'));
        std::fs::create_dir_all(&d).map_err(|e| format!("cannot create {}: {e}", d.display()))?;
    }
    podman::import_rootfs(
        &podman::PodmanCli::remote(&engine_url()),
        &rootfs,
        ENTRYPOINT,
        &image,
    );
    Ok((IMAGE_NAME.into(), tag))
}

fn image_exists(image: &str) -> Result<bool, String> {
    let image = image.to_owned();
    block(async move {
        let docker = client().await?;
        match docker.inspect_image(&image).await {
            Ok(_) => Ok(true),
            Err(testcontainers::bollard::errors::Error::DockerResponseServerError {
                status_code: 404,
                ..
            }) => Ok(false),
            Err(e) => Err(format!(
                "cannot inspect {image} on {}: {e}",
                engine_location()
            )),
        }
    })
}

fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// This process, as the owner label names it: host name, PID and start time (clock ticks
/// since boot), so a recycled PID is never taken for the owner.
fn owner_of(pid: u32) -> Option<String> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 22 (starttime), counted after the command name's closing parenthesis.
    let start = stat.rsplit_once(')')?.1.split_whitespace().nth(19)?;
    Some(format!("{}:{pid}:{start}", host.trim()))
}

/// Whether the owner label names a process that is still running on this host (labels from
/// other hosts, and labels this harness did not write, count as alive: not ours to judge).
fn owner_alive(label: &str) -> bool {
    let mut parts = label.splitn(3, ':');
    let (Some(host), Some(pid), Some(_start)) = (parts.next(), parts.next(), parts.next()) else {
        return true;
    };
    let this_host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if host != this_host.trim() {
        return true;
    }
    match pid.parse::<u32>() {
        Ok(pid) => owner_of(pid).as_deref() == Some(label),
        Err(_) => true,
    }
}

/// Removes every swtpm container of this harness whose owning test process is gone (a test
/// killed before its [`Swtpm`](super::Swtpm) was dropped). Returns how many it removed.
///
/// Through the podman CLI, not the Docker API: podman 4.3 lists a container that is being
/// stopped with the state `stopped`, which the Docker API's clients (bollard) refuse to parse.
pub(super) fn sweep_leftovers() -> Result<usize, String> {
    let cli = podman::PodmanCli::remote(&engine_url());
    let out = cli.output(&[
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        &format!("label={LABEL}=swtpm"),
        "--format",
        &format!("{{{{.ID}}}}\t{{{{index .Labels \"{OWNER_LABEL}\"}}}}"),
    ]);
    if !out.status.success() {
        return Err(format!(
            "cannot list containers on {}: {}",
            engine_location(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let dead: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let (id, owner) = l.split_once('\t').unwrap_or((l, ""));
            (!id.is_empty() && !owner_alive(owner.trim())).then(|| id.trim().to_owned())
        })
        .collect();
    if dead.is_empty() {
        return Ok(0);
    }
    let mut args = vec!["rm", "--force", "--time", "0"];
    args.extend(dead.iter().map(String::as_str));
    let out = cli.output(&args);
    if !out.status.success() {
        return Err(format!(
            "cannot remove leftover containers {dead:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(dead.len())
}

/// Why [`start`] failed: worth another try on new ports, or not (no image, no engine).
pub(super) enum StartError {
    Retry(String),
    Fatal(String),
}

/// A running swtpm container, removed on drop.
pub(super) struct SwtpmContainer {
    container: Option<Arc<ContainerAsync<GenericImage>>>,
    id: String,
    pid: i32,
}

impl std::fmt::Debug for SwtpmContainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwtpmContainer")
            .field("id", &self.id)
            .field("pid", &self.pid)
            .finish()
    }
}

impl SwtpmContainer {
    /// The container's id (64 hex).
    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// swtpm's host PID.
    pub(super) fn pid(&self) -> i32 {
        self.pid
    }
}

impl Drop for SwtpmContainer {
    fn drop(&mut self) {
        if let Some(container) = self.container.take() {
            let id = self.id.clone();
            let r = block(async move {
                match Arc::try_unwrap(container) {
                    Ok(c) => c.rm().await,
                    // Not shared in practice; dropping it removes it too (testcontainers).
                    Err(shared) => {
                        drop(shared);
                        Ok(())
                    }
                }
            });
            if let Err(e) = r {
                eprintln!(
                    "ironroot-testkit: could not remove swtpm container {id}: {e} \
                     (a later run sweeps it: label {LABEL}=swtpm)"
                );
            }
        }
    }
}

/// Starts swtpm in a container on `state_dir` (bind-mounted), listening on 127.0.0.1 ports
/// `port` and `port + 1` of the host, logging into `log` (its dir is bind-mounted). Waits until
/// the container's own swtpm holds both ports. `Err` when it did not come up (another process
/// took a port first, for one): the caller retries with other ports.
pub(super) fn start(state_dir: &Path, log: &Path, port: u16) -> Result<SwtpmContainer, StartError> {
    static SWEPT: OnceLock<()> = OnceLock::new();
    SWEPT.get_or_init(|| {
        if let Err(e) = sweep_leftovers() {
            eprintln!("ironroot-testkit: sweeping leftover swtpm containers failed: {e}");
        }
    });
    let (name, tag) = image().map_err(StartError::Fatal)?;
    let log_dir = log.parent().unwrap_or(Path::new("/"));
    let log_name = log
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "swtpm.log".into());
    let owner = owner_of(std::process::id()).unwrap_or_default();
    // Host networking, not two mapped ports: the TCTI puts the control port at P+1, and an
    // engine allocates mapped host ports independently (random ones are never consecutive),
    // so the pair has to be chosen here anyway. With the host's network swtpm binds the
    // chosen pair itself on 127.0.0.1: a port another test took first makes it exit at
    // once (seen below; the caller retries with new ports) instead of a port forward that
    // accepts and then fails. It also skips per-container NAT rules (netavark/iptables,
    // serialised under the xtables lock when parallel tests start containers) and keeps the
    // TPM off every interface but loopback.
    let request = GenericImage::new(name, tag)
        .with_cmd([
            "socket".to_string(),
            "--tpm2".into(),
            "--tpmstate".into(),
            format!("dir={STATE_MOUNT}"),
            "--server".into(),
            format!("type=tcp,port={port},bindaddr=127.0.0.1"),
            "--ctrl".into(),
            format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1),
            "--flags".into(),
            "not-need-init,startup-clear".into(),
            "--log".into(),
            format!("file={LOG_MOUNT}/{log_name},level=1"),
        ])
        .with_mount(Mount::bind_mount(state_dir.to_string_lossy(), STATE_MOUNT))
        .with_mount(Mount::bind_mount(log_dir.to_string_lossy(), LOG_MOUNT))
        .with_label(LABEL, "swtpm")
        .with_label(OWNER_LABEL, owner)
        .with_label(TEST_LABEL, crate::current_test_name())
        .with_host_config_modifier(|hc| {
            hc.network_mode = Some("host".into());
            hc.publish_all_ports = Some(false);
            hc.port_bindings = None;
        })
        .with_startup_timeout(Duration::from_secs(30));
    let container = block(async move {
        match tokio::time::timeout(Duration::from_secs(40), request.start()).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("the engine did not start the container within 40 s".into()),
        }
    })
    .map_err(|e| {
        let e = format!(
            "cannot start a swtpm container on {}: {e}",
            engine_location()
        );
        // A swtpm that exits at once (a port taken) can fail testcontainers' own inspection
        // of the new container; an engine that stopped answering cannot be retried.
        match engine_answers() {
            Ok(()) => StartError::Retry(e),
            Err(down) => StartError::Fatal(format!("{e} ({down})")),
        }
    })?;
    let id = container.id().to_owned();
    let mut handle = SwtpmContainer {
        container: Some(Arc::new(container)),
        id: id.clone(),
        pid: 0,
    };
    let pid =
        inspect_pid(&id).map_err(|e| StartError::Retry(format!("{e}: {}", handle.output())))?;
    handle.pid = pid;
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    if alive(pid) && !cgroup.contains(&id) {
        return Err(StartError::Fatal(format!(
            "the engine says container {id} runs as PID {pid}, but /proc/{pid} here is not \
             that container (cgroup {:?}): the container backend needs an engine on this \
             machine, in this PID namespace ({})",
            cgroup.trim(),
            engine_location()
        )));
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if listens(pid, port) && listens(pid, port + 1) {
            return Ok(handle);
        }
        let running = alive(pid);
        if !running || Instant::now() > deadline {
            let why = if running {
                "did not listen within 15 s"
            } else {
                "exited"
            };
            return Err(StartError::Retry(format!(
                "swtpm in container {id} (host pid {pid}) {why} on 127.0.0.1:{port}/{}: {}",
                port + 1,
                handle.output()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl SwtpmContainer {
    /// The container's stdout and stderr, for messages.
    fn output(&self) -> String {
        let Some(c) = self.container.clone() else {
            return String::new();
        };
        let (out, err) = block(async move {
            let out = c.stdout_to_vec().await.unwrap_or_default();
            let err = c.stderr_to_vec().await.unwrap_or_default();
            (out, err)
        });
        format!(
            "stdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out).trim(),
            String::from_utf8_lossy(&err).trim()
        )
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

/// State.Pid of a running container (an error when it is not running, or when the engine's
/// answer cannot be parsed: podman's `stopped` state, for one).
fn inspect_pid(id: &str) -> Result<i32, String> {
    let id = id.to_owned();
    block(async move {
        let docker = client().await?;
        let info = docker
            .inspect_container(&id, None)
            .await
            .map_err(|e| format!("cannot inspect container {id}: {e}"))?;
        let state = info.state.unwrap_or_default();
        match (state.running, state.pid) {
            (Some(true), Some(pid)) if pid > 0 => Ok(pid as i32),
            _ => Err(format!(
                "container {id} is not running (status {:?}, exit code {:?})",
                state.status, state.exit_code
            )),
        }
    })
}

/// Whether process `pid` holds a socket listening on TCP `port` (looked up in its own
/// network namespace's table): the proof that the port is this container's swtpm, not a
/// process that took the port first.
pub(super) fn listens(pid: i32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")) else {
        return false;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit_once(':')?.1;
            let inode = format!("socket:[{}]", f.get(9)?);
            (u16::from_str_radix(local_port, 16).ok()? == port && *f.get(3)? == "0A")
                .then_some(inode)
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swtpm::{backend, Backend, SwtpmOptions, SwtpmState};

    /// A port another process holds makes swtpm in the container exit: the attempt is
    /// retryable (new ports), and never taken for a TPM on that port.
    #[test]
    fn a_taken_port_makes_the_attempt_retryable() {
        if backend() != Backend::Container {
            eprintln!("notice: container backend not selected; scripts/test.sh runs this again");
            return;
        }
        let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
        let tmp = tempfile::tempdir().expect("temp dir");
        let state_dir = state.copy_state(tmp.path());
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = taken.local_addr().expect("addr").port();
        match start(&state_dir, &tmp.path().join("swtpm.log"), port) {
            Err(StartError::Retry(e)) => assert!(e.contains("exited"), "{e}"),
            Err(StartError::Fatal(e)) => panic!("not retryable: {e}"),
            Ok(c) => panic!(
                "container {} taken for a TPM on port {port}, held here",
                c.id()
            ),
        }
    }
}
