//! `gcp_iit`: the GCE instance identity token (an RS256 JWT in the `full` format, with the
//! `google.compute_engine` claims), signed by Google.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

use crate::jwt::{self, ClaimError, JwkSet, JwtError, TimeRules};
use crate::InvalidAgentPath;

/// The attestor's name.
pub const ATTESTOR: &str = "gcp_iit";
/// The audience SPIRE's agent requests and the server expects.
pub const DEFAULT_AUDIENCE: &str = "spire-gcp-node-attestor";
/// Clock skew allowed on `exp`/`iat`/`nbf` (go-jose's default leeway, as in SPIRE).
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Issuers Google uses for identity tokens.
pub const GOOGLE_ISSUERS: [&str; 2] = ["https://accounts.google.com", "accounts.google.com"];

/// Why a GCP instance identity token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GcpIitError {
    /// Encoding, algorithm, key ID or signature.
    #[error("gcp_iit token refused: {0}")]
    Token(#[from] JwtError),
    /// Expiry, audience or issuer.
    #[error("gcp_iit token refused: {0}")]
    Claims(#[from] ClaimError),
    /// The token has no `google.compute_engine` claims (not requested with `format=full`,
    /// or not from a GCE instance), or they are of the wrong type.
    #[error("gcp_iit token has no usable google.compute_engine claims (request it with format=full): {reason}")]
    MalformedComputeEngineClaims {
        /// What was wrong.
        reason: String,
    },
    /// The project is not in `projectid_allow_list`.
    #[error("gcp_iit project {project:?} is not in projectid_allow_list")]
    ProjectNotAllowed {
        /// The token's project.
        project: String,
    },
    /// A value is not usable in an agent ID path.
    #[error(transparent)]
    AgentPath(#[from] InvalidAgentPath),
}

/// What the verifier trusts.
#[derive(Debug, Clone)]
pub struct GcpIitConfig {
    /// Google's keys (`https://www.googleapis.com/oauth2/v1/certs`, or the v3 JWKS).
    pub keys: JwkSet,
    /// Expected `aud` ([`DEFAULT_AUDIENCE`]).
    pub audience: String,
    /// Projects allowed to attest; empty allows none.
    pub project_allow_list: BTreeSet<String>,
    /// Skew allowed on the time claims ([`DEFAULT_CLOCK_SKEW`]).
    pub clock_skew: Duration,
}

impl GcpIitConfig {
    /// Defaults for everything but the keys and the projects.
    pub fn new(keys: JwkSet, project_allow_list: impl IntoIterator<Item = String>) -> Self {
        Self {
            keys,
            audience: DEFAULT_AUDIENCE.to_owned(),
            project_allow_list: project_allow_list.into_iter().collect(),
            clock_skew: DEFAULT_CLOCK_SKEW,
        }
    }
}

#[derive(Deserialize)]
struct ComputeEngine {
    project_id: String,
    #[serde(default)]
    project_number: Option<i64>,
    zone: String,
    instance_id: String,
    instance_name: String,
    #[serde(default)]
    instance_creation_timestamp: Option<i64>,
}

/// A GCE instance whose identity token Google signed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcpInstanceIdentity {
    /// `google.compute_engine.project_id`.
    pub project_id: String,
    /// `google.compute_engine.project_number`.
    pub project_number: Option<i64>,
    /// `google.compute_engine.zone`.
    pub zone: String,
    /// `google.compute_engine.instance_id`.
    pub instance_id: String,
    /// `google.compute_engine.instance_name`.
    pub instance_name: String,
    /// `google.compute_engine.instance_creation_timestamp` (seconds since the epoch).
    pub instance_creation_timestamp: Option<i64>,
    /// `email`: the service account the token was requested for.
    pub service_account: Option<String>,
    /// `sub`: the service account's unique ID.
    pub subject: Option<String>,
    /// `iat`.
    pub issued_at: Option<i64>,
    /// `exp`.
    pub expires_at: i64,
}

impl GcpInstanceIdentity {
    /// SPIRE's selectors, in SPIRE's order (not sorted), without the `gcp_iit:` prefix:
    /// `project-id:`, `zone:`, `instance-name:`, `sa:` (the last only when the token has an
    /// email). SPIRE's `tag:`, `label:` and `metadata:` need the Compute API.
    pub fn selectors(&self) -> Vec<String> {
        let mut s = vec![
            format!("project-id:{}", self.project_id),
            format!("zone:{}", self.zone),
            format!("instance-name:{}", self.instance_name),
        ];
        if let Some(sa) = &self.service_account {
            s.push(format!("sa:{sa}"));
        }
        s
    }

    /// SPIRE's default agent ID path `/spire/agent/gcp_iit/<project_id>/<instance_id>`, the
    /// TOFU key (a replayed token yields the same path).
    pub fn agent_path(&self) -> Result<String, InvalidAgentPath> {
        crate::spiffe_path::agent_path(
            ATTESTOR,
            &[
                ("project ID", &self.project_id),
                ("instance ID", &self.instance_id),
            ],
        )
    }

    /// SPIRE: `CanReattest=false` (TOFU).
    pub const fn can_reattest(&self) -> bool {
        false
    }
}

/// Verifies a GCP instance identity token. Checks, in order: structure, `alg` RS256, `kid`
/// in the key set, signature; `iss` is Google's; `aud`; `exp` present and not past, `nbf`
/// and `iat` not in the future (each with the skew); `google.compute_engine` claims
/// present; project allowed; IDs usable in an agent ID path.
///
/// Stricter than SPIRE (go-jose skips absent time claims and never checks `iss`): `exp`
/// and Google's `iss` are required.
pub fn verify(
    config: &GcpIitConfig,
    token: &str,
    now: SystemTime,
) -> Result<GcpInstanceIdentity, GcpIitError> {
    let claims = jwt::verify_rs256(token, &config.keys)?;
    let iss = jwt::string(&claims, "iss")?;
    if !GOOGLE_ISSUERS.contains(&iss) {
        return Err(ClaimError::WrongIssuer {
            expected: GOOGLE_ISSUERS.join(" or "),
            found: iss.to_owned(),
        }
        .into());
    }
    jwt::check_audience(&claims, &config.audience)?;
    let (issued_at, expires_at) = TimeRules {
        now: jwt::unix_now(now),
        skew: config.clock_skew,
        require_exp: true,
    }
    .check(&claims)?;
    let ce = claims
        .get("google")
        .and_then(|g| g.get("compute_engine"))
        .ok_or_else(|| GcpIitError::MalformedComputeEngineClaims {
            reason: "no google.compute_engine object".into(),
        })?;
    let ce: ComputeEngine = serde_json::from_value(ce.clone()).map_err(|e| {
        GcpIitError::MalformedComputeEngineClaims {
            reason: e.to_string(),
        }
    })?;
    if !config.project_allow_list.contains(&ce.project_id) {
        return Err(GcpIitError::ProjectNotAllowed {
            project: ce.project_id,
        });
    }
    let opt_string = |c: &str| {
        claims
            .get(c)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    let identity = GcpInstanceIdentity {
        project_id: ce.project_id,
        project_number: ce.project_number,
        zone: ce.zone,
        instance_id: ce.instance_id,
        instance_name: ce.instance_name,
        instance_creation_timestamp: ce.instance_creation_timestamp,
        service_account: opt_string("email"),
        subject: opt_string("sub"),
        issued_at,
        expires_at: expires_at.unwrap_or_default(),
    };
    identity.agent_path()?;
    Ok(identity)
}
