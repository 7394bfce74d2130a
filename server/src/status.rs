//! The one place where the server's errors become gRPC statuses: the code a client sees
//! (and branches on) is decided here, from the error's variant, never from its text.

use tonic::Status;

use crate::ca::CaError;
use crate::node::{AttestError, RejectKind};
use crate::store::StoreError;

/// A store error: the caller's mistakes by their own codes, an unreachable backend
/// UNAVAILABLE (retry), the store's other trouble INTERNAL with its causes.
pub(crate) fn store(e: StoreError) -> Status {
    match e {
        StoreError::InvalidEntry(e) => Status::invalid_argument(e.to_string()),
        e @ StoreError::DuplicateEntry { .. } => Status::already_exists(e.to_string()),
        e @ StoreError::EntryNotFound { .. } => Status::not_found(e.to_string()),
        e @ StoreError::RevisionMismatch { .. } => Status::failed_precondition(e.to_string()),
        e @ StoreError::NodeNotFound { .. } => Status::not_found(e.to_string()),
        e @ (StoreError::Banned { .. } | StoreError::AlreadyAttested { .. }) => {
            Status::permission_denied(e.to_string())
        }
        e @ StoreError::OwnTrustDomain { .. } => Status::invalid_argument(e.to_string()),
        e @ (StoreError::BatchTooLarge { .. } | StoreError::BadPageToken { .. }) => {
            Status::invalid_argument(e.to_string())
        }
        e @ StoreError::FederatedBundleChanged { .. } => Status::aborted(e.to_string()),
        // Nothing was written; the same call may work later.
        e @ StoreError::Unavailable { .. } => Status::unavailable(report(&e)),
        e => Status::internal(report(&e)),
    }
}

/// A CA error: a refused request INVALID_ARGUMENT (its rule as the message), a CA not yet
/// initialised or an HSM that cannot be reached UNAVAILABLE (retry), anything else INTERNAL.
pub(crate) fn ca(e: CaError) -> Status {
    match e {
        CaError::InvalidRequest(m) => Status::invalid_argument(m),
        e @ (CaError::NotReady(_) | CaError::SigningKeyExpired { .. }) => {
            Status::unavailable(e.to_string())
        }
        e if e.is_key_manager_unreachable() => Status::unavailable(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// A rejected attestation: a failed check PERMISSION_DENIED (the agent re-attests only
/// when something changed), malformed evidence INVALID_ARGUMENT, a server-wide bound
/// RESOURCE_EXHAUSTED (retry later), the server's own trouble INTERNAL.
pub(crate) fn attest(e: &AttestError) -> Status {
    match e.kind {
        RejectKind::Denied => Status::permission_denied(format!("attestation rejected: {e}")),
        RejectKind::Malformed => Status::invalid_argument(format!("attestation rejected: {e}")),
        RejectKind::Internal => Status::internal(format!("attestation failed on the server: {e}")),
        RejectKind::Exhausted => {
            Status::resource_exhausted(format!("attestation refused for now: {e}"))
        }
    }
}

/// A blocking worker that panicked or was cancelled.
pub(crate) fn worker(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("worker failed: {e}"))
}

/// An error with its causes, for messages that reach an operator.
fn report(e: &(dyn std::error::Error + 'static)) -> String {
    ironroot_runtime::report::Chain(e).to_string()
}
