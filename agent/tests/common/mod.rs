//! Set-up for attestation tests: a server on its own SoftHSM token with the
//! Node API on a free port, a swtpm per test, boots simulated by writing an
//! event log and extending the swtpm's PCRs to match it.
#![allow(dead_code)]

use std::path::PathBuf;

use ironroot_agent::attest::{attest_with, AttestOutcome, Hooks, KeySource};
use ironroot_agent::config::{AgentConfig, NodeAttestorKind, TpmConfig};
use ironroot_testkit::server::{server_config, ServerProcess, SoftHsm, TD};
use ironroot_testkit::swtpm::{Swtpm, SwtpmOptions, SwtpmState};
use ironroot_tpm::verify::eventlog::EventLog;
use ironroot_tpm::verify::policy::generate_policy;

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The manufactured TPM shared by the tests of one binary (copied per test).
pub(crate) fn tpm_state() -> &'static SwtpmState {
    SwtpmState::shared("attest", &SwtpmOptions::default())
}

/// A second TPM "from another manufacturer" (its own local CA).
pub(crate) fn other_tpm_state() -> &'static SwtpmState {
    SwtpmState::shared("attest-other", &SwtpmOptions::default())
}

/// PEM with the local CA root and the issuer that signed the EK certificates
/// (written once beside the shared state; renamed into place so readers never
/// see half a file).
pub(crate) fn ek_ca_bundle(state: &SwtpmState) -> PathBuf {
    let p = state.dir.join("ek-ca-bundle.pem");
    if !p.exists() {
        let mut pem = std::fs::read_to_string(&state.ca_root_cert).expect("root");
        pem.push_str(&std::fs::read_to_string(&state.issuer_cert).expect("issuer"));
        let tmp = state
            .dir
            .join(format!("ek-ca-bundle.{}.tmp", std::process::id()));
        std::fs::write(&tmp, pem).expect("ek ca bundle");
        std::fs::rename(&tmp, &p).expect("ek ca bundle rename");
    }
    p
}

/// What a simulated machine booted.
pub(crate) type Boot = ironroot_agent::simulate::SimulatedBoot<'static>;

/// The TCG event log of `boot` (crypto-agile, sha256).
pub(crate) fn boot_log(boot: &Boot) -> Vec<u8> {
    ironroot_agent::simulate::event_log(boot)
}

/// Extends the TPM's sha256 PCRs with every measured event of `log`, as firmware would.
pub(crate) fn extend_like(tpm: &Swtpm, log: &[u8]) {
    ironroot_agent::simulate::replay_into(&tpm.tcti(), log).expect("extend the swtpm PCRs");
}

/// The policy a known-good boot generates, as TOML.
pub(crate) fn policy_toml(name: &str, boot: &Boot) -> String {
    let log = EventLog::parse(&boot_log(boot)).expect("log");
    generate_policy(name, &log).to_toml().expect("toml")
}

/// A running server with the Node API and the TPM attestors.
pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub hsm: SoftHsm,
    pub server: ServerProcess,
    pub address: String,
    pub bundle: PathBuf,
}

/// Starts a server whose `[node_attestors.tpm]` is `tpm_section` (without its
/// header), with `policies` (name, TOML) in its policies_dir.
pub(crate) fn start_server(test: &str, tpm_section: &str, policies: &[(&str, String)]) -> Env {
    start_server_with_node_api(test, tpm_section, policies, "")
}

/// [`start_server`] with `node_api_extra` (TOML lines, e.g. `agent_svid_ttl = "8s"`)
/// added to its `[node_api]` section.
pub(crate) fn start_server_with_node_api(
    test: &str,
    tpm_section: &str,
    policies: &[(&str, String)],
    node_api_extra: &str,
) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let pdir = dir.path().join("policies");
    std::fs::create_dir_all(&pdir).expect("policies dir");
    for (name, text) in policies {
        std::fs::write(pdir.join(format!("{name}.toml")), text).expect("policy");
    }
    let port = free_port();
    let extra = format!(
        "[node_api]\nlisten = \"127.0.0.1:{port}\"\nchallenge_ttl = \"20s\"\n{node_api_extra}\n\n\
         [node_attestors.tpm]\npolicies_dir = \"{}\"\n{tpm_section}\n",
        pdir.display()
    );
    let conf = server_config(dir.path(), &hsm, "ca", &extra);
    let server = ServerProcess::start(test, &conf, &hsm, &dir.path().join("admin.sock"));
    let bundle = dir.path().join("bootstrap-bundle.pem");
    std::fs::write(&bundle, server.cli_ok(&["bundle", "show"])).expect("bundle");
    Env {
        dir,
        hsm,
        server,
        address: format!("127.0.0.1:{port}"),
        bundle,
    }
}

