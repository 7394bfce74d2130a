use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::chown;
use std::os::unix::net::UnixListener;
use std::sync::{Arc, Mutex};
use std::thread;

use super::*;

const ID: &str = "9830f857ee41aebf19c4f1e2ec1a833ce090ecb02ddd464977276a811bee7be7";
const POD: &str = "3889967858e95f3cd1cbc4e2656fe12f18862ec7436fb02d86e350ec7bb2230f";
const IMAGE: &str = "eb1f84844195c8a60e755eaa5a022fbddc8ba49d1ea8943a7dc31851915d88dd";

fn container_path(id: &str) -> String {
    format!("/v4.0.0/libpod/containers/{id}/json")
}
fn pod_path(id: &str) -> String {
    format!("/v4.0.0/libpod/pods/{id}/json")
}
fn container_json(pod: &str) -> String {
    format!(
        r#"{{"Id":"{ID}","Name":"web-1","ImageName":"localhost/app:1","Image":"{IMAGE}",
            "Pod":"{pod}","Config":{{"Labels":{{"app":"web"}}}}}}"#
    )
}
fn pod_json() -> String {
    format!(r#"{{"Id":"{POD}","Name":"shop","Labels":{{"team":"blue"}}}}"#)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A cgroup tree of the test's own (a `memory` and a unified hierarchy
/// under a temp dir, described by a mountinfo file), so the owner of a
/// container's cgroup can be set by chown.
struct CgroupTree {
    dir: tempfile::TempDir,
    mountinfo: PathBuf,
}

impl CgroupTree {
    fn new() -> CgroupTree {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let mountinfo = dir.path().join("mountinfo");
        std::fs::write(
            &mountinfo,
            format!(
                "1 0 0:1 / {d}/memory rw - cgroup cgroup rw,memory\n\
                 2 0 0:2 / {d}/unified rw - cgroup2 cgroup2 rw\n"
            ),
        )
        .unwrap();
        CgroupTree { dir, mountinfo }
    }

    /// Creates the cgroup `path` in both hierarchies, owned by `uid`.
    fn add(&self, path: &str, uid: u32) {
        for h in ["memory", "unified"] {
            let p = self.dir.path().join(h).join(path.trim_start_matches('/'));
            std::fs::create_dir_all(&p).unwrap();
            chown(&p, Some(uid), None).unwrap();
        }
    }
}

/// A fake podman API: answers each path from `routes` (404 otherwise) with a
/// chunked body, as podman does, and records the paths asked for. Beside it,
/// a cgroup tree where the rootful container [`ID`] is root's.
struct FakePodman {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    asked: Arc<Mutex<Vec<String>>>,
    cgroups: CgroupTree,
}

impl FakePodman {
    /// `None` (test skipped) unless root: a podman socket is dialled only
    /// from root-owned directories, and cgroups are given owners by chown.
    fn start(routes: &[(String, u16, String)]) -> Option<FakePodman> {
        if !is_root() {
            eprintln!("skipped: needs root (root-owned socket directories, chown)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("podman.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let routes: HashMap<String, (u16, String)> = routes
            .iter()
            .map(|(p, s, b)| (p.clone(), (*s, b.clone())))
            .collect();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let mut reader = BufReader::new(conn);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).unwrap();
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l).unwrap() == 0 || l == "\r\n" {
                        break;
                    }
                }
                let path = request_line
                    .split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                log.lock().unwrap().push(path.clone());
                let (status, body) = routes.get(&path).cloned().unwrap_or((
                    404,
                    r#"{"cause":"no such container","message":"no such object","response":404}"#
                        .into(),
                ));
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n\
                     Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
                    body.len()
                );
                let mut conn = reader.into_inner();
                conn.write_all(reply.as_bytes()).ok();
            }
        });
        let cgroups = CgroupTree::new();
        cgroups.add(&format!("/libpod_parent/libpod-{ID}"), 0);
        Some(FakePodman {
            _dir: dir,
            socket,
            asked,
            cgroups,
        })
    }

    fn config(&self) -> PodmanConfig {
        PodmanConfig {
            socket_path: self.socket.clone(),
            check_server_uid: false,
            ..PodmanConfig::default()
        }
    }

    fn attestor_with(&self, config: PodmanConfig) -> PodmanAttestor {
        PodmanAttestor::new(config)
            .unwrap()
            .with_mountinfo(self.cgroups.mountinfo.clone())
    }

    fn attestor(&self) -> PodmanAttestor {
        self.attestor_with(self.config())
    }

    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
}

