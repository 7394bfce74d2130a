//! The evidence documents and claim sets, shaped as the providers and the Kubernetes API
//! produce them.

use std::time::SystemTime;

use serde_json::{json, Value};

use super::{TestCert, TestKey};

/// An instance identity document as IMDS serves it (AWS's pretty-printed JSON).
pub fn aws_document(account: &str, region: &str, instance_id: &str) -> String {
    format!(
        r#"{{
  "accountId" : "{account}",
  "architecture" : "x86_64",
  "availabilityZone" : "{region}b",
  "billingProducts" : null,
  "devpayProductCodes" : null,
  "marketplaceProductCodes" : null,
  "imageId" : "ami-5fb8c835",
  "instanceId" : "{instance_id}",
  "instanceType" : "t2.micro",
  "kernelId" : null,
  "pendingTime" : "2016-11-19T16:32:11Z",
  "privateIp" : "10.158.112.84",
  "ramdiskId" : null,
  "region" : "{region}",
  "version" : "2017-09-30"
}}"#
    )
}

/// Seconds since the epoch.
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64
}

/// The claims of a GCE instance identity token in the `full` format.
pub fn gcp_claims(audience: &str, project_id: &str, instance_id: &str, now: SystemTime) -> Value {
    let iat = unix(now);
    json!({
        "aud": audience,
        "azp": "102039482743817412345",
        "email": "123456789-compute@developer.gserviceaccount.com",
        "email_verified": true,
        "exp": iat + 3600,
        "iat": iat,
        "iss": "https://accounts.google.com",
        "sub": "102039482743817412345",
        "google": {
            "compute_engine": {
                "instance_creation_timestamp": 1_500_000_000,
                "instance_id": instance_id,
                "instance_name": "web-1",
                "project_id": project_id,
                "project_number": 123_456_789,
                "zone": "us-central1-a"
            }
        }
    })
}

/// Google's v1 certificate map `{kid: PEM}`.
pub fn google_certs_json(certs: &[(&str, &TestCert)]) -> String {
    let map: serde_json::Map<String, Value> = certs
        .iter()
        .map(|(kid, c)| ((*kid).to_owned(), Value::String(c.pem())))
        .collect();
    Value::Object(map).to_string()
}

/// A JWKS document.
pub fn jwks_json(keys: &[(&str, &TestKey)]) -> String {
    json!({"keys": keys.iter().map(|(kid, k)| k.jwk(kid)).collect::<Vec<_>>()}).to_string()
}

/// The claims of a managed-identity access token for a VM's system-assigned identity (v1).
pub fn azure_msi_claims(
    tenant_id: &str,
    principal_id: &str,
    resource: &str,
    vm_resource_id: &str,
    now: SystemTime,
) -> Value {
    let iat = unix(now);
    json!({
        "aud": resource,
        "iss": format!("https://sts.windows.net/{tenant_id}/"),
        "iat": iat,
        "nbf": iat,
        "exp": iat + 86_400,
        "aio": "E2ZgYDjx8P3ZwmNg1v8pAA==",
        "appid": "8ed2c3b4-1c39-4a5c-8a1f-1d0b0b1b0b1b",
        "appidacr": "2",
        "idp": format!("https://sts.windows.net/{tenant_id}/"),
        "oid": principal_id,
        "rh": "0.AAAA",
        "sub": principal_id,
        "tid": tenant_id,
        "uti": "Zk2dD3NfakeUtiAAAAAA",
        "ver": "1.0",
        "xms_mirid": vm_resource_id,
        "xms_tcdt": 1_500_000_000
    })
}

