//! `aws_iid`, the agent's half: IMDSv2 as SPIRE's agent (through the AWS SDK) does it — a
//! session token from `PUT /latest/api/token`, then `GET`s of the instance identity
//! document, its RSA-1024 signature and its RSA-2048 PKCS#7 (`/rsa2048`), each with the
//! token. The payload is SPIRE's JSON `{"document", "signature", "rsa2048"}`, the bodies
//! verbatim. Unlike the SDK, there is no fallback to IMDSv1 when the token is refused.

use super::super::{AgentNodeAttestor, AttestError};
use super::http::Request;
use crate::config::cloud::AwsIidAgentConfig;

/// Lifetime asked for the IMDSv2 session token (the SDK's default).
const TOKEN_TTL_SECONDS: &str = "300";

pub(crate) struct AwsIidNodeAttestor {
    cfg: AwsIidAgentConfig,
}

impl AwsIidNodeAttestor {
    pub(crate) fn new(cfg: &AwsIidAgentConfig) -> Self {
        AwsIidNodeAttestor { cfg: cfg.clone() }
    }
}

/// The endpoint without a trailing `/` or `/latest` (SPIRE's examples end in `/latest`;
/// the SDK replaces the path).
fn base(endpoint: &str) -> &str {
    let e = endpoint.trim_end_matches('/');
    e.strip_suffix("/latest").unwrap_or(e)
}

impl AgentNodeAttestor for AwsIidNodeAttestor {
    fn name(&self) -> &'static str {
        "aws_iid"
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        let base = base(&self.cfg.ec2_metadata_endpoint);
        let timeout = self.cfg.timeout;
        let token = Request {
            what: "IMDSv2 session token",
            method: "PUT",
            base,
            path_and_query: "/latest/api/token",
            headers: &[("X-aws-ec2-metadata-token-ttl-seconds", TOKEN_TTL_SECONDS)],
            timeout,
        }
        .send()?;
        let token = token.trim();
        let get = |what, path| {
            Request {
                what,
                method: "GET",
                base,
                path_and_query: path,
                headers: &[("X-aws-ec2-metadata-token", token)],
                timeout,
            }
            .send()
        };
        let document = get(
            "instance identity document",
            "/latest/dynamic/instance-identity/document",
        )?;
        let signature = get(
            "instance identity signature",
            "/latest/dynamic/instance-identity/signature",
        )?;
        let rsa2048 = get(
            "instance identity rsa2048 PKCS#7 signature",
            "/latest/dynamic/instance-identity/rsa2048",
        )?;
        Ok(serde_json::json!({
            "document": document,
            "signature": signature,
            "rsa2048": rsa2048,
        })
        .to_string()
        .into_bytes())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_endpoint_may_end_in_latest_as_in_spire_examples() {
        for e in [
            "http://169.254.169.254",
            "http://169.254.169.254/",
            "http://169.254.169.254/latest",
            "http://169.254.169.254/latest/",
        ] {
            assert_eq!(super::base(e), "http://169.254.169.254", "{e}");
        }
    }
}
