//! Node attestation: the Node API stream, the `NodeAttestor` seam, and the
//! attestors (`tpm_ek`, `tpm_devid`, `join_token`). A node gets its agent
//! SVID only after its attestor's checks all pass; every rejection names the
//! check that failed and is logged.

pub(crate) mod agent_api;
pub(crate) mod join_token;
pub(crate) mod limits;
pub mod nonce;
mod service;
pub mod tls;
pub mod tpm;

pub(crate) use service::{NodeApi, NodeService};

use ironroot_api::node as pb;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::SpiffeId;

/// What a successful attestation proved.
#[derive(Debug, Clone)]
pub struct Attested {
    pub(crate) agent_id: SpiffeId,
    pub(crate) selectors: Vec<Selector>,
    /// The measured-boot policy that passed, if any.
    pub(crate) boot_policy: Option<String>,
    /// An LDevID certificate issued on enrollment, then the DevID CA.
    pub(crate) devid_chain: Vec<Vec<u8>>,
}

/// A rejected attestation: which check failed and why, for the agent's
/// operator and the server log.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{check}: {reason}")]
pub struct AttestError {
    pub(crate) check: &'static str,
    pub(crate) reason: String,
    pub(crate) kind: RejectKind,
}

/// How a rejection maps to a gRPC status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RejectKind {
    /// A check failed: PERMISSION_DENIED.
    Denied,
    /// Malformed input: INVALID_ARGUMENT.
    Malformed,
    /// The server could not decide (store trouble): INTERNAL.
    Internal,
    /// A server-wide bound is reached (nonces): RESOURCE_EXHAUSTED; retrying later helps.
    Exhausted,
}

impl AttestError {
    pub(crate) fn rejected(check: &'static str, reason: impl Into<String>) -> Self {
        AttestError {
            check,
            reason: reason.into(),
            kind: RejectKind::Denied,
        }
    }

    pub(crate) fn internal(check: &'static str, reason: impl Into<String>) -> Self {
        AttestError {
            check,
            reason: reason.into(),
            kind: RejectKind::Internal,
        }
    }

    pub(crate) fn exhausted(check: &'static str, reason: impl Into<String>) -> Self {
        AttestError {
            check,
            reason: reason.into(),
            kind: RejectKind::Exhausted,
        }
    }

    pub(crate) fn malformed(check: &'static str, reason: impl Into<String>) -> Self {
        AttestError {
            check,
            reason: reason.into(),
            kind: RejectKind::Malformed,
        }
    }
}

/// The second half of an exchange that needed a challenge.
pub trait PendingAttestation: Send {
    /// Checks the agent's answer. Called at most once.
    fn finish(self: Box<Self>, response: &pb::ChallengeResponse) -> Result<Attested, AttestError>;
}

/// What `begin` decided.
pub enum Begun {
    /// No challenge needed (join tokens).
    Done(Attested),
    /// Send the challenge, then finish with the answer.
    Challenge(pb::Challenge, Box<dyn PendingAttestation>),
}

/// A node attestor: checks the evidence a node presents.
pub trait NodeAttestor: Send + Sync {
    /// The name agents send (`tpm_ek`, ...).
    fn name(&self) -> &'static str;
    /// Offline checks of the first message, and the challenge if one is needed.
    fn begin(&self, params: &pb::AttestParams) -> Result<Begun, AttestError>;
}
