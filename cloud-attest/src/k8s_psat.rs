//! `k8s_psat`: a projected service-account token, judged by the cluster's API server
//! (TokenReview, audience-bound), then bound to the pod and node it names.
//!
//! As in SPIRE, the token's signature is never checked offline: the API server's
//! TokenReview verdict is the authority (it knows the signing keys, revocation, and whether
//! the bound pod still exists). The caller posts the TokenReview with the cluster's
//! audiences and then GETs the pod and its node; this module judges the three responses.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::InvalidAgentPath;

/// The attestor's name.
pub const ATTESTOR: &str = "k8s_psat";
/// The audience SPIRE requests by default.
pub const DEFAULT_AUDIENCE: &str = "spire-server";
/// Largest accepted API response.
pub const MAX_RESPONSE_LEN: usize = 1024 * 1024;

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const EXTRA_NODE_UID: &str = "authentication.kubernetes.io/node-uid";
const EXTRA_CREDENTIAL_ID: &str = "authentication.kubernetes.io/credential-id";

/// The agent's payload (`{"cluster": ..., "token": ...}`), as SPIRE's agent sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationData {
    /// The cluster name the agent is configured with.
    pub cluster: String,
    /// The projected service-account token.
    pub token: String,
}

impl AttestationData {
    /// Parses the agent's JSON payload; both fields must be non-empty.
    pub fn from_json(payload: &[u8]) -> Result<Self, K8sPsatError> {
        let d: Self =
            serde_json::from_slice(payload).map_err(|e| K8sPsatError::MalformedPayload {
                reason: e.to_string(),
            })?;
        if d.cluster.is_empty() || d.token.is_empty() {
            return Err(K8sPsatError::MalformedPayload {
                reason: "cluster and token must be non-empty".into(),
            });
        }
        Ok(d)
    }
}

/// Why a projected service-account token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum K8sPsatError {
    /// The agent's payload is not `{cluster, token}`.
    #[error("k8s_psat payload is malformed: {reason}")]
    MalformedPayload {
        /// What was wrong.
        reason: String,
    },
    /// The agent names a cluster that is not configured.
    #[error("k8s_psat cluster {cluster:?} is not in clusters")]
    ClusterNotAllowed {
        /// The agent's cluster.
        cluster: String,
    },
    /// An API response is not the JSON object it must be.
    #[error("k8s_psat {object} response is malformed: {reason}")]
    MalformedResponse {
        /// TokenReview, Pod or Node.
        object: &'static str,
        /// What was wrong.
        reason: String,
    },
    /// The API server reported an error reviewing the token.
    #[error("k8s_psat TokenReview failed: {reason}")]
    ReviewError {
        /// `status.error`.
        reason: String,
    },
    /// The API server did not authenticate the token (bad signature, expired, pod deleted,
    /// wrong audience for the API server...).
    #[error("k8s_psat token was not authenticated by the API server (expired, revoked, or not for this cluster)")]
    NotAuthenticated,
    /// The token is not bound to an audience this cluster requires.
    #[error(
        "k8s_psat token audiences {found:?} include none of the cluster's audience {expected:?}"
    )]
    WrongAudience {
        /// Configured audiences.
        expected: Vec<String>,
        /// `status.audiences`.
        found: Vec<String>,
    },
    /// The user is not `system:serviceaccount:<namespace>:<name>`.
    #[error("k8s_psat token user {username:?} is not a service account (system:serviceaccount:<namespace>:<name>)")]
    NotServiceAccount {
        /// `status.user.username`.
        username: String,
    },
    /// The service account is not in the cluster's allow-list.
    #[error("k8s_psat service account {service_account:?} is not in the cluster's service_account_allow_list")]
    ServiceAccountNotAllowed {
        /// `<namespace>:<name>`.
        service_account: String,
    },
    /// The token is not bound to a pod (a legacy or non-pod token).
    #[error("k8s_psat token user info must carry exactly one non-empty {key} (a token projected into a pod)")]
    NotPodBound {
        /// The extra key.
        key: &'static str,
    },
    /// The pod fetched is not the pod the token is bound to.
    #[error("k8s_psat pod {what} is {found:?}, the token is bound to {expected:?} (pod replaced or wrong object)")]
    PodMismatch {
        /// Which field.
        what: &'static str,
        /// From the token.
        expected: String,
        /// From the pod.
        found: String,
    },
    /// The pod has no node.
    #[error("k8s_psat pod {pod:?} is not scheduled on a node")]
    PodNotScheduled {
        /// Pod name.
        pod: String,
    },
    /// The node fetched is not the pod's (or the token's) node, or has no UID.
    #[error("k8s_psat node {what} is {found:?}, expected {expected:?}")]
    NodeMismatch {
        /// Which field.
        what: &'static str,
        /// Expected.
        expected: String,
        /// Found.
        found: String,
    },
    /// A value is not usable in an agent ID path.
    #[error(transparent)]
    AgentPath(#[from] InvalidAgentPath),
}

