//! `azure_msi`, the agent's half, as SPIRE's: `GET
//! <metadata_endpoint>/metadata/identity/oauth2/token?api-version=2018-02-01&resource=<resource_id>`
//! with `Metadata: true`; the payload is SPIRE's JSON `{"token": <access_token>}`.

use super::super::{AgentNodeAttestor, AttestError};
use super::gcp_iit::encode;
use super::http::{MetadataError, Request};
use crate::config::cloud::AzureMsiAgentConfig;

pub(crate) struct AzureMsiNodeAttestor {
    cfg: AzureMsiAgentConfig,
}

impl AzureMsiNodeAttestor {
    pub(crate) fn new(cfg: &AzureMsiAgentConfig) -> Self {
        AzureMsiNodeAttestor { cfg: cfg.clone() }
    }
}

impl AgentNodeAttestor for AzureMsiNodeAttestor {
    fn name(&self) -> &'static str {
        "azure_msi"
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        let base = self.cfg.metadata_endpoint.trim_end_matches('/');
        let path = format!(
            "/metadata/identity/oauth2/token?api-version=2018-02-01&resource={}",
            encode(&self.cfg.resource_id)
        );
        let what = "managed identity access token";
        let body = Request {
            what,
            method: "GET",
            base,
            path_and_query: &path,
            headers: &[("Metadata", "true")],
            timeout: self.cfg.timeout,
        }
        .send()?;
        let malformed = |reason: String| MetadataError::Malformed {
            what,
            url: format!("{base}{path}"),
            reason,
        };
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| malformed(format!("not JSON: {e}")))?;
        let token = v
            .get("access_token")
            .and_then(|t| t.as_str())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| malformed("no access_token string in it".into()))?;
        Ok(serde_json::json!({ "token": token })
            .to_string()
            .into_bytes())
    }
}
