//! The release agent as a child process of a bench (`ironroot_testkit::agent`), attesting
//! with `tpm_ek` to the bench server.

use ironroot_testkit::agent::{AgentProcess, AgentSpec};
use ironroot_testkit::server::TD;

use super::BenchServer;

/// Starts `ironroot-agent run` for the TPM at `tcti` against `env`, its log
/// in the test-logs dir `log_group`/`name`.log; `extra` TOML is appended.
pub(crate) fn start_agent(
    env: &BenchServer,
    tcti: &str,
    name: &str,
    log_group: &str,
    extra: &str,
) -> AgentProcess {
    AgentProcess::start(&AgentSpec {
        server: &env.node,
        tcti,
        event_log: &env.log,
        name,
        log: ironroot_testkit::test_log_dir(log_group).join(format!("{name}.log")),
        log_level: "info",
        extra,
    })
}

/// The agent's SPIFFE ID: tpm_ek/<SHA-256 of the EK public key>.
pub(crate) fn agent_id(tcti: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut t = ironroot_tpm::device::Tpm::open(tcti).expect("open tpm");
    let ek = t
        .endorsement_key(ironroot_tpm::device::EkAlgorithm::Rsa2048)
        .expect("ek");
    let spki = ironroot_tpm::verify::TpmPublic::from_tpm2b(&ek.public)
        .expect("ek public")
        .spki_der()
        .expect("spki");
    format!(
        "spiffe://{TD}/spire/agent/tpm_ek/{}",
        hex::encode(Sha256::digest(spki))
    )
}
