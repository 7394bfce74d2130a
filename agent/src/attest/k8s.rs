//! `k8s_psat`, the agent's half (cargo feature `k8s`, off by default: the edge agent stays
//! small): the evidence is SPIRE's payload, `{"cluster": "<name>", "token": "<projected
//! service-account token>"}`, the token read from its file at every attestation (the
//! kubelet rotates it). There is no challenge: the server has the cluster's API server
//! review the token.

use std::path::{Path, PathBuf};

use super::{AgentNodeAttestor, AttestError};

/// The attestor's name, on the wire and in the config.
pub(super) const NAME: &str = "k8s_psat";
/// A projected token is a JWT of a few KiB; anything far larger is not one.
const MAX_TOKEN_BYTES: u64 = 64 * 1024;

/// The agent's `k8s_psat` attestor.
pub(super) struct K8sPsatNodeAttestor {
    cluster: String,
    token_path: PathBuf,
}

impl K8sPsatNodeAttestor {
    pub(super) fn new(cluster: &str, token_path: &Path) -> Self {
        K8sPsatNodeAttestor {
            cluster: cluster.to_owned(),
            token_path: token_path.to_owned(),
        }
    }

    fn token(&self) -> Result<String, AttestError> {
        let failed = |reason: String| AttestError::Evidence {
            attestor: NAME,
            reason: format!(
                "the projected service-account token (k8s_psat.token_path {}) {reason}",
                self.token_path.display()
            ),
        };
        let meta = std::fs::metadata(&self.token_path)
            .map_err(|e| failed(format!("cannot be read: {e}")))?;
        if meta.len() > MAX_TOKEN_BYTES {
            return Err(failed(format!(
                "is {} bytes, more than {MAX_TOKEN_BYTES}: not a token",
                meta.len()
            )));
        }
        let text = std::fs::read_to_string(&self.token_path)
            .map_err(|e| failed(format!("cannot be read: {e}")))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(failed("is empty".into()));
        }
        Ok(token.to_owned())
    }
}

impl AgentNodeAttestor for K8sPsatNodeAttestor {
    fn name(&self) -> &'static str {
        NAME
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        let payload = serde_json::json!({"cluster": self.cluster, "token": self.token()?});
        Ok(payload.to_string().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evidence_is_spire_s_payload_with_the_token_read_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spire-agent");
        std::fs::write(&path, "eyJhbGciOi.first.sig\n").unwrap();
        let mut a = K8sPsatNodeAttestor::new("prod", &path);
        assert_eq!(a.name(), "k8s_psat");
        let v: serde_json::Value = serde_json::from_slice(&a.evidence().unwrap()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cluster": "prod", "token": "eyJhbGciOi.first.sig"})
        );
        // The kubelet rotated the token: the next attestation sends the new one.
        std::fs::write(&path, "eyJhbGciOi.second.sig").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&a.evidence().unwrap()).unwrap();
        assert_eq!(v["token"], "eyJhbGciOi.second.sig");
        assert!(matches!(
            a.answer(b"x"),
            Err(AttestError::UnexpectedChallenge {
                attestor: "k8s_psat"
            })
        ));
    }

    #[test]
    fn a_missing_or_empty_token_names_the_option() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spire-agent");
        let mut a = K8sPsatNodeAttestor::new("prod", &path);
        let e = a.evidence().unwrap_err().to_string();
        assert!(
            e.contains("k8s_psat.token_path") && e.contains("cannot be read"),
            "{e}"
        );
        std::fs::write(&path, " \n").unwrap();
        let e = a.evidence().unwrap_err().to_string();
        assert!(e.contains("is empty"), "{e}");
    }
}