/// Per-cluster settings (SPIRE's `clusters."<name>"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `<namespace>:<service account>` allowed to attest; empty allows none.
    pub service_account_allow_list: BTreeSet<String>,
    /// Audiences requested in the TokenReview and required in its answer
    /// ([`DEFAULT_AUDIENCE`]); empty means the API server's own audience (not checked).
    pub audience: Vec<String>,
    /// Node label keys that become `agent_node_label:` selectors.
    pub allowed_node_label_keys: BTreeSet<String>,
    /// Pod label keys that become `agent_pod_label:` selectors.
    pub allowed_pod_label_keys: BTreeSet<String>,
    /// Agent ID from the pod UID instead of the node UID.
    pub use_pod_uid_for_agent_id: bool,
}

impl ClusterConfig {
    /// SPIRE's defaults with the given allow-list.
    pub fn new(service_account_allow_list: impl IntoIterator<Item = String>) -> Self {
        Self {
            service_account_allow_list: service_account_allow_list.into_iter().collect(),
            audience: vec![DEFAULT_AUDIENCE.to_owned()],
            allowed_node_label_keys: BTreeSet::new(),
            allowed_pod_label_keys: BTreeSet::new(),
            use_pod_uid_for_agent_id: false,
        }
    }
}

/// Clusters by name; an unnamed cluster is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct K8sPsatConfig {
    /// The clusters.
    pub clusters: BTreeMap<String, ClusterConfig>,
}

impl K8sPsatConfig {
    /// The cluster's settings (the caller needs its audiences for the TokenReview request).
    pub fn cluster(&self, name: &str) -> Result<&ClusterConfig, K8sPsatError> {
        self.clusters
            .get(name)
            .ok_or_else(|| K8sPsatError::ClusterNotAllowed {
                cluster: name.to_owned(),
            })
    }
}

#[derive(Deserialize)]
struct TypeMeta {
    kind: String,
    #[serde(rename = "apiVersion")]
    api_version: String,
}

#[derive(Deserialize)]
struct TokenReview {
    #[serde(flatten)]
    type_meta: TypeMeta,
    #[serde(default)]
    status: ReviewStatus,
}

#[derive(Deserialize, Default)]
struct ReviewStatus {
    #[serde(default)]
    authenticated: bool,
    #[serde(default)]
    error: String,
    #[serde(default)]
    user: UserInfo,
    #[serde(default)]
    audiences: Vec<String>,
}

