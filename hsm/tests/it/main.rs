//! The HSM crate's integration tests, one binary: the key managers against a real SoftHSM2
//! (each test owns its token; SOFTHSM2_CONF is per process, so run them with
//! `cargo nextest run -p ironroot-hsm`, one process per test) and the software store.

mod pkcs11;
mod pkcs11_errors;
mod software;
mod support;
