//! `k8s_psat`: the agent sends its cluster's name and the projected service-account token of
//! its pod (`{"cluster", "token"}`, SPIRE's payload). The server asks that cluster's API
//! server to review the token for the configured audience (`POST
//! /apis/authentication.k8s.io/v1/tokenreviews`), then GETs the pod the token is bound to and
//! that pod's node; cloud-attest's `k8s_psat` judges the three answers (allow-listed service
//! account, the pod's UID equal to the token's, the node the pod runs on). No challenge;
//! re-attestation is allowed (the token is short-lived and bound to a live pod, SPIRE's
//! `CanReattest=true`), so a node's agent keeps its ID across restarts.
//!
//! Every request goes over HTTPS to the configured URL, the API server's certificate
//! verified against `api_server_ca_file` (re-read when the file changes: its modification
//! time or size; a changed file that is unusable keeps the CAs last read, logged), with the
//! server's own bearer token; a failure to
//! ask is the server's problem (INTERNAL, naming the option), a verdict against the token is
//! the agent's (PERMISSION_DENIED, naming the rule).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_cloud_attest::k8s_psat::{
    self as verify, AttestationData, ClusterConfig, K8sPsatConfig as VerifyConfig, K8sPsatError,
};
use ironroot_runtime::https::{block_on, HttpsClient, HttpsError, Response, TlsOptions};
use serde_json::json;

use super::super::refusal::bad_evidence;
use super::super::registry::BuildContext;
use super::super::{AttestError, Attested, Begun, Evidence, NodeAttestor};
use crate::config::{K8sPsatClusterConfig, K8sPsatConfig};
use crate::run::StartError;

pub(crate) const NAME: &str = "k8s_psat";

/// One cluster's API server: the client, and the server's credential for it.
struct ApiServer {
    /// The client, and the CA file's version it was built from.
    client: Mutex<(Stamp, HttpsClient)>,
    ca_file: PathBuf,
    timeout: Duration,
    token_file: PathBuf,
    url: String,
}

/// What identifies a version of the CA file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// A client for `url` verifying the peer against `ca_file` (read now).
fn client_for(url: &str, ca_file: &Path, timeout: Duration) -> Result<HttpsClient, String> {
    let tls = TlsOptions {
        ca_file: Some(("api_server_ca_file", ca_file.to_owned())),
        ..TlsOptions::default()
    }
    .client_config()
    .map_err(|e| e.to_string())?;
    HttpsClient::new(url, tls, timeout, verify::MAX_RESPONSE_LEN).map_err(|e| e.to_string())
}

/// The `k8s_psat` attestor.
pub(crate) struct K8sPsatAttestor {
    trust_domain: TrustDomain,
    verify: VerifyConfig,
    api_servers: BTreeMap<String, ApiServer>,
}

fn start_error(key: String, reason: impl Into<String>) -> StartError {
    StartError::NodeAttestor {
        key,
        reason: reason.into(),
    }
}

impl K8sPsatAttestor {
    /// The attestor for `cfg`; an unusable option (allow-list entry, URL, CA file) is refused
    /// at start-up, naming it.
    pub(crate) fn build(cfg: &K8sPsatConfig, ctx: &BuildContext<'_>) -> Result<Self, StartError> {
        if cfg.clusters.is_empty() {
            return Err(start_error(
                "k8s_psat.clusters".into(),
                "no cluster is configured, so no agent could attest: add \
                 [node_attestors.k8s_psat.clusters.<name>], or remove the section",
            ));
        }
        let mut verify = VerifyConfig::default();
        let mut api_servers = BTreeMap::new();
        for (name, c) in &cfg.clusters {
            let key = |option: &str| format!("k8s_psat.clusters.{name}.{option}");
            verify
                .clusters
                .insert(name.clone(), cluster_rules(c, &key)?);
            let ca_stamp = stamp(&c.api_server_ca_file);
            let tls = TlsOptions {
                ca_file: Some(("api_server_ca_file", c.api_server_ca_file.clone())),
                ..TlsOptions::default()
            }
            .client_config()
            .map_err(|e| start_error(key("api_server_ca_file"), e.to_string()))?;
            if c.api_server_timeout.is_zero() {
                return Err(start_error(
                    key("api_server_timeout"),
                    "must be more than 0",
                ));
            }
            let client = HttpsClient::new(
                &c.api_server_url,
                tls,
                c.api_server_timeout,
                verify::MAX_RESPONSE_LEN,
            )
            .map_err(|e| start_error(key("api_server_url"), e.to_string()))?;
            api_servers.insert(
                name.clone(),
                ApiServer {
                    client: Mutex::new((ca_stamp, client)),
                    ca_file: c.api_server_ca_file.clone(),
                    timeout: c.api_server_timeout,
                    token_file: c.api_server_token_file.clone(),
                    url: c.api_server_url.clone(),
                },
            );
        }
        Ok(K8sPsatAttestor {
            trust_domain: ctx.trust_domain.clone(),
            verify,
            api_servers,
        })
    }
}