#[derive(Deserialize, Default)]
struct UserInfo {
    #[serde(default)]
    username: String,
    #[serde(default)]
    extra: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Pod {
    #[serde(flatten)]
    type_meta: TypeMeta,
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}

#[derive(Deserialize, Default)]
struct PodSpec {
    #[serde(default, rename = "nodeName")]
    node_name: String,
}

#[derive(Deserialize, Default)]
struct PodStatus {
    #[serde(default, rename = "hostIP")]
    host_ip: String,
}

#[derive(Deserialize)]
struct Node {
    #[serde(flatten)]
    type_meta: TypeMeta,
    #[serde(default)]
    metadata: ObjectMeta,
}

fn parse<'a, T: Deserialize<'a>>(object: &'static str, json: &'a [u8]) -> Result<T, K8sPsatError> {
    let malformed = |reason: String| K8sPsatError::MalformedResponse { object, reason };
    if json.len() > MAX_RESPONSE_LEN {
        return Err(malformed(format!(
            "{} bytes, more than {MAX_RESPONSE_LEN}",
            json.len()
        )));
    }
    serde_json::from_slice(json).map_err(|e| malformed(e.to_string()))
}

fn check_type(
    object: &'static str,
    meta: &TypeMeta,
    kind: &str,
    api_version: &str,
) -> Result<(), K8sPsatError> {
    if meta.kind != kind || meta.api_version != api_version {
        return Err(K8sPsatError::MalformedResponse {
            object,
            reason: format!(
                "kind {:?} apiVersion {:?}, expected {kind:?} {api_version:?}",
                meta.kind, meta.api_version
            ),
        });
    }
    Ok(())
}

/// A token the API server authenticated for an allowed service account, bound to a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReviewedToken {
    /// Cluster name (configured).
    pub cluster: String,
    /// The service account's namespace.
    pub namespace: String,
    /// The service account's name.
    pub service_account: String,
    /// The bound pod's name.
    pub pod_name: String,
    /// The bound pod's UID.
    pub pod_uid: String,
    /// The node the token names (API servers since Kubernetes 1.30 add it), if any.
    pub node_name: Option<String>,
    /// The node UID the token names, if any.
    pub node_uid: Option<String>,
    /// The token's credential ID (`JTI=<jti>`), if the API server reports it: a per-token
    /// value for audit and replay tracking. SPIRE allows re-attestation (no TOFU) since the
    /// token is short-lived and bound to a live pod.
    pub credential_id: Option<String>,
}

fn single_extra(
    extra: &BTreeMap<String, Vec<String>>,
    key: &'static str,
    required: bool,
) -> Result<Option<String>, K8sPsatError> {
    match extra.get(key).map(Vec::as_slice) {
        Some([one]) if !one.is_empty() => Ok(Some(one.clone())),
        None if !required => Ok(None),
        _ => Err(K8sPsatError::NotPodBound { key }),
    }
}

/// Judges the API server's TokenReview response (`POST
/// /apis/authentication.k8s.io/v1/tokenreviews` with `spec.audiences` = the cluster's
/// `audience`). Checks, in order: cluster configured; response is a v1 TokenReview; no
/// `status.error`; `authenticated`; `status.audiences` intersects the cluster's audience (if
/// any is configured); user is `system:serviceaccount:<ns>:<sa>`; `<ns>:<sa>` allowed; pod
/// name and UID bound (exactly one non-empty value each).
pub fn verify_token_review(
    config: &K8sPsatConfig,
    cluster: &str,
    review_json: &[u8],
) -> Result<ReviewedToken, K8sPsatError> {
    let cluster_config = config.cluster(cluster)?;
    let review: TokenReview = parse("TokenReview", review_json)?;
    check_type(
        "TokenReview",
        &review.type_meta,
        "TokenReview",
        "authentication.k8s.io/v1",
    )?;
    let status = review.status;
    if !status.error.is_empty() {
        return Err(K8sPsatError::ReviewError {
            reason: status.error,
        });
    }
    if !status.authenticated {
        return Err(K8sPsatError::NotAuthenticated);
    }
    if !cluster_config.audience.is_empty()
        && !status
            .audiences
            .iter()
            .any(|a| cluster_config.audience.contains(a))
    {
        return Err(K8sPsatError::WrongAudience {
            expected: cluster_config.audience.clone(),
            found: status.audiences,
        });
    }
    let username = status.user.username;
    let (namespace, service_account) = match username.split(':').collect::<Vec<_>>().as_slice() {
        ["system", "serviceaccount", ns, sa] if !ns.is_empty() && !sa.is_empty() => {
            ((*ns).to_owned(), (*sa).to_owned())
        }
        _ => return Err(K8sPsatError::NotServiceAccount { username }),
    };
    let qualified = format!("{namespace}:{service_account}");
    if !cluster_config
        .service_account_allow_list
        .contains(&qualified)
    {
        return Err(K8sPsatError::ServiceAccountNotAllowed {
            service_account: qualified,
        });
    }
    let extra = &status.user.extra;
    let pod_name = single_extra(extra, EXTRA_POD_NAME, true)?.unwrap_or_default();
    let pod_uid = single_extra(extra, EXTRA_POD_UID, true)?.unwrap_or_default();
    Ok(ReviewedToken {
        cluster: cluster.to_owned(),
        namespace,
        service_account,
        pod_name,
        pod_uid,
        node_name: single_extra(extra, EXTRA_NODE_NAME, false)?,
        node_uid: single_extra(extra, EXTRA_NODE_UID, false)?,
        credential_id: single_extra(extra, EXTRA_CREDENTIAL_ID, false)?,
    })
}

