//! Set-up for attestation tests, on testkit's components (a server with the Node API, a
//! swtpm per test, the agent binary): boots simulated by writing an event log and extending
//! the swtpm's PCRs to match it, agent configs for the agent library, attestation through
//! `ironroot_agent::attest`, and how a rejection is checked.

use std::path::Path;
use std::time::{Duration, Instant};

use ironroot_agent::api_client;
use ironroot_agent::attest::{attest_with, AttestOutcome, Hooks, KeySource, TpmSession};
use ironroot_agent::config::{AgentConfig, NodeAttestorKind, TpmConfig};
use ironroot_api::node::{TpmAttestation, TpmChallenge, TpmChallengeResponse};
use ironroot_api::workload::X509svidResponse;
use ironroot_testkit::agent::AgentSpec;
pub(crate) use ironroot_testkit::agent::{agent_bin, AgentProcess, JoinTokenAgentSpec};
use ironroot_testkit::server::{NodeApiServer, TD};
use ironroot_testkit::swtpm::{Swtpm, SwtpmOptions, SwtpmState};
use ironroot_tpm::verify::eventlog::EventLog;
use ironroot_tpm::verify::policy::generate_policy;

/// A current-thread tokio runtime for a test's async calls.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The manufactured TPM shared by the attestation tests (copied per test).
pub(crate) fn tpm_state() -> &'static SwtpmState {
    SwtpmState::shared("attest", &SwtpmOptions::default())
}

/// A second TPM "from another manufacturer" (its own local CA).
pub(crate) fn other_tpm_state() -> &'static SwtpmState {
    SwtpmState::shared("attest-other", &SwtpmOptions::default())
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
pub(crate) type Env = NodeApiServer;

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
    NodeApiServer::start(
        test,
        tpm_section,
        policies,
        &format!("challenge_ttl = \"20s\"\n{node_api_extra}"),
    )
}

/// Agent configs for the agent library, against an [`Env`].
pub(crate) trait AgentConfigFor {
    /// An agent config for `tpm` (tcti) with `log` as its firmware event log.
    fn agent(&self, tpm: &Swtpm, log: &[u8], ek: &str) -> AgentConfig;
}

