//! `azure_msi`: the access token an Azure VM's managed identity obtains from IMDS (an RS256
//! JWT issued by Microsoft Entra ID for the tenant).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::jwt::{self, ClaimError, JwkSet, JwtError, TimeRules};
use crate::InvalidAgentPath;

/// The attestor's name.
pub const ATTESTOR: &str = "azure_msi";
/// The resource (audience) SPIRE's agent requests by default.
pub const DEFAULT_RESOURCE: &str = "https://management.azure.com/";
/// Clock skew allowed on the time claims (SPIRE's 5 minutes).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The agent's payload (`{"token": "<access token>"}`), as SPIRE's agent sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationData {
    /// The access token.
    pub token: String,
}

impl AttestationData {
    /// Parses the agent's JSON payload.
    pub fn from_json(payload: &[u8]) -> Result<Self, AzureMsiError> {
        serde_json::from_slice(payload).map_err(|e| AzureMsiError::MalformedPayload {
            reason: e.to_string(),
        })
    }
}

/// Why a managed-identity token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AzureMsiError {
    /// The agent's payload is not `{"token": ...}`.
    #[error("azure_msi payload is malformed: {reason}")]
    MalformedPayload {
        /// What was wrong.
        reason: String,
    },
    /// Encoding, algorithm, key ID or signature.
    #[error("azure_msi token refused: {0}")]
    Token(#[from] JwtError),
    /// Expiry, audience, issuer, or a required claim missing.
    #[error("azure_msi token refused: {0}")]
    Claims(#[from] ClaimError),
    /// The token's tenant is not configured.
    #[error("azure_msi tenant {tenant:?} is not in tenants")]
    TenantNotAllowed {
        /// The token's `tid`.
        tenant: String,
    },
    /// A value is not usable in an agent ID path.
    #[error(transparent)]
    AgentPath(#[from] InvalidAgentPath),
}

/// Per-tenant settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantConfig {
    /// The audience expected (the `resource` the agent requests), [`DEFAULT_RESOURCE`].
    pub resource_id: String,
}

impl Default for TenantConfig {
    fn default() -> Self {
        Self {
            resource_id: DEFAULT_RESOURCE.to_owned(),
        }
    }
}

/// What the verifier trusts.
#[derive(Debug, Clone)]
pub struct AzureMsiConfig {
    /// Entra ID's signing keys (the JWKS named by the OpenID configuration's `jwks_uri`).
    pub keys: JwkSet,
    /// Allowed tenants by tenant ID; a token from any other tenant is refused.
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Skew allowed on the time claims ([`DEFAULT_CLOCK_SKEW`]).
    pub clock_skew: Duration,
}

/// A managed identity whose access token Entra ID signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ManagedIdentity {
    /// `tid`.
    pub tenant_id: String,
    /// `sub`: the managed identity's principal ID.
    pub principal_id: String,
    /// `oid`, if present.
    pub object_id: Option<String>,
    /// `xms_mirid`: the Azure resource ID of the identity (the VM for a system-assigned
    /// identity), if present.
    pub resource_id: Option<String>,
    /// `uti`: the token's unique identifier, if present.
    pub token_id: Option<String>,
    /// `iat`.
    pub issued_at: Option<i64>,
    /// `exp`.
    pub expires_at: i64,
}

impl ManagedIdentity {
    /// Selectors derivable from the signed token, sorted, without the `azure_msi:` prefix.
    ///
    /// SPIRE resolves its selectors through Azure Resource Manager (the VM whose identity
    /// has this principal ID). For a system-assigned identity the token's `xms_mirid` is
    /// that VM's resource ID, so `subscription-id:<sub>` and `vm-name:<rg>:<vm>` follow
    /// from it; SPIRE's network selectors (`network-security-group:`, `virtual-network:`,
    /// `virtual-network-subnet:`) need ARM and are not produced. Note ARM may spell the
    /// resource group with other capitalisation than `xms_mirid`.
    pub fn selectors(&self) -> Vec<String> {
        let mut s = Vec::new();
        if let Some((sub, rg, vm)) = self.resource_id.as_deref().and_then(parse_vm_resource_id) {
            s.push(format!("subscription-id:{sub}"));
            s.push(format!("vm-name:{rg}:{vm}"));
        }
        s.sort();
        s
    }

