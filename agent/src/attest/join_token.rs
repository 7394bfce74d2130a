//! `join_token`, the agent's half: the evidence is the single-use token (UTF-8, as SPIRE
//! sends it); there is no challenge.

use super::{AgentNodeAttestor, AttestError};

/// The agent's `join_token` attestor.
pub(super) struct JoinTokenNodeAttestor {
    token: String,
}

impl JoinTokenNodeAttestor {
    pub(super) fn new(token: &str) -> Self {
        JoinTokenNodeAttestor {
            token: token.to_owned(),
        }
    }
}

impl AgentNodeAttestor for JoinTokenNodeAttestor {
    fn name(&self) -> &'static str {
        "join_token"
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        Ok(self.token.as_bytes().to_vec())
    }
}
