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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_evidence_is_the_token_and_a_challenge_is_refused() {
        let mut a = JoinTokenNodeAttestor::new("tok-123");
        assert_eq!(a.name(), "join_token");
        assert_eq!(a.evidence().unwrap(), b"tok-123");
        match a.answer(b"anything") {
            Err(AttestError::UnexpectedChallenge { attestor }) => {
                assert_eq!(attestor, "join_token")
            }
            other => panic!("a join_token agent must refuse a challenge: {other:?}"),
        }
    }
}