/// The verifier's rules for one cluster; allow-list entries must be `<namespace>:<name>`.
fn cluster_rules(
    c: &K8sPsatClusterConfig,
    key: &dyn Fn(&str) -> String,
) -> Result<ClusterConfig, StartError> {
    if c.service_account_allow_list.is_empty() {
        return Err(start_error(
            key("service_account_allow_list"),
            "is empty, so no agent of this cluster could attest: list the agents' service \
             accounts as \"<namespace>:<name>\"",
        ));
    }
    for sa in &c.service_account_allow_list {
        let ok = matches!(sa.split(':').collect::<Vec<_>>().as_slice(),
            [ns, name] if !ns.is_empty() && !name.is_empty());
        if !ok {
            return Err(start_error(
                key("service_account_allow_list"),
                format!("{sa:?} is not \"<namespace>:<service account>\""),
            ));
        }
    }
    let mut rules = ClusterConfig::new(c.service_account_allow_list.iter().cloned());
    rules.audience = c.audience.clone();
    rules.allowed_node_label_keys = c.allowed_node_label_keys.iter().cloned().collect();
    rules.allowed_pod_label_keys = c.allowed_pod_label_keys.iter().cloned().collect();
    rules.use_pod_uid_for_agent_id = c.use_pod_uid_for_agent_id;
    Ok(rules)
}

/// A name the API server gave, checked before it goes into a request path (Kubernetes
/// object names are DNS subdomains; nothing else may reach the URL).
fn object_name<'a>(what: &'static str, name: &'a str) -> Result<&'a str, AttestError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(AttestError::rejected(
            "k8s_psat api server",
            format!("the API server named a {what} {name:?} that is not a Kubernetes name"),
        ))
    }
}

/// The verifier's refusal as the seam's: which rule, for the operator.
fn refused(e: K8sPsatError, cluster: &ClusterConfig) -> AttestError {
    let reason = e.to_string();
    match e {
        K8sPsatError::MalformedPayload { .. } => AttestError::malformed("k8s_psat payload", reason),
        K8sPsatError::ClusterNotAllowed { .. } => AttestError::rejected(
            "k8s_psat cluster",
            format!("{reason} (the agent's k8s_psat.cluster must name a configured cluster)"),
        ),
        K8sPsatError::MalformedResponse { .. } => {
            AttestError::internal("k8s_psat api server", reason)
        }
        // The API server's token authenticator refuses a token minted for other audiences
        // with this text; name the rule the operator checks.
        K8sPsatError::ReviewError { reason: why } if why.contains("audience") => {
            AttestError::rejected(
                "k8s_psat audience",
                format!(
                    "the API server refused the token for the audience requested ({:?}, the \
                     cluster's audience option; the agent's projected token must be minted \
                     for it): {why}",
                    cluster.audience
                ),
            )
        }
        K8sPsatError::ReviewError { .. } | K8sPsatError::NotAuthenticated => {
            AttestError::rejected("k8s_psat token not authenticated", reason)
        }
        K8sPsatError::WrongAudience { .. } => AttestError::rejected("k8s_psat audience", reason),
        K8sPsatError::NotServiceAccount { .. } | K8sPsatError::ServiceAccountNotAllowed { .. } => {
            AttestError::rejected("k8s_psat service account", reason)
        }
        K8sPsatError::NotPodBound { .. } => AttestError::rejected("k8s_psat token", reason),
        K8sPsatError::PodMismatch { .. } | K8sPsatError::PodNotScheduled { .. } => {
            AttestError::rejected("k8s_psat pod", reason)
        }
        K8sPsatError::NodeMismatch { .. } => AttestError::rejected("k8s_psat node", reason),
        K8sPsatError::AgentPath(_) => AttestError::rejected("agent id", reason),
        _ => AttestError::rejected("k8s_psat", reason),
    }
}

