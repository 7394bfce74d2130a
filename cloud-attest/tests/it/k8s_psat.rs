//! k8s_psat: TokenReview verdicts, then the pod and node the token is bound to.

use std::collections::BTreeMap;

use ironroot_cloud_attest::k8s_psat::{
    verify_token_review, AttestationData, ClusterConfig, K8sPsatConfig, K8sPsatError,
};
use ironroot_cloud_attest::test_support::{node_json, pod_json, TokenReviewFixture};

const CLUSTER: &str = "prod-eu";
const POD_UID: &str = "9c7a51a0-3f6d-4b3e-8d2c-0a1b2c3d4e5f";
const NODE_UID: &str = "5e4d3c2b-1a09-4f8e-9d7c-6b5a49382716";

fn config() -> K8sPsatConfig {
    let mut cluster = ClusterConfig::new(["spire:spire-agent".to_owned()]);
    cluster.allowed_node_label_keys = ["topology.kubernetes.io/zone".to_owned()].into();
    cluster.allowed_pod_label_keys = ["app".to_owned()].into();
    K8sPsatConfig {
        clusters: BTreeMap::from([(CLUSTER.to_owned(), cluster)]),
    }
}

fn review() -> TokenReviewFixture {
    TokenReviewFixture::bound(
        "spire",
        "spire-agent",
        "spire-agent-x7k2p",
        POD_UID,
        "node-a",
        NODE_UID,
    )
}

fn pod() -> String {
    pod_json(
        "spire",
        "spire-agent-x7k2p",
        POD_UID,
        "node-a",
        "172.18.0.2",
        &[("app", "spire-agent"), ("pod-template-hash", "abc")],
    )
}

fn node() -> String {
    node_json(
        "node-a",
        NODE_UID,
        &[
            ("topology.kubernetes.io/zone", "eu-1a"),
            ("kubernetes.io/os", "linux"),
        ],
    )
}

