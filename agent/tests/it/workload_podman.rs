//! The podman workload attestor against a real rootful podman: a process in a
//! container connects to a unix socket bind-mounted from the host; the host
//! end gives its host PID (SO_PEERCRED) and the attestor is run on the
//! [`Caller`] built from that connection, against a private
//! `podman system service` (`ironroot_testkit::podman::workloads`). Expected values come from
//! the podman CLI and from `podman import`, not from the API the attestor reads.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironroot_agent::workload::attestor::podman::{
    container_id_from_cgroup, PodmanAttestor, PodmanConfig, PodmanError,
};
use ironroot_agent::workload::attestor::{attest_caller, WorkloadAttestError, WorkloadAttestor};
use ironroot_agent::workload::caller::Caller;
use ironroot_testkit::cgroup::TestCgroup;
use ironroot_testkit::podman::workloads::{Podman, Workload, IMAGE};

fn attestor(podman: &Podman) -> PodmanAttestor {
    PodmanAttestor::new(PodmanConfig {
        socket_path: podman.socket().to_owned(),
        ..PodmanConfig::default()
    })
    .expect("attestor config")
}

fn caller_of(w: &Workload) -> Caller {
    Caller::from_socket(w.conn.as_fd()).expect("caller from the accepted connection")
}

/// Selectors through the agent's path: every attestor, then the caller
/// re-checked (pidfd, start time).
fn attest(podman: &Podman, caller: &Caller) -> BTreeSet<String> {
    let attestors: Vec<Arc<dyn WorkloadAttestor>> = vec![Arc::new(attestor(podman))];
    attest_caller(&attestors, caller)
        .expect("podman attestation")
        .iter()
        .map(ToString::to_string)
        .collect()
}

fn set(items: &[String]) -> BTreeSet<String> {
    items.iter().cloned().collect()
}

