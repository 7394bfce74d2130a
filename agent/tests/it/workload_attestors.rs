//! Workload attestors against real processes: each test starts a child that
//! connects to a unix socket, builds the [`Caller`] from the accepted end
//! (SO_PEERCRED + pidfd), and checks the selectors against values computed
//! independently (the child reports its own view of itself over the socket;
//! hashes and names are computed here from the files).

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::attestor_fixture::*;
use ironroot_agent::workload::attestor::{attest_caller, WorkloadAttestError, WorkloadAttestor};
use ironroot_agent::workload::caller::{Caller, CallerError, PidfdSource};
use ironroot_api::selector::Selector;

#[test]
fn workload_process_selectors_for_a_copied_binary_with_custom_argv() {
    let f = Fixture::new();
    // A private copy: its path and hash are known only to this test.
    let exe = f.dir.path().join("wl-python");
    std::fs::copy(PYTHON, &exe).expect("copy python");
    let exe = exe.canonicalize().expect("canonical");
    let mut cmd = f.python(&exe);
    cmd.arg0("my-worker").args(["--mode", "fast"]);
    let c = f.connect(cmd);
    let caller = c.caller();
    assert_eq!(caller.pid as u64, c.info["pid"].as_u64().expect("pid"));
    if kernel_at_least(6, 5) {
        assert_eq!(caller.pidfd_source(), PidfdSource::PeerPidfd);
    }

    let (_, process) = attestors(64 << 20);
    let got = set(process.attest(&caller).expect("attest"));

    let exe_s = exe.to_str().expect("utf-8");
    let mut want = cgroup_and_ns_selectors(&c);
    want.insert(sel(format!("process:exe:{exe_s}")));
    want.insert(sel(format!("process:sha256:{}", sha256_file(&exe))));
    want.insert(sel(format!(
        "process:args:my-worker {} {} --mode fast",
        f.script.display(),
        f.sock.display()
    )));
    want.insert(sel(format!("process:parent_exe:{}", own_exe())));
    assert_eq!(c.info["nnp"].as_u64(), Some(0));
    want.insert(sel("process:no_new_privs:false".into()));
    assert_eq!(got, want);
    caller.still_same().expect("still the same process");
}

#[test]
fn workload_unix_selectors_for_nobody_with_supplementary_groups() {
    if !is_root() {
        eprintln!("skipped: switching to uid 65534 needs root");
        return;
    }
    let f = Fixture::new();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid", "65534", "--regid", "65534", "--groups", "100,4242", "--", PYTHON,
    ])
    .arg(&f.script)
    .arg(&f.sock);
    let c = f.connect(cmd);
    let caller = c.caller();
    assert_eq!((caller.uid, caller.gid), (65534, 65534));
    let reported: BTreeSet<u64> = c.info["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .filter_map(|g| g.as_u64())
        .collect();
    assert_eq!(reported, BTreeSet::from([100, 4242]));

    let (unix, _) = attestors(64 << 20);
    let got = set(unix.attest(&caller).expect("attest"));

    let mut want = BTreeSet::from([
        sel("unix:uid:65534".into()),
        sel("unix:gid:65534".into()),
        sel(format!("unix:path:{PYTHON}")),
        sel(format!("unix:sha256:{}", sha256_file(Path::new(PYTHON)))),
    ]);
    if let Some(n) = name_in("/etc/passwd", 65534) {
        want.insert(sel(format!("unix:user:{n}")));
    }
    if let Some(n) = name_in("/etc/group", 65534) {
        want.insert(sel(format!("unix:group:{n}")));
    }
    for gid in [100, 4242] {
        want.insert(sel(format!("unix:supplementary_gid:{gid}")));
        if let Some(n) = name_in("/etc/group", gid) {
            want.insert(sel(format!("unix:supplementary_group:{n}")));
        }
    }
    assert_eq!(got, want);
}

