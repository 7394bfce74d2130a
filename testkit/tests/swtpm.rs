//! The swtpm harness itself: ready when returned, gone after drop (also after a panic), on
//! the backend `IRONROOT_SWTPM_BACKEND` selects (scripts/test.sh runs this file with
//! `process` and again with `container`).

use std::net::TcpStream;

use ironroot_testkit::podman::PodmanCli;
use ironroot_testkit::swtpm::{
    backend, choose_backend, sweep_leftover_containers, Backend, SwtpmOptions, SwtpmState,
    BACKEND_ENV, CONTAINER_LABEL, CONTAINER_TEST_LABEL,
};

/// A live process has a command line; a dead or zombie one has none.
fn alive(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

#[test]
fn spawned_swtpm_answers_and_is_killed_by_pid_on_drop() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    assert!(state.ca_root_cert.is_file() && state.issuer_cert.is_file());
    let tpm = state.spawn();
    assert!(tpm.tcti().starts_with("swtpm:host=127.0.0.1,port="));
    TcpStream::connect(("127.0.0.1", tpm.port() + 1)).expect("control port answers");
    let (pid, log) = (tpm.pid(), tpm.log_path().to_path_buf());
    assert!(alive(pid));
    assert!(log.starts_with(ironroot_testkit::target_dir().join("test-logs")));
    drop(tpm);
    assert!(!alive(pid), "swtpm {pid} survived its handle");
}

#[test]
fn swtpm_is_killed_when_the_test_panics() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let tpm = state.spawn();
        tx.send(tpm.pid()).expect("send pid");
        panic!("test failure while swtpm runs");
    })
    .join();
    assert!(r.is_err());
    let pid = rx.recv().expect("pid");
    assert!(!alive(pid), "swtpm {pid} survived a panicking test");
}

#[test]
fn two_tpms_from_one_state_are_independent() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let (a, b) = (state.spawn(), state.spawn());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.state_dir(), b.state_dir());
}

/// TPM2_GetRandom(8) sent raw over the TCTI's TCP port (what the `swtpm` TCTI sends): the
/// response code and the bytes.
fn get_random(port: u16) -> (u32, Vec<u8>) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("TPM port answers");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    // tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_GetRandom, bytesRequested 8
    s.write_all(&[0x80, 0x01, 0, 0, 0, 12, 0, 0, 0x01, 0x7b, 0, 8])
        .expect("send GetRandom");
    let mut head = [0u8; 10];
    s.read_exact(&mut head).expect("response header");
    let size = u32::from_be_bytes(head[2..6].try_into().unwrap()) as usize;
    let rc = u32::from_be_bytes(head[6..10].try_into().unwrap());
    let mut body = vec![0u8; size.saturating_sub(10)];
    s.read_exact(&mut body).expect("response body");
    let bytes = body.get(2..).map(<[u8]>::to_vec).unwrap_or_default();
    (rc, bytes)
}

fn mount_ns(pid: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .map(|l| l.to_string_lossy().into_owned())
        .unwrap_or_else(|e| panic!("mount namespace of {pid}: {e}"))
}

/// The podman CLI on the engine the container backend uses (`DOCKER_HOST`).
fn engine_cli() -> PodmanCli {
    let host = std::env::var("DOCKER_HOST")
        .expect("the container backend runs with DOCKER_HOST set (with-podman sets it)");
    PodmanCli::remote(&host)
}

fn container_listed(cli: &PodmanCli, id: &str) -> bool {
    let ps = cli.run(&[
        "ps",
        "--all",
        "--no-trunc",
        "--filter",
        &format!("label={CONTAINER_LABEL}=swtpm"),
        "--format",
        "{{.ID}}",
    ]);
    ps.lines().any(|l| l.trim() == id)
}

/// Whichever backend this run uses, the TPM answers through its TCTI, and it runs where the
/// backend says: as a host process in this test's mount namespace, or in a container (own
/// mount namespace, cgroup naming the container, listed by the engine with the harness's
/// label and this test's name, gone after drop).
#[test]
fn swtpm_runs_where_the_backend_says_and_answers_through_its_tcti() {
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let tpm = state.spawn();
    assert_eq!(tpm.backend(), backend());
    let port: u16 = tpm
        .tcti()
        .strip_prefix("swtpm:host=127.0.0.1,port=")
        .and_then(|p| p.parse().ok())
        .expect("tcti names 127.0.0.1 and a port");
    let (rc, bytes) = get_random(port);
    assert_eq!(rc, 0, "GetRandom response code");
    assert_eq!(bytes.len(), 8, "GetRandom returned {bytes:?}");

    let pid = tpm.pid().to_string();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("swtpm cgroup");
    match backend() {
        Backend::Process => {
            assert_eq!(tpm.container_id(), None);
            assert_eq!(mount_ns(&pid), mount_ns("self"), "swtpm not on the host");
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).expect("cmdline");
            let state_dir = tpm.state_dir().to_string_lossy().into_owned();
            assert!(String::from_utf8_lossy(&cmdline).contains(&state_dir));
        }
        Backend::Container => {
            let id = tpm.container_id().expect("a container id").to_owned();
            assert_eq!(id.len(), 64, "{id}");
            assert_ne!(
                mount_ns(&pid),
                mount_ns("self"),
                "swtpm (pid {pid}) shares the test's mount namespace: not in a container"
            );
            assert!(
                cgroup.contains(&id),
                "cgroup of {pid} does not name {id}:\n{cgroup}"
            );
            let cli = engine_cli();
            assert!(container_listed(&cli, &id), "engine does not list {id}");
            let test = cli.run(&[
                "inspect",
                "--format",
                &format!("{{{{index .Config.Labels \"{CONTAINER_TEST_LABEL}\"}}}}"),
                &id,
            ]);
            assert!(
                test.contains("swtpm_runs_where_the_backend_says"),
                "test label {test:?}"
            );
            drop(tpm);
            assert!(!container_listed(&cli, &id), "{id} survived its handle");
            assert!(!alive(pid.parse().unwrap()), "swtpm {pid} survived");
        }
    }
}

