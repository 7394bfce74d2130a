//! The `k8s` workload attestor (cargo feature `k8s`, off by default): finds the caller's pod
//! UID and container ID in its cgroup membership (`/proc/PID/cgroup`, [`cgroup`] when
//! built), then that container in the kubelet's pod list (its authenticated HTTPS port, CA
//! verified; shared, coalesced and bounded in `kubelet`), and gives SPIRE's selectors:
//!
//! `k8s:sa:`, `k8s:ns:`, `k8s:node-name:`, `k8s:pod-uid:`, `k8s:pod-name:`,
//! `k8s:pod-image-count:`, `k8s:pod-init-image-count:`, `k8s:pod-image:` and
//! `k8s:pod-init-image:` (each image and image ID), `k8s:pod-label:<k>:<v>`,
//! `k8s:pod-owner:<Kind>:<name>`, `k8s:pod-owner-uid:<Kind>:<uid>`, `k8s:container-name:`,
//! `k8s:container-image:` (image and image ID).
//!
//! A process in no container gets no selectors. A container no pod lists yet is looked for
//! once more in a list fetched after the first miss (SPIRE waits for a new pod to appear),
//! then gets no selectors (logged). A kubelet that cannot be asked is an error, never an
//! empty answer.

#[cfg(feature = "k8s")]
mod cgroup;
#[cfg(feature = "k8s")]
mod kubelet;
#[cfg(feature = "k8s")]
mod pods;

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The selector type.
pub const SELECTOR_TYPE: &str = "k8s";
/// The kubelet's authenticated port.
pub(crate) const DEFAULT_KUBELET_SECURE_PORT: u16 = 10250;
/// The environment variable SPIRE's deployments set to the node's name (downward API).
pub(crate) const DEFAULT_NODE_NAME_ENV: &str = "MY_NODE_NAME";
/// The in-cluster service account's CA bundle (the kubelet's serving certificates usually
/// chain to the cluster CA).
pub(crate) const DEFAULT_KUBELET_CA_PATH: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The in-cluster service account's token.
pub(crate) const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// How long a pod list serves lookups, and the wait before looking again after a miss.
pub(crate) const DEFAULT_POLL_RETRY_INTERVAL: Duration = Duration::from_millis(500);
/// Bound on each kubelet request.
pub(crate) const DEFAULT_KUBELET_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest pod list read.
pub(crate) const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

fn default_port() -> u16 {
    DEFAULT_KUBELET_SECURE_PORT
}
fn default_node_name_env() -> String {
    DEFAULT_NODE_NAME_ENV.into()
}
fn default_ca_path() -> PathBuf {
    PathBuf::from(DEFAULT_KUBELET_CA_PATH)
}
fn default_token_path() -> PathBuf {
    PathBuf::from(DEFAULT_TOKEN_PATH)
}
fn default_poll_retry_interval() -> Duration {
    DEFAULT_POLL_RETRY_INTERVAL
}
fn default_timeout() -> Duration {
    DEFAULT_KUBELET_TIMEOUT
}
fn default_max_response_bytes() -> usize {
    DEFAULT_MAX_RESPONSE_BYTES
}

/// `[workload_attestors.k8s]` (SPIRE's option names where SPIRE has the option).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K8sConfig {
    /// The kubelet's HTTPS port. Default 10250.
    #[serde(default = "default_port")]
    pub kubelet_secure_port: u16,
    /// The node's name: the kubelet is `https://<node_name>:<port>` and its certificate must
    /// name it. Default: the environment variable `node_name_env`, else `127.0.0.1`.
    #[serde(default)]
    pub node_name: Option<String>,
    /// The environment variable holding the node's name. Default `MY_NODE_NAME`.
    #[serde(default = "default_node_name_env")]
    pub node_name_env: String,
    /// CA bundle (PEM) the kubelet's certificate must chain to. Default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/ca.crt`.
    #[serde(default = "default_ca_path")]
    pub kubelet_ca_path: PathBuf,
    /// Do not verify the kubelet's certificate at all. Default `false`; `true` is logged as
    /// a warning at start-up (anyone who can answer on the node's port 10250 then decides
    /// the selectors).
    #[serde(default)]
    pub skip_kubelet_verification: bool,
    /// Bearer token for the kubelet, re-read at every fetch. Default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`. Not used with a client
    /// certificate.
    #[serde(default = "default_token_path")]
    pub token_path: PathBuf,
    /// Client certificate (PEM) for the kubelet, instead of the token; needs
    /// `private_key_path`.
    #[serde(default)]
    pub certificate_path: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[serde(default)]
    pub private_key_path: Option<PathBuf>,
    /// How long a fetched pod list serves lookups, and the wait before the one retry after
    /// a container is not found. Default `500ms`.
    #[serde(default = "default_poll_retry_interval", with = "humantime_serde")]
    pub poll_retry_interval: Duration,
    /// Bound on each kubelet request (connect, TLS, whole answer). Default `10s`.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub kubelet_timeout: Duration,
    /// Largest pod list read, in bytes. Default 16 MiB.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: usize,
}

