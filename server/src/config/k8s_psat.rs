//! `[node_attestors.k8s_psat]`: the clusters whose projected service-account tokens are
//! accepted, and how the server reaches each cluster's API server (built with the `k8s`
//! cargo feature). Defaults are those of a server running in the cluster it attests
//! (the in-cluster service account's files), and SPIRE's for the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// The API server as a pod sees it.
pub(crate) const DEFAULT_API_SERVER_URL: &str = "https://kubernetes.default.svc";
/// The in-cluster service account's CA bundle.
pub(crate) const DEFAULT_API_SERVER_CA_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The in-cluster service account's token (the server's credential for TokenReview).
pub(crate) const DEFAULT_API_SERVER_TOKEN_FILE: &str =
    "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Bound on each API request (connect, TLS, answer).
pub(crate) const DEFAULT_API_SERVER_TIMEOUT: Duration = Duration::from_secs(10);

fn default_audience() -> Vec<String> {
    vec![ironroot_cloud_attest::k8s_psat::DEFAULT_AUDIENCE.to_owned()]
}
fn default_api_server_url() -> String {
    DEFAULT_API_SERVER_URL.into()
}
fn default_api_server_ca_file() -> PathBuf {
    PathBuf::from(DEFAULT_API_SERVER_CA_FILE)
}
fn default_api_server_token_file() -> PathBuf {
    PathBuf::from(DEFAULT_API_SERVER_TOKEN_FILE)
}
fn default_api_server_timeout() -> Duration {
    DEFAULT_API_SERVER_TIMEOUT
}

/// `[node_attestors.k8s_psat]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct K8sPsatConfig {
    /// `[node_attestors.k8s_psat.clusters.<name>]`: the agent's `k8s_psat.cluster` names one.
    pub(crate) clusters: BTreeMap<String, K8sPsatClusterConfig>,
}

/// One cluster (SPIRE's `clusters."<name>"`, with the API server named directly instead of
/// a kubeconfig).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct K8sPsatClusterConfig {
    /// `<namespace>:<service account>` whose tokens may attest. Required, at least one.
    pub(crate) service_account_allow_list: Vec<String>,
    /// Audiences the TokenReview requests and the token must carry. Default
    /// `["spire-server"]`; `[]` means the API server's own audience.
    #[serde(default = "default_audience")]
    pub(crate) audience: Vec<String>,
    /// The API server, `https://host[:port]`.
    #[serde(default = "default_api_server_url")]
    pub(crate) api_server_url: String,
    /// CA bundle (PEM) the API server's certificate must chain to; re-read when the file
    /// changes.
    #[serde(default = "default_api_server_ca_file")]
    pub(crate) api_server_ca_file: PathBuf,
    /// The server's bearer token for the API server (create tokenreviews, get pods and
    /// nodes); read at every attestation, so a rotated token is picked up.
    #[serde(default = "default_api_server_token_file")]
    pub(crate) api_server_token_file: PathBuf,
    /// Bound on each API request.
    #[serde(default = "default_api_server_timeout", with = "humantime_serde")]
    pub(crate) api_server_timeout: Duration,
    /// Node label keys that become `agent_node_label:<k>:<v>` selectors.
    #[serde(default)]
    pub(crate) allowed_node_label_keys: Vec<String>,
    /// Pod label keys that become `agent_pod_label:<k>:<v>` selectors.
    #[serde(default)]
    pub(crate) allowed_pod_label_keys: Vec<String>,
    /// Agent ID from the pod UID (`.../k8s_psat/<cluster>/pod/<uid>`) instead of the node's.
    #[serde(default)]
    pub(crate) use_pod_uid_for_agent_id: bool,
}