impl ApiServer {
    /// The client, rebuilt first if the CA file changed since it was built (a rotated
    /// cluster CA is picked up without a restart). A changed file that cannot be used keeps
    /// the last client, logged: the CAs already trusted stay trusted.
    fn client(&self) -> HttpsClient {
        let mut held = self.client.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.ca_file);
        if now != held.0 {
            match client_for(&self.url, &self.ca_file, self.timeout) {
                Ok(c) => {
                    tracing::info!(
                        api_server_ca_file = %self.ca_file.display(),
                        "k8s_psat: the API server's CA file changed; re-read"
                    );
                    *held = (now, c);
                }
                Err(e) => {
                    tracing::warn!(
                        api_server_ca_file = %self.ca_file.display(),
                        error = %e,
                        "k8s_psat: the API server's CA file changed but is unusable; keeping \
                         the CAs last read"
                    );
                    held.0 = now;
                }
            }
        }
        held.1.clone()
    }

    /// One request with the server's credential; a failure to get an answer names what to
    /// check.
    fn call(
        &self,
        method: http_method::Method,
        path: &str,
        body: Option<Vec<u8>>,
        not_found: Option<&dyn Fn() -> AttestError>,
    ) -> Result<Response, AttestError> {
        let token = std::fs::read_to_string(&self.token_file).map_err(|e| {
            AttestError::internal(
                "k8s_psat api server",
                format!(
                    "cannot read the server's API token (api_server_token_file {}): {e}",
                    self.token_file.display()
                ),
            )
        })?;
        let token = token.trim();
        let client = self.client();
        let answer = block_on(client.request(method.into(), path, Some(token), body))
            .map_err(|e| self.unreachable(e))?;
        match answer.status {
            200..=299 => Ok(answer),
            404 if not_found.is_some() => Err(not_found
                .map(|f| f())
                .unwrap_or_else(|| AttestError::internal("k8s_psat api server", "HTTP 404"))),
            401 => Err(AttestError::internal(
                "k8s_psat api server",
                format!(
                    "the API server at {} refused the server's credential (HTTP 401): check \
                     api_server_token_file {}",
                    self.url,
                    self.token_file.display()
                ),
            )),
            403 => Err(AttestError::internal(
                "k8s_psat api server",
                format!(
                    "the API server at {} forbids {path} to the server's credential (HTTP 403): \
                     its service account needs create on tokenreviews and get on pods and \
                     nodes",
                    self.url
                ),
            )),
            _ => Err(AttestError::internal(
                "k8s_psat api server",
                format!(
                    "the API server at {} answered {path} with HTTP {}: {}",
                    self.url,
                    answer.status,
                    status_message(&answer.body)
                ),
            )),
        }
    }

    fn unreachable(&self, e: HttpsError) -> AttestError {
        let reason = if e.is_tls() {
            format!("{e}; the server verifies the API server against api_server_ca_file")
        } else {
            format!("API server at {} unreachable: {e}", self.url)
        };
        AttestError::internal("k8s_psat api server", reason)
    }

    /// GET an object; 404 is the agent's problem (its pod or node is gone).
    fn get(&self, check: &'static str, what: &str, path: &str) -> Result<Vec<u8>, AttestError> {
        let gone = || {
            AttestError::rejected(
                check,
                format!(
                    "{what} not found at the API server {} (deleted since the token was issued?)",
                    self.url
                ),
            )
        };
        Ok(self
            .call(http_method::Method::Get, path, None, Some(&gone))?
            .body
            .to_vec())
    }
}

/// `message` of a Kubernetes `Status` body, else the body's start.
fn status_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned())
}

/// The two methods used, so callers need not depend on `http` by name.
mod http_method {
    pub(super) enum Method {
        Get,
        Post,
    }
    impl From<Method> for http::Method {
        fn from(m: Method) -> Self {
            match m {
                Method::Get => http::Method::GET,
                Method::Post => http::Method::POST,
            }
        }
    }
}