fn cgroup(id: &str) -> String {
    format!("4:memory:/libpod_parent/libpod-{id}\n0::/libpod_parent/libpod-{id}\n")
}

fn strings(s: &[Selector]) -> Vec<String> {
    s.iter().map(ToString::to_string).collect()
}

#[test]
fn container_in_a_pod() {
    let Some(fake) = FakePodman::start(&[
        (container_path(ID), 200, container_json(POD)),
        (pod_path(POD), 200, pod_json()),
    ]) else {
        return;
    };
    let sel = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap();
    assert_eq!(
        strings(&sel),
        [
            "podman:container_name:web-1".to_owned(),
            format!("podman:image_id:{IMAGE}"),
            "podman:image_name:localhost/app:1".to_owned(),
            "podman:label:app:web".to_owned(),
            "podman:owner_uid:0".to_owned(),
            "podman:pod_label:team:blue".to_owned(),
            "podman:pod_name:shop".to_owned(),
        ]
    );
    assert_eq!(fake.asked(), [container_path(ID), pod_path(POD)]);
}

#[test]
fn container_without_pod_asks_only_for_the_container() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(""))]) else {
        return;
    };
    let sel = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap();
    assert!(strings(&sel).iter().all(|s| !s.starts_with("podman:pod_")));
    assert_eq!(sel.len(), 5);
    assert!(strings(&sel).contains(&"podman:owner_uid:0".to_owned()));
    assert_eq!(fake.asked(), [container_path(ID)]);
}

#[test]
fn host_process_gets_nothing_and_podman_is_not_asked() {
    let attestor = PodmanAttestor::new(PodmanConfig {
        socket_path: "/nonexistent/podman.sock".into(),
        ..PodmanConfig::default()
    })
    .unwrap();
    assert!(attestor
        .attest_cgroup("0::/system.slice/sshd.service\n")
        .unwrap()
        .is_empty());
    // This test process, unless the tests themselves run in a container.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    if container_id_from_cgroup(&own).is_none() {
        assert!(attestor
            .attest_pid(std::process::id() as i32)
            .unwrap()
            .is_empty());
    }
}

#[test]
fn unknown_container_is_an_error_naming_it() {
    let Some(fake) = FakePodman::start(&[]) else {
        return;
    };
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(&err, PodmanError::ContainerNotFound { id, .. } if id == ID));
    let msg = err.to_string();
    assert!(
        msg.contains(ID) && msg.contains(&fake.socket.display().to_string()),
        "{msg}"
    );
}

#[test]
fn unknown_pod_is_an_error_naming_it() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(POD))]) else {
        return;
    };
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(
        matches!(&err, PodmanError::PodNotFound { pod, .. } if pod == POD),
        "{err}"
    );
    assert!(err.to_string().contains(POD));
}

#[test]
fn http_error_carries_podmans_message() {
    let Some(fake) = FakePodman::start(&[(
        container_path(ID),
        500,
        r#"{"cause":"x","message":"database is locked","response":500}"#.into(),
    )]) else {
        return;
    };
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PodmanError::Status { status: 500, .. }));
    assert!(
        msg.contains("database is locked") && msg.contains(&container_path(ID)),
        "{msg}"
    );
}

#[test]
fn unreachable_socket_is_an_error_naming_it() {
    let Some(fake) = FakePodman::start(&[]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gone.sock");
    for check_server_uid in [false, true] {
        let attestor = fake.attestor_with(PodmanConfig {
            socket_path: socket.clone(),
            check_server_uid,
            ..PodmanConfig::default()
        });
        let err = attestor.attest_cgroup(&cgroup(ID)).unwrap_err();
        assert!(matches!(&err, PodmanError::Unreachable { socket: s, .. } if *s == socket));
        assert!(err.to_string().contains("gone.sock"), "{err}");
    }
    // A socket file nobody listens on any more: connection refused.
    drop(UnixListener::bind(&socket).unwrap());
    let attestor = fake.attestor_with(PodmanConfig {
        socket_path: socket.clone(),
        check_server_uid: false,
        ..PodmanConfig::default()
    });
    let err = attestor.attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::Unreachable { .. }), "{err}");
}

#[test]
fn answer_for_another_container_is_refused() {
    let other = ID.replace('9', "1");
    let json = container_json("").replacen(ID, &other, 1);
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, json)]) else {
        return;
    };
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::WrongObject { .. }), "{err}");
}

#[test]
fn pod_id_that_is_not_an_id_is_refused() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json("../../x"))])
    else {
        return;
    };
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::BadPodId { .. }), "{err}");
    assert_eq!(fake.asked(), [container_path(ID)]);
}

