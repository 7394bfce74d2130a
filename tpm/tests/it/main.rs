//! The TPM crate's integration tests, one binary: the pure-Rust verifier against the shared
//! firmware logs and against a swtpm driven with tpm2-tools, and (with the `device` feature,
//! which a workspace run turns on) `ironroot_tpm::device` against a swtpm per test.
//! Run: `cargo nextest run -p ironroot-tpm --features device`.

#[cfg(feature = "device")]
mod device_agent_key;
#[cfg(feature = "device")]
mod device_support;
#[cfg(feature = "device")]
mod device_swtpm;
mod eventlog_fixtures;
mod policy_fixtures;
mod relabel_invariant;
mod verify_swtpm;
