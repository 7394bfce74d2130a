//! `gcp_iit` and `azure_msi` with their key sets fetched by URL (`certs_url`, `jwks_url`)
//! from a local HTTPS stand-in publishing them in the real formats (Google's certificate
//! map; Entra ID's JWKS) with `Cache-Control: max-age`, the real server process caching
//! them within `keys_max_age_floor` / `keys_max_age_ceiling`: a rotated key accepted after
//! the refresh its unknown `kid` triggers (and only once per floor), the last good set used
//! while the endpoint is down, refused by name once it expired, and served again when the
//! endpoint is back.

use std::time::{Duration, Instant, SystemTime};

use ironroot_agent::config::NodeAttestorKind;
use ironroot_cloud_attest::test_support::{
    azure_msi_claims, gcp_claims, google_certs_json, TestCert, TestKey, Validity,
};
use ironroot_testkit::cloud_metadata::{AzureImds, GceMetadata};
use ironroot_testkit::key_endpoint::KeyEndpoint;
use tonic::Code;

use crate::attest_seam::assert_refused;
use crate::cloud_attest::{attest, start_server};
use crate::common::agent_config;

const AUD: &str = "spire-gcp-node-attestor";

/// Sleeps until `at`.
fn until(at: Instant) {
    std::thread::sleep(at.saturating_duration_since(Instant::now()));
}

#[test]
fn gcp_iit_keys_by_url_follow_rotation_survive_an_outage_until_expiry_then_fail_closed() {
    let gce = GceMetadata::start();
    let rotated = TestCert::self_signed("accounts.google.com test 2", 8, Validity::around_now(30));
    let endpoint = KeyEndpoint::start(
        "/oauth2/v1/certs",
        gce.certs_json(),
        Some("public, max-age=8, must-revalidate, no-transform"),
    );
    let env = start_server(
        "cloud_attest_keys_gcp",
        &format!(
            "[node_attestors.gcp_iit]\nprojectid_allow_list = [\"proj-a\"]\n\
             certs_url = \"{}\"\nkeys_ca_file = \"{}\"\n\
             keys_max_age_floor = \"2s\"\nkeys_max_age_ceiling = \"8s\"\n",
            endpoint.url(),
            endpoint.ca.display()
        ),
        "",
    );
    let mut cfg = agent_config(&env, "gcp-keys-agent", NodeAttestorKind::GcpIit);
    cfg.gcp_iit.identity_token_host = gce.server.host();
    let now = SystemTime::now();

    // The first attestation fetches the set.
    gce.serve_claims(
        &gce.google.key,
        &gce.kid,
        &gcp_claims(AUD, "proj-a", "1", now),
    );
    let first_fetch = Instant::now();
    attest(&cfg).expect("honest, key fetched from certs_url");
    assert_eq!(endpoint.fetches(), 1);

    // Google rotates: a token under the new kid is accepted after the refresh it triggers
    // (past the floor since the last fetch).
    endpoint.set(
        google_certs_json(&[(&gce.kid, &gce.google), ("kid-2", &rotated)]),
        Some("public, max-age=8"),
    );
    until(first_fetch + Duration::from_millis(2200));
    gce.serve_claims(&rotated.key, "kid-2", &gcp_claims(AUD, "proj-a", "2", now));
    let second_fetch = Instant::now();
    attest(&cfg).expect("rotated key accepted after the refresh");
    assert_eq!(endpoint.fetches(), 2);

    // Made-up kids right after: refused, and no fetch within the floor.
    let stranger = TestKey::rsa2048();
    gce.serve_claims(
        &stranger,
        "kid-made-up",
        &gcp_claims(AUD, "proj-a", "3", now),
    );
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: token signature:", "\"kid-made-up\""],
    );
    assert_eq!(endpoint.fetches(), 2);

    // The endpoint goes down: the last good set (8 s from the second fetch) still serves.
    endpoint.set_status(503);
    gce.serve_claims(&rotated.key, "kid-2", &gcp_claims(AUD, "proj-a", "4", now));
    attest(&cfg).expect("the last good set serves while the endpoint is down");

    // Past its expiry, refused, naming the URL and the cause.
    until(second_fetch + Duration::from_millis(8500));
    gce.serve_claims(&rotated.key, "kid-2", &gcp_claims(AUD, "proj-a", "5", now));
    assert_refused(
        attest(&cfg),
        Code::Internal,
        &[
            "attestation failed on the server: key set: the key set from certs_url",
            "expired",
            "HTTP 503",
        ],
    );

    // Back up: served again at the next try.
    endpoint.set_status(200);
    std::thread::sleep(Duration::from_millis(5200));
    attest(&cfg).expect("the endpoint is back");
}

#[test]
fn azure_msi_keys_by_jwks_url_and_an_unreachable_url_is_named() {
    let imds = AzureImds::start();
    let endpoint = KeyEndpoint::start(
        "/common/discovery/keys",
        imds.jwks_json(),
        Some("max-age=86400, private"),
    );
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let section = |url: &str| {
        format!(
            "[node_attestors.azure_msi]\njwks_url = \"{url}\"\nkeys_ca_file = \"{}\"\n\
             [node_attestors.azure_msi.tenants.\"{tenant}\"]\n",
            endpoint.ca.display()
        )
    };
    let env = start_server("cloud_attest_keys_azure", &section(&endpoint.url()), "");
    let mut cfg = agent_config(&env, "azure-keys-agent", NodeAttestorKind::AzureMsi);
    cfg.azure_msi.metadata_endpoint = imds.server.base_url();
    let vm = "/subscriptions/11111111-2222-3333-4444-555555555555/resourcegroups/rg-1/providers/Microsoft.Compute/virtualMachines/vm-1";
    let claims = |principal: &str| {
        azure_msi_claims(
            tenant,
            principal,
            "https://management.azure.com/",
            vm,
            SystemTime::now(),
        )
    };
    imds.serve_claims(
        &imds.entra,
        &imds.kid,
        &claims("9d1c0ac0-5b9e-4e36-9e0e-1f0a0b0c0d01"),
    );
    attest(&cfg).expect("honest, JWKS from jwks_url");
    assert_eq!(endpoint.fetches(), 1);

    // A server whose jwks_url answers nothing: refused by name, never a pass.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let env2 = start_server(
        "cloud_attest_keys_azure_down",
        &section(&format!("https://127.0.0.1:{port}/keys")),
        "",
    );
    let mut cfg2 = agent_config(&env2, "azure-keys-agent-2", NodeAttestorKind::AzureMsi);
    cfg2.azure_msi.metadata_endpoint = imds.server.base_url();
    imds.serve_claims(
        &imds.entra,
        &imds.kid,
        &claims("9d1c0ac0-5b9e-4e36-9e0e-1f0a0b0c0d02"),
    );
    assert_refused(
        attest(&cfg2),
        Code::Internal,
        &[
            "key set: no key set from jwks_url https://127.0.0.1:",
            "yet",
        ],
    );
}