/// Azure's attested-data content (what IMDS signs), with the given nonce and times.
pub fn azure_attested_content(
    nonce: &str,
    subscription_id: &str,
    vm_id: &str,
    created_on: i64,
    expires_on: i64,
) -> String {
    json!({
        "licenseType": "",
        "nonce": nonce,
        "plan": {"name": "", "product": "", "publisher": ""},
        "sku": "22_04-lts-gen2",
        "subscriptionId": subscription_id,
        "timeStamp": {
            "createdOn": crate::azure_imds::format_timestamp(created_on),
            "expiresOn": crate::azure_imds::format_timestamp(expires_on)
        },
        "vmId": vm_id
    })
    .to_string()
}

/// A TokenReview response as the API server returns it.
#[derive(Debug, Clone)]
pub struct TokenReviewFixture {
    /// `status.authenticated`.
    pub authenticated: bool,
    /// `status.error`.
    pub error: String,
    /// `status.user.username`.
    pub username: String,
    /// `status.audiences`.
    pub audiences: Vec<String>,
    /// `status.user.extra` entries.
    pub extra: Vec<(String, Vec<String>)>,
}

impl TokenReviewFixture {
    /// An authenticated review of a token bound to a pod on a node.
    pub fn bound(ns: &str, sa: &str, pod: &str, pod_uid: &str, node: &str, node_uid: &str) -> Self {
        Self {
            authenticated: true,
            error: String::new(),
            username: format!("system:serviceaccount:{ns}:{sa}"),
            audiences: vec!["spire-server".into()],
            extra: vec![
                (
                    "authentication.kubernetes.io/credential-id".into(),
                    vec!["JTI=7c5e9a0e-3b5d-4f7e-9b0c-2f0b5c7c1a11".into()],
                ),
                (
                    "authentication.kubernetes.io/node-name".into(),
                    vec![node.into()],
                ),
                (
                    "authentication.kubernetes.io/node-uid".into(),
                    vec![node_uid.into()],
                ),
                (
                    "authentication.kubernetes.io/pod-name".into(),
                    vec![pod.into()],
                ),
                (
                    "authentication.kubernetes.io/pod-uid".into(),
                    vec![pod_uid.into()],
                ),
            ],
        }
    }

    /// The response JSON.
    pub fn to_json(&self) -> String {
        let extra: serde_json::Map<String, Value> = self
            .extra
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let mut status = json!({
            "authenticated": self.authenticated,
            "user": {
                "username": self.username,
                "uid": "0d2c5a1e-1111-4c3b-9d5e-6f7a8b9c0d1e",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:spire", "system:authenticated"],
                "extra": extra
            },
            "audiences": self.audiences
        });
        if !self.error.is_empty() {
            status["error"] = json!(self.error);
        }
        if !self.authenticated {
            status["user"] = json!({});
        }
        json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": {"token": "<redacted>", "audiences": ["spire-server"]},
            "status": status
        })
        .to_string()
    }
}

/// A Pod as `GET /api/v1/namespaces/<ns>/pods/<name>` returns it (abridged to the fields
/// a real response has that matter, plus a few that do not).
pub fn pod_json(
    ns: &str,
    name: &str,
    uid: &str,
    node: &str,
    host_ip: &str,
    labels: &[(&str, &str)],
) -> String {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid, "resourceVersion": "4711",
            "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels
        },
        "spec": {"nodeName": node, "serviceAccountName": "spire-agent", "containers": [{"name": "spire-agent", "image": "ghcr.io/spiffe/spire-agent:1.15.3"}]},
        "status": {"phase": "Running", "hostIP": host_ip, "podIP": "10.244.0.7"}
    })
    .to_string()
}

/// A Node as `GET /api/v1/nodes/<name>` returns it (abridged).
pub fn node_json(name: &str, uid: &str, labels: &[(&str, &str)]) -> String {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    json!({
        "kind": "Node",
        "apiVersion": "v1",
        "metadata": {"name": name, "uid": uid, "resourceVersion": "815", "labels": labels},
        "spec": {"podCIDR": "10.244.0.0/24"},
        "status": {"addresses": [{"type": "InternalIP", "address": "172.18.0.2"}]}
    })
    .to_string()
}
