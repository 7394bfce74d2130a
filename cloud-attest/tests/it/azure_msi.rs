//! azure_msi: managed-identity access tokens against the tenant's JWKS.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use ironroot_cloud_attest::azure_msi::{
    self, AttestationData, AzureMsiConfig, AzureMsiError, TenantConfig, DEFAULT_CLOCK_SKEW,
    DEFAULT_RESOURCE,
};
use ironroot_cloud_attest::jwt::{ClaimError, JwkSet, JwtError};
use ironroot_cloud_attest::test_support::{azure_msi_claims, jwks_json, TestKey};
use serde_json::json;

const KID: &str = "kWbkaa6qs8wsTnBwiiNYOhHbnAw";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const PRINCIPAL: &str = "6a0b6f5c-2c2e-4c3d-8f4a-1a2b3c4d5e6f";
const VM: &str = "/subscriptions/d5b9d4b7-6fc1-46c5-bafe-38effaed19b2/resourcegroups/agents/providers/Microsoft.Compute/virtualMachines/agent-1";

fn entra() -> &'static TestKey {
    static K: OnceLock<TestKey> = OnceLock::new();
    K.get_or_init(TestKey::rsa2048)
}

fn config() -> AzureMsiConfig {
    AzureMsiConfig {
        keys: JwkSet::from_jwks_json(jwks_json(&[(KID, entra())]).as_bytes()).unwrap(),
        tenants: BTreeMap::from([(TENANT.to_owned(), TenantConfig::default())]),
        clock_skew: DEFAULT_CLOCK_SKEW,
    }
}

fn claims(now: SystemTime) -> serde_json::Value {
    azure_msi_claims(TENANT, PRINCIPAL, DEFAULT_RESOURCE, VM, now)
}

#[test]
fn honest_token_yields_agent_path_and_the_selectors_the_token_proves() {
    let now = SystemTime::now();
    let payload = json!({"token": entra().sign_jwt(KID, &claims(now))}).to_string();
    let data = AttestationData::from_json(payload.as_bytes()).unwrap();
    let id = azure_msi::verify(&config(), &data.token, now).unwrap();
    assert_eq!(id.tenant_id, TENANT);
    assert_eq!(id.principal_id, PRINCIPAL);
    assert_eq!(id.resource_id.as_deref(), Some(VM));
    assert_eq!(
        id.selectors(),
        [
            "subscription-id:d5b9d4b7-6fc1-46c5-bafe-38effaed19b2",
            "vm-name:agents:agent-1"
        ]
    );
    assert_eq!(
        id.agent_path().unwrap(),
        format!("/spire/agent/azure_msi/{TENANT}/{PRINCIPAL}")
    );
    assert!(!id.can_reattest());
    assert_eq!(id.token_id.as_deref(), Some("Zk2dD3NfakeUtiAAAAAA"));
}

#[test]
fn wrong_signer_is_refused() {
    let now = SystemTime::now();
    let forged = TestKey::rsa2048().sign_jwt(KID, &claims(now));
    assert_eq!(
        azure_msi::verify(&config(), &forged, now).unwrap_err(),
        AzureMsiError::Token(JwtError::BadSignature { kid: KID.into() })
    );
}

#[test]
fn expired_token_is_refused_after_the_five_minute_skew() {
    let issued = SystemTime::now();
    let t = entra().sign_jwt(KID, &claims(issued));
    let exp = issued + Duration::from_secs(86_400);
    assert!(azure_msi::verify(&config(), &t, exp + Duration::from_secs(240)).is_ok());
    assert!(matches!(
        azure_msi::verify(&config(), &t, exp + Duration::from_secs(301)).unwrap_err(),
        AzureMsiError::Claims(ClaimError::Expired { .. })
    ));
}

#[test]
fn wrong_audience_and_issuer_are_refused() {
    let now = SystemTime::now();
    let t = entra().sign_jwt(
        KID,
        &azure_msi_claims(TENANT, PRINCIPAL, "https://vault.azure.net", VM, now),
    );
    assert!(matches!(
        azure_msi::verify(&config(), &t, now).unwrap_err(),
        AzureMsiError::Claims(ClaimError::WrongAudience { .. })
    ));
    let mut c = claims(now);
    c["iss"] = json!("https://sts.windows.net/00000000-0000-0000-0000-000000000000/");
    assert!(matches!(
        azure_msi::verify(&config(), &entra().sign_jwt(KID, &c), now).unwrap_err(),
        AzureMsiError::Claims(ClaimError::WrongIssuer { .. })
    ));
}

#[test]
fn tenant_not_allowed_is_refused() {
    let now = SystemTime::now();
    let other = "11111111-2222-3333-4444-555555555555";
    let t = entra().sign_jwt(
        KID,
        &azure_msi_claims(other, PRINCIPAL, DEFAULT_RESOURCE, VM, now),
    );
    assert_eq!(
        azure_msi::verify(&config(), &t, now).unwrap_err(),
        AzureMsiError::TenantNotAllowed {
            tenant: other.into()
        }
    );
}

#[test]
fn a_replayed_token_maps_to_the_same_agent_path_for_tofu() {
    let now = SystemTime::now();
    let a = azure_msi::verify(&config(), &entra().sign_jwt(KID, &claims(now)), now).unwrap();
    let b = azure_msi::verify(
        &config(),
        &entra().sign_jwt(KID, &claims(now + Duration::from_secs(9))),
        now + Duration::from_secs(9),
    )
    .unwrap();
    assert_eq!(a.agent_path().unwrap(), b.agent_path().unwrap());
}

#[test]
fn malformed_tokens_get_a_clear_error() {
    let now = SystemTime::now();
    assert!(matches!(
        AttestationData::from_json(b"[]").unwrap_err(),
        AzureMsiError::MalformedPayload { .. }
    ));
    let mut c = claims(now);
    c.as_object_mut().unwrap().remove("tid");
    assert!(matches!(
        azure_msi::verify(&config(), &entra().sign_jwt(KID, &c), now).unwrap_err(),
        AzureMsiError::Claims(ClaimError::Missing { claim: "tid", .. })
    ));
    let mut c = claims(now);
    c["sub"] = json!("../../etc");
    assert!(matches!(
        azure_msi::verify(&config(), &entra().sign_jwt(KID, &c), now).unwrap_err(),
        AzureMsiError::AgentPath(_)
    ));
    // A user-assigned identity: no VM selectors can be derived from the token.
    let c = azure_msi_claims(TENANT, PRINCIPAL, DEFAULT_RESOURCE, "/subscriptions/s/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/agent", now);
    let id = azure_msi::verify(&config(), &entra().sign_jwt(KID, &c), now).unwrap();
    assert!(id.selectors().is_empty());
}
