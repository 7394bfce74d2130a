//! Node attestation: the Node API stream, the `NodeAttestor` seam, and the
//! attestors (`tpm_ek`, `tpm_devid`, `join_token`; cloud and Kubernetes ones plug in
//! behind the `cloud` and `k8s` cargo features). A node gets its agent SVID only after
//! its attestor's checks all pass; every rejection names the check that failed and is
//! logged.
//!
//! The seam: the wire carries the attestor's name and opaque payloads (evidence,
//! challenge, answer) that only the named attestor decodes; [`registry`] finds the
//! attestor by name (refusing unknown, unbuilt and disabled ones by name); the service
//! prefixes every selector value the attestor returns with its selector type and checks
//! the agent ID is under `/spire/agent/<name>/`.

pub(crate) mod agent_api;
#[cfg(feature = "cloud")]
mod cloud;
pub(crate) mod join_token;
#[cfg(feature = "k8s")]
mod k8s;
pub(crate) mod limits;
pub mod nonce;
mod refusal;
pub(crate) mod registry;
mod service;
pub mod tls;
pub mod tpm;

pub(crate) use refusal::decode_payload;
pub use refusal::AttestorRefusal;
pub(crate) use service::{NodeApi, NodeService};

use ironroot_api::spiffe_id::SpiffeId;

/// What a successful attestation proved.
#[derive(Debug, Clone)]
pub struct Attested {
    pub(crate) agent_id: SpiffeId,
    /// Selector values without their type (`ek_hash:…`, `attested`): the service prefixes
    /// each with the attestor's [`NodeAttestor::selector_type`].
    pub(crate) selectors: Vec<String>,
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

/// The first message of an exchange, as the attestor sees it.
pub struct Evidence<'a> {
    /// The attestor-defined evidence (`AttestParams.payload`); never empty (the service
    /// refuses an empty payload before any attestor runs).
    pub payload: &'a [u8],
    /// The agent SVID's PKCS#10 request (DER); its signature was already verified.
    pub csr: &'a [u8],
}

/// The second half of an exchange that needed a challenge.
pub trait PendingAttestation: Send {
    /// Checks the agent's answer (`ChallengeResponse.payload`, attestor-defined). Called at
    /// most once.
    fn finish(self: Box<Self>, response: &[u8]) -> Result<Attested, AttestError>;
}

/// What `begin` decided.
pub enum Begun {
    /// No challenge needed (join tokens; the cloud attestors).
    Done(Attested),
    /// Send the challenge (`Challenge.payload`, attestor-defined), then finish with the
    /// answer.
    Challenge(Vec<u8>, Box<dyn PendingAttestation>),
}

/// A node attestor: checks the evidence a node presents. One file (or directory) per
/// attestor under `node/`; [`registry`] builds them from `[node_attestors]`.
pub trait NodeAttestor: Send + Sync {
    /// The name agents send (`tpm_ek`, ...): SPIRE's name for the attestors SPIRE has. The
    /// agent ID must be `spiffe://<td>/spire/agent/<name>/...`.
    fn name(&self) -> &'static str;
    /// The type the service gives every selector value this attestor returns: its name
    /// (SPIRE's rule), except where an older form is kept (`tpm` for both TPM attestors).
    fn selector_type(&self) -> &'static str {
        self.name()
    }
    /// Whether a node may attest again under the same agent ID (SPIRE's `CanReattest`).
    /// `false` (the cloud attestors, join tokens): trust on first use — the service refuses
    /// an agent ID already in the store until an operator evicts it (a replayed document
    /// gives the same agent ID), and the agent renews its SVID over mTLS instead.
    fn can_reattest(&self) -> bool {
        true
    }
    /// Offline checks of the first message, and the challenge if one is needed. A payload
    /// that does not decode is refused with [`AttestorRefusal::BadPayload`].
    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError>;
}
