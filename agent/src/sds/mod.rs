//! Envoy's Secret Discovery Service (SDS v3), as the SPIRE agent serves it:
//! `StreamSecrets` and `FetchSecrets` (`DeltaSecrets` answers Unimplemented),
//! on the Workload API socket or a socket of its own (`[sds]`), with SPIRE's
//! resource names ([`resources`]) and a push on every rotation ([`stream`]).
//! The messages are Envoy's published protos (the `envoy-types` crate).
//!
//! Invariants:
//! - A caller is identified and attested exactly as for the Workload API:
//!   the connection's caller (identified at accept), the same workload
//!   attestors, through [`crate::workload_api::attest_request`].
//! - An SVID and its private key go only to a caller whose selectors include
//!   every selector of the SVID's entry (the Workload API's check), and only
//!   while the SVID is unexpired.
//! - A request naming anything the caller may not have is refused whole, with
//!   the names; nothing is served before the agent's first sync.
//! - Bundles (public keys) go to any attested caller, as in SPIRE.

pub(crate) mod config;
mod error;
mod resources;
mod response;
mod secrets;
mod service;
mod stream;

pub(crate) use config::{SdsConfig, SdsConfigError};
pub(crate) use service::SdsService;

use std::sync::Arc;

use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_server::SecretDiscoveryServiceServer;

use crate::cache::Cache;
use crate::workload::attestor::WorkloadAttestor;

/// The gRPC service, ready to add to a tonic router.
pub(crate) fn server(
    cache: Cache,
    attestors: Vec<Arc<dyn WorkloadAttestor>>,
    cfg: SdsConfig,
) -> SecretDiscoveryServiceServer<SdsService> {
    SecretDiscoveryServiceServer::new(SdsService::new(cache, attestors, cfg))
}
