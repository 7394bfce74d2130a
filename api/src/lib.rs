//! Wire formats and SPIFFE types shared by the ironroot server and agent.
//! Nothing here does I/O.

#![warn(missing_docs)]

/// Generated code for `ironroot.admin.v1`.
pub mod admin {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ironroot.admin.v1");
}

/// Generated code for `ironroot.agent.v1`.
pub mod agent {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ironroot.agent.v1");
}

/// Generated code for `ironroot.node.v1`.
pub mod node {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("ironroot.node.v1");
}

/// Generated code for the SPIFFE Workload API (`SpiffeWorkloadAPI`). The
/// upstream proto has no `package` line, so tonic-prost-build writes it to
/// `_.rs`; keeping the proto verbatim keeps the wire names (`/SpiffeWorkloadAPI/...`)
/// that every SPIFFE client calls.
pub mod workload {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("_");
}

/// Most CSRs an ironroot agent sends in one `BatchNewX509Svid` call. A server refuses a
/// `node_api.limits.max_x509_svids_per_batch` below it, which would refuse agents with many
/// entries on every sync.
pub const AGENT_CSRS_PER_CALL: usize = 100;

pub mod bundle;
pub mod codec;
pub mod entry;
mod hash_algorithm;
pub mod jwt_svid;
mod pubkey;
pub mod selector;
pub mod serde_b64;
pub mod spiffe_id;
pub mod tls;

#[cfg(test)]
mod fixtures_for_tests;

pub use bundle::{BundleError, JwtAuthority, TrustBundle};
pub use entry::{EntryError, EntrySpec, RegistrationEntry};
pub use jwt_svid::{
    assemble_jwt, jwt_signing_input, verify_jwt_svid, JwtAlgorithm, JwtHeader, JwtSvidClaims,
    JwtSvidError,
};
pub use selector::{Selector, SelectorError};
pub use spiffe_id::{SpiffeId, SpiffeIdError, TrustDomain};