/// Why the k8s attestor could not start or say what a caller is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// The configuration cannot work (names the option).
    #[error("k8s workload attestor: {0}")]
    Config(String),
    /// The agent was built without the `k8s` cargo feature.
    #[error(
        "[workload_attestors.k8s] is set, but this agent was built without the 'k8s' cargo \
         feature (cargo build -p ironroot-agent --features k8s), or remove the section"
    )]
    NotBuilt,
}

#[cfg(feature = "k8s")]
pub use attestor::K8sAttestor;

#[cfg(feature = "k8s")]
mod attestor {
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::time::Instant;

    use ironroot_api::selector::Selector;
    use ironroot_runtime::https::{HttpsClient, TlsOptions};

    use super::cgroup::{self, PodContainer};
    use super::kubelet::{Credential, PodListSource};
    use super::pods;
    use super::{K8sConfig, K8sError, SELECTOR_TYPE};
    use crate::workload::attestor::procfs::proc_err;
    use crate::workload::attestor::{push_selector, WorkloadAttestError, WorkloadAttestor};
    use crate::workload::caller::Caller;

    /// Longest `/proc/PID/cgroup` read (real ones are well under 4 KiB).
    const MAX_CGROUP_BYTES: u64 = 64 * 1024;

    /// The k8s workload attestor.
    pub struct K8sAttestor {
        pods: Arc<PodListSource>,
        retry_after: std::time::Duration,
        proc_root: PathBuf,
    }

