//! `gcp_iit`, the agent's half, as SPIRE's: `GET
//! http://<identity_token_host>/computeMetadata/v1/instance/service-accounts/<service_account>/identity?audience=<audience>&format=full`
//! with `Metadata-Flavor: Google`; the payload is the token itself.

use super::super::{AgentNodeAttestor, AttestError};
use super::http::Request;
use crate::config::cloud::GcpIitAgentConfig;

pub(crate) struct GcpIitNodeAttestor {
    cfg: GcpIitAgentConfig,
}

impl GcpIitNodeAttestor {
    pub(crate) fn new(cfg: &GcpIitAgentConfig) -> Self {
        GcpIitNodeAttestor { cfg: cfg.clone() }
    }
}

/// Percent-encodes a URL path segment or query value (RFC 3986 unreserved kept).
pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl AgentNodeAttestor for GcpIitNodeAttestor {
    fn name(&self) -> &'static str {
        "gcp_iit"
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        let base = format!("http://{}", self.cfg.identity_token_host);
        let path = format!(
            "/computeMetadata/v1/instance/service-accounts/{}/identity?audience={}&format=full",
            encode(&self.cfg.service_account),
            encode(&self.cfg.audience)
        );
        let token = Request {
            what: "instance identity token",
            method: "GET",
            base: &base,
            path_and_query: &path,
            headers: &[("Metadata-Flavor", "Google")],
            timeout: self.cfg.timeout,
        }
        .send()?;
        Ok(token.trim().as_bytes().to_vec())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(
            super::encode("spire-gcp-node-attestor"),
            "spire-gcp-node-attestor"
        );
        assert_eq!(
            super::encode("https://management.azure.com/"),
            "https%3A%2F%2Fmanagement.azure.com%2F"
        );
        assert_eq!(super::encode("a b&c=d"), "a%20b%26c%3Dd");
    }
}
