//! Fixture for the workload attestor tests: a unix socket, a python child
//! that connects and reports its own view of itself, and helpers computing
//! expected values without the code under test.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::os::fd::AsFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironroot_agent::workload::attestor::{
    ExeHasher, ProcessAttestor, ProcessAttestorConfig, UnixAttestor, UnixAttestorConfig,
};
use ironroot_agent::workload::caller::Caller;
use ironroot_api::selector::Selector;
use sha2::{Digest, Sha256};

pub(crate) const PYTHON: &str = "/usr/bin/python3.11";
pub(crate) const NS_KINDS: [&str; 7] = ["mnt", "pid", "net", "user", "uts", "ipc", "cgroup"];

/// The child: connects, reports what it knows about itself (from its own
/// side: stat of /proc/self/ns/*, prctl for no_new_privs), then waits.
pub(crate) const CHILD_PY: &str = r#"
import ctypes, json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
info = {
    "pid": os.getpid(),
    "uid": os.geteuid(),
    "gid": os.getegid(),
    "groups": os.getgroups(),
    "ns": {k: os.stat("/proc/self/ns/" + k).st_ino for k in ["mnt", "pid", "net", "user", "uts", "ipc", "cgroup"]},
    "nnp": libc.prctl(39, 0, 0, 0, 0),
    "cgroup": open("/proc/self/cgroup").read(),
}
s.sendall((json.dumps(info) + "\n").encode())
if "exit" in sys.argv[2:]:
    sys.exit(0)
time.sleep(60)
"#;

pub(crate) struct Fixture {
    pub dir: tempfile::TempDir,
    pub listener: UnixListener,
    pub sock: PathBuf,
    pub script: PathBuf,
}

impl Fixture {
    pub(crate) fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tempdir");
        // Children may run as nobody: they must reach the script and socket.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod dir");
        let script = dir.path().join("child.py");
        std::fs::write(&script, CHILD_PY).expect("write script");
        let sock = dir.path().join("wl.sock");
        let listener = UnixListener::bind(&sock).expect("bind");
        std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777))
            .expect("chmod sock");
        listener.set_nonblocking(true).expect("nonblocking");
        Fixture {
            dir,
            listener,
            sock,
            script,
        }
    }

    /// Starts `cmd` (which must run child.py with the socket as its first
    /// argument) and accepts its connection.
    pub(crate) fn connect(&self, mut cmd: Command) -> Connected {
        let mut child = cmd.stdin(Stdio::null()).spawn().expect("spawn child");
        let deadline = Instant::now() + Duration::from_secs(30);
        let stream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if let Ok(Some(st)) = child.try_wait() {
                        panic!("child exited before connecting: {st}");
                    }
                    assert!(Instant::now() < deadline, "child did not connect");
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).expect("blocking");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .expect("child report");
        let info: serde_json::Value = serde_json::from_str(&line).expect("report is JSON");
        Connected {
            child,
            stream,
            info,
        }
    }

    pub(crate) fn python(&self, program: &Path) -> Command {
        let mut c = Command::new(program);
        c.arg(&self.script).arg(&self.sock);
        c
    }
}

pub(crate) struct Connected {
    pub child: Child,
    pub stream: UnixStream,
    pub info: serde_json::Value,
}

impl Connected {
    pub(crate) fn caller(&self) -> Caller {
        Caller::from_socket(self.stream.as_fd()).expect("caller from socket")
    }

    pub(crate) fn ns(&self, kind: &str) -> u64 {
        self.info["ns"][kind].as_u64().expect("ns inode")
    }

    pub(crate) fn end(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.end();
    }
}

pub(crate) fn sel(s: String) -> Selector {
    Selector::parse(&s).expect("selector")
}

pub(crate) fn set(v: Vec<Selector>) -> BTreeSet<Selector> {
    let n = v.len();
    let s: BTreeSet<Selector> = v.into_iter().collect();
    assert_eq!(s.len(), n, "an attestor returned a duplicate selector");
    s
}

