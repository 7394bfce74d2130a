//! `gcp_iit` and `azure_msi` end to end (see `cloud_attest`): tokens signed RS256 by the
//! stand-in provider's key over the real claim sets, served by a stand-in metadata
//! service, verified by the real server process against the key file it is configured
//! with. Each: the honest case, a replay refused (TOFU), a wrong signer, an expired token,
//! a wrong audience, a project / tenant not allowed, a malformed payload.

use ironroot_agent::config::NodeAttestorKind;
use ironroot_cloud_attest::test_support::{azure_msi_claims, gcp_claims, unix, TestKey};
use ironroot_testkit::cloud_metadata::{AzureImds, GceMetadata};
use std::time::SystemTime;
use tonic::Code;

use crate::attest_seam::assert_refused;
use crate::cloud_attest::{attest, attest_edited, start_server, write};
use crate::common::agent_config;

#[test]
fn gcp_iit_attests_with_googles_signed_token_once_and_refuses_the_rest_by_name() {
    let files = tempfile::tempdir().unwrap();
    let gce = GceMetadata::start();
    let certs = write(files.path(), "google-certs.json", &gce.certs_json());
    let env = start_server(
        "cloud_attest_gcp",
        &format!(
            "[node_attestors.gcp_iit]\nprojectid_allow_list = [\"proj-a\"]\ncerts_path = \"{}\"\n",
            certs.display()
        ),
        "",
    );
    let mut cfg = agent_config(&env, "gcp-agent", NodeAttestorKind::GcpIit);
    cfg.gcp_iit.identity_token_host = gce.server.host();
    let now = SystemTime::now();
    let key = &gce.google.key;

    let claims = gcp_claims("spire-gcp-node-attestor", "proj-a", "1111", now);
    gce.serve_claims(key, &gce.kid, &claims);
    let o = attest(&cfg).expect("honest gcp_iit attestation");
    assert_eq!(
        o.spiffe_id,
        "spiffe://example.org/spire/agent/gcp_iit/proj-a/1111"
    );
    assert_eq!(
        o.selectors,
        [
            "gcp_iit:project-id:proj-a",
            "gcp_iit:zone:us-central1-a",
            "gcp_iit:instance-name:web-1",
            "gcp_iit:sa:123456789-compute@developer.gserviceaccount.com",
        ]
    );
    let r = &gce.server.requests()[0];
    assert_eq!(r.headers["metadata-flavor"], "Google");
    assert_eq!(r.query, "audience=spire-gcp-node-attestor&format=full");

    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &[
            "attestation rejected: already attested:",
            "/gcp_iit/proj-a/1111",
        ],
    );

    // Signed by another key under Google's kid.
    let other = TestKey::rsa2048();
    gce.serve_claims(
        &other,
        &gce.kid,
        &gcp_claims("spire-gcp-node-attestor", "proj-a", "2222", now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token signature: gcp_iit token refused: token signature does not verify"],
    );

    // Expired an hour ago (beyond the minute of skew).
    let mut expired = gcp_claims("spire-gcp-node-attestor", "proj-a", "3333", now);
    expired["iat"] = (unix(now) - 7200).into();
    expired["exp"] = (unix(now) - 3600).into();
    gce.serve_claims(key, &gce.kid, &expired);
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token lifetime: gcp_iit token refused: token expired"],
    );

    // Another audience.
    gce.serve_claims(
        key,
        &gce.kid,
        &gcp_claims("someone-else", "proj-a", "4444", now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &[
            "attestation rejected: token audience:",
            "\"spire-gcp-node-attestor\"",
        ],
    );

    // A project not allowed.
    gce.serve_claims(
        key,
        &gce.kid,
        &gcp_claims("spire-gcp-node-attestor", "proj-b", "5555", now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: projectid_allow_list: gcp_iit project \"proj-b\" is not in projectid_allow_list"],
    );

    // Not UTF-8 text.
    assert_refused(
        attest_edited(&cfg, &mut |p| p.payload = vec![0xff, 0xfe]),
        Code::InvalidArgument,
        &["the evidence payload does not decode as attestor 'gcp_iit' defines it"],
    );
    // Text, but no JWT.
    gce.serve_token("not-a-jwt");
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token: gcp_iit token refused: token is malformed"],
    );
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const RESOURCE: &str = "https://management.azure.com/";

