//! The `podman` workload attestor: finds the caller's container from its
//! cgroup membership and asks podman's REST API (libpod, on podman's unix
//! socket) what that container is.
//!
//! Selectors (type `podman`):
//! `owner_uid:<uid>` (0 for a rootful podman's container, the user's uid for
//! a rootless one), `image_id:<id>`, `image_name:<ref>`,
//! `container_name:<name>`, `label:<k>:<v>` per container label, and for a
//! container in a pod `pod_name:<name>` and `pod_label:<k>:<v>`.
//!
//! A process in no container gets no selectors. A process in a container
//! whose podman cannot be asked (socket missing, refused, slow, HTTP error,
//! unknown container, a socket that fails the ownership rule) is an error,
//! never an empty answer.
//!
//! Who owns a container is never taken from the container or from the
//! podman that describes it. It comes from the cgroup: the path says rootful
//! or rootless of uid U (the outermost `user@U.service`), and the directory
//! of the container's cgroup must be owned by that uid (0 for rootful) on
//! the agent's own cgroup mounts, so a process that names a cgroup of its
//! own after another container is refused. The podman API server must then
//! run as that uid (SO_PEERCRED, [`PodmanConfig::check_server_uid`]), and
//! its socket must sit in directories only root or that uid own
//! (`socket_path`).
//!
//! Rootful containers are looked up on [`PodmanConfig::socket_path`].
//! Rootless containers are not attested unless the operator opts in per
//! user ([`PodmanConfig::rootless`] and [`PodmanConfig::rootless_uids`]): a
//! rootless podman is run by its user, who can make it answer anything about
//! that user's containers, so entries for them must also name the owner
//! (`podman:owner_uid:<uid>` or `unix:uid`).

mod cgroup;
mod cgroup_owner;
mod http;
mod inspect;
pub(crate) mod socket_path;

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ironroot_api::selector::{normalize_selectors, Selector};
use nix::sys::socket::{getsockopt, sockopt};
use serde::Deserialize;

use super::procfs::read_text;
use super::{WorkloadAttestError, WorkloadAttestor};
use crate::workload::caller::Caller;

pub use cgroup::container_id_from_cgroup;
pub(crate) use cgroup::{is_container_id, locate_container, ContainerRef};
pub(crate) use cgroup_owner::CgroupOwnerError;
pub(crate) use http::HttpError;
pub(crate) use inspect::{selectors, ContainerInspect, PodInspect, SELECTOR_TYPE};

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
    /// Dialled only if it and every directory above it are root's
    /// (`socket_path`).
    #[serde(default = "default_socket_path")]
    pub socket_path: PathBuf,
    /// Socket of a rootless podman; `{uid}` is replaced by the uid owning the
    /// container (from its cgroup path). Default
    /// `/run/user/{uid}/podman/podman.sock`.
    #[serde(default = "default_rootless_template")]
    pub rootless_socket_path_template: String,
    /// Attest containers of rootless podmans. Default `false`: a process in
    /// a rootless container gets no podman selectors (and the socket in its
    /// user's own directory is never dialled). With `true`, only the users
    /// in `rootless_uids` are asked.
    #[serde(default)]
    pub rootless: bool,
    /// The uids whose own (rootless) podman the agent may ask about their
    /// containers, when `rootless = true` (which needs at least one). Each
    /// such user can make its podman report anything about its containers:
    /// their entries must also name the owner (`podman:owner_uid:<uid>`).
    /// Default empty.
    #[serde(default)]
    pub rootless_uids: Vec<u32>,
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
            rootless: false,
            rootless_uids: Vec::new(),
            check_server_uid: true,
            timeout: default_timeout(),
            max_response_bytes: default_max_response_bytes(),
        }
    }
}

/// The rootful podman API socket.
pub(crate) const DEFAULT_SOCKET_PATH: &str = "/run/podman/podman.sock";
/// A rootless user's podman API socket.
pub(crate) const DEFAULT_ROOTLESS_TEMPLATE: &str = "/run/user/{uid}/podman/podman.sock";
/// The agent's own mount table (it names the cgroup mounts).
pub(crate) const DEFAULT_MOUNTINFO: &str = "/proc/self/mountinfo";
/// Bound on connecting to podman and on each request.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest podman API response read.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 1024 * 1024;

