//! Pure-Rust verification of TPM evidence: the TCG firmware event log, PCR replay and the
//! measured-boot policy. No libtss2 and no I/O: callers hand in bytes.

pub mod eventlog;
pub mod policy;