#[test]
fn workload_namespaces_and_no_new_privs_of_an_isolated_caller() {
    if !is_root() {
        eprintln!("skipped: unshare --uts --ipc needs root");
        return;
    }
    let f = Fixture::new();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--uts",
        "--ipc",
        "--",
        "setpriv",
        "--no-new-privs",
        "--",
        PYTHON,
    ])
    .arg(&f.script)
    .arg(&f.sock);
    let c = f.connect(cmd);
    let caller = c.caller();
    // The child's uts and ipc namespaces are its own, not the test's: the
    // attestor must read the caller's, not the agent's.
    for kind in ["uts", "ipc"] {
        let mine = std::fs::metadata(format!("/proc/self/ns/{kind}"))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .expect("own ns");
        assert_ne!(c.ns(kind), mine, "{kind} namespace not unshared");
    }
    assert_eq!(c.info["nnp"].as_u64(), Some(1));

    let (_, process) = attestors(64 << 20);
    let got = set(process.attest(&caller).expect("attest"));
    let mut want = cgroup_and_ns_selectors(&c);
    want.insert(sel(format!("process:exe:{PYTHON}")));
    want.insert(sel(format!(
        "process:sha256:{}",
        sha256_file(Path::new(PYTHON))
    )));
    want.insert(sel(format!(
        "process:args:{PYTHON} {} {}",
        f.script.display(),
        f.sock.display()
    )));
    // unshare and setpriv exec in place: the parent is still this test.
    want.insert(sel(format!("process:parent_exe:{}", own_exe())));
    want.insert(sel("process:no_new_privs:true".into()));
    assert_eq!(got, want);
}

#[test]
fn workload_exe_over_the_size_cap_gets_no_sha256_selector() {
    let f = Fixture::new();
    let c = f.connect(f.python(Path::new(PYTHON)));
    let caller = c.caller();
    let size = std::fs::metadata(PYTHON).expect("stat").len();

    let (unix, process) = attestors(size - 1);
    let got: Vec<Selector> = [unix.attest(&caller), process.attest(&caller)]
        .into_iter()
        .flat_map(|r| r.expect("attest still succeeds"))
        .collect();
    assert!(
        got.iter().all(|s| !s.value.starts_with("sha256:")),
        "{got:?}"
    );
    assert!(got.contains(&sel(format!("unix:path:{PYTHON}"))));
    assert!(got.contains(&sel(format!("process:exe:{PYTHON}"))));

    // Exactly at the cap it is hashed.
    let (unix, _) = attestors(size);
    let got = unix.attest(&caller).expect("attest");
    assert!(got.contains(&sel(format!(
        "unix:sha256:{}",
        sha256_file(Path::new(PYTHON))
    ))));
}

#[test]
fn workload_long_or_control_character_args_get_no_args_selector() {
    let f = Fixture::new();
    let mut cmd = f.python(Path::new(PYTHON));
    cmd.arg("line\nbreak");
    let c = f.connect(cmd);
    let (_, process) = attestors(64 << 20);
    let got = process.attest(&c.caller()).expect("attest");
    assert!(got.iter().all(|s| !s.value.starts_with("args:")), "{got:?}");

    let mut cmd = f.python(Path::new(PYTHON));
    cmd.arg("x".repeat(2000));
    let c = f.connect(cmd);
    let got = process.attest(&c.caller()).expect("attest");
    assert!(got.iter().all(|s| !s.value.starts_with("args:")), "{got:?}");
    assert!(got.iter().any(|s| s.value.starts_with("exe:")));
}

#[test]
fn workload_caller_that_exited_before_accept_is_refused() {
    let f = Fixture::new();
    let mut cmd = f.python(Path::new(PYTHON));
    cmd.arg("exit");
    let mut c = f.connect(cmd);
    let status = c.child.wait().expect("reap");
    assert!(status.success());
    match Caller::from_socket(c.stream.as_fd()) {
        Err(CallerError::ProcessGone { pid }) => {
            assert_eq!(pid as u64, c.info["pid"].as_u64().expect("pid"))
        }
        other => panic!("expected ProcessGone, got {other:?}"),
    }
}

#[test]
fn workload_caller_that_exits_during_attestation_is_gone() {
    let f = Fixture::new();
    let mut c = f.connect(f.python(Path::new(PYTHON)));
    let caller = c.caller();
    let (unix, process) = attestors(64 << 20);
    let all: Vec<Arc<dyn WorkloadAttestor>> = vec![Arc::new(unix), Arc::new(process)];
    attest_caller(&all, &caller).expect("attest while alive");

    // Killed but not reaped (a zombie): already gone.
    c.child.kill().expect("kill");
    let deadline = Instant::now() + Duration::from_secs(10);
    while caller.still_same().is_ok() {
        assert!(Instant::now() < deadline, "exit not noticed");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        caller.still_same(),
        Err(CallerError::ProcessGone { .. })
    ));
    c.child.wait().expect("reap");
    for a in &all {
        assert!(
            matches!(
                a.attest(&caller),
                Err(WorkloadAttestError::ProcessGone { .. })
            ),
            "{} did not report the caller gone",
            a.name()
        );
    }
    assert!(matches!(
        attest_caller(&all, &caller),
        Err(WorkloadAttestError::ProcessGone { .. })
    ));
}

