//! ironroot agent library: node attestation (TPM or join token, the agent key
//! in the TPM), the runtime (sync, cache, renewal), the SPIFFE Workload API and
//! Envoy SDS. The `ironroot-agent` binary is a thin CLI over it.

#![warn(missing_docs)]

pub mod agent_key;
pub mod api_client;
pub mod attest;
pub mod cache;
pub mod config;
pub mod connect;
pub(crate) mod data_dir;
pub(crate) mod jwt_validate;
pub(crate) mod metrics;
pub mod refused;
pub mod runtime;
pub(crate) mod sds;
pub mod servers;
pub mod shared_tpm;
pub mod simulate;
pub mod sync;
pub(crate) mod tls_key;
pub mod workload;
pub(crate) mod workload_api;
