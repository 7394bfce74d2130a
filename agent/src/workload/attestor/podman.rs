//! The `podman` workload attestor: finds the caller's container from its
//! cgroup membership and asks podman's REST API (libpod, on podman's unix
//! socket) what that container is.
//!
//! Selectors (type `podman`):
//! `image_id:<id>`, `image_name:<ref>`, `container_name:<name>`,
//! `label:<k>:<v>` per container label, and for a container in a pod
//! `pod_name:<name>` and `pod_label:<k>:<v>`.
//!
//! A process in no container gets no selectors. A process in a container
//! whose podman cannot be asked (socket missing, refused, slow, HTTP error,
//! unknown container) is an error, never an empty answer.
//!
//! Rootful containers are looked up on [`PodmanConfig::socket_path`]; a
//! rootless container (its cgroup lies under `user@<uid>.service`) on the
//! socket of that user's podman, [`PodmanConfig::rootless_socket_path_template`]
//! with `{uid}` replaced. A rootless podman is run by that user, who can make
//! it answer anything: entries should not rely on podman selectors alone
//! where untrusted users run rootless podman (or set `rootless = false`).

mod cgroup;
mod http;
mod inspect;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironroot_api::selector::Selector;
use nix::sys::socket::{getsockopt, sockopt};
use serde::Deserialize;

use super::procfs::read_text;
use super::{WorkloadAttestError, WorkloadAttestor};
use crate::workload::caller::Caller;

pub use cgroup::{container_id_from_cgroup, is_container_id, locate_container, ContainerRef};
pub use http::HttpError;
pub use inspect::{selectors, ContainerInspect, PodInspect, SELECTOR_TYPE};

/// libpod API version prefix of every request (served by podman 4 and 5).
const API_PREFIX: &str = "/v4.0.0/libpod";
/// Longest `/proc/PID/cgroup` read (real ones are well under 4 KiB).
const MAX_CGROUP_BYTES: u64 = 64 * 1024;

/// The podman attestor's options (a TOML table of the agent configuration).
/// Defaults suit a stock podman with its API socket enabled
/// (`systemctl enable --now podman.socket`, and per user for rootless).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodmanConfig {
    /// Socket of the rootful podman API. Default `/run/podman/podman.sock`.
    #[serde(default = "default_socket_path")]
    pub socket_path: PathBuf,
    /// Socket of a rootless podman; `{uid}` is replaced by the uid owning the
    /// container (from its cgroup path). Default
    /// `/run/user/{uid}/podman/podman.sock`.
    #[serde(default = "default_rootless_template")]
    pub rootless_socket_path_template: String,
    /// Attest containers of rootless podmans. Default `true`. With `false` a
    /// process in a rootless container gets no podman selectors.
    #[serde(default = "default_true")]
    pub rootless: bool,
    /// Believe only an API server running as the uid expected for that
    /// podman (root for the rootful socket, the container's owner for a
    /// rootless one), checked with SO_PEERCRED on the connection, so a socket
    /// put in place by someone else is never asked. Default `true`.
    #[serde(default = "default_true")]
    pub check_server_uid: bool,
    /// Bound on connecting to the API socket, and on each request after
    /// that (first byte sent to last byte read). Default `5s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Largest API response accepted, in bytes. Default 1 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