    impl std::fmt::Debug for K8sAttestor {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("K8sAttestor")
                .field("proc_root", &self.proc_root)
                .finish_non_exhaustive()
        }
    }

    fn unavailable(reason: impl std::fmt::Display) -> WorkloadAttestError {
        WorkloadAttestError::Unavailable {
            attestor: SELECTOR_TYPE,
            reason: reason.to_string(),
        }
    }

    impl K8sAttestor {
        /// An attestor with `config`, checked; the kubelet's node name from `node_name`, else
        /// the environment.
        pub fn new(config: &K8sConfig) -> Result<Self, K8sError> {
            let node = config
                .node_name
                .clone()
                .or_else(|| std::env::var(&config.node_name_env).ok())
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "127.0.0.1".into());
            Self::with_host(config, &node)
        }

        /// [`new`](Self::new) with the kubelet at `host` (tests: the stand-in's address).
        pub fn with_host(config: &K8sConfig, host: &str) -> Result<Self, K8sError> {
            let bad = |m: String| K8sError::Config(m);
            if config.poll_retry_interval.is_zero() || config.kubelet_timeout.is_zero() {
                return Err(bad(
                    "poll_retry_interval and kubelet_timeout must be more than 0".into(),
                ));
            }
            if config.max_response_bytes < 1024 {
                return Err(bad("max_response_bytes must be at least 1024".into()));
            }
            let client_cert = match (&config.certificate_path, &config.private_key_path) {
                (Some(c), Some(k)) => Some((
                    ("certificate_path", c.clone()),
                    ("private_key_path", k.clone()),
                )),
                (None, None) => None,
                _ => {
                    return Err(bad(
                        "certificate_path and private_key_path go together (set both, or \
                         neither to use token_path)"
                            .into(),
                    ))
                }
            };
            if config.skip_kubelet_verification {
                tracing::warn!(
                    "workload_attestors.k8s.skip_kubelet_verification = true: the kubelet's \
                     certificate is NOT verified; whoever answers on {host}:{} decides the k8s \
                     selectors of every workload on this node",
                    config.kubelet_secure_port
                );
            }
            let credential = if client_cert.is_some() {
                Credential::ClientCertificate
            } else {
                Credential::Token(config.token_path.clone())
            };
            let tls = TlsOptions {
                ca_file: (!config.skip_kubelet_verification)
                    .then(|| ("kubelet_ca_path", config.kubelet_ca_path.clone())),
                client_cert,
                insecure_skip_verify: config.skip_kubelet_verification,
            }
            .client_config()
            .map_err(|e| bad(e.to_string()))?;
            let host_part = if host.contains(':') {
                format!("[{host}]")
            } else {
                host.to_owned()
            };
            let client = HttpsClient::new(
                &format!("https://{host_part}:{}", config.kubelet_secure_port),
                tls,
                config.kubelet_timeout,
                config.max_response_bytes,
            )
            .map_err(|e| bad(format!("node_name: {e}")))?;
            Ok(K8sAttestor {
                pods: PodListSource::new(client, credential, config.poll_retry_interval),
                retry_after: config.poll_retry_interval,
                proc_root: PathBuf::from("/proc"),
            })
        }

        /// Reads `<root>/<pid>/cgroup` instead of `/proc/<pid>/cgroup` (tests with a proc
        /// tree of their own).
        pub fn with_proc_root(mut self, root: PathBuf) -> Self {
            self.proc_root = root;
            self
        }

        /// Selectors (values, without `k8s:`) of the process whose cgroup file is `path`.
        /// Nothing here checks that the PID still names the same process afterwards:
        /// [`WorkloadAttestor::attest`] and `attest_caller` do.
        pub fn attest_pid(&self, pid: i32) -> Result<Vec<String>, WorkloadAttestError> {
            let path = self.proc_root.join(pid.to_string()).join("cgroup");
            let text = read_capped(&path).map_err(|source| WorkloadAttestError::Io {
                what: "the cgroup membership",
                path: path.clone(),
                source,
            })?;
            self.attest_cgroup(&path, &text)
        }

        fn attest_cgroup(
            &self,
            path: &Path,
            text: &str,
        ) -> Result<Vec<String>, WorkloadAttestError> {
            let located = cgroup::locate(text).map_err(|e| WorkloadAttestError::Parse {
                what: "the cgroup membership",
                path: path.to_owned(),
                reason: e.to_string(),
            })?;
            let Some(at) = located else {
                return Ok(Vec::new());
            };
            let list = self.pods.get(None).map_err(unavailable)?;
            if let Some(s) = pods::selectors_for(&list, &at).map_err(unavailable)? {
                return Ok(s);
            }
            // A pod that has just started may not be listed yet: once more, in a list
            // fetched after this miss.
            std::thread::sleep(self.retry_after);
            let list = self.pods.get(Some(Instant::now())).map_err(unavailable)?;
            if let Some(s) = pods::selectors_for(&list, &at).map_err(unavailable)? {
                return Ok(s);
            }
            log_not_found(&at);
            Ok(Vec::new())
        }
    }

    fn log_not_found(at: &PodContainer) {
        tracing::warn!(
            container = %at.container_id,
            pod_uid = at.pod_uid.as_deref().unwrap_or("-"),
            "k8s: the caller's container is in no pod the kubelet lists (looked twice): no k8s \
             selectors"
        );
    }

    fn read_capped(path: &Path) -> std::io::Result<String> {
        use std::io::Read;
        let mut text = String::new();
        std::fs::File::open(path)?
            .take(MAX_CGROUP_BYTES)
            .read_to_string(&mut text)?;
        Ok(text)
    }

    impl WorkloadAttestor for K8sAttestor {
        fn name(&self) -> &'static str {
            SELECTOR_TYPE
        }

        fn attest(&self, caller: &Caller) -> Result<Vec<Selector>, WorkloadAttestError> {
            let path = self.proc_root.join(caller.pid.to_string()).join("cgroup");
            let text = read_capped(&path)
                .map_err(|e| proc_err(caller, "the cgroup membership", &path, e))?;
            let mut out = Vec::new();
            for value in self.attest_cgroup(&path, &text)? {
                push_selector(&mut out, caller.pid, SELECTOR_TYPE, value);
            }
            Ok(out)
        }
    }
}
