//! The agent crate's integration tests, one binary. Most run the real server and the real
//! agent (library or `ironroot-agent run`) against a swtpm per test; the workload attestor
//! tests run real processes, containers (a private rootful podman) and a cgroup of their own.
//! Components come from `ironroot_testkit`; the agent scenarios built on them are `common`
//! (attestation: servers, simulated boots, agent configs, rejections) and
//! `attestor_fixture` (a python child that reports its own view of itself).
//!
//! Run with `cargo nextest run -p ironroot-agent` (one process per test; a single test:
//! `-E 'test(=workload_api::workloads_get_their_svids_and_only_theirs)'`).

mod admin_over_mtls;
mod agent_key_tpm;
mod agent_resilience;
mod agent_sync;
mod attest_forged;
mod attest_relabel;
mod attest_seam;
mod attest_tpm;
mod attestor_fixture;
mod cloud_attest;
mod cloud_attest_agent;
mod cloud_attest_imds;
mod cloud_attest_jwt;
mod cloud_attest_keys;
mod common;
mod conformance;
mod database_outage;
mod federation_workload;
mod h2_authority;
mod join_token_agent;
mod k8s_psat;
mod k8s_workload;
mod metrics;
mod node_api_limits;
mod sds;
mod server_failover;
mod vault_login;
mod workload_api;
mod workload_api_exec;
mod workload_api_grpc_python;
mod workload_api_podman;
mod workload_attestors;
mod workload_attestors_exec;
mod workload_limits;
mod workload_podman;
