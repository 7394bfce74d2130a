//! TPM attestation figures against swtpm (`make bench`; docs/benchmarks.md):
//! 1. end-to-end latency of `tpm_ek` attestation with the TPM-resident agent
//!    key (agent -> server over TLS, CSR signed in the TPM, credential
//!    activation, quote, certify of the agent key, event log, policy, agent
//!    SVID), p50 / p95, the key loaded once as a running agent does; and an
//!    agent's first attestation after a start (the key loaded from data_dir);
//! 2. server-side verification CPU time per attestation (begin + finish of the
//!    attestor, in process, thread CPU time; TPM work not counted).
//!
//! Needs the release server binary: `cargo build --release -p ironroot-server`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ironroot_agent::agent_key::TpmAgentKey;
use ironroot_agent::attest::{attest, attest_with, Hooks, KeySource};
use ironroot_agent::config::{AgentConfig, EkType, NodeAttestorKind, TpmConfig};
use ironroot_agent::shared_tpm::SharedTpm;
use ironroot_agent::simulate::replay_into;
use ironroot_api::node as pb;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_server::node::nonce::NonceRegistry;
use ironroot_server::node::tpm::anchors;
use ironroot_server::node::tpm::policies::PolicySet;
use ironroot_server::node::tpm::{TpmAttestor, TpmKind, TpmShared};
use ironroot_server::node::{Begun, Evidence, NodeAttestor};
use ironroot_testkit::server::TD;
use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};
use ironroot_tpm::device::EkAlgorithm;
use ironroot_tpm::verify::HashAlg;
use prost::Message;

mod support;
use support::percentile;

const E2E_RUNS: usize = 60;
const START_RUNS: usize = 20;
const CPU_RUNS: usize = 60;

fn thread_cpu() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .expect("thread CPU clock")
}