// serde's `default = "…"` takes a function: each returns its constant.
fn default_socket_path() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET_PATH)
}
fn default_rootless_template() -> String {
    DEFAULT_ROOTLESS_TEMPLATE.into()
}
fn default_true() -> bool {
    true
}
fn default_mountinfo() -> PathBuf {
    PathBuf::from(DEFAULT_MOUNTINFO)
}
fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}
fn default_max_response_bytes() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// Why the podman attestor could not say what a caller is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PodmanError {
    /// The configuration cannot work.
    #[error("podman attestor configuration: {0}")]
    Config(String),
    /// The caller's cgroups could not be read (it may have exited).
    #[error("cannot read /proc/{pid}/cgroup: {source}")]
    ReadCgroup {
        /// The caller's pid.
        pid: i32,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Nothing answers on the API socket.
    #[error("podman API socket {socket} unreachable: {source}")]
    Unreachable {
        /// The API socket dialled.
        socket: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The socket fails the ownership rule (`socket_path`).
    #[error("podman API socket {socket} is not dialled: {reason}")]
    UnsafeSocket {
        /// The API socket.
        socket: PathBuf,
        /// Which part of the rule it fails.
        reason: String,
    },
    /// Who owns the container's cgroup could not be found out.
    #[error("container {id}: cannot tell who owns its cgroup: {source}")]
    CgroupOwner {
        /// The container id from the cgroup path.
        id: String,
        /// Why the owner is unknown.
        #[source]
        source: CgroupOwnerError,
    },
    /// The container's cgroup is not owned by the uid whose podman would be
    /// asked about it.
    #[error(
        "container {id}: its cgroup {dir} is owned by uid {found}, but the cgroup of a {kind} \
         container is owned by uid {expected}; a process can name a cgroup of its own after a \
         container it is not in"
    )]
    CgroupNotOwned {
        /// The container id from the cgroup path.
        id: String,
        /// The container's cgroup directory.
        dir: PathBuf,
        /// The uid that owns it.
        found: u32,
        /// The uid that must own it: the rootless user, or root for rootful podman.
        expected: u32,
        /// `"rootless"` or `"rootful"`.
        kind: &'static str,
    },
    /// The API server runs as another uid than the podman expected.
    #[error("podman API socket {socket} is served by uid {uid}, expected uid {expected}")]
    ServerUid {
        /// The API socket.
        socket: PathBuf,
        /// The server's uid (SO_PEERCRED).
        uid: u32,
        /// The uid of the podman that socket belongs to.
        expected: u32,
    },
    /// SO_PEERCRED on the API connection failed.
    #[error("podman API socket {socket}: reading the server's credentials: {source}")]
    ServerCred {
        /// The API socket.
        socket: PathBuf,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// The request failed below HTTP (timeout, size cap, broken response).
    #[error("podman API {socket} GET {path}: {source}")]
    Request {
        /// The API socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// What went wrong.
        #[source]
        source: HttpError,
    },
    /// The API answered with an unexpected status.
    #[error("podman API {socket} GET {path}: HTTP {status}: {message}")]
    Status {
        /// The API socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// podman's `message` from the JSON body, else the reason phrase and the body's first
        /// 200 characters.
        message: String,
    },
    /// podman does not know the container the caller's cgroup names.
    #[error("podman at {socket} has no container {id}")]
    ContainerNotFound {
        /// The API socket.
        socket: PathBuf,
        /// The container id.
        id: String,
    },
    /// podman does not know the pod its container names.
    #[error("podman at {socket} has no pod {pod} (of container {container})")]
    PodNotFound {
        /// The API socket.
        socket: PathBuf,
        /// The pod id the container names.
        pod: String,
        /// The container id.
        container: String,
    },
    /// The answer is not the JSON expected.
    #[error("podman API {socket} GET {path}: unexpected JSON: {source}")]
    Json {
        /// The API socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// The answer describes another object than the one asked for.
    #[error("podman API {socket} GET {path}: answered for {got:?}, asked for {asked}")]
    WrongObject {
        /// The API socket.
        socket: PathBuf,
        /// The request path.
        path: String,
        /// The id asked for.
        asked: String,
        /// The id in the answer.
        got: String,
    },
    /// A pod id that cannot be put in a request path.
    #[error("container {container} names pod {pod:?}, which is not a pod id")]
    BadPodId {
        /// The container id.
        container: String,
        /// The pod value as given.
        pod: String,
    },
}

/// The podman workload attestor.
#[derive(Debug, Clone)]
pub struct PodmanAttestor {
    config: PodmanConfig,
    /// The mount table cgroups are found through (the agent's own).
    mountinfo: PathBuf,
}

impl PodmanAttestor {
    /// An attestor with `config`, checked.
    pub fn new(config: PodmanConfig) -> Result<Self, PodmanError> {
        if config.rootless && config.rootless_uids.is_empty() {
            return Err(PodmanError::Config(
                "rootless = true needs rootless_uids: the users whose own podman may be asked \
                 about their containers"
                    .into(),
            ));
        }
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
        Ok(PodmanAttestor {
            config,
            mountinfo: default_mountinfo(),
        })
    }

    /// Finds cgroups through the mount table at `path` instead of the
    /// agent's own (tests with a cgroup tree of their own).
    pub fn with_mountinfo(mut self, path: PathBuf) -> Self {
        self.mountinfo = path;
        self
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
        let Some((socket, owner)) = self.socket_for(&container) else {
            tracing::debug!(
                container = %container.id,
                uid = ?container.rootless_uid,
                "rootless podman container: its uid is not in rootless_uids (or rootless = false); \
                 no podman selectors"
            );
            return Ok(Vec::new());
        };
        let (found, dir) =
            cgroup_owner::cgroup_owner(&container, &self.mountinfo).map_err(|source| {
                PodmanError::CgroupOwner {
                    id: container.id.clone(),
                    source,
                }
            })?;
        if found != owner {
            return Err(PodmanError::CgroupNotOwned {
                id: container.id.clone(),
                dir,
                found,
                expected: owner,
                kind: if container.rootless_uid.is_some() {
                    "rootless"
                } else {
                    "rootful"
                },
            });
        }
        let socket = socket_path::safe_socket_path(&socket, owner).map_err(|e| match e {
            socket_path::SocketRefused::Unresolvable { source, .. } => PodmanError::Unreachable {
                socket: socket.clone(),
                source,
            },
            unsafe_path => PodmanError::UnsafeSocket {
                socket: socket.clone(),
                reason: unsafe_path.to_string(),
            },
        })?;
        let mut selectors = self.attest_container(&socket, owner, &container)?;
        selectors.push(owner_selector(owner));
        normalize_selectors(&mut selectors);
        Ok(selectors)
    }

    /// The API socket of the podman owning `container` and the uid that
    /// podman runs as, or `None` for a rootless container whose user is not
    /// opted in.
    pub fn socket_for(&self, container: &ContainerRef) -> Option<(PathBuf, u32)> {
        match container.rootless_uid {
            None => Some((self.config.socket_path.clone(), 0)),
            Some(uid) if !self.config.rootless || !self.config.rootless_uids.contains(&uid) => None,
            Some(uid) => Some((
                PathBuf::from(
                    self.config
                        .rootless_socket_path_template
                        .replace("{uid}", &uid.to_string()),
                ),
                uid,
            )),
        }
    }

    fn attest_container(
        &self,
        socket: &Path,
        expected_uid: u32,
        container: &ContainerRef,
    ) -> Result<Vec<Selector>, PodmanError> {
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

/// `podman:owner_uid:<uid>`.
fn owner_selector(uid: u32) -> Selector {
    Selector::new(SELECTOR_TYPE, format!("owner_uid:{uid}"))
        .unwrap_or_else(|e| unreachable!("a number is a valid selector value: {e}"))
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