pub(crate) fn sha256_file(p: &Path) -> String {
    hex::encode(Sha256::digest(std::fs::read(p).expect("read exe")))
}

/// Name of an id in /etc/passwd or /etc/group (field 3), read here rather
/// than through the same NSS calls the attestor makes.
pub(crate) fn name_in(file: &str, id: u32) -> Option<String> {
    std::fs::read_to_string(file)
        .expect("read name db")
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() > 2 && f[2] == id.to_string())
        .map(|f| f[0].to_string())
}

pub(crate) fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub(crate) fn attestors(max: u64) -> (UnixAttestor, ProcessAttestor) {
    let hasher = Arc::new(ExeHasher::new());
    (
        UnixAttestor::new(
            UnixAttestorConfig {
                sha256_max_bytes: max,
            },
            hasher.clone(),
        ),
        ProcessAttestor::new(
            ProcessAttestorConfig {
                sha256_max_bytes: max,
                ..Default::default()
            },
            hasher,
        ),
    )
}

/// The process selectors expected from the child's own report, except
/// exe/sha256/args/parent_exe/no_new_privs, which depend on the test.
pub(crate) fn cgroup_and_ns_selectors(c: &Connected) -> BTreeSet<Selector> {
    let mut want = BTreeSet::new();
    let cgroup = c.info["cgroup"].as_str().expect("cgroup");
    for line in cgroup.lines() {
        let parts: Vec<&str> = line.splitn(3, ':').collect();
        want.insert(sel(format!("process:cgroup:{}", parts[2])));
        if parts[1].is_empty() || parts[1] == "name=systemd" {
            // systemd's rule: the first component that is not a slice.
            if let Some(first) = parts[2]
                .split('/')
                .filter(|p| !p.is_empty())
                .find(|p| !p.ends_with(".slice"))
            {
                if first.ends_with(".service") || first.ends_with(".scope") {
                    want.insert(sel(format!("process:systemd_unit:{first}")));
                }
            }
        }
    }
    for kind in NS_KINDS {
        want.insert(sel(format!("process:ns:{kind}:{}", c.ns(kind))));
    }
    want
}

/// Whether the running kernel is at least `major.minor` (SO_PEERPIDFD: 6.5).
pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let release = nix::sys::utsname::uname().expect("uname");
    let mut parts = release
        .release()
        .to_str()
        .unwrap_or("0.0")
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|p| p.parse::<u32>().ok());
    let have = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    have >= (major, minor)
}

pub(crate) fn own_exe() -> String {
    std::fs::read_link("/proc/self/exe")
        .expect("own exe")
        .to_string_lossy()
        .into_owned()
}

/// Starts `/usr/bin/sleep 30` with exactly `pid`, via clone3's set_tid
/// (needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE). `None` if not allowed.
#[allow(unsafe_code)] // clone3 with set_tid has no safe wrapper
pub(crate) fn spawn_with_pid(pid: i32) -> Option<i32> {
    #[repr(C)]
    #[derive(Default)]
    struct CloneArgs {
        flags: u64,
        pidfd: u64,
        child_tid: u64,
        parent_tid: u64,
        exit_signal: u64,
        stack: u64,
        stack_size: u64,
        tls: u64,
        set_tid: u64,
        set_tid_size: u64,
        cgroup: u64,
    }
    // Everything the child touches is built before the clone: between
    // clone3 and execv it may only make async-signal-safe calls.
    let prog = c"/usr/bin/sleep";
    let argv = [prog.as_ptr(), c"30".as_ptr(), std::ptr::null()];
    let tids = [pid as libc::pid_t];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: tids.as_ptr() as u64,
        set_tid_size: 1,
        ..Default::default()
    };
    // SAFETY: clone3 without CLONE_VM duplicates the process like fork; the
    // child only calls execv and _exit.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if rc == 0 {
        // SAFETY: argv is NUL-terminated and outlives the call.
        unsafe {
            libc::execv(prog.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    if rc < 0 {
        eprintln!("clone3 set_tid={pid}: {}", std::io::Error::last_os_error());
        return None;
    }
    Some(rc as i32)
}
