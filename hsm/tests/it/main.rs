//! The HSM crate's integration tests, one binary: the key managers against a real SoftHSM2
//! (each test owns its token; SOFTHSM2_CONF is per process, so run them with
//! `cargo nextest run -p ironroot-hsm`, one process per test), the same behind p11-kit
//! remoting when the HSM goes away and comes back, the software store, transit on a real
//! OpenBao dev server, and the conformance suite every one of them passes.

mod conformance;
mod pkcs11;
mod pkcs11_errors;
mod pkcs11_outage;
mod software;
mod support;
mod transit;