    /// SPIRE's default agent ID path `/spire/agent/azure_msi/<tenant_id>/<principal_id>`,
    /// the TOFU key.
    pub fn agent_path(&self) -> Result<String, InvalidAgentPath> {
        crate::spiffe_path::agent_path(
            ATTESTOR,
            &[
                ("tenant ID", &self.tenant_id),
                ("principal ID", &self.principal_id),
            ],
        )
    }

    /// SPIRE: `CanReattest=false` (TOFU).
    pub const fn can_reattest(&self) -> bool {
        false
    }
}

/// `/subscriptions/<s>/resourceGroups/<rg>/providers/Microsoft.Compute/virtualMachines/<vm>`
/// (keywords compared without regard to case, as ARM does).
fn parse_vm_resource_id(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split('/').collect();
    match parts.as_slice() {
        ["", s, sub, r, rg, p, ns, t, vm]
            if s.eq_ignore_ascii_case("subscriptions")
                && r.eq_ignore_ascii_case("resourcegroups")
                && p.eq_ignore_ascii_case("providers")
                && ns.eq_ignore_ascii_case("Microsoft.Compute")
                && t.eq_ignore_ascii_case("virtualMachines")
                && !sub.is_empty()
                && !rg.is_empty()
                && !vm.is_empty() =>
        {
            Some((sub, rg, vm))
        }
        _ => None,
    }
}

/// Verifies a managed-identity access token. Checks, in order: structure, `alg` RS256,
/// `kid` in the key set, signature; `tid` and `sub` present; tenant configured; `iss` is
/// that tenant's Entra ID issuer (v1 `https://sts.windows.net/<tid>/` or v2
/// `https://login.microsoftonline.com/<tid>/v2.0`); `aud` is the tenant's resource; `exp`
/// present and not past, `nbf`/`iat` not in the future (with the skew); IDs usable in an
/// agent ID path.
///
/// Stricter than SPIRE, which checks no issuer and accepts a token without `exp`.
pub fn verify(
    config: &AzureMsiConfig,
    token: &str,
    now: SystemTime,
) -> Result<ManagedIdentity, AzureMsiError> {
    let claims = jwt::verify_rs256(token, &config.keys)?;
    let tenant_id = jwt::string(&claims, "tid")?.to_owned();
    let principal_id = jwt::string(&claims, "sub")?.to_owned();
    let tenant = config
        .tenants
        .get(&tenant_id)
        .ok_or_else(|| AzureMsiError::TenantNotAllowed {
            tenant: tenant_id.clone(),
        })?;
    let iss = jwt::string(&claims, "iss")?;
    let v1 = format!("https://sts.windows.net/{tenant_id}/");
    let v2 = format!("https://login.microsoftonline.com/{tenant_id}/v2.0");
    if iss != v1 && iss != v2 {
        return Err(ClaimError::WrongIssuer {
            expected: format!("{v1} or {v2}"),
            found: iss.to_owned(),
        }
        .into());
    }
    jwt::check_audience(&claims, &tenant.resource_id)?;
    let (issued_at, expires_at) = TimeRules {
        now: jwt::unix_now(now),
        skew: config.clock_skew,
        require_exp: true,
    }
    .check(&claims)?;
    let opt = |c: &str| {
        claims
            .get(c)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let identity = ManagedIdentity {
        object_id: opt("oid"),
        resource_id: opt("xms_mirid"),
        token_id: opt("uti"),
        tenant_id,
        principal_id,
        issued_at,
        expires_at: expires_at.unwrap_or_default(),
    };
    identity.agent_path()?;
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_resource_ids_parse_and_others_do_not() {
        assert_eq!(
            parse_vm_resource_id(
                "/subscriptions/s1/resourcegroups/RG/providers/Microsoft.Compute/virtualMachines/vm1"
            ),
            Some(("s1", "RG", "vm1"))
        );
        assert_eq!(
            parse_vm_resource_id(
                "/subscriptions/s1/resourcegroups/rg/providers/Microsoft.ManagedIdentity/userAssignedIdentities/id1"
            ),
            None
        );
        assert_eq!(parse_vm_resource_id(""), None);
    }
}