impl Env {
    /// An agent config for `tpm` (tcti) with `log` as its firmware event log.
    pub(crate) fn agent(&self, tpm: &Swtpm, log: &[u8], ek: &str) -> AgentConfig {
        let adir = tempfile::Builder::new()
            .prefix("agent-")
            .tempdir_in(self.dir.path())
            .expect("agent dir")
            .keep();
        let log_path = adir.join("binary_bios_measurements");
        std::fs::write(&log_path, log).expect("log");
        AgentConfig {
            trust_domain: TD.parse().expect("trust domain"),
            server_address: self.address.parse().expect("server address"),
            trust_bundle_path: self.bundle.clone(),
            data_dir: adir.join("data"),
            node_attestor: NodeAttestorKind::TpmEk,
            join_token: None,
            tpm: TpmConfig {
                tcti: tpm.tcti(),
                event_log_path: log_path,
                ek: ek.parse().expect("tpm.ek"),
                ..TpmConfig::default()
            },
            log_level: "info".into(),
            workload_api: Default::default(),
            workload_attestors: Default::default(),
            sds: Default::default(),
        }
    }
}

pub(crate) fn attest_hooked(cfg: &AgentConfig, hooks: Hooks<'_>) -> anyhow::Result<AttestOutcome> {
    let keys = KeySource::for_config(cfg)?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(attest_with(cfg, &keys, hooks))
        .map_err(anyhow::Error::from)
}

pub(crate) fn attest(cfg: &AgentConfig) -> anyhow::Result<AttestOutcome> {
    attest_hooked(cfg, Hooks::default())
}

/// Asserts a rejection whose message names `check` and contains every `words`.
pub(crate) fn assert_rejected(
    r: anyhow::Result<AttestOutcome>,
    check: &str,
    words: &[&str],
) -> String {
    let e = match r {
        Ok(o) => panic!(
            "attestation passed but must fail ({check}): {}",
            o.spiffe_id
        ),
        Err(e) => format!("{e:#}"),
    };
    assert!(e.contains("attestation rejected"), "{e}");
    assert!(e.contains(check), "expected check '{check}' in: {e}");
    for w in words {
        assert!(e.contains(w), "expected '{w}' in: {e}");
    }
    e
}

/// A server trusting the test TPMs' EK CA, with the policy of `Boot::default()` as default.
pub(crate) fn good_env(test: &str) -> Env {
    good_env_with_node_api(test, "")
}

/// [`good_env`] with `node_api_extra` added to the server's `[node_api]` section.
pub(crate) fn good_env_with_node_api(test: &str, node_api_extra: &str) -> Env {
    let ca = ek_ca_bundle(tpm_state());
    start_server_with_node_api(
        test,
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"good\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
        node_api_extra,
    )
}

/// SHA-256 of the EK public key (what the tpm_ek agent ID carries).
pub(crate) fn ek_hash_of(cfg: &AgentConfig) -> String {
    use sha2::{Digest, Sha256};
    let alg = cfg.tpm.ek.algorithm();
    let ek = ironroot_agent::shared_tpm::SharedTpm::new(&cfg.tpm.tcti)
        .with(|t| t.endorsement_key(alg))
        .expect("ek");
    let spki = ironroot_tpm::verify::TpmPublic::from_tpm2b(&ek.public)
        .expect("ek public")
        .spki_der()
        .expect("spki");
    hex::encode(Sha256::digest(spki))
}

/// The agent binary built beside the test.
pub(crate) fn agent_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|d| d.parent())
        .map(|d| d.join("ironroot-agent"))
        .expect("target dir")
}

/// `ironroot-agent run` as a child process, killed on drop.
pub(crate) struct AgentProcess {
    pub child: std::process::Child,
    pub socket: PathBuf,
    pub dir: PathBuf,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `ironroot-agent run` for `tpm` (booted with `log`) against `env`;
/// extra TOML is appended to its config.
pub(crate) fn start_agent_with(
    env: &Env,
    tpm: &ironroot_testkit::swtpm::Swtpm,
    log: &[u8],
    test: &str,
    extra: &str,
) -> AgentProcess {
    let dir = env.dir.path().join("agent-run");
    std::fs::create_dir_all(dir.join("sock")).unwrap();
    // Workloads of any uid must reach the socket.
    for d in [env.dir.path(), dir.as_path(), dir.join("sock").as_path()] {
        std::fs::set_permissions(d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    std::fs::write(dir.join("eventlog.bin"), log).unwrap();
    let socket = dir.join("sock/api.sock");
    let conf = dir.join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "trust_domain = \"example.org\"\nserver_address = \"{}\"\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"tpm_ek\"\nlog_level = \"debug\"\n\n\
             [tpm]\ntcti = \"{}\"\nevent_log_path = \"{}\"\nek = \"rsa\"\n\n\
             [workload_api]\nsocket_path = \"{}\"\n{extra}\n",
            env.address,
            env.bundle.display(),
            dir.join("data").display(),
            tpm.tcti(),
            dir.join("eventlog.bin").display(),
            socket.display()
        ),
    )
    .unwrap();
    let logf =
        std::fs::File::create(ironroot_testkit::test_log_dir(test).join("agent.log")).unwrap();
    let child = std::process::Command::new(agent_bin())
        .args(["run", "-c"])
        .arg(&conf)
        .stdout(std::process::Stdio::from(logf.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(logf))
        .spawn()
        .expect("start agent");
    AgentProcess { child, socket, dir }
}

pub(crate) fn start_agent(
    env: &Env,
    tpm: &ironroot_testkit::swtpm::Swtpm,
    log: &[u8],
    test: &str,
) -> AgentProcess {
    start_agent_with(env, tpm, log, test, "")
}
