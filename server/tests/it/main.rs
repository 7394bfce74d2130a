//! The server crate's integration tests, one binary: the real server binary on a private
//! SoftHSM2 token per test (`ironroot_testkit::server`), its admin API and CLI, the offline
//! boot tools, the store, swtpm's EK certificates against the EK rules, and the CA on a real
//! OpenBao's transit engine.

mod admin_input;
mod admin_tls;
mod audit_log;
mod boot_tools;
mod ca_hsm;
mod ca_memory;
mod ca_transit;
mod ek_certificates;
mod entry_federates_with;
mod federation;
mod federation_endpoint;
mod hsm_trouble;
mod oidc;
mod rotation;
mod server_postgres;
mod store_conformance;
mod store_faults;
mod store_postgres;
mod store_postgres_tls;
mod store_sled;
mod unreadable;
mod upstream;
mod upstream_openbao;