/// Only the container run exercises these; the process run says so.
fn container_run() -> bool {
    if backend() == Backend::Container {
        return true;
    }
    eprintln!(
        "notice: container backend not selected ({BACKEND_ENV}); scripts/test.sh runs this \
         test again with {BACKEND_ENV}=container"
    );
    false
}

#[test]
fn a_panicking_test_leaves_no_container_behind() {
    if !container_run() {
        return;
    }
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let (tx, rx) = std::sync::mpsc::channel();
    let r = std::thread::spawn(move || {
        let tpm = state.spawn();
        tx.send(tpm.container_id().map(str::to_owned))
            .expect("send id");
        panic!("test failure while the swtpm container runs");
    })
    .join();
    assert!(r.is_err());
    let id = rx.recv().expect("id").expect("a container");
    assert!(
        !container_listed(&engine_cli(), &id),
        "{id} outlived a panicking test"
    );
}

#[test]
fn process_and_container_backends_side_by_side() {
    if !container_run() {
        return;
    }
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let (p, c) = (
        state.spawn_on(Backend::Process),
        state.spawn_on(Backend::Container),
    );
    assert_eq!(
        (p.backend(), c.backend()),
        (Backend::Process, Backend::Container)
    );
    for tpm in [&p, &c] {
        assert_eq!(
            get_random(tpm.port()).0,
            0,
            "{:?} TPM answers",
            tpm.backend()
        );
    }
    assert_eq!(mount_ns(&p.pid().to_string()), mount_ns("self"));
    assert_ne!(mount_ns(&c.pid().to_string()), mount_ns("self"));
}

#[test]
fn leftovers_of_a_dead_test_process_are_swept() {
    if !container_run() {
        return;
    }
    // A container as a killed test process leaves it: labelled, owner long gone (no PID
    // reaches 2^31 - 1 on Linux). Made from the harness's own image.
    let state = SwtpmState::shared("testkit", &SwtpmOptions::default());
    let tpm = state.spawn(); // makes sure the image is there
    let cli = engine_cli();
    let image = cli.run(&[
        "inspect",
        "--format",
        "{{.ImageName}}",
        tpm.container_id().expect("container"),
    ]);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    let owner = format!("ironroot.testkit.owner={}:2147483647:1", host.trim());
    let label = format!("{CONTAINER_LABEL}=swtpm");
    let id = cli.run(&[
        "create",
        "--label",
        &label,
        "--label",
        &owner,
        &image,
        "--version",
    ]);
    // Another test process starting its first container sweeps too, and may get there first:
    // what counts is that the leftover is gone once a sweep ran.
    sweep_leftover_containers().expect("sweep");
    assert!(!container_listed(&cli, &id), "leftover {id} not swept");
    // A live test's container is not touched.
    let live = tpm.container_id().expect("container").to_owned();
    assert!(
        container_listed(&cli, &live),
        "the sweep removed a live test's container"
    );
}

#[test]
fn backend_choice_from_the_environment() {
    let never = || -> Result<(), String> { panic!("engine asked for the process backend") };
    assert_eq!(choose_backend(None, never), Ok(Backend::Process));
    assert_eq!(choose_backend(Some("process"), never), Ok(Backend::Process));
    let down = || Err("unix:///nowhere does not answer".to_string());
    let up = || Ok(());
    assert_eq!(
        choose_backend(Some("container"), up),
        Ok(Backend::Container)
    );
    assert_eq!(choose_backend(Some("auto"), up), Ok(Backend::Container));
    assert_eq!(choose_backend(Some("auto"), down), Ok(Backend::Process));
    // `container` without an engine is an error that says what to do, never a fallback.
    let e = choose_backend(Some("container"), down).expect_err("no engine");
    for words in [
        "no container engine answers",
        "unix:///nowhere",
        "DOCKER_HOST",
        "with-podman",
        "IRONROOT_SWTPM_BACKEND=process",
    ] {
        assert!(e.contains(words), "{words:?} missing from: {e}");
    }
    let e = choose_backend(Some("docker"), up).expect_err("unknown backend");
    assert!(
        e.contains("\"docker\" is not a swtpm backend") && e.contains("auto"),
        "{e}"
    );
}
