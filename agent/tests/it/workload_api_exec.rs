//! A caller's identity cannot change after connect, end to end: the real
//! server, `ironroot-agent run` on a swtpm, and workloads whose connection
//! is used after the process that made it exec'd. This test borrows the
//! connection of a workload's process (pidfd_getfd, as root) and speaks
//! gRPC on it, as a forked child holding the socket would.
//!
//! The entry `unix:uid:0` + `unix:path:<a private copy of python>` stands
//! for "an allowed binary" (the issue's `unix:path:/usr/bin/sleep`).

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::attestor_fixture::PYTHON;
use crate::common::*;
use hyper_util::rt::TokioIo;
use ironroot_agent::api_client;
use ironroot_api::workload as pb;
use ironroot_api::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use tonic::transport::{Channel, Endpoint, Uri};

const T: &str = "workload_api_exec";
const ALLOWED: &str = "spiffe://example.org/workload/allowed-binary";

/// Connects to the agent socket (argv[1]), then:
/// - `hold`: reports {"holder": own pid, "fd": n} and sleeps;
/// - `fork-exec PROGRAM ARGS…`: forks a child that keeps the connection,
///   reports {"holder": child pid, "fd": n}, waits for a line on stdin,
///   then execs PROGRAM.
const ACTOR_PY: &str = r#"
import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
if sys.argv[2] == "hold":
    print(json.dumps({"holder": os.getpid(), "fd": s.fileno()}), flush=True)
    time.sleep(600)
child = os.fork()
if child == 0:
    time.sleep(600)
    os._exit(0)
print(json.dumps({"holder": child, "fd": s.fileno()}), flush=True)
sys.stdin.readline()
os.execv(sys.argv[3], sys.argv[3:])
"#;

/// A workload process (and its forked child, if any), killed by PID on drop.
struct Actor {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: i32,
    holder: i32,
    fd: i32,
}

impl Actor {
    fn start(python: &Path, script: &Path, socket: &Path, args: &[&str]) -> Actor {
        let mut child = Command::new(python)
            .arg(script)
            .arg(socket)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the workload");
        let stdin = child.stdin.take();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("workload report");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("report {line:?}: {e}"));
        Actor {
            pid: child.id() as i32,
            holder: v["holder"].as_i64().expect("holder") as i32,
            fd: v["fd"].as_i64().expect("fd") as i32,
            child,
            stdin,
        }
    }

    /// Tells a `fork-exec` workload to exec, and waits until it has: its
    /// executable is `expect_exe` and its command line no longer names the
    /// script (which an exec of the same file leaves as the only sign).
    fn exec(&mut self, expect_exe: &Path) {
        let mut stdin = self.stdin.take().expect("not told yet");
        stdin.write_all(b"go\n").expect("tell the workload to exec");
        let pid = self.pid;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let script_gone = !cmdline.is_empty() && !cmdline.windows(8).any(|w| w == b"actor.py");
            if exe.as_deref() == Some(expect_exe) && script_gone {
                return;
            }
            assert!(Instant::now() < deadline, "the workload did not exec");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A copy of the connection the workload made, taken from the process
    /// holding it (pidfd_getfd needs ptrace access: the test runs as root).
    #[allow(unsafe_code)] // pidfd_open and pidfd_getfd have no safe wrapper in nix 0.29
    fn borrow_connection(&self) -> std::os::unix::net::UnixStream {
        // SAFETY: plain syscalls with integer arguments; each returned fd is
        // new and owned by nothing else.
        unsafe {
            let pidfd = libc::syscall(libc::SYS_pidfd_open, self.holder, 0);
            assert!(
                pidfd >= 0,
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            );
            let pidfd = OwnedFd::from_raw_fd(pidfd as i32);
            let fd = libc::syscall(
                libc::SYS_pidfd_getfd,
                std::os::fd::AsRawFd::as_raw_fd(&pidfd),
                self.fd,
                0,
            );
            assert!(fd >= 0, "pidfd_getfd: {}", std::io::Error::last_os_error());
            std::os::unix::net::UnixStream::from_raw_fd(fd as i32)
        }
    }
}

impl Drop for Actor {
    fn drop(&mut self) {
        if self.holder != self.pid {
            let holder = nix::unistd::Pid::from_raw(self.holder);
            let _ = nix::sys::signal::kill(holder, nix::sys::signal::Signal::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Workload API client speaking on an existing connection.
async fn client_on(stream: std::os::unix::net::UnixStream) -> SpiffeWorkloadApiClient<Channel> {
    stream.set_nonblocking(true).expect("nonblocking");
    let slot = Arc::new(Mutex::new(Some(
        tokio::net::UnixStream::from_std(stream).expect("tokio stream"),
    )));
    let channel = Endpoint::try_from("http://workload.api")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let s = slot.lock().expect("slot").take();
            async move {
                s.map(TokioIo::new)
                    .ok_or_else(|| std::io::Error::other("the borrowed connection is used up"))
            }
        }))
        .await
        .expect("HTTP/2 on the borrowed connection");
    SpiffeWorkloadApiClient::new(channel)
}

async fn fetch_first(
    c: &mut SpiffeWorkloadApiClient<Channel>,
) -> Result<pb::X509svidResponse, tonic::Status> {
    let mut stream = c
        .fetch_x509svid(api_client::request(pb::X509svidRequest {}))
        .await?
        .into_inner();
    Ok(stream.message().await?.expect("a first message"))
}

fn leaf(r: &pb::X509svidResponse) -> Vec<u8> {
    let s = r
        .svids
        .iter()
        .find(|s| s.spiffe_id == ALLOWED)
        .expect("the allowed binary's SVID");
    let pem = api_client::concat_der_to_pem(&s.x509_svid).expect("pem");
    ironroot_testkit::server::pem_ders(&pem).remove(0)
}

fn agent_log() -> String {
    std::fs::read_to_string(ironroot_testkit::test_log_dir(T).join("agent.log")).unwrap_or_default()
}

fn assert_refused_for_exec(r: Result<pb::X509svidResponse, tonic::Status>, words: &str) {
    let e = r.expect_err("a call on the old connection after exec");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains(words), "{e:?}");
    assert!(!e.message().contains("no identity issued"), "{e:?}");
}

