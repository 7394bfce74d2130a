//! ironroot agent library: node attestation (TPM or join token, the agent key
//! in the TPM), the runtime (sync, cache, renewal), the SPIFFE Workload API and
//! Envoy SDS. The `ironroot-agent` binary is a thin CLI over it.

pub mod agent_key;
pub mod api_client;
pub mod attest;
pub mod cache;
pub mod config;
pub mod connect;
pub mod data_dir;
pub mod jwt_validate;
pub mod refused;
pub mod runtime;
pub mod sds;
pub mod shared_tpm;
pub mod simulate;
pub mod sync;
pub mod tls_key;
pub mod workload;
pub mod workload_api;
