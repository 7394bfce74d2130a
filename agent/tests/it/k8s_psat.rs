//! `k8s_psat` end to end: the real server binary (its `k8s_psat` attestor calling the
//! Kubernetes API server stand-in over HTTPS: TokenReview, then the pod and its node) and
//! the real agent binary (`ironroot-agent attest`, built with the `k8s` feature: this crate's
//! dev-dependency on itself turns it on for its tests) reading its projected token from a
//! file. The honest agent gets SPIRE's agent ID and prefixed selectors, and may attest
//! again; every refusal names its rule.

use std::path::{Path, PathBuf};
use std::process::Command;

use ironroot_agent::attest::{attest_with, AttestError, Hooks, KeySource};
use ironroot_agent::config::AgentConfig;
use ironroot_testkit::kube::{node_json, pod_json, Auth, KubeStandIn, TokenReviewFixture};
use ironroot_testkit::server::{NodeApiServer, TD};
use tonic::Code;

use crate::common::{agent_bin, rt};

const POD: &str = "spire-agent-x7k2p";
const POD_UID: &str = "5e3b8f4e-2c1a-4f59-9d6e-0a7b1c2d3e4f";
const NODE: &str = "node-1";
const NODE_UID: &str = "b7d1c6a2-8e5f-4a3b-9c0d-1e2f3a4b5c6d";
/// The server's own credential at the API server.
const SERVER_CREDENTIAL: &str = "ironroot-server-sa-token";

struct Rig {
    env: NodeApiServer,
    kube: KubeStandIn,
    /// The server's credentials for the API server.
    _credentials: tempfile::TempDir,
    /// Cluster `rotating-ca`'s `api_server_ca_file`: at start, a CA that did not issue the
    /// API server's certificate.
    rotating_ca: PathBuf,
}

fn rig() -> Rig {
    let kube = KubeStandIn::start(Auth::Bearer(SERVER_CREDENTIAL.into()));
    kube.add_pod(
        "spire",
        POD,
        pod_json(
            "spire",
            POD,
            POD_UID,
            NODE,
            "172.18.0.2",
            &[("app", "spire-agent"), ("pod-template-hash", "7d9f")],
        ),
    );
    kube.add_node(
        NODE,
        node_json(
            NODE,
            NODE_UID,
            &[
                ("topology.kubernetes.io/zone", "z1"),
                ("kubernetes.io/os", "linux"),
            ],
        ),
    );
    let bound = |ns: &str, sa: &str, node: &str| {
        TokenReviewFixture::bound(ns, sa, POD, POD_UID, node, NODE_UID)
    };
    kube.add_token("tok-honest", bound("spire", "spire-agent", NODE));
    let mut vault = bound("spire", "spire-agent", NODE);
    vault.audiences = vec!["vault".into()];
    kube.add_token("tok-vault-audience", vault);
    kube.add_token("tok-default-sa", bound("default", "default", NODE));
    kube.add_token("tok-other-node", bound("spire", "spire-agent", "node-2"));

    let dir = tempfile::tempdir().unwrap();
    let good_cred = dir.path().join("server-token");
    std::fs::write(&good_cred, format!("{SERVER_CREDENTIAL}\n")).unwrap();
    let rotating_ca = dir.path().join("rotating-ca.pem");
    std::fs::copy(&kube.other_ca, &rotating_ca).unwrap();
    let bad_cred = dir.path().join("bad-server-token");
    std::fs::write(&bad_cred, "not-the-credential").unwrap();
    let cluster = |name: &str, ca: &Path, cred: &Path| {
        format!(
            "[node_attestors.k8s_psat.clusters.{name}]\n\
             service_account_allow_list = [\"spire:spire-agent\"]\n\
             api_server_url = \"{}\"\napi_server_ca_file = \"{}\"\n\
             api_server_token_file = \"{}\"\napi_server_timeout = \"5s\"\n\
             allowed_node_label_keys = [\"topology.kubernetes.io/zone\"]\n\
             allowed_pod_label_keys = [\"app\"]\n\n",
            kube.url,
            ca.display(),
            cred.display()
        )
    };
    let sections = format!(
        "{}{}{}{}",
        cluster("test", &kube.ca, &good_cred),
        cluster("wrong-ca", &kube.other_ca, &good_cred),
        cluster("bad-credential", &kube.ca, &bad_cred),
        cluster("rotating-ca", &rotating_ca, &good_cred),
    );
    let env = NodeApiServer::start_with_attestors("k8s_psat", "", &[], "", &sections);
    Rig {
        env,
        kube,
        _credentials: dir,
        rotating_ca,
    }
}

