//! ironroot agent library: node attestation (TPM or join token) and, later,
//! the Workload API. The `ironroot-agent` binary is a thin CLI over it.

pub mod attest;
pub mod config;
pub mod connect;
pub mod simulate;
