use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
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

/// A fake podman API: answers each path from `routes` (404 otherwise) with a
/// chunked body, as podman does, and records the paths asked for.
struct FakePodman {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    asked: Arc<Mutex<Vec<String>>>,
}

impl FakePodman {
    fn start(routes: &[(String, u16, String)]) -> FakePodman {
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
        FakePodman {
            _dir: dir,
            socket,
            asked,
        }
    }

    fn attestor(&self) -> PodmanAttestor {
        PodmanAttestor::new(PodmanConfig {
            socket_path: self.socket.clone(),
            check_server_uid: false,
            ..PodmanConfig::default()
        })
        .unwrap()
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
    let fake = FakePodman::start(&[
        (container_path(ID), 200, container_json(POD)),
        (pod_path(POD), 200, pod_json()),
    ]);
    let sel = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap();
    assert_eq!(
        strings(&sel),
        [
            "podman:container_name:web-1".to_owned(),
            format!("podman:image_id:{IMAGE}"),
            "podman:image_name:localhost/app:1".to_owned(),
            "podman:label:app:web".to_owned(),
            "podman:pod_label:team:blue".to_owned(),
            "podman:pod_name:shop".to_owned(),
        ]
    );
    assert_eq!(fake.asked(), [container_path(ID), pod_path(POD)]);
}

#[test]
fn container_without_pod_asks_only_for_the_container() {
    let fake = FakePodman::start(&[(container_path(ID), 200, container_json(""))]);
    let sel = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap();
    assert!(strings(&sel).iter().all(|s| !s.starts_with("podman:pod_")));
    assert_eq!(sel.len(), 4);
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
    let fake = FakePodman::start(&[]);
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
    let fake = FakePodman::start(&[(container_path(ID), 200, container_json(POD))]);
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(
        matches!(&err, PodmanError::PodNotFound { pod, .. } if pod == POD),
        "{err}"
    );
    assert!(err.to_string().contains(POD));
}

#[test]
fn http_error_carries_podmans_message() {
    let fake = FakePodman::start(&[(
        container_path(ID),
        500,
        r#"{"cause":"x","message":"database is locked","response":500}"#.into(),
    )]);
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
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("gone.sock");
    for check_server_uid in [false, true] {
        let attestor = PodmanAttestor::new(PodmanConfig {
            socket_path: socket.clone(),
            check_server_uid,
            ..PodmanConfig::default()
        })
        .unwrap();
        let err = attestor.attest_cgroup(&cgroup(ID)).unwrap_err();
        assert!(matches!(&err, PodmanError::Unreachable { socket: s, .. } if *s == socket));
        assert!(err.to_string().contains("gone.sock"), "{err}");
    }
    // A socket file nobody listens on any more: connection refused.
    drop(UnixListener::bind(&socket).unwrap());
    let attestor = PodmanAttestor::new(PodmanConfig {
        socket_path: socket.clone(),
        check_server_uid: false,
        ..PodmanConfig::default()
    })
    .unwrap();
    let err = attestor.attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::Unreachable { .. }), "{err}");
}

#[test]
fn answer_for_another_container_is_refused() {
    let other = ID.replace('9', "1");
    let json = container_json("").replacen(ID, &other, 1);
    let fake = FakePodman::start(&[(container_path(ID), 200, json)]);
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::WrongObject { .. }), "{err}");
}

#[test]
fn pod_id_that_is_not_an_id_is_refused() {
    let fake = FakePodman::start(&[(container_path(ID), 200, container_json("../../x"))]);
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::BadPodId { .. }), "{err}");
    assert_eq!(fake.asked(), [container_path(ID)]);
}

#[test]
fn non_json_answer_is_an_error() {
    let fake = FakePodman::start(&[(container_path(ID), 200, "<html>".into())]);
    let err = fake.attestor().attest_cgroup(&cgroup(ID)).unwrap_err();
    assert!(matches!(err, PodmanError::Json { .. }), "{err}");
}

#[test]
fn rootless_container_uses_the_owners_socket() {
    let fake = FakePodman::start(&[(container_path(ID), 200, container_json(""))]);
    let dir = fake.socket.parent().unwrap().to_owned();
    std::fs::create_dir(dir.join("1000")).unwrap();
    std::fs::rename(&fake.socket, dir.join("1000/podman.sock")).unwrap();
    let attestor = PodmanAttestor::new(PodmanConfig {
        socket_path: "/nonexistent/rootful.sock".into(),
        rootless_socket_path_template: format!("{}/{{uid}}/podman.sock", dir.display()),
        check_server_uid: false,
        ..PodmanConfig::default()
    })
    .unwrap();
    let text = format!(
        "0::/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container\n"
    );
    assert_eq!(attestor.attest_cgroup(&text).unwrap().len(), 4);

    let off = PodmanAttestor::new(PodmanConfig {
        rootless: false,
        ..attestor.config().clone()
    })
    .unwrap();
    assert!(off.attest_cgroup(&text).unwrap().is_empty());
    assert!(
        off.attest_cgroup(&cgroup(ID)).is_err(),
        "rootful still asked"
    );
}

#[test]
fn server_running_as_someone_else_is_refused() {
    let fake = FakePodman::start(&[(container_path(ID), 200, container_json(""))]);
    let owner = std::fs::metadata(&fake.socket).unwrap().uid();
    let template = fake
        .socket
        .display()
        .to_string()
        .replace("podman.sock", "{uid}.sock");
    std::fs::rename(&fake.socket, template.replace("{uid}", &owner.to_string())).unwrap();
    std::os::unix::fs::symlink(
        template.replace("{uid}", &owner.to_string()),
        template.replace("{uid}", &(owner + 1).to_string()),
    )
    .unwrap();
    let attestor = PodmanAttestor::new(PodmanConfig {
        rootless_socket_path_template: template,
        ..PodmanConfig::default()
    })
    .unwrap();
    let rootless = |uid: u32| {
        format!("0::/user.slice/user-{uid}.slice/user@{uid}.service/libpod-{ID}.scope\n")
    };
    assert_eq!(attestor.attest_cgroup(&rootless(owner)).unwrap().len(), 4);
    let err = attestor.attest_cgroup(&rootless(owner + 1)).unwrap_err();
    assert!(
        matches!(err, PodmanError::ServerUid { uid, expected, .. } if uid == owner && expected == owner + 1),
        "{err}"
    );
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
    assert!(c.rootless && c.check_server_uid);
    assert_eq!(c.timeout, Duration::from_secs(5));
    assert_eq!(c.max_response_bytes, 1 << 20);
    let c: PodmanConfig = toml::from_str("timeout = \"250ms\"\nrootless = false").unwrap();
    assert_eq!(c.timeout, Duration::from_millis(250));
    assert!(!c.rootless);
    let err = toml::from_str::<PodmanConfig>("socket = \"/x\"").unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

#[test]
fn config_checks() {
    let bad = |c: PodmanConfig| PodmanAttestor::new(c).unwrap_err().to_string();
    assert!(bad(PodmanConfig {
        rootless_socket_path_template: "/run/podman.sock".into(),
        ..PodmanConfig::default()
    })
    .contains("{uid}"));
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
