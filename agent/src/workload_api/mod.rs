//! The SPIFFE Workload API on a unix socket. Each connection's caller is
//! recorded from the socket (SO_PEERCRED + pidfd, its executable and
//! credentials) when it connects, within its uid's connection limits
//! ([`crate::workload::limits`]); each call checks the process is still what
//! it was then (refused with PermissionDenied if it exited, exec'd or changed
//! credentials), runs the workload attestors, and serves the SVIDs of every
//! entry whose selectors are all the caller's. The three streams are served
//! pre-encoded by [`crate::workload::encoded_streams`].
//!
//! By idea: accepting and identifying connections (`connection`), building
//! responses from the cache (`responses`), JWT-SVIDs from the agent's cache or
//! minted by the server (`jwt`), and the gRPC service (`service`).

mod connection;
mod jwt;
mod responses;
mod service;

pub(crate) use connection::incoming;
pub(crate) use responses::{jwt_bundles, x509_bundles, x509_response_for};
pub(crate) use service::{attest_request, no_identity};
pub(crate) use service::{ServerClient, WorkloadApi};