fn vm(sub: &str) -> String {
    format!(
        "/subscriptions/{sub}/resourcegroups/rg-1/providers/Microsoft.Compute/virtualMachines/vm-1"
    )
}

#[test]
fn azure_msi_attests_with_entra_signed_token_once_and_refuses_the_rest_by_name() {
    let files = tempfile::tempdir().unwrap();
    let imds = AzureImds::start();
    let jwks = write(files.path(), "entra-jwks.json", &imds.jwks_json());
    let env = start_server(
        "cloud_attest_azure",
        &format!(
            "[node_attestors.azure_msi]\njwks_path = \"{}\"\n\
             [node_attestors.azure_msi.tenants.\"{TENANT}\"]\n",
            jwks.display()
        ),
        "",
    );
    let mut cfg = agent_config(&env, "azure-agent", NodeAttestorKind::AzureMsi);
    cfg.azure_msi.metadata_endpoint = imds.server.base_url();
    let now = SystemTime::now();
    let sub = "11111111-2222-3333-4444-555555555555";
    let key = &imds.entra;
    let principal = "9d1c0ac0-5b9e-4e36-9e0e-1f0a0b0c0d01";

    imds.serve_claims(
        key,
        &imds.kid,
        &azure_msi_claims(TENANT, principal, RESOURCE, &vm(sub), now),
    );
    let o = attest(&cfg).expect("honest azure_msi attestation");
    assert_eq!(
        o.spiffe_id,
        format!("spiffe://example.org/spire/agent/azure_msi/{TENANT}/{principal}")
    );
    assert_eq!(
        o.selectors,
        [
            format!("azure_msi:subscription-id:{sub}"),
            "azure_msi:vm-name:rg-1:vm-1".to_owned(),
        ]
    );
    let r = &imds.server.requests()[0];
    assert_eq!(r.headers["metadata"], "true");
    assert_eq!(
        r.query,
        "api-version=2018-02-01&resource=https%3A%2F%2Fmanagement.azure.com%2F"
    );

    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: already attested:", principal],
    );

    let p2 = "9d1c0ac0-5b9e-4e36-9e0e-1f0a0b0c0d02";
    let mut expired = azure_msi_claims(TENANT, p2, RESOURCE, &vm(sub), now);
    expired["nbf"] = (unix(now) - 7200).into();
    expired["iat"] = (unix(now) - 7200).into();
    expired["exp"] = (unix(now) - 3600).into();
    imds.serve_claims(key, &imds.kid, &expired);
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token lifetime: azure_msi token refused: token expired"],
    );

    imds.serve_claims(
        key,
        &imds.kid,
        &azure_msi_claims(TENANT, p2, "https://vault.azure.net", &vm(sub), now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token audience:"],
    );

    let stranger = "00000000-0000-0000-0000-000000000bad";
    imds.serve_claims(
        key,
        &imds.kid,
        &azure_msi_claims(stranger, p2, RESOURCE, &vm(sub), now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &[
            "attestation rejected: tenants: azure_msi tenant",
            "is not in tenants",
        ],
    );

    let other = TestKey::rsa2048();
    imds.serve_claims(
        &other,
        &imds.kid,
        &azure_msi_claims(TENANT, p2, RESOURCE, &vm(sub), now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token signature:"],
    );

    assert_refused(
        attest_edited(&cfg, &mut |p| p.payload = b"[]".to_vec()),
        Code::InvalidArgument,
        &["the evidence payload does not decode as attestor 'azure_msi' defines it"],
    );
}