fn main() {
    let state = SwtpmState::shared("bench", &SwtpmOptions::default());
    let tpm = state.spawn();
    // --- 1. end to end, against the real server binary
    let mut env = support::start(state, "bench_attestation");
    let log = env.log.clone();
    replay_into(&tpm.tcti(), &log).expect("simulated boot");
    let (ek_ca, pdir) = (env.ek_ca.clone(), env.policies.clone());
    let log_path = env.dir.path().join("eventlog.bin");
    std::fs::write(&log_path, &log).expect("log");
    let cfg = AgentConfig {
        trust_domain: TD.parse().expect("trust domain"),
        server_address: Some(env.address.parse().expect("server address")),
        server_addresses: None,
        trust_bundle_path: env.bundle.clone(),
        data_dir: env.dir.path().join("agent"),
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
            ek: EkType::Rsa,
            ..TpmConfig::default()
        },
        log_level: "warn".into(),
        workload_api: Default::default(),
        workload_attestors: Default::default(),
        sds: Default::default(),
        metrics: Default::default(),
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(attest(&cfg))
        .expect("warm-up attestation (persists the AK, makes the agent key)");
    let keys = KeySource::for_config(&cfg).expect("the TPM-resident agent key");
    assert!(
        matches!(keys, KeySource::Tpm(_)),
        "the bench measures the TPM key"
    );
    let mut lat = Vec::with_capacity(E2E_RUNS);
    for _ in 0..E2E_RUNS {
        let t = Instant::now();
        let o = rt
            .block_on(attest_with(&cfg, &keys, Hooks::default()))
            .expect("attestation");
        lat.push(t.elapsed());
        assert!(o.selectors.iter().any(|s| s == "tpm:agent_key:tpm"));
    }
    lat.sort();
    println!(
        "tpm_ek attestation end to end, TPM-resident agent key (swtpm, RSA EK, persisted ECC AK, {E2E_RUNS} runs): p50 {:.1} ms, p95 {:.1} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.95).as_secs_f64() * 1e3
    );
    let mut first = Vec::with_capacity(START_RUNS);
    for _ in 0..START_RUNS {
        let t = Instant::now();
        rt.block_on(attest(&cfg)).expect("attestation");
        first.push(t.elapsed());
    }
    first.sort();
    println!(
        "first attestation after an agent start (agent key loaded from data_dir under the SRK, {START_RUNS} runs): p50 {:.1} ms, p95 {:.1} ms",
        percentile(&first, 0.5).as_secs_f64() * 1e3,
        percentile(&first, 0.95).as_secs_f64() * 1e3
    );
    env.server.stop();

    // --- 2. server-side verification CPU, in process
    let pset = PolicySet::load(&pdir, &[], Some("bench".into())).expect("policies");
    let attestor = TpmAttestor {
        kind: TpmKind::Ek,
        shared: Arc::new(TpmShared {
            trust_domain: TrustDomain::parse(TD).expect("td"),
            ek_anchors: anchors::from_pem_file(&ek_ca).expect("anchors"),
            ek_hash_allow_list: vec![],
            devid_anchors: Default::default(),
            policies: pset,
            nonces: Arc::new(NonceRegistry::default()),
            challenge_ttl: Duration::from_secs(30),
            devid_ca: None,
            require_tpm_agent_key: true,
        }),
    };
    let shared = SharedTpm::new(&tpm.tcti());
    let _lease = shared.lease();
    let key =
        TpmAgentKey::load_or_create(&shared, &env.dir.path().join("agent-cpu")).expect("agent key");
    let (ek, ak) = shared
        .with(|t| {
            let ek = t.endorsement_key(EkAlgorithm::Rsa2048)?;
            let ak = t.attestation_key(&ek, Some(0x8101_0010))?;
            Ok::<_, ironroot_tpm::device::DeviceError>((ek, ak))
        })
        .expect("ek, ak");
    let csr = key.csr().expect("csr");
    let payload = pb::TpmAttestation {
        evidence: Some(pb::TpmEvidence {
            ek_certificate: ek.certificate.clone().unwrap_or_default(),
            ek_public: ek.public.clone(),
            ak_public: ak.public.clone(),
            agent_key_public: key.public().to_vec(),
            ..Default::default()
        }),
        devid_enrollment: None,
    }
    .encode_to_vec();
    let evidence = Evidence {
        payload: &payload,
        csr: &csr,
    };
    let mut cpu = Vec::with_capacity(CPU_RUNS);
    for _ in 0..CPU_RUNS {
        let c0 = thread_cpu();
        let Ok(Begun::Challenge(ch, pending)) = attestor.begin(&evidence) else {
            panic!("begin failed");
        };
        let ch = pb::TpmChallenge::decode(ch.as_slice()).expect("a TPM challenge");
        let c_begin = thread_cpu() - c0;
        let resp = shared
            .with(|t| {
                let secret =
                    t.activate_credential(&ak, &ek, &ch.credential_blob, &ch.encrypted_secret)?;
                let q = t.quote(
                    &ak,
                    &ch.quote_nonce,
                    &[(HashAlg::Sha256, ch.pcr_selection[0].pcrs.clone())],
                )?;
                let (attest, sig) = key.run(t, |t, k| t.certify(k, &ak, &ch.agent_key_nonce))?;
                Ok::<_, ironroot_tpm::device::DeviceError>(pb::TpmChallengeResponse {
                    activated_secret: secret,
                    quote_attest: q.attest,
                    quote_signature: q.signature,
                    pcr_values: q
                        .pcrs
                        .into_iter()
                        .map(|p| pb::PcrValue {
                            bank: pb::HashAlgorithm::Sha256.into(),
                            index: p.index,
                            digest: p.digest,
                        })
                        .collect(),
                    event_log: log.clone(),
                    devid_signature: vec![],
                    agent_key_certify_attest: attest,
                    agent_key_certify_signature: sig,
                })
            })
            .expect("answer");
        let c1 = thread_cpu();
        pending.finish(&resp.encode_to_vec()).expect("finish");
        cpu.push(c_begin + (thread_cpu() - c1));
    }
    cpu.sort();
    println!(
        "server-side verification CPU per tpm_ek attestation with the agent key certify (begin + finish, {CPU_RUNS} runs): p50 {:.2} ms, p95 {:.2} ms",
        percentile(&cpu, 0.5).as_secs_f64() * 1e3,
        percentile(&cpu, 0.95).as_secs_f64() * 1e3
    );
}