#[test]
fn non_json_answer_is_an_error() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, "<html>".into())]) else {
        return;
    };
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::Json { .. }), "{err}");
}

fn rootless_cgroup(uid: u32) -> String {
    format!(
        "0::/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/libpod-{ID}.scope/container\n"
    )
}

fn rootless_dir(uid: u32) -> String {
    format!("/user.slice/user-{uid}.slice/user@{uid}.service/user.slice/libpod-{ID}.scope")
}

#[test]
fn rootless_containers_are_not_attested_by_default() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(""))]) else {
        return;
    };
    fake.cgroups.add(&rootless_dir(1000), 1000);
    let dir = fake.socket.parent().unwrap().to_owned();
    let attestor = fake.attestor_with(PodmanConfig {
        rootless_socket_path_template: format!("{}/{{uid}}/podman.sock", dir.display()),
        ..fake.config()
    });
    assert!(!attestor.config().rootless);
    assert!(attestor
        .attest_cgroup(&rootless_cgroup(1000))
        .unwrap()
        .is_empty());
    assert!(fake.asked().is_empty(), "a user's podman was asked");
}

#[test]
fn rootless_container_uses_the_socket_of_an_opted_in_owner_only() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(""))]) else {
        return;
    };
    let dir = fake.socket.parent().unwrap().to_owned();
    // That user's runtime directory and socket, as a rootless podman has.
    std::fs::create_dir(dir.join("1000")).unwrap();
    std::fs::rename(&fake.socket, dir.join("1000/podman.sock")).unwrap();
    chown(dir.join("1000"), Some(1000), None).unwrap();
    chown(dir.join("1000/podman.sock"), Some(1000), None).unwrap();
    fake.cgroups.add(&rootless_dir(1000), 1000);
    fake.cgroups.add(&rootless_dir(1001), 1001);
    let config = PodmanConfig {
        socket_path: "/nonexistent/rootful.sock".into(),
        rootless_socket_path_template: format!("{}/{{uid}}/podman.sock", dir.display()),
        rootless: true,
        rootless_uids: vec![1000],
        ..fake.config()
    };
    let attestor = fake.attestor_with(config.clone());
    let got = strings(&attestor.attest_cgroup(&rootless_cgroup(1000)).unwrap());
    assert_eq!(got.len(), 5, "{got:?}");
    assert!(got.contains(&"podman:owner_uid:1000".to_owned()), "{got:?}");
    assert_eq!(fake.asked(), [container_path(ID)]);

    // A user who was not opted in: no selectors, and nothing is asked.
    assert!(attestor
        .attest_cgroup(&rootless_cgroup(1001))
        .unwrap()
        .is_empty());
    assert_eq!(fake.asked().len(), 1);

    let off = fake.attestor_with(PodmanConfig {
        rootless: false,
        ..config
    });
    assert!(off
        .attest_cgroup(&rootless_cgroup(1000))
        .unwrap()
        .is_empty());
    assert!(
        off.attest_cgroup(&cgroup(ID)).is_err(),
        "rootful still asked"
    );
}

/// Someone with a cgroup subtree of their own (a delegated service, a
/// user's systemd) names a cgroup `libpod-<id of a root container>` and
/// moves into it: the path looks like that rootful container's, but the
/// directory is theirs.
#[test]
fn a_cgroup_named_after_a_root_container_by_its_owner_is_refused() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(""))]) else {
        return;
    };
    let forged = format!("/system.slice/svc.service/libpod-{ID}");
    fake.cgroups.add(&forged, 1000);
    let text = format!("4:memory:{forged}\n0::{forged}\n");
    match fake.attestor().attest_cgroup(&text) {
        Err(PodmanError::CgroupNotOwned {
            id,
            found,
            expected,
            kind,
            ..
        }) => {
            assert_eq!(id, ID);
            assert_eq!((found, expected, kind), (1000, 0, "rootful"));
        }
        other => panic!("expected CgroupNotOwned, got {other:?}"),
    }
    assert!(
        fake.asked().is_empty(),
        "podman was asked about a forged cgroup"
    );
    // A rootless container whose cgroup is not its user's is refused too.
    fake.cgroups.add(&rootless_dir(1000), 1001);
    let attestor = fake.attestor_with(PodmanConfig {
        rootless: true,
        rootless_uids: vec![1000],
        ..fake.config()
    });
    let err = attestor.attest_cgroup(&rootless_cgroup(1000)).unwrap_err();
    assert!(
        matches!(
            err,
            PodmanError::CgroupNotOwned {
                found: 1001,
                expected: 1000,
                ..
            }
        ),
        "{err}"
    );
    // A cgroup the agent cannot see is an error, never "no selectors".
    let err = fake
        .attestor()
        .attest_cgroup(&format!("0::/elsewhere/libpod-{ID}\n"))
        .unwrap_err();
    assert!(matches!(err, PodmanError::CgroupOwner { .. }), "{err}");
}