#[test]
fn workload_api_refuses_a_connection_whose_caller_exec_d() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: borrowing a workload's connection (pidfd_getfd) needs root");
        return;
    }
    let env = good_env(T);
    let (tpm, log, agent_id) = booted_node(&env);
    let dir = tempfile::tempdir().expect("tempdir");
    let allowed: PathBuf = dir.path().join("allowed-python");
    std::fs::copy(PYTHON, &allowed).expect("copy python");
    let script = dir.path().join("actor.py");
    std::fs::write(&script, ACTOR_PY).expect("script");
    // Short-lived SVIDs, so the held stream sees a rotation.
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        ALLOWED,
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
        "--selector",
        &format!("unix:path:{}", allowed.display()),
        "--x509-svid-ttl",
        "8",
    ]);
    let agent = start_agent(&env, &tpm, &log, T);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sleeper = ["-c", "import time; time.sleep(600)"];

    // The honest workload: the allowed binary connects and holds a stream.
    let honest = Actor::start(&allowed, &script, &agent.socket, &["hold"]);
    let mut honest_client = rt.block_on(client_on(honest.borrow_connection()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        match rt.block_on(fetch_first(&mut honest_client)) {
            Ok(r) if r.svids.iter().any(|s| s.spiffe_id == ALLOWED) => break r,
            other => assert!(
                Instant::now() < deadline,
                "no SVID for the allowed binary: {other:?}"
            ),
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(first.svids.len(), 1);
    let mut held = rt
        .block_on(honest_client.fetch_x509svid(api_client::request(pb::X509svidRequest {})))
        .expect("stream")
        .into_inner();

    // The attack: a process that is not the allowed binary connects, forks,
    // and execs the allowed binary; its child calls on the connection.
    let mut attacker = Actor::start(
        Path::new(PYTHON),
        &script,
        &agent.socket,
        &[
            "fork-exec",
            allowed.to_str().expect("utf-8"),
            sleeper[0],
            sleeper[1],
        ],
    );
    let mut stolen = rt.block_on(client_on(attacker.borrow_connection()));
    let e = rt
        .block_on(fetch_first(&mut stolen))
        .expect_err("python is not the allowed binary");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("no identity issued"), "{e:?}");
    attacker.exec(&allowed);
    assert_refused_for_exec(
        rt.block_on(fetch_first(&mut stolen)),
        "runs another executable than when it connected",
    );
    let jwt = rt.block_on(
        stolen.fetch_jwtsvid(api_client::request(pb::JwtsvidRequest {
            audience: vec!["db".into()],
            spiffe_id: String::new(),
        })),
    );
    assert_eq!(
        jwt.expect_err("no JWT-SVID either").code(),
        tonic::Code::PermissionDenied
    );
    assert!(
        agent_log().contains("workload caller refused"),
        "no log line for the refusal"
    );

    // exec of the same binary: granted before, refused after.
    let mut again = Actor::start(
        &allowed,
        &script,
        &agent.socket,
        &[
            "fork-exec",
            allowed.to_str().expect("utf-8"),
            sleeper[0],
            sleeper[1],
        ],
    );
    let mut same = rt.block_on(client_on(again.borrow_connection()));
    let before = rt
        .block_on(fetch_first(&mut same))
        .expect("the allowed binary");
    assert_eq!(before.svids[0].spiffe_id, ALLOWED);
    again.exec(&allowed);
    assert_refused_for_exec(
        rt.block_on(fetch_first(&mut same)),
        "has exec'd since it connected",
    );

    // Meanwhile the honest stream keeps going across a rotation, and its
    // connection still serves new calls.
    let first_leaf = leaf(&first);
    let rotated = rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let m = held
                    .message()
                    .await
                    .expect("the honest stream keeps working")
                    .expect("the stream stays open");
                if leaf(&m) != first_leaf {
                    return m;
                }
            }
        })
        .await
        .expect("a rotated SVID on the held stream within 30s")
    });
    assert_eq!(rotated.svids.len(), 1);
    let now = rt
        .block_on(fetch_first(&mut honest_client))
        .expect("the honest connection still serves");
    assert_eq!(now.svids[0].spiffe_id, ALLOWED);
    drop(honest);
}
