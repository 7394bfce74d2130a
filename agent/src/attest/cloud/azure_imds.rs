//! `azure_imds`, the agent's half, as SPIRE's: the evidence is a placeholder; the server's
//! challenge is a nonce, and the answer is IMDS's attested data over it —
//! `GET <metadata_endpoint>/metadata/attested/document?api-version=2025-04-07&nonce=<nonce>`
//! — with the VM scale set name from `GET /metadata/instance?api-version=2025-04-07&format=json`
//! (both with `Metadata: true`), in SPIRE's JSON `{"document": {"encoding", "signature"},
//! "metadata": {"agentDomain", "vmssName"}}`. The metadata is untrusted: the server trusts
//! only what Azure signed, and the tenant domain picks which of its tenants applies.

use serde_json::json;

use super::super::{AgentNodeAttestor, AttestError};
use super::http::{MetadataError, Request};
use crate::config::cloud::AzureImdsAgentConfig;

/// The IMDS API version SPIRE's agent asks for.
const API_VERSION: &str = "2025-04-07";
/// SPIRE's placeholder evidence (the server reads nothing from the first message).
const EVIDENCE: &[u8] = b"non_empty_payload";
/// The longest nonce answered (the server sends 32 characters).
const MAX_NONCE: usize = 64;

pub(crate) struct AzureImdsNodeAttestor {
    cfg: AzureImdsAgentConfig,
}

impl AzureImdsNodeAttestor {
    pub(crate) fn new(cfg: &AzureImdsAgentConfig) -> Self {
        AzureImdsNodeAttestor { cfg: cfg.clone() }
    }

    fn get(&self, what: &'static str, path: &str) -> Result<serde_json::Value, AttestError> {
        let base = self.cfg.metadata_endpoint.trim_end_matches('/');
        let body = Request {
            what,
            method: "GET",
            base,
            path_and_query: path,
            headers: &[("Metadata", "true")],
            timeout: self.cfg.timeout,
        }
        .send()?;
        serde_json::from_str(&body).map_err(|e| {
            MetadataError::Malformed {
                what,
                url: format!("{base}{path}"),
                reason: format!("not JSON: {e}"),
            }
            .into()
        })
    }
}

/// The nonce of the server's challenge: letters and digits only (it goes into a URL as is).
fn nonce(challenge: &[u8]) -> Result<&str, AttestError> {
    let bad = |reason: String| AttestError::BadChallenge {
        attestor: "azure_imds",
        reason,
    };
    let n = std::str::from_utf8(challenge).map_err(|_| bad("the nonce is not text".into()))?;
    if n.is_empty() || n.len() > MAX_NONCE || !n.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(bad(format!(
            "the nonce must be 1 to {MAX_NONCE} letters and digits, got {} bytes",
            n.len()
        )));
    }
    Ok(n)
}

impl AgentNodeAttestor for AzureImdsNodeAttestor {
    fn name(&self) -> &'static str {
        "azure_imds"
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        Ok(EVIDENCE.to_vec())
    }

    fn answer(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AttestError> {
        let nonce = nonce(challenge)?;
        let what = "attested data document";
        let path = format!("/metadata/attested/document?api-version={API_VERSION}&nonce={nonce}");
        let doc = self.get(what, &path)?;
        let field = |name: &str| -> Result<String, AttestError> {
            doc.get(name)
                .and_then(|v| v.as_str())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    MetadataError::Malformed {
                        what,
                        url: format!("{}{path}", self.cfg.metadata_endpoint),
                        reason: format!("no {name} string in it"),
                    }
                    .into()
                })
        };
        let (encoding, signature) = (field("encoding")?, field("signature")?);
        let instance = self.get(
            "instance metadata",
            &format!("/metadata/instance?api-version={API_VERSION}&format=json"),
        )?;
        let vmss_name = instance
            .pointer("/compute/vmScaleSetName")
            .and_then(|v| v.as_str())
            .filter(|v| !v.is_empty());
        Ok(json!({
            "document": {"encoding": encoding, "signature": signature},
            "metadata": {"agentDomain": self.cfg.tenant_domain, "vmssName": vmss_name},
        })
        .to_string()
        .into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_alphanumeric_nonces_are_answered() {
        assert_eq!(nonce(b"Ab3").unwrap(), "Ab3");
        for bad in [&b""[..], b"a&api-version=1", b"a b", &[0xff], &[b'a'; 65]] {
            let e = nonce(bad).unwrap_err().to_string();
            assert!(e.contains("attestor 'azure_imds'"), "{e}");
        }
    }
}