#[test]
fn a_socket_under_a_users_directory_is_not_dialled() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(""))]) else {
        return;
    };
    let dir = fake.socket.parent().unwrap();
    chown(dir, Some(1000), None).unwrap();
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, PodmanError::UnsafeSocket { .. }), "{msg}");
    assert!(
        msg.contains("owned by uid 1000") && msg.contains("only root may own"),
        "{msg}"
    );
    assert!(fake.asked().is_empty());
}

#[test]
fn server_running_as_someone_else_is_refused() {
    let Some(fake) = FakePodman::start(&[(container_path(ID), 200, container_json(""))]) else {
        return;
    };
    // The fake server runs as root; as the podman of uid 1000 it is refused
    // (the socket path itself is fine: root's directories, root's socket).
    fake.cgroups.add(&rootless_dir(1000), 1000);
    let template = fake
        .socket
        .display()
        .to_string()
        .replace("podman.sock", "{uid}.sock");
    std::os::unix::fs::symlink(&fake.socket, template.replace("{uid}", "1000")).unwrap();
    let attestor = fake.attestor_with(PodmanConfig {
        rootless_socket_path_template: template,
        rootless: true,
        rootless_uids: vec![1000],
        check_server_uid: true,
        ..fake.config()
    });
    let err = attestor.attest_cgroup(&rootless_cgroup(1000)).unwrap_err();
    assert!(
        matches!(
            err,
            PodmanError::ServerUid {
                uid: 0,
                expected: 1000,
                ..
            }
        ),
        "{err}"
    );
    // As the rootful podman it is believed.
    let rootful = fake.attestor_with(PodmanConfig {
        check_server_uid: true,
        ..fake.config()
    });
    assert_eq!(rootful.attest_cgroup(&cgroup(ID)).unwrap().len(), 5);
}

#[test]
fn config_defaults_and_unknown_fields() {
    let c: PodmanConfig = toml::from_str("").unwrap();
    assert_eq!(c, PodmanConfig::default());
    assert_eq!(c.socket_path, Path::new("/run/podman/podman.sock"));
    assert_eq!(
        c.rootless_socket_path_template,
        "/run/user/{uid}/podman/podman.sock"
    );
    assert!(!c.rootless && c.rootless_uids.is_empty() && c.check_server_uid);
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.max_response_bytes, 1 << 20);
    let c: PodmanConfig =
        toml::from_str("timeout = \"250ms\"\nrootless = true\nrootless_uids = [1000, 1001]")
            .unwrap();
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert!(c.rootless);
    assert_eq!(c.rootless_uids, [1000, 1001]);
    let err = toml::from_str::<PodmanConfig>("socket = \"/x\"").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn config_checks() {
    let bad = |c: PodmanConfig| PodmanAttestor::new(c).unwrap_err().to_string();
    assert!(bad(PodmanConfig {
        rootless: true,
        rootless_uids: vec![1000],
        rootless_socket_path_template: "/run/podman.sock".into(),
        ..PodmanConfig::default()
    })
    .contains("{uid}"));
    assert!(bad(PodmanConfig {
        rootless: true,
        ..PodmanConfig::default()
    })
    .contains("rootless_uids"));
    assert!(bad(PodmanConfig {
        timeout: Duration::ZERO,
        ..PodmanConfig::default()
    })
    .contains("timeout"));
    assert!(bad(PodmanConfig {
        max_response_bytes: 10,
        ..PodmanConfig::default()
    })
    .contains("max_response_bytes"));
    // Without rootless attestation the template is not used.
    assert!(PodmanAttestor::new(PodmanConfig {
        rootless: false,
        rootless_socket_path_template: String::new(),
        ..PodmanConfig::default()
    })
    .is_ok());
}

#[test]
fn error_message_falls_back_to_the_body() {
    let resp = http::Response {
        status: 502,
        reason: "Bad Gateway".into(),
        body: b"upstream down".to_vec(),
    };
    assert_eq!(error_message(&resp), "Bad Gateway upstream down");
}