impl Default for PodmanConfig {
    fn default() -> Self {
        PodmanConfig {
            socket_path: default_socket_path(),
            rootless_socket_path_template: default_rootless_template(),
            rootless: true,
            check_server_uid: true,
            timeout: default_timeout(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

fn default_socket_path() -> PathBuf {
    PathBuf::from("/run/podman/podman.sock")
}
fn default_rootless_template() -> String {
    "/run/user/{uid}/podman/podman.sock".into()
}
fn default_true() -> bool {
    true
}
fn default_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_max_response_bytes() -> usize {
    1024 * 1024
}

/// Why the podman attestor could not say what a caller is.
#[derive(Debug, thiserror::Error)]
pub enum PodmanError {
    /// The configuration cannot work.
    #[error("podman attestor configuration: {0}")]
    Config(String),
    /// The caller's cgroups could not be read (it may have exited).
    #[error("cannot read /proc/{pid}/cgroup: {source}")]
    ReadCgroup {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    /// Nothing answers on the API socket.
    #[error("podman API socket {socket} unreachable: {source}")]
    Unreachable {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The API server runs as another uid than the podman expected.
    #[error("podman API socket {socket} is served by uid {uid}, expected uid {expected}")]
    ServerUid {
        socket: PathBuf,
        uid: u32,
        expected: u32,
    },
    /// SO_PEERCRED on the API connection failed.
    #[error("podman API socket {socket}: reading the server's credentials: {source}")]
    ServerCred {
        socket: PathBuf,
        #[source]
        source: nix::Error,
    },
    /// The request failed below HTTP (timeout, size cap, broken response).
    #[error("podman API {socket} GET {path}: {source}")]
    Request {
        socket: PathBuf,
        path: String,
        #[source]
        source: HttpError,
    },
    /// The API answered with an unexpected status.
    #[error("podman API {socket} GET {path}: HTTP {status}: {message}")]
    Status {
        socket: PathBuf,
        path: String,
        status: u16,
        message: String,
    },
    /// podman does not know the container the caller's cgroup names.
    #[error("podman at {socket} has no container {id}")]
    ContainerNotFound { socket: PathBuf, id: String },
    /// podman does not know the pod its container names.
    #[error("podman at {socket} has no pod {pod} (of container {container})")]
    PodNotFound {
        socket: PathBuf,
        pod: String,
        container: String,
    },
    /// The answer is not the JSON expected.
    #[error("podman API {socket} GET {path}: unexpected JSON: {source}")]
    Json {
        socket: PathBuf,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    /// The answer describes another object than the one asked for.
    #[error("podman API {socket} GET {path}: answered for {got:?}, asked for {asked}")]
    WrongObject {
        socket: PathBuf,
        path: String,
        asked: String,
        got: String,
    },
    /// A pod id that cannot be put in a request path.
    #[error("container {container} names pod {pod:?}, which is not a pod id")]
    BadPodId { container: String, pod: String },
}

/// The podman workload attestor.
#[derive(Debug, Clone)]
pub struct PodmanAttestor {
    config: PodmanConfig,
}

impl PodmanAttestor {
    /// An attestor with `config`, checked.
    pub fn new(config: PodmanConfig) -> Result<Self, PodmanError> {
        if config.rootless && !config.rootless_socket_path_template.contains("{uid}") {
            return Err(PodmanError::Config(format!(
                "rootless_socket_path_template {:?} has no {{uid}}",
                config.rootless_socket_path_template
            )));
        }
        if config.timeout.is_zero() {
            return Err(PodmanError::Config("timeout must be more than 0".into()));
        }
        if config.max_response_bytes < 1024 {
            return Err(PodmanError::Config(
                "max_response_bytes must be at least 1024".into(),
            ));
        }
        Ok(PodmanAttestor { config })
    }

    /// The configuration in use.
    pub fn config(&self) -> &PodmanConfig {
        &self.config
    }

    /// Selectors of process `pid`, from its `/proc/PID/cgroup`. Nothing here
    /// checks that the PID still names the same process afterwards: the
    /// Workload API goes through [`WorkloadAttestor::attest`] and
    /// `attest_caller`, which do.
    pub fn attest_pid(&self, pid: i32) -> Result<Vec<Selector>, PodmanError> {
        let path = format!("/proc/{pid}/cgroup");
        let mut text = String::new();
        std::fs::File::open(&path)
            .and_then(|f| f.take(MAX_CGROUP_BYTES).read_to_string(&mut text))
            .map_err(|source| PodmanError::ReadCgroup { pid, source })?;
        self.attest_cgroup(&text)
    }

    /// Selectors of a process whose `/proc/PID/cgroup` reads `text`.
    pub fn attest_cgroup(&self, text: &str) -> Result<Vec<Selector>, PodmanError> {
        let Some(container) = locate_container(text) else {
            return Ok(Vec::new());
        };
        let Some(socket) = self.socket_for(&container) else {
            tracing::debug!(
                container = %container.id,
                uid = ?container.rootless_uid,
                "rootless podman container: rootless attestation is disabled"
            );
            return Ok(Vec::new());
        };
        self.attest_container(&socket, &container)
    }

    /// The API socket of the podman owning `container`, or `None` for a
    /// rootless container when rootless attestation is off.
    pub fn socket_for(&self, container: &ContainerRef) -> Option<PathBuf> {
        match container.rootless_uid {
            None => Some(self.config.socket_path.clone()),
            Some(_) if !self.config.rootless => None,
            Some(uid) => Some(PathBuf::from(
                self.config
                    .rootless_socket_path_template
                    .replace("{uid}", &uid.to_string()),
            )),
        }
    }

    fn attest_container(
        &self,
        socket: &Path,
        container: &ContainerRef,
    ) -> Result<Vec<Selector>, PodmanError> {
        let expected_uid = container.rootless_uid.unwrap_or(0);
        let id = &container.id;
        let path = format!("{API_PREFIX}/containers/{id}/json");
        let info: ContainerInspect = self.get_json(socket, expected_uid, &path, || {
            PodmanError::ContainerNotFound {
                socket: socket.to_owned(),
                id: id.clone(),
            }
        })?;
        if info.id != *id {
            return Err(PodmanError::WrongObject {
                socket: socket.to_owned(),
                path,
                asked: id.clone(),
                got: info.id,
            });
        }

        let pod = if info.pod.is_empty() {
            None
        } else {
            Some(self.pod(socket, expected_uid, id, &info.pod)?)
        };
        let (selectors, skipped) = selectors(&info, pod.as_ref());
        for (what, why) in skipped {
            tracing::warn!(container = %id, fact = %what, "podman fact left out: {why}");
        }
        tracing::debug!(container = %id, count = selectors.len(), "podman attestation");
        Ok(selectors)
    }

    fn pod(
        &self,
        socket: &Path,
        expected_uid: u32,
        container: &str,
        pod: &str,
    ) -> Result<PodInspect, PodmanError> {
        if !is_container_id(pod) {
            return Err(PodmanError::BadPodId {
                container: container.to_owned(),
                pod: pod.to_owned(),
            });
        }
        let path = format!("{API_PREFIX}/pods/{pod}/json");
        let info: PodInspect =
            self.get_json(socket, expected_uid, &path, || PodmanError::PodNotFound {
                socket: socket.to_owned(),
                pod: pod.to_owned(),
                container: container.to_owned(),
            })?;
        if info.id != pod {
            return Err(PodmanError::WrongObject {
                socket: socket.to_owned(),
                path,
                asked: pod.to_owned(),
                got: info.id,
            });
        }
        Ok(info)
    }

    /// GET `path` from the server on `socket` (checked to run as
    /// `expected_uid`) and decode its JSON; a 404 becomes `not_found()`.
    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        socket: &Path,
        expected_uid: u32,
        path: &str,
        not_found: impl FnOnce() -> PodmanError,
    ) -> Result<T, PodmanError> {
        let stream = http::connect(socket, self.config.timeout).map_err(|source| {
            PodmanError::Unreachable {
                socket: socket.to_owned(),
                source,
            }
        })?;
        if self.config.check_server_uid {
            check_server_uid(&stream, socket, expected_uid)?;
        }
        let resp = http::get_on(
            stream,
            path,
            self.config.timeout,
            self.config.max_response_bytes,
        )
        .map_err(|source| PodmanError::Request {
            socket: socket.to_owned(),
            path: path.to_owned(),
            source,
        })?;
        match resp.status {
            200 => {}
            404 => return Err(not_found()),
            status => {
                return Err(PodmanError::Status {
                    socket: socket.to_owned(),
                    path: path.to_owned(),
                    status,
                    message: error_message(&resp),
                })
            }
        }
        serde_json::from_slice(&resp.body).map_err(|source| PodmanError::Json {
            socket: socket.to_owned(),
            path: path.to_owned(),
            source,
        })
    }
}

impl WorkloadAttestor for PodmanAttestor {
    fn name(&self) -> &'static str {
        SELECTOR_TYPE
    }

    fn attest(&self, caller: &Caller) -> Result<Vec<Selector>, WorkloadAttestError> {
        let text = read_text(caller, "cgroup", "the cgroup membership")?;
        self.attest_cgroup(&text)
            .map_err(|e| WorkloadAttestError::Unavailable {
                attestor: SELECTOR_TYPE,
                reason: e.to_string(),
            })
    }
}

/// Fails unless the server at the other end of `stream` runs as `expected`
/// (SO_PEERCRED: the credentials of whoever created the listening socket,
/// the podman service or, when socket-activated, systemd of that user).
fn check_server_uid(stream: &UnixStream, socket: &Path, expected: u32) -> Result<(), PodmanError> {
    let cred =
        getsockopt(stream, sockopt::PeerCredentials).map_err(|source| PodmanError::ServerCred {
            socket: socket.to_owned(),
            source,
        })?;
    if cred.uid() != expected {
        return Err(PodmanError::ServerUid {
            socket: socket.to_owned(),
            uid: cred.uid(),
            expected,
        });
    }
    Ok(())
}

/// podman's error body is `{"cause": …, "message": …, "response": code}`;
/// fall back to the reason phrase and the start of the body.
fn error_message(resp: &http::Response) -> String {
    #[derive(Deserialize)]
    struct ApiError {
        #[serde(default)]
        message: String,
    }
    match serde_json::from_slice::<ApiError>(&resp.body) {
        Ok(e) if !e.message.is_empty() => e.message,
        _ => {
            let body = String::from_utf8_lossy(&resp.body);
            let body: String = body.chars().take(200).collect();
            format!("{} {}", resp.reason, body.trim()).trim().to_owned()
        }
    }
}

#[cfg(test)]
mod tests;