#[test]
fn honest_token_yields_spire_selectors_and_agent_path() {
    let data = AttestationData::from_json(br#"{"cluster":"prod-eu","token":"eyJ..."}"#).unwrap();
    let reviewed =
        verify_token_review(&config(), &data.cluster, review().to_json().as_bytes()).unwrap();
    assert_eq!(
        reviewed.credential_id.as_deref(),
        Some("JTI=7c5e9a0e-3b5d-4f7e-9b0c-2f0b5c7c1a11")
    );
    let id = reviewed
        .bind_pod_and_node(&config(), pod().as_bytes(), node().as_bytes())
        .unwrap();
    assert_eq!(
        id.selectors(),
        [
            "cluster:prod-eu",
            "agent_ns:spire",
            "agent_sa:spire-agent",
            "agent_pod_name:spire-agent-x7k2p",
            &format!("agent_pod_uid:{POD_UID}"),
            "agent_node_ip:172.18.0.2",
            "agent_node_name:node-a",
            &format!("agent_node_uid:{NODE_UID}"),
            "agent_node_label:topology.kubernetes.io/zone:eu-1a",
            "agent_pod_label:app:spire-agent",
        ]
    );
    assert_eq!(
        id.agent_path().unwrap(),
        format!("/spire/agent/k8s_psat/{CLUSTER}/{NODE_UID}")
    );
    assert!(id.can_reattest(), "k8s_psat re-attests (no TOFU), as SPIRE");

    let mut cfg = config();
    cfg.clusters
        .get_mut(CLUSTER)
        .unwrap()
        .use_pod_uid_for_agent_id = true;
    let id = verify_token_review(&cfg, CLUSTER, review().to_json().as_bytes())
        .unwrap()
        .bind_pod_and_node(&cfg, pod().as_bytes(), node().as_bytes())
        .unwrap();
    assert_eq!(
        id.agent_path().unwrap(),
        format!("/spire/agent/k8s_psat/{CLUSTER}/pod/{POD_UID}")
    );
}

#[test]
fn unauthenticated_or_failed_reviews_are_refused() {
    // An expired (or revoked, or foreign) token: the API server says authenticated=false.
    let mut r = review();
    r.authenticated = false;
    assert_eq!(
        verify_token_review(&config(), CLUSTER, r.to_json().as_bytes()).unwrap_err(),
        K8sPsatError::NotAuthenticated
    );
    let mut r = review();
    r.authenticated = false;
    r.error = "[invalid bearer token, service account token has expired]".into();
    assert!(matches!(
        verify_token_review(&config(), CLUSTER, r.to_json().as_bytes()).unwrap_err(),
        K8sPsatError::ReviewError { reason } if reason.contains("expired")
    ));
}

#[test]
fn wrong_audience_is_refused() {
    let mut r = review();
    r.audiences = vec!["https://kubernetes.default.svc".into()];
    assert!(matches!(
        verify_token_review(&config(), CLUSTER, r.to_json().as_bytes()).unwrap_err(),
        K8sPsatError::WrongAudience { .. }
    ));
}

#[test]
fn cluster_and_service_account_allow_lists_are_enforced() {
    assert_eq!(
        verify_token_review(&config(), "other", review().to_json().as_bytes()).unwrap_err(),
        K8sPsatError::ClusterNotAllowed {
            cluster: "other".into()
        }
    );
    let r = TokenReviewFixture::bound("default", "default", "p", POD_UID, "node-a", NODE_UID);
    assert_eq!(
        verify_token_review(&config(), CLUSTER, r.to_json().as_bytes()).unwrap_err(),
        K8sPsatError::ServiceAccountNotAllowed {
            service_account: "default:default".into()
        }
    );
    let mut r = review();
    r.username = "system:node:node-a".into();
    assert!(matches!(
        verify_token_review(&config(), CLUSTER, r.to_json().as_bytes()).unwrap_err(),
        K8sPsatError::NotServiceAccount { .. }
    ));
}

#[test]
fn token_must_be_bound_to_the_live_pod_and_its_node() {
    let reviewed =
        || verify_token_review(&config(), CLUSTER, review().to_json().as_bytes()).unwrap();
    // The pod was deleted and recreated under the same name: another UID.
    let recreated = pod_json(
        "spire",
        "spire-agent-x7k2p",
        "00000000-0000-0000-0000-000000000001",
        "node-a",
        "172.18.0.2",
        &[],
    );
    assert!(matches!(
        reviewed()
            .bind_pod_and_node(&config(), recreated.as_bytes(), node().as_bytes())
            .unwrap_err(),
        K8sPsatError::PodMismatch { what: "UID", .. }
    ));
    // A node object other than the token's.
    let other_node = node_json("node-a", "00000000-0000-0000-0000-000000000002", &[]);
    assert!(matches!(
        reviewed()
            .bind_pod_and_node(&config(), pod().as_bytes(), other_node.as_bytes())
            .unwrap_err(),
        K8sPsatError::NodeMismatch { .. }
    ));
    let unscheduled = pod_json("spire", "spire-agent-x7k2p", POD_UID, "", "", &[]);
    assert!(matches!(
        reviewed()
            .bind_pod_and_node(&config(), unscheduled.as_bytes(), node().as_bytes())
            .unwrap_err(),
        K8sPsatError::PodNotScheduled { .. }
    ));
    // A token without pod binding (a legacy secret-based token).
    let mut r = review();
    r.extra.retain(|(k, _)| !k.ends_with("pod-uid"));
    assert_eq!(
        verify_token_review(&config(), CLUSTER, r.to_json().as_bytes()).unwrap_err(),
        K8sPsatError::NotPodBound {
            key: "authentication.kubernetes.io/pod-uid"
        }
    );
}

#[test]
fn malformed_responses_get_a_clear_error() {
    for bad in [
        &b""[..],
        b"[]",
        b"{\"kind\":\"Status\",\"apiVersion\":\"v1\"}",
        b"{\"kind\":\"TokenReview\",\"apiVersion\":\"authentication.k8s.io/v1beta1\"}",
    ] {
        assert!(matches!(
            verify_token_review(&config(), CLUSTER, bad).unwrap_err(),
            K8sPsatError::MalformedResponse {
                object: "TokenReview",
                ..
            }
        ));
    }
    let reviewed = verify_token_review(&config(), CLUSTER, review().to_json().as_bytes()).unwrap();
    assert!(matches!(
        reviewed
            .bind_pod_and_node(&config(), node().as_bytes(), node().as_bytes())
            .unwrap_err(),
        K8sPsatError::MalformedResponse { object: "Pod", .. }
    ));
    assert!(matches!(
        AttestationData::from_json(br#"{"cluster":"","token":"t"}"#).unwrap_err(),
        K8sPsatError::MalformedPayload { .. }
    ));
}
