//! A caller's identity cannot change after connect, against real processes:
//! a caller that execs (another program, or the same one again) or changes
//! its credentials after connecting is refused with the reason, and a caller
//! that can point its own `/proc/PID/exe` anywhere (outside the agent's user
//! namespace) gets no executable selectors at all.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attestor_fixture::*;
use ironroot_agent::workload::attestor::{attest_caller, WorkloadAttestError, WorkloadAttestor};
use ironroot_agent::workload::caller::CallerError;

/// Connects, reports its pid, waits for "go" from the other end, then does
/// what argv[2] says:
/// - `fork-exec PROGRAM ARGS…`: forks a child that keeps the connection
///   (and waits for the other end to close it), and execs PROGRAM;
/// - `exec PROGRAM ARGS…`: execs PROGRAM;
/// - `drop-to-nobody`: setgroups([]), setgid and setuid to 65534, waits.
const ACTOR_PY: &str = r#"
import json, os, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall((json.dumps({"pid": os.getpid()}) + "\n").encode())
s.recv(3)
action = sys.argv[2]
if action == "fork-exec":
    if os.fork() == 0:
        s.recv(1)
        os._exit(0)
    os.execv(sys.argv[3], sys.argv[3:])
elif action == "exec":
    os.execv(sys.argv[3], sys.argv[3:])
elif action == "drop-to-nobody":
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)
time.sleep(60)
"#;

fn actor(f: &Fixture, python: &Path, args: &[&str]) -> Command {
    let script = f.dir.path().join("actor.py");
    std::fs::write(&script, ACTOR_PY).expect("write actor");
    let mut c = Command::new(python);
    c.arg(&script).arg(&f.sock).args(args);
    c
}

/// Sends "go" and waits until `done` holds.
fn go(c: &Connected, done: impl Fn() -> bool) {
    (&c.stream).write_all(b"go\n").expect("go");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "the actor did not act");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// setpriv arguments that run the rest as nobody, without groups.
const AS_NOBODY: [&str; 6] = [
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
    "--",
];