impl ReviewedToken {
    /// Binds the token to the pod (`GET /api/v1/namespaces/<ns>/pods/<pod>`) and its node
    /// (`GET /api/v1/nodes/<pod.spec.nodeName>`). Checks, in order: the pod is a v1 Pod
    /// with the token's namespace, name and **UID** (a pod recreated under the same name
    /// is another pod: SPIRE's later fix); it is scheduled; the node is a v1 Node named as
    /// the pod's node (and as the token's, if it names one) with a UID (equal to the
    /// token's node UID, if it names one); the IDs are usable in an agent ID path.
    pub fn bind_pod_and_node(
        self,
        config: &K8sPsatConfig,
        pod_json: &[u8],
        node_json: &[u8],
    ) -> Result<PsatIdentity, K8sPsatError> {
        let cluster_config = config.cluster(&self.cluster)?;
        let pod: Pod = parse("Pod", pod_json)?;
        check_type("Pod", &pod.type_meta, "Pod", "v1")?;
        for (what, expected, found) in [
            ("namespace", &self.namespace, &pod.metadata.namespace),
            ("name", &self.pod_name, &pod.metadata.name),
            ("UID", &self.pod_uid, &pod.metadata.uid),
        ] {
            if expected != found {
                return Err(K8sPsatError::PodMismatch {
                    what,
                    expected: expected.clone(),
                    found: found.clone(),
                });
            }
        }
        let node_name = pod.spec.node_name;
        if node_name.is_empty() {
            return Err(K8sPsatError::PodNotScheduled { pod: self.pod_name });
        }
        if let Some(token_node) = &self.node_name {
            if *token_node != node_name {
                return Err(K8sPsatError::NodeMismatch {
                    what: "name (token vs pod)",
                    expected: token_node.clone(),
                    found: node_name,
                });
            }
        }
        let node: Node = parse("Node", node_json)?;
        check_type("Node", &node.type_meta, "Node", "v1")?;
        if node.metadata.name != node_name {
            return Err(K8sPsatError::NodeMismatch {
                what: "name",
                expected: node_name,
                found: node.metadata.name,
            });
        }
        if node.metadata.uid.is_empty() {
            return Err(K8sPsatError::NodeMismatch {
                what: "UID",
                expected: "a non-empty UID".into(),
                found: String::new(),
            });
        }
        if let Some(token_uid) = &self.node_uid {
            if *token_uid != node.metadata.uid {
                return Err(K8sPsatError::NodeMismatch {
                    what: "UID (token vs node)",
                    expected: token_uid.clone(),
                    found: node.metadata.uid,
                });
            }
        }
        let keep = |labels: BTreeMap<String, String>, allowed: &BTreeSet<String>| {
            labels
                .into_iter()
                .filter(|(k, _)| allowed.contains(k))
                .collect::<BTreeMap<_, _>>()
        };
        let identity = PsatIdentity {
            cluster: self.cluster,
            namespace: self.namespace,
            service_account: self.service_account,
            pod_name: self.pod_name,
            pod_uid: self.pod_uid,
            node_ip: pod.status.host_ip,
            node_name,
            node_uid: node.metadata.uid,
            node_labels: keep(
                node.metadata.labels,
                &cluster_config.allowed_node_label_keys,
            ),
            pod_labels: keep(pod.metadata.labels, &cluster_config.allowed_pod_label_keys),
            credential_id: self.credential_id,
            use_pod_uid_for_agent_id: cluster_config.use_pod_uid_for_agent_id,
        };
        identity.agent_path()?;
        Ok(identity)
    }
}