impl NodeAttestor for K8sPsatAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let data = AttestationData::from_json(evidence.payload)
            .map_err(|e| bad_evidence(NAME, "JSON {\"cluster\", \"token\"}, both non-empty", e))?;
        let cluster = self
            .verify
            .cluster(&data.cluster)
            .map_err(|e| refused(e, &ClusterConfig::new([])))?;
        let api = self.api_servers.get(&data.cluster).ok_or_else(|| {
            AttestError::internal(
                "k8s_psat cluster",
                "cluster configured without an API server",
            )
        })?;
        let review_request = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": data.token, "audiences": cluster.audience},
        });
        let review = api.call(
            http_method::Method::Post,
            "/apis/authentication.k8s.io/v1/tokenreviews",
            Some(review_request.to_string().into_bytes()),
            None,
        )?;
        let reviewed = verify::verify_token_review(&self.verify, &data.cluster, &review.body)
            .map_err(|e| refused(e, cluster))?;
        let ns = object_name("namespace", &reviewed.namespace)?.to_owned();
        let pod_name = object_name("pod", &reviewed.pod_name)?.to_owned();
        let pod = api.get(
            "k8s_psat pod",
            &format!("pod {ns}/{pod_name}"),
            &format!("/api/v1/namespaces/{ns}/pods/{pod_name}"),
        )?;
        let node_name = serde_json::from_slice::<serde_json::Value>(&pod)
            .ok()
            .and_then(|v| v["spec"]["nodeName"].as_str().map(str::to_owned))
            .unwrap_or_default();
        // An unscheduled or malformed pod: the verifier names the rule without a node.
        let node = if node_name.is_empty() {
            Vec::new()
        } else {
            let node_name = object_name("node", &node_name)?;
            api.get(
                "k8s_psat node",
                &format!("node {node_name}"),
                &format!("/api/v1/nodes/{node_name}"),
            )?
        };
        let identity = reviewed
            .bind_pod_and_node(&self.verify, &pod, &node)
            .map_err(|e| refused(e, cluster))?;
        let path = identity
            .agent_path()
            .map_err(|e| AttestError::rejected("agent id", e.to_string()))?;
        let agent_id = SpiffeId::from_path(&self.trust_domain, &path)
            .map_err(|e| AttestError::rejected("agent id", e.to_string()))?;
        tracing::info!(
            cluster = %data.cluster,
            pod = %format!("{ns}/{pod_name}"),
            node = %identity.node_name,
            credential_id = identity.credential_id.as_deref().unwrap_or("-"),
            "k8s_psat token reviewed and bound to its pod and node"
        );
        Ok(Begun::Done(Attested {
            agent_id,
            selectors: identity.selectors(),
            boot_policy: None,
            devid_chain: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(allow: &[&str]) -> K8sPsatClusterConfig {
        toml::from_str(&format!(
            "service_account_allow_list = {allow:?}\napi_server_url = \"https://127.0.0.1:6443\"\n"
        ))
        .expect("cluster config")
    }

    #[test]
    fn allow_list_entries_must_be_namespace_colon_name() {
        let key = |o: &str| format!("k8s_psat.clusters.c.{o}");
        assert!(cluster_rules(&cluster(&["spire:spire-agent"]), &key).is_ok());
        for bad in [&[][..], &["spire-agent"], &["spire:"], &["a:b:c"]] {
            let e = cluster_rules(&cluster(bad), &key)
                .expect_err("refused")
                .to_string();
            assert!(
                e.starts_with("node_attestors.k8s_psat.clusters.c.service_account_allow_list"),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults_are_in_cluster_and_spire_s() {
        let c = cluster(&["spire:spire-agent"]);
        assert_eq!(c.audience, ["spire-server"]);
        assert_eq!(
            c.api_server_ca_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/ca.crt")
        );
        assert_eq!(
            c.api_server_token_file,
            PathBuf::from("/var/run/secrets/kubernetes.io/serviceaccount/token")
        );
        assert_eq!(c.api_server_timeout, std::time::Duration::from_secs(10));
        assert!(!c.use_pod_uid_for_agent_id);
    }

    #[test]
    fn names_from_the_api_server_cannot_reach_the_url_as_anything_else() {
        assert!(object_name("pod", "spire-agent-x7k2p").is_ok());
        for bad in ["", "a/b", "..%2f", "a?b", "a b"] {
            assert!(object_name("pod", bad).is_err(), "{bad:?}");
        }
    }
}