fn exe_of(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

fn both() -> Vec<Arc<dyn WorkloadAttestor>> {
    let (unix, process) = attestors(64 << 20);
    vec![Arc::new(unix), Arc::new(process)]
}

/// A private copy of sleep: the "allowed binary" of these tests.
fn allowed_sleep(f: &Fixture) -> PathBuf {
    let p = f.dir.path().join("allowed-sleep");
    std::fs::copy("/usr/bin/sleep", &p).expect("copy sleep");
    p
}

/// The attack of issue 8: connect, fork, the parent execs an allowed
/// binary, the child (which kept the connection) calls. The connection
/// belongs to the process that connected as it was then: neither the
/// child's call nor anything on that connection gets the allowed binary's
/// identity.
#[test]
fn workload_exec_after_connect_is_refused() {
    let f = Fixture::new();
    let allowed = allowed_sleep(&f);
    let allowed_s = allowed.to_str().expect("utf-8");
    let c = f.connect(actor(
        &f,
        Path::new(PYTHON),
        &["fork-exec", allowed_s, "60"],
    ));
    let caller = c.caller();
    let all = both();
    let before = attest_caller(&all, &caller).expect("attest before exec");
    assert!(before.contains(&sel(format!("unix:path:{PYTHON}"))));

    go(&c, || {
        exe_of(caller.pid).as_deref() == Some(allowed.as_path())
    });

    let err = attest_caller(&all, &caller).expect_err("refused after exec");
    assert!(err.refuses_caller(), "{err}");
    match &err {
        WorkloadAttestError::CallerChanged(CallerError::ExeChanged {
            pid,
            connected,
            now,
        }) => {
            assert_eq!(*pid, caller.pid);
            assert_eq!(connected, Path::new(PYTHON));
            assert_eq!(now.as_deref(), Some(allowed.as_path()));
        }
        other => panic!("expected ExeChanged, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("exec'd since connect"), "{msg}");
    // Each attestor alone refuses too: the executable is read from what was
    // recorded at accept, never from the path now.
    for a in &all {
        match a.attest(&caller) {
            Err(e) => assert!(e.refuses_caller(), "{}: {e}", a.name()),
            Ok(s) => assert!(
                !s.iter().any(|s| s.value.contains("allowed-sleep")),
                "{} gave the exec'd program's selectors: {s:?}",
                a.name()
            ),
        }
    }
    // And a new connection from the exec'd program is another caller: that
    // one would be attested as the allowed binary (not exercised here: sleep
    // does not connect), which is the honest way to get its identity.
}

/// exec of the very file the caller already ran is an exec all the same:
/// refused (a new program image must open its own connection).
#[test]
fn workload_exec_of_the_same_binary_is_refused() {
    let f = Fixture::new();
    let c = f.connect(actor(
        &f,
        Path::new(PYTHON),
        &["exec", PYTHON, "-c", "import time; time.sleep(60)"],
    ));
    let caller = c.caller();
    let all = both();
    attest_caller(&all, &caller).expect("attest before exec");
    let pid = caller.pid;
    go(&c, || {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|l| !l.windows(6).any(|w| w == b"actor."))
            .unwrap_or(false)
    });
    assert_eq!(exe_of(pid).as_deref(), Some(Path::new(PYTHON)));
    match attest_caller(&all, &caller) {
        Err(WorkloadAttestError::CallerChanged(CallerError::Execed { pid: p })) => {
            assert_eq!(p, pid)
        }
        other => panic!("expected Execed, got {other:?}"),
    }
}

/// setuid after connect: the connection was made as root; a process that
/// dropped to nobody since is neither root nor nobody to the agent, it is
/// refused (it must reconnect to be attested as what it is now).
#[test]
fn workload_credentials_changed_after_connect_are_refused() {
    if !is_root() {
        eprintln!("skipped: changing uid needs root");
        return;
    }
    let f = Fixture::new();
    let c = f.connect(actor(&f, Path::new(PYTHON), &["drop-to-nobody"]));
    let caller = c.caller();
    assert_eq!(caller.uid, 0);
    let all = both();
    attest_caller(&all, &caller).expect("attest as connected");
    let pid = caller.pid;
    go(&c, || {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| {
                s.lines()
                    .any(|l| l.starts_with("Uid:") && l.contains("65534"))
            })
            .unwrap_or(false)
    });
    match attest_caller(&all, &caller) {
        Err(WorkloadAttestError::CallerChanged(CallerError::CredentialsChanged {
            change, ..
        })) => {
            assert!(change.contains("effective UID 65534 (was 0)"), "{change}");
            assert!(change.contains("effective GID 65534 (was 0)"), "{change}");
        }
        other => panic!("expected CredentialsChanged, got {other:?}"),
    }
}

/// The attack the user-namespace rule stops: an unprivileged process in a
/// user namespace of its own points its /proc/PID/exe at /usr/bin/sleep
/// (prctl PR_SET_MM_MAP, no exec) and connects. Its exe link says sleep;
/// the agent must not believe it.
#[test]
fn workload_exe_claimed_in_a_user_namespace_gets_no_executable_selectors() {
    if !is_root() {
        eprintln!("skipped: running the claimant as nobody needs root");
        return;
    }
    let userns = Command::new("setpriv")
        .args(AS_NOBODY)
        .args(["unshare", "--user", "true"])
        .status()
        .expect("setpriv");
    if !userns.success() {
        eprintln!("skipped: unprivileged user namespaces are forbidden here (no claim possible)");
        return;
    }
    let f = Fixture::new();
    let bin = f.dir.path().join("claim_exe");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/claim_exe.c");
    let out = Command::new("cc")
        .args(["-O1", "-Wl,-z,now", "-o"])
        .arg(&bin)
        .arg(&src)
        .output()
        .expect("run cc (a C compiler comes with the Rust toolchain's linker)");
    assert!(
        out.status.success(),
        "cc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loader = interpreter_of(&bin);
    let mut cmd = Command::new("setpriv");
    cmd.args(AS_NOBODY)
        .arg(&loader)
        .arg(&bin)
        .arg(&f.sock)
        .arg("/usr/bin/sleep");
    let c = f.connect(cmd);
    let caller = c.caller();
    // The claim worked: the kernel now reports sleep as its executable.
    assert_eq!(
        exe_of(caller.pid).as_deref(),
        Some(Path::new("/usr/bin/sleep"))
    );
    assert_eq!(caller.executable().path(), Path::new("/usr/bin/sleep"));
    assert!(!caller.executable().attestable());

    let got = attest_caller(&both(), &caller).expect("attest");
    assert!(got.contains(&sel("unix:uid:65534".into())), "{got:?}");
    for s in &got {
        assert!(
            !matches!(
                (s.kind.as_str(), s.value.split(':').next()),
                ("unix", Some("path" | "sha256")) | ("process", Some("exe" | "sha256"))
            ),
            "executable selector for a caller that chose its exe link: {s}"
        );
    }
}

/// An honest caller in its own user namespace (`unshare -U`) is attested
/// by everything but its executable.
#[test]
fn workload_caller_in_another_user_namespace_keeps_its_other_selectors() {
    if !is_root() {
        eprintln!("skipped: unshare --user needs root or unprivileged user namespaces");
        return;
    }
    let f = Fixture::new();
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--", PYTHON])
        .arg(&f.script)
        .arg(&f.sock);
    let c = f.connect(cmd);
    let caller = c.caller();
    assert!(!caller.executable().attestable());
    let got = attest_caller(&both(), &caller).expect("attest");
    assert!(got.contains(&sel("unix:uid:0".into())), "{got:?}");
    assert!(got.iter().any(|s| s.value.starts_with("ns:user:")));
    assert!(got.iter().any(|s| s.value.starts_with("args:")));
    assert!(
        !got.iter().any(|s| s.value.starts_with("path:")
            || s.value.starts_with("sha256:")
            || s.value.starts_with("exe:")),
        "{got:?}"
    );
}

/// The ELF interpreter (PT_INTERP) of a dynamically linked binary, read
/// from its `.interp` bytes.
fn interpreter_of(bin: &Path) -> PathBuf {
    let bytes = std::fs::read(bin).expect("read binary");
    let head = &bytes[..bytes.len().min(4096)];
    let start = head
        .windows(5)
        .position(|w| w == b"/lib/" || w == b"/lib6")
        .expect("an ELF interpreter path");
    let len = head[start..]
        .iter()
        .position(|&b| b == 0)
        .expect("NUL-terminated");
    PathBuf::from(String::from_utf8_lossy(&head[start..start + len]).into_owned())
}