/// An agent pod whose projected token its cluster's API server vouched for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PsatIdentity {
    /// Cluster name.
    pub cluster: String,
    /// Service account namespace.
    pub namespace: String,
    /// Service account name.
    pub service_account: String,
    /// Pod name.
    pub pod_name: String,
    /// Pod UID.
    pub pod_uid: String,
    /// `pod.status.hostIP` (may be empty).
    pub node_ip: String,
    /// Node name.
    pub node_name: String,
    /// Node UID.
    pub node_uid: String,
    /// Node labels whose keys are allowed.
    pub node_labels: BTreeMap<String, String>,
    /// Pod labels whose keys are allowed.
    pub pod_labels: BTreeMap<String, String>,
    /// The token's credential ID, if reported.
    pub credential_id: Option<String>,
    /// Whether the agent ID uses the pod UID.
    pub use_pod_uid_for_agent_id: bool,
}

impl PsatIdentity {
    /// SPIRE's selectors in SPIRE's order, without the `k8s_psat:` prefix: `cluster:`,
    /// `agent_ns:`, `agent_sa:`, `agent_pod_name:`, `agent_pod_uid:`, `agent_node_ip:` (when
    /// known), `agent_node_name:`, `agent_node_uid:`, then `agent_node_label:<k>:<v>` and
    /// `agent_pod_label:<k>:<v>` for allowed keys (sorted by key; SPIRE's order there is
    /// map order).
    pub fn selectors(&self) -> Vec<String> {
        let mut s = vec![
            format!("cluster:{}", self.cluster),
            format!("agent_ns:{}", self.namespace),
            format!("agent_sa:{}", self.service_account),
            format!("agent_pod_name:{}", self.pod_name),
            format!("agent_pod_uid:{}", self.pod_uid),
        ];
        if !self.node_ip.is_empty() {
            s.push(format!("agent_node_ip:{}", self.node_ip));
        }
        s.push(format!("agent_node_name:{}", self.node_name));
        s.push(format!("agent_node_uid:{}", self.node_uid));
        s.extend(
            self.node_labels
                .iter()
                .map(|(k, v)| format!("agent_node_label:{k}:{v}")),
        );
        s.extend(
            self.pod_labels
                .iter()
                .map(|(k, v)| format!("agent_pod_label:{k}:{v}")),
        );
        s
    }

    /// `/spire/agent/k8s_psat/<cluster>/<node UID>`, or with `use_pod_uid_for_agent_id`
    /// `/spire/agent/k8s_psat/<cluster>/pod/<pod UID>` (SPIRE's forms).
    pub fn agent_path(&self) -> Result<String, InvalidAgentPath> {
        if self.use_pod_uid_for_agent_id {
            crate::spiffe_path::agent_path(
                ATTESTOR,
                &[
                    ("cluster name", &self.cluster),
                    ("literal", "pod"),
                    ("pod UID", &self.pod_uid),
                ],
            )
        } else {
            crate::spiffe_path::agent_path(
                ATTESTOR,
                &[
                    ("cluster name", &self.cluster),
                    ("node UID", &self.node_uid),
                ],
            )
        }
    }

    /// SPIRE: `CanReattest=true` (no TOFU: the short-lived, pod-bound token is the replay
    /// protection; re-attestation updates the same node's agent).
    pub const fn can_reattest(&self) -> bool {
        true
    }
}