impl AgentConfigFor for Env {
    fn agent(&self, tpm: &Swtpm, log: &[u8], ek: &str) -> AgentConfig {
        let adir = tempfile::Builder::new()
            .prefix("agent-")
            .tempdir_in(self.dir.path())
            .expect("agent dir")
            .keep();
        let log_path = adir.join("binary_bios_measurements");
        std::fs::write(&log_path, log).expect("log");
        AgentConfig {
            trust_domain: TD.parse().expect("trust domain"),
            server_address: Some(self.address.parse().expect("server address")),
            server_addresses: None,
            trust_bundle_path: self.bundle.clone(),
            data_dir: adir.join("data"),
            node_attestor: NodeAttestorKind::TpmEk,
            join_token: None,
            aws_iid: Default::default(),
            gcp_iit: Default::default(),
            azure_msi: Default::default(),
            azure_imds: Default::default(),
            k8s_psat: None,
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
            metrics: Default::default(),
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

/// Attests with `f` changing the answer to the server's challenge.
pub(crate) fn with_answer(
    cfg: &AgentConfig,
    f: &mut (dyn FnMut(&mut TpmSession, &TpmChallenge, &mut TpmChallengeResponse) + Send),
) -> anyhow::Result<AttestOutcome> {
    attest_hooked(
        cfg,
        Hooks {
            answer: Some(f),
            ..Hooks::default()
        },
    )
}

/// Attests with `f` changing the TPM evidence (before it is encoded into the payload).
pub(crate) fn with_tpm_evidence(
    cfg: &AgentConfig,
    f: &mut (dyn FnMut(&mut TpmAttestation) + Send),
) -> anyhow::Result<AttestOutcome> {
    attest_hooked(
        cfg,
        Hooks {
            tpm_evidence: Some(f),
            ..Hooks::default()
        },
    )
}

/// A swtpm booted as `Boot::default()` and an agent config (RSA EK) for it against `env`.
pub(crate) fn booted(env: &Env) -> (Swtpm, AgentConfig) {
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    let cfg = env.agent(&tpm, &log, "rsa");
    (tpm, cfg)
}

/// A swtpm booted as `Boot::default()` (measured into its PCRs), that boot's event log,
/// and the SPIFFE ID the agent on it gets from `env` (tpm_ek, RSA EK).
pub(crate) fn booted_node(env: &Env) -> (Swtpm, Vec<u8>, String) {
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    let agent_id = format!(
        "spiffe://example.org/spire/agent/tpm_ek/{}",
        ek_hash_of(&env.agent(&tpm, &log, "rsa"))
    );
    (tpm, log, agent_id)
}

/// The agent SVID an attestation returned, as the agent keeps it.
pub(crate) fn agent_svid(o: &AttestOutcome) -> ironroot_agent::sync::AgentSvid {
    ironroot_agent::sync::AgentSvid {
        spiffe_id: o.spiffe_id.clone(),
        chain: o.svid_chain.clone(),
        key: o.key.clone(),
        issued_at: 0,
        expires_at: o.expires_at,
        roots: o.root_cas.clone(),
    }
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
    let ca = tpm_state().ek_ca_bundle();
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

/// Starts `ironroot-agent run` for `tpm` (booted with `log`) against `env`, logging to
/// `target/test-logs/<test>/agent.log`; extra TOML is appended to its config.
pub(crate) fn start_agent_with(
    env: &Env,
    tpm: &Swtpm,
    log: &[u8],
    test: &str,
    extra: &str,
) -> AgentProcess {
    AgentProcess::start(&AgentSpec {
        server: env,
        tcti: &tpm.tcti(),
        event_log: log,
        name: "agent-run",
        log: ironroot_testkit::test_log_dir(test).join("agent.log"),
        log_level: "debug",
        extra,
    })
}

/// A join_token agent (a fresh token) against `env`, in `<env dir>/<name>`, logging to `log`;
/// extra TOML is appended to its config.
pub(crate) fn start_join_token_agent(
    env: &Env,
    name: &str,
    log: &Path,
    extra: &str,
) -> AgentProcess {
    let token = env.server.join_token();
    AgentProcess::start_join_token(&JoinTokenAgentSpec {
        servers: &[env.address.as_str()],
        bundle: &env.bundle,
        token: &token,
        dir: env.dir.path().join(name),
        log: log.to_owned(),
        extra,
    })
}

/// [`start_agent_with`] without extra config.
pub(crate) fn start_agent(env: &Env, tpm: &Swtpm, log: &[u8], test: &str) -> AgentProcess {
    start_agent_with(env, tpm, log, test, "")
}

/// FetchX509SVID as this process (uid 0).
pub(crate) fn fetch_x509(socket: &Path) -> anyhow::Result<X509svidResponse> {
    rt().block_on(api_client::fetch_x509(socket))
        .map_err(anyhow::Error::from)
}

/// Polls until the caller (this process, uid 0) is served an SVID for `id`.
pub(crate) fn wait_for_svid(socket: &Path, id: &str, within: Duration) -> X509svidResponse {
    let deadline = Instant::now() + within;
    loop {
        let last = match fetch_x509(socket) {
            Ok(r) if r.svids.iter().any(|s| s.spiffe_id == id) => return r,
            Ok(r) => format!(
                "served {:?}",
                r.svids.iter().map(|s| &s.spiffe_id).collect::<Vec<_>>()
            ),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "no SVID for {id} within {within:?} (last: {last})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The certificates of a Workload API response's concatenated DER.
pub(crate) fn der_certs(concat: &[u8]) -> Vec<Vec<u8>> {
    ironroot_testkit::server::pem_ders(&api_client::concat_der_to_pem(concat).unwrap())
}

/// The trust domain's roots as the server publishes them (`bundle show`),
/// independent of the agent.
pub(crate) fn server_roots(env: &Env) -> Vec<Vec<u8>> {
    let roots = ironroot_testkit::server::pem_ders(&std::fs::read_to_string(&env.bundle).unwrap());
    assert!(!roots.is_empty());
    roots
}

/// An HTTP/2 frame: 24-bit length, type, flags, stream id, payload.
pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An agent config for `kind` against a Node API server, its data under the server's dir
/// (`name`); every other option at its default.
pub(crate) fn agent_config(env: &NodeApiServer, name: &str, kind: NodeAttestorKind) -> AgentConfig {
    AgentConfig {
        trust_domain: TD.parse().expect("trust domain"),
        server_address: Some(env.address.parse().expect("server address")),
        server_addresses: None,
        trust_bundle_path: env.bundle.clone(),
        data_dir: env.dir.path().join(name),
        node_attestor: kind,
        join_token: None,
        aws_iid: Default::default(),
        gcp_iit: Default::default(),
        azure_msi: Default::default(),
        azure_imds: Default::default(),
        k8s_psat: None,
        tpm: Default::default(),
        log_level: "info".into(),
        workload_api: Default::default(),
        workload_attestors: Default::default(),
        sds: Default::default(),
        metrics: Default::default(),
    }
}

/// A fresh join token of `env`'s server (10 minutes).
pub(crate) fn join_token(env: &NodeApiServer) -> String {
    let out = env
        .server
        .cli_ok(&["token", "generate", "--ttl", "600", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("token JSON");
    v["token"].as_str().expect("token").to_owned()
}

/// A join_token agent config for `token`, its data under `name`.
pub(crate) fn agent(env: &NodeApiServer, token: &str, name: &str) -> AgentConfig {
    AgentConfig {
        join_token: Some(token.to_owned()),
        ..agent_config(env, name, NodeAttestorKind::JoinToken)
    }
}

/// An attested join_token agent and an agent-API client with its SVID.
pub(crate) async fn attested(
    cfg: &AgentConfig,
) -> (
    ironroot_agent::sync::AgentSvid,
    ironroot_api::agent::agent_client::AgentClient<tonic::transport::Channel>,
) {
    let svid = ironroot_agent::sync::AgentSvid::from(
        ironroot_agent::attest::attest(cfg)
            .await
            .expect("attestation"),
    );
    let ch = ironroot_agent::sync::agent_channel(cfg, &svid)
        .await
        .expect("mTLS channel");
    (
        svid,
        ironroot_api::agent::agent_client::AgentClient::new(ch),
    )
}