/// The PID-recycle race. The caller is accepted, then exits and is reaped,
/// and a new process is created with the very same PID (clone3 set_tid,
/// where allowed). /proc/PID now describes the *new* process — which is why
/// `still_same` exists: the start time no longer matches and the pidfd
/// reports its process dead, so nothing read there is used (the executable
/// recorded at accept is not the impostor's either). Without the privilege
/// to pick a PID, the same check is shown on the exited caller (and by the
/// unit test `a_different_start_time_is_a_replaced_process`).
#[test]
fn workload_recycled_pid_cannot_borrow_an_identity() {
    let f = Fixture::new();
    let mut c = f.connect(f.python(Path::new(PYTHON)));
    let caller = c.caller();
    let (unix, process) = attestors(64 << 20);
    let all: Vec<Arc<dyn WorkloadAttestor>> = vec![Arc::new(unix), Arc::new(process)];
    let before = attest_caller(&all, &caller).expect("attest while alive");
    assert!(before.contains(&sel(format!("unix:path:{PYTHON}"))));

    c.end();
    let Some(impostor) = spawn_with_pid(caller.pid) else {
        eprintln!("cannot choose a PID here; checking the exited caller only");
        assert!(caller.still_same().is_err());
        assert!(attest_caller(&all, &caller).is_err());
        return;
    };
    assert_eq!(impostor, caller.pid);
    // Wait until the impostor has exec'd sleep.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_link(format!("/proc/{impostor}/exe"))
        .map(|p| p != Path::new("/usr/bin/sleep"))
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "impostor did not exec");
        std::thread::sleep(Duration::from_millis(5));
    }

    // /proc/PID now answers for the impostor: the executable it leads to is
    // sleep, not the one recorded at accept, so even an attestor run alone
    // refuses to hash it...
    let (unix, _) = attestors(64 << 20);
    match unix.attest(&caller) {
        Err(WorkloadAttestError::CallerChanged(CallerError::ExeChanged { now, .. })) => {
            assert_eq!(now.as_deref(), Some(Path::new("/usr/bin/sleep")))
        }
        other => panic!("expected the impostor's executable to be refused, got {other:?}"),
    }
    // ...and the caller check says why: another process.
    match caller.still_same() {
        Err(CallerError::Replaced { pid, .. }) => assert_eq!(pid, impostor),
        other => panic!("expected Replaced, got {other:?}"),
    }
    assert!(matches!(
        attest_caller(&all, &caller),
        Err(WorkloadAttestError::ProcessGone { .. })
    ));

    let impostor = nix::unistd::Pid::from_raw(impostor);
    let _ = nix::sys::signal::kill(impostor, nix::sys::signal::Signal::SIGKILL);
    let _ = nix::sys::wait::waitpid(impostor, None);
}

/// A shared buffer the test's tracing subscriber writes to.
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn count(&self, needle: &str) -> usize {
        let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
        text.lines().filter(|l| l.contains(needle)).count()
    }
}

/// Log hygiene: a workload whose executable is over `sha256_max_bytes`
/// calling again and again (on one connection and on new ones, through both
/// attestors) is warned about once, not twice per call.
#[test]
fn workload_exe_over_the_size_cap_is_warned_about_once() {
    let log = LogBuf::default();
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let f = Fixture::new();
    let size = std::fs::metadata(PYTHON).expect("stat").len();
    let (unix, process) = attestors(size - 1);
    let all: Vec<Arc<dyn WorkloadAttestor>> = vec![Arc::new(unix), Arc::new(process)];
    tracing::subscriber::with_default(subscriber, || {
        for _ in 0..2 {
            let c = f.connect(f.python(Path::new(PYTHON)));
            let caller = c.caller();
            for _ in 0..5 {
                attest_caller(&all, &caller).expect("attest");
            }
        }
    });
    assert_eq!(log.count("larger than sha256_max_bytes"), 1);
    // Another executable over the cap is another warning.
    let other = f.dir.path().join("python-copy");
    std::fs::copy(PYTHON, &other).expect("copy python");
    let writer = log.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let c = f.connect(f.python(&other));
        attest_caller(&all, &c.caller()).expect("attest");
        attest_caller(&all, &c.caller()).expect("attest");
    });
    assert_eq!(log.count("larger than sha256_max_bytes"), 2);
}
