//! TPM 2.0 evidence verification.
//!
//! [`verify`] is pure Rust (no libtss2, no I/O) and is what the server uses to check the
//! evidence an agent sends.

#![warn(missing_docs)]

#[cfg(feature = "device")]
pub mod device;
pub mod verify;
