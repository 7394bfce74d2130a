//! The release agent as a child process of a bench, attesting with `tpm_ek`
//! to the bench server.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use ironroot_testkit::server::TD;

use super::BenchServer;

/// The release agent binary beside this bench (`target/release/ironroot-agent`),
/// or `$IRONROOT_AGENT_BIN`; same rule as testkit's `server_bin()`.
pub(crate) fn agent_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("IRONROOT_AGENT_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("bench executable path");
    // target/release/deps/<bench> -> target/release/ironroot-agent
    let p = exe
        .parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("ironroot-agent"))
        .expect("target dir");
    assert!(
        p.is_file(),
        "{} is missing: cargo build --release -p ironroot-server -p ironroot-agent",
        p.display()
    );
    p
}

/// `ironroot-agent run` as a child process, killed on drop.
pub(crate) struct AgentProcess {
    pub child: Child,
    /// The Workload API socket.
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl AgentProcess {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ironroot-agent run` for the TPM at `tcti` against `env`, its log
/// in the test-logs dir `log_group`/`name`.log; `extra` TOML is appended.
pub(crate) fn start_agent(
    env: &BenchServer,
    tcti: &str,
    name: &str,
    log_group: &str,
    extra: &str,
) -> AgentProcess {
    let dir = env.dir.path().join(name);
    std::fs::create_dir_all(&dir).expect("agent dir");
    std::fs::write(dir.join("eventlog.bin"), &env.log).expect("log");
    let socket = dir.join("api.sock");
    let conf = dir.join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "trust_domain = \"{TD}\"\nserver_address = \"{}\"\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"tpm_ek\"\nlog_level = \"info\"\n\n\
             [tpm]\ntcti = \"{tcti}\"\nevent_log_path = \"{}\"\nek = \"rsa\"\n\n\
             [workload_api]\nsocket_path = \"{}\"\n{extra}\n",
            env.address,
            env.bundle.display(),
            dir.join("data").display(),
            dir.join("eventlog.bin").display(),
            socket.display()
        ),
    )
    .expect("agent config");
    let logf = std::fs::File::create(
        ironroot_testkit::test_log_dir(log_group).join(format!("{name}.log")),
    )
    .expect("agent log");
    let child = Command::new(agent_bin())
        .args(["run", "-c"])
        .arg(&conf)
        .stdout(Stdio::from(logf.try_clone().expect("log")))
        .stderr(Stdio::from(logf))
        .spawn()
        .expect("start agent");
    AgentProcess { child, socket, dir }
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