#[test]
fn podman_container_in_a_pod_gets_container_and_pod_selectors() {
    let podman = Podman::start();
    let pod = podman.pod("shop", &["team=blue", "tier=front:end"]);
    let w = podman.run_workload(&[
        "--name",
        "web-1",
        "--pod",
        &pod.id,
        "--label",
        "app=web",
        "--label",
        "version=1.2",
    ]);
    let caller = caller_of(&w);

    // The cgroup the kernel reports for the host PID names the container.
    let cgroup = std::fs::read_to_string(caller.proc_path("cgroup")).expect("cgroup");
    assert_eq!(
        container_id_from_cgroup(&cgroup).as_deref(),
        Some(w.container.id.as_str()),
        "{cgroup}"
    );
    assert_eq!(
        podman.inspect(&w.container.id, "{{.Image}}"),
        podman.image_id
    );

    let got = attest(&podman, &caller);
    let expected = set(&[
        "podman:owner_uid:0".into(),
        format!("podman:image_id:{}", podman.image_id),
        format!("podman:image_name:{IMAGE}"),
        "podman:container_name:web-1".into(),
        "podman:label:app:web".into(),
        "podman:label:version:1.2".into(),
        "podman:pod_name:shop".into(),
        "podman:pod_label:team:blue".into(),
        "podman:pod_label:tier:front:end".into(),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn podman_container_without_pod_gets_no_pod_selectors() {
    let podman = Podman::start();
    let w = podman.run_workload(&["--name", "solo"]);
    let got = attest(&podman, &caller_of(&w));
    let expected = set(&[
        "podman:owner_uid:0".into(),
        format!("podman:image_id:{}", podman.image_id),
        format!("podman:image_name:{IMAGE}"),
        "podman:container_name:solo".into(),
    ]);
    assert_eq!(got, expected);
}

#[test]
fn podman_containers_with_other_labels_get_other_selectors() {
    let podman = Podman::start();
    let web = podman.run_workload(&["--name", "web", "--label", "app=web"]);
    let db = podman.run_workload(&["--name", "db", "--label", "app=db", "--label", "x=y"]);
    let web_sel = attest(&podman, &caller_of(&web));
    let db_sel = attest(&podman, &caller_of(&db));
    let only_web: BTreeSet<_> = web_sel.difference(&db_sel).cloned().collect();
    let only_db: BTreeSet<_> = db_sel.difference(&web_sel).cloned().collect();
    assert_eq!(
        only_web,
        set(&[
            "podman:container_name:web".into(),
            "podman:label:app:web".into()
        ])
    );
    assert_eq!(
        only_db,
        set(&[
            "podman:container_name:db".into(),
            "podman:label:app:db".into(),
            "podman:label:x:y".into(),
        ])
    );
    // An entry for app=web cannot match the db container.
    assert!(!db_sel.contains("podman:label:app:web"));
}

#[test]
fn podman_host_process_gets_no_podman_selectors() {
    let podman = Podman::start();
    let sock = podman.dir().join("host.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut child = Command::new("socat")
        .arg("-u")
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .arg("-")
        .stdout(Stdio::null())
        .spawn()
        .expect("socat on the host");
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("host process did not connect: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    let caller = Caller::from_socket(conn.as_fd()).expect("caller");
    assert_eq!(caller.pid as u32, child.id());
    assert!(attest(&podman, &caller).is_empty());
    // Not even asked: the answer is the same with podman unreachable.
    let nowhere = PodmanAttestor::new(PodmanConfig {
        socket_path: podman.dir().join("no-such.sock"),
        ..PodmanConfig::default()
    })
    .expect("config");
    assert!(nowhere
        .attest(&caller)
        .expect("no podman needed")
        .is_empty());
    drop(conn);
    child.kill().ok();
    child.wait().ok();
}

#[test]
fn podman_unreachable_is_an_error_naming_the_socket() {
    let mut podman = Podman::start();
    let w = podman.run_workload(&["--name", "orphan"]);
    let caller = caller_of(&w);
    // Reachable first, so the failure below is the service's absence.
    assert!(!attest(&podman, &caller).is_empty());
    podman.stop_service();
    let socket = podman.socket().display().to_string();
    match attestor(&podman).attest(&caller) {
        Err(WorkloadAttestError::Unavailable { attestor, reason }) => {
            assert_eq!(attestor, "podman");
            assert!(
                reason.contains(&socket) && reason.contains("unreachable"),
                "{reason}"
            );
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[test]
fn podman_unknown_container_is_an_error_naming_it() {
    let podman = Podman::start();
    // A (root's) cgroup naming a container this podman never had.
    let id = "0123456789abcdef".repeat(4);
    let mut cg = TestCgroup::new("unknown");
    let cgroup = format!("0::{}\n", cg.create(&format!("libpod-{id}"), 0));
    match attestor(&podman).attest_cgroup(&cgroup) {
        Err(e @ PodmanError::ContainerNotFound { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains(&id), "{msg}");
            assert!(
                msg.contains(&podman.socket().display().to_string()),
                "{msg}"
            );
        }
        other => panic!("expected ContainerNotFound, got {other:?}"),
    }
}

#[test]
fn podman_server_as_another_uid_is_refused() {
    // The rootful socket must be served by root; expecting a rootless
    // owner's uid instead makes the same (root) server unbelievable.
    let podman = Podman::start();
    let w = podman.run_workload(&["--name", "checked"]);
    let template = podman
        .socket()
        .display()
        .to_string()
        .replace("podman.sock", "{uid}.sock");
    std::os::unix::fs::symlink(podman.socket(), template.replace("{uid}", "4242"))
        .expect("symlink");
    let mut cg = TestCgroup::new("server-uid");
    let path = cg.create(
        &format!(
            "user.slice/user-4242.slice/user@4242.service/user.slice/libpod-{}.scope",
            w.container.id
        ),
        4242,
    );
    let attestor = PodmanAttestor::new(PodmanConfig {
        socket_path: podman.dir().join("unused.sock"),
        rootless_socket_path_template: template,
        rootless: true,
        rootless_uids: vec![4242],
        ..PodmanConfig::default()
    })
    .expect("config");
    match attestor.attest_cgroup(&format!("0::{path}\n")) {
        Err(PodmanError::ServerUid {
            uid: 0,
            expected: 4242,
            ..
        }) => {}
        other => panic!("expected ServerUid, got {other:?}"),
    }
}

/// The cgroup-name forgery, with real cgroups: a process of uid 65534 sits
/// in a cgroup it owns, named `libpod-<id>` after a real rootful container
/// (as a user with a delegated cgroup subtree can arrange). Its
/// `/proc/PID/cgroup` names that container; the owner check refuses it, and
/// the container's own process is still attested.
#[test]
fn podman_a_cgroup_named_after_a_container_by_another_user_is_refused() {
    let podman = Podman::start();
    let real = podman.run_workload(&["--name", "victim", "--label", "app=web"]);
    assert!(attest(&podman, &caller_of(&real)).contains("podman:label:app:web"));

    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let sock = dir.path().join("host.sock");
    let listener = UnixListener::bind(&sock).expect("bind");
    std::fs::set_permissions(&sock, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    listener.set_nonblocking(true).expect("nonblocking");
    let mut child = Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "--",
        ])
        .args(["socat", "-u"])
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("socat as nobody");
    let mut cg = TestCgroup::new("forged");
    let forged = cg.create(&format!("libpod-{}", real.container.id), 65534);
    cg.add_process(&forged, child.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let conn = loop {
        match listener.accept() {
            Ok((c, _)) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => panic!("the process did not connect: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    let caller = Caller::from_socket(conn.as_fd()).expect("caller");
    let text = std::fs::read_to_string(caller.proc_path("cgroup")).expect("cgroup");
    assert_eq!(
        container_id_from_cgroup(&text).as_deref(),
        Some(real.container.id.as_str()),
        "the forged cgroup names the container: {text}"
    );
    match attestor(&podman).attest(&caller) {
        Err(WorkloadAttestError::Unavailable { attestor, reason }) => {
            assert_eq!(attestor, "podman");
            assert!(
                reason.contains("owned by uid 65534") && reason.contains("rootful"),
                "{reason}"
            );
        }
        other => panic!("expected the forged cgroup to be refused, got {other:?}"),
    }
    drop(conn);
    child.kill().ok();
    child.wait().ok();
}