/// An agent config file for `cluster` with the projected token `token`.
fn agent_conf(rig: &Rig, name: &str, cluster: &str, token: &str) -> (PathBuf, AgentConfig) {
    let dir = rig.env.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let token_path = dir.join("spire-agent");
    std::fs::write(&token_path, token).unwrap();
    let conf = dir.join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"k8s_psat\"\n\n\
             [k8s_psat]\ncluster = \"{cluster}\"\ntoken_path = \"{}\"\n",
            rig.env.address,
            rig.env.bundle.display(),
            dir.join("data").display(),
            token_path.display()
        ),
    )
    .unwrap();
    let cfg = AgentConfig::load(&conf).expect("agent config");
    (conf, cfg)
}

/// `ironroot-agent attest --output json`: the JSON on success, else the error text.
fn attest_bin(conf: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(agent_bin())
        .args(["attest", "--output", "json", "-c"])
        .arg(conf)
        .output()
        .expect("run ironroot-agent");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("attest JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn assert_refused(rig: &Rig, name: &str, cluster: &str, token: &str, words: &[&str]) {
    let (conf, _) = agent_conf(rig, name, cluster, token);
    match attest_bin(&conf) {
        Ok(v) => panic!("{name}: attestation passed but must be refused: {v}"),
        Err(text) => {
            for w in words {
                assert!(text.contains(w), "{name}: expected '{w}' in:\n{text}");
            }
        }
    }
}

/// The API server's CA file is re-read when it changes: a server trusting the wrong CA
/// starts trusting the right one once the file is replaced, without a restart; a
/// replacement that is not PEM keeps the CAs last read.
#[test]
fn the_api_server_ca_file_is_re_read_when_it_changes() {
    let rig = rig();
    assert_refused(
        &rig,
        "before-rotation",
        "rotating-ca",
        "tok-honest",
        &["k8s_psat api server", "TLS handshake", "api_server_ca_file"],
    );
    // Written beside and renamed over, as a secret update lands.
    let next = rig.rotating_ca.with_extension("next");
    std::fs::copy(&rig.kube.ca, &next).unwrap();
    std::fs::rename(&next, &rig.rotating_ca).unwrap();
    let (conf, _) = agent_conf(&rig, "after-rotation", "rotating-ca", "tok-honest");
    let v = attest_bin(&conf).unwrap_or_else(|e| panic!("after the CA file changed:\n{e}"));
    assert_eq!(
        v["spiffe_id"],
        format!("spiffe://{TD}/spire/agent/k8s_psat/rotating-ca/{NODE_UID}").as_str()
    );
    // Garbage in its place: the CAs last read still serve.
    std::fs::write(&rig.rotating_ca, "not PEM at all").unwrap();
    let (conf, _) = agent_conf(&rig, "after-garbage", "rotating-ca", "tok-honest");
    attest_bin(&conf).unwrap_or_else(|e| panic!("after an unusable CA file:\n{e}"));
}

#[test]
fn k8s_psat_agents_attest_through_the_token_review_and_refusals_name_the_rule() {
    let rig = rig();

    // The honest agent: SPIRE's agent ID (cluster, node UID) and selectors, prefixed.
    let (conf, _) = agent_conf(&rig, "honest", "test", "tok-honest");
    let v = attest_bin(&conf).unwrap_or_else(|e| panic!("honest attestation failed:\n{e}"));
    let expected_id = format!("spiffe://{TD}/spire/agent/k8s_psat/test/{NODE_UID}");
    assert_eq!(v["spiffe_id"], expected_id.as_str());
    let mut selectors: Vec<String> = v["selectors"]
        .as_array()
        .expect("selectors")
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    selectors.sort();
    let mut expected: Vec<String> = [
        "cluster:test".to_owned(),
        "agent_ns:spire".into(),
        "agent_sa:spire-agent".into(),
        format!("agent_pod_name:{POD}"),
        format!("agent_pod_uid:{POD_UID}"),
        "agent_node_ip:172.18.0.2".into(),
        format!("agent_node_name:{NODE}"),
        format!("agent_node_uid:{NODE_UID}"),
        "agent_node_label:topology.kubernetes.io/zone:z1".into(),
        "agent_pod_label:app:spire-agent".into(),
    ]
    .iter()
    .map(|s| format!("k8s_psat:{s}"))
    .collect();
    expected.sort();
    assert_eq!(selectors, expected);
    // The server asked the API server with its own credential, in this order.
    let asked = rig.kube.requests();
    assert_eq!(
        asked,
        [
            "POST /apis/authentication.k8s.io/v1/tokenreviews".to_owned(),
            format!("GET /api/v1/namespaces/spire/pods/{POD}"),
            format!("GET /api/v1/nodes/{NODE}"),
        ]
    );
    // Re-attestation is allowed (SPIRE's CanReattest): same agent ID.
    let again = attest_bin(&conf).unwrap_or_else(|e| panic!("re-attestation failed:\n{e}"));
    assert_eq!(again["spiffe_id"], expected_id.as_str());

    assert_refused(
        &rig,
        "garbage-token",
        "test",
        "tok-garbage",
        &["k8s_psat token not authenticated", "invalid bearer token"],
    );
    assert_refused(
        &rig,
        "wrong-audience",
        "test",
        "tok-vault-audience",
        &["k8s_psat audience", "spire-server", "audience option"],
    );
    assert_refused(
        &rig,
        "sa-not-allowed",
        "test",
        "tok-default-sa",
        &[
            "k8s_psat service account",
            "\"default:default\"",
            "service_account_allow_list",
        ],
    );
    assert_refused(
        &rig,
        "other-node",
        "test",
        "tok-other-node",
        &["k8s_psat node", "node-2", NODE],
    );
    assert_refused(
        &rig,
        "unknown-cluster",
        "prod",
        "tok-honest",
        &["k8s_psat cluster", "\"prod\" is not in clusters"],
    );
    assert_refused(
        &rig,
        "ca-mismatch",
        "wrong-ca",
        "tok-honest",
        &["k8s_psat api server", "TLS handshake", "api_server_ca_file"],
    );
    assert_refused(
        &rig,
        "bad-credential",
        "bad-credential",
        "tok-honest",
        &["k8s_psat api server", "HTTP 401", "api_server_token_file"],
    );
    // The pod is deleted: the token (still reviewed as valid here) names a pod that is gone.
    let gone = rig.kube.requests().len();
    rig.kube.add_token(
        "tok-deleted-pod",
        TokenReviewFixture::bound(
            "spire",
            "spire-agent",
            "spire-agent-gone",
            POD_UID,
            NODE,
            NODE_UID,
        ),
    );
    assert_refused(
        &rig,
        "deleted-pod",
        "test",
        "tok-deleted-pod",
        &["k8s_psat pod", "spire/spire-agent-gone not found"],
    );
    assert!(rig.kube.requests()[gone..]
        .contains(&"GET /api/v1/namespaces/spire/pods/spire-agent-gone".to_owned()));
}

#[test]
fn a_malformed_k8s_psat_payload_is_refused_by_name_without_asking_the_api_server() {
    let rig = rig();
    let (_, cfg) = agent_conf(&rig, "malformed", "test", "tok-honest");
    for (payload, words) in [
        (
            &b"not json"[..],
            &[
                "does not decode as attestor 'k8s_psat'",
                "JSON {\"cluster\", \"token\"}",
            ][..],
        ),
        (
            br#"{"cluster":"test","token":""}"#,
            &["cluster and token must be non-empty"],
        ),
        (br#"{"cluster":"test"}"#, &["missing field `token`"]),
    ] {
        let mut edit = |p: &mut ironroot_api::node::AttestParams| p.payload = payload.to_vec();
        let hooks = Hooks {
            params: Some(&mut edit),
            ..Hooks::default()
        };
        let refused = match rt().block_on(attest_with(&cfg, &KeySource::Software, hooks)) {
            Err(AttestError::Refused(r)) => r,
            other => panic!(
                "a malformed payload must be refused: {:?}",
                other.map(|o| o.spiffe_id)
            ),
        };
        assert_eq!(
            refused.code(),
            Code::InvalidArgument,
            "{}",
            refused.message()
        );
        for w in words {
            assert!(
                refused.message().contains(w),
                "expected '{w}' in: {}",
                refused.message()
            );
        }
    }
    assert!(rig.kube.requests().is_empty(), "{:?}", rig.kube.requests());
}
