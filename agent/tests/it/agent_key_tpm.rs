//! The agent SVID key in the TPM, end to end against the real server and a swtpm per test:
//! the agent makes a restricted signing key in the TPM, the AK certifies it over the
//! server's nonce, the server signs the agent SVID only for that key, and the agent's mTLS
//! signs with it in the TPM. Every way of presenting another key is rejected by name.

use crate::common::*;
use der::{Decode, Encode};
use ironroot_agent::agent_key::{AgentKey, PRIVATE_FILE, PUBLIC_FILE};
use ironroot_agent::attest::{AttestOutcome, Hooks, KeySource};
use ironroot_agent::config::{AgentConfig, AgentKeyStorage};
use ironroot_api::node as pb;
use ironroot_testkit::swtpm::Swtpm;
use ironroot_tpm::device::{devid_csr, Tpm};
use ironroot_tpm::verify::agent_key::AGENT_KEY_TEMPLATE_ATTRIBUTES;
use ironroot_tpm::verify::{HashAlg, KeyScheme, PublicKey, PublicParts, TpmPublic};

fn leaf_spki(o: &AttestOutcome) -> Vec<u8> {
    let leaf = x509_cert::Certificate::from_der(&o.svid_chain[0]).expect("leaf");
    leaf.tbs_certificate
        .subject_public_key_info
        .to_der()
        .expect("spki")
}

/// An entry sync over mTLS with the agent SVID (its handshake signed by the SVID's key).
fn sync_over_mtls(cfg: &AgentConfig, o: &AttestOutcome) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let ch = ironroot_agent::sync::agent_channel(cfg, &agent_svid(o)).await?;
            let mut c = ironroot_api::agent::agent_client::AgentClient::new(ch);
            let cache = ironroot_agent::cache::Cache::new("example.org");
            ironroot_agent::sync::sync_once(&mut c, &cache).await?;
            Ok(())
        })
}

fn with_params(
    cfg: &AgentConfig,
    f: &mut (dyn FnMut(&mut pb::AttestParams) + Send),
) -> anyhow::Result<AttestOutcome> {
    attest_hooked(
        cfg,
        Hooks {
            params: Some(f),
            ..Hooks::default()
        },
    )
}

/// A software key's CSR and its public point.
fn software_key() -> (Vec<u8>, Vec<u8>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let csr = rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .der()
        .to_vec();
    (csr, key.public_key_raw().to_vec())
}

#[test]
fn a_tpm_key_agent_gets_an_svid_for_that_key_and_its_mtls_signs_in_the_tpm() {
    let env = good_env("agent_key_tpm_happy");
    let (_tpm, cfg) = booted(&env);
    assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Tpm, "the default");
    let o = attest(&cfg).expect("attestation with the TPM key passes");
    assert!(
        o.selectors.contains(&"tpm:agent_key:tpm".to_string()),
        "{:?}",
        o.selectors
    );
    assert_eq!(o.key.kind(), "tpm");
    assert!(o.key.pkcs8().is_none(), "no private key outside the TPM");

    // The SVID carries exactly the key whose blobs the agent keeps, a restricted
    // fixedTPM signing key.
    let public = std::fs::read(cfg.data_dir.join(PUBLIC_FILE)).expect("public blob");
    assert!(cfg.data_dir.join(PRIVATE_FILE).exists());
    let tpm_key = TpmPublic::from_tpm2b(&public).expect("public area");
    tpm_key
        .check_spki(&leaf_spki(&o))
        .expect("SVID key = TPM key");
    let a = tpm_key.object_attributes;
    assert!(a.restricted() && a.fixed_tpm() && a.fixed_parent() && a.sensitive_data_origin());

    // mTLS to the server: the handshake is signed by the TPM (there is no other copy).
    sync_over_mtls(&cfg, &o).expect("entry sync over mTLS with the TPM key");

    // A re-attestation (renewal) and an agent restart (a new key source loads the blobs)
    // keep the same key.
    let o2 = attest(&cfg).expect("renewal");
    assert_eq!(leaf_spki(&o2), leaf_spki(&o));
    assert_eq!(
        std::fs::read(cfg.data_dir.join(PUBLIC_FILE)).unwrap(),
        public,
        "the blobs were not replaced"
    );
    sync_over_mtls(&cfg, &o2).expect("sync with the renewed SVID");

    // An SVID whose key is not the identity's key cannot be used for mTLS at all.
    let (software, _) = AgentKey::software().unwrap();
    let mut mixed = o2.clone();
    mixed.key = software;
    let e = sync_over_mtls(&cfg, &mixed).unwrap_err();
    assert!(
        format!("{e:#}").contains("cannot be used as a TLS client certificate"),
        "{e:#}"
    );
}

#[test]
fn a_software_key_presented_as_tpm_resident_is_rejected() {
    let env = good_env("agent_key_software_as_tpm");
    let (_tpm, cfg) = booted(&env);
    // The TPM key's public area with a CSR for a software key.
    let (csr, point) = software_key();
    let e = with_params(&cfg, &mut |p| p.csr = csr.clone());
    assert_rejected(
        e,
        "agent key",
        &[
            "the CSR's key is not the TPM-resident key presented",
            "a software key cannot be presented as TPM-resident",
        ],
    );

    // The software key wrapped in a public area with every attribute the server wants:
    // the shape passes, but the AK certifies the key the TPM holds, not this one.
    let forged = TpmPublic::from_parts(PublicParts {
        name_alg: HashAlg::Sha256,
        object_attributes: AGENT_KEY_TEMPLATE_ATTRIBUTES,
        auth_policy: Vec::new(),
        symmetric: None,
        scheme: Some(KeyScheme::Ecdsa(HashAlg::Sha256)),
        kdf: None,
        key: PublicKey::Ecc {
            curve: ironroot_tpm::verify::EccCurve::NistP256,
            x: point[1..33].to_vec(),
            y: point[33..].to_vec(),
        },
    })
    .unwrap();
    let e = attest_hooked(
        &cfg,
        Hooks {
            params: Some(&mut |p: &mut pb::AttestParams| p.csr = csr.clone()),
            tpm_evidence: Some(&mut |t: &mut pb::TpmAttestation| {
                if let Some(t) = t.evidence.as_mut() {
                    t.agent_key_public = forged.to_tpm2b();
                }
            }),
            answer: None,
            challenge_response: None,
        },
    );
    assert_rejected(
        e,
        "agent key",
        &[
            "the AK certified another key",
            "the presented key is not in this TPM",
        ],
    );
}

#[test]
fn a_certify_of_another_key_over_another_nonce_or_replayed_is_rejected() {
    let env = good_env("agent_key_bad_certify");
    let (tpm, cfg) = booted(&env);
    // Another key of this very TPM (the DevID): certified by the same AK, but not the key
    // presented.
    let devid = {
        let mut t = Tpm::open(&tpm.tcti()).unwrap();
        t.devid_key(0x8101_0020).unwrap()
    };
    assert_rejected(
        with_answer(&cfg, &mut |s, ch, r| {
            let (a, sig) = s
                .tpm
                .with(|t| t.certify(&devid, &s.ak, &ch.agent_key_nonce))
                .unwrap();
            r.agent_key_certify_attest = a;
            r.agent_key_certify_signature = sig;
        }),
        "agent key",
        &["the AK certified another key"],
    );
    // The right key over another nonce.
    assert_rejected(
        with_answer(&cfg, &mut |s, _, r| {
            let key = s.agent_key.clone().unwrap();
            let (a, sig) = s
                .tpm
                .with(|t| key.run(t, |t, k| t.certify(k, &s.ak, &[9u8; 32])))
                .unwrap();
            r.agent_key_certify_attest = a;
            r.agent_key_certify_signature = sig;
        }),
        "agent key",
        &["another nonce than this attestation's"],
    );
    // A genuine certify from an earlier attestation, replayed.
    let mut saved = None;
    with_answer(&cfg, &mut |_, _, r| {
        saved = Some((
            r.agent_key_certify_attest.clone(),
            r.agent_key_certify_signature.clone(),
        ))
    })
    .expect("an honest attestation passes");
    let (old_attest, old_sig) = saved.unwrap();
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| {
            r.agent_key_certify_attest = old_attest.clone();
            r.agent_key_certify_signature = old_sig.clone();
        }),
        "agent key",
        &["already used", "replayed certify"],
    );
    // Altered after the TPM signed it; or left out.
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| {
            let n = r.agent_key_certify_attest.len();
            r.agent_key_certify_attest[n - 3] ^= 1;
        }),
        "agent key",
        &["not signed by the attested AK"],
    );
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| {
            r.agent_key_certify_attest.clear();
            r.agent_key_certify_signature.clear();
        }),
        "agent key",
        &["sent no TPM2_Certify"],
    );
}

#[test]
fn a_key_without_the_required_attributes_is_rejected() {
    let env = good_env("agent_key_attributes");
    let (tpm, cfg) = booted(&env);
    // The DevID: in this TPM and certified by this AK, but not restricted. Presented with
    // a CSR it signed, and certified over the right nonce: refused for its attributes.
    let (devid, csr) = {
        let mut t = Tpm::open(&tpm.tcti()).unwrap();
        let key = t.devid_key(0x8101_0020).unwrap();
        let csr = devid_csr(&mut t, &key, "not-an-agent-key").unwrap();
        (key, csr)
    };
    let e = attest_hooked(
        &cfg,
        Hooks {
            params: Some(&mut |p: &mut pb::AttestParams| p.csr = csr.clone()),
            tpm_evidence: Some(&mut |t: &mut pb::TpmAttestation| {
                if let Some(t) = t.evidence.as_mut() {
                    t.agent_key_public = devid.public.clone();
                }
            }),
            answer: Some(&mut |s, ch, r| {
                let (a, sig) = s
                    .tpm
                    .with(|t| t.certify(&devid, &s.ak, &ch.agent_key_nonce))
                    .unwrap();
                r.agent_key_certify_attest = a;
                r.agent_key_certify_signature = sig;
            }),
            challenge_response: None,
        },
    );
    assert_rejected(e, "agent key", &["lack restricted"]);
}

#[test]
fn the_software_key_option_works_where_the_server_allows_it() {
    // The default server requires TPM-resident keys: a software key is refused by name.
    let strict = good_env("agent_key_software_refused");
    let (_tpm, mut cfg) = booted(&strict);
    cfg.tpm.agent_key = Some(AgentKeyStorage::Software);
    assert!(matches!(
        KeySource::for_config(&cfg).unwrap(),
        KeySource::Software
    ));
    assert_rejected(
        attest(&cfg),
        "agent key",
        &["only for TPM-resident keys", "require_tpm_agent_key"],
    );

    let ca = tpm_state().ek_ca_bundle();
    let lenient = start_server(
        "agent_key_software_allowed",
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"good\"\nrequire_tpm_agent_key = false",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
    );
    let (_tpm2, mut cfg) = booted(&lenient);
    cfg.tpm.agent_key = Some(AgentKeyStorage::Software);
    let o = attest(&cfg).expect("a software key is admitted here");
    assert!(
        o.selectors.contains(&"tpm:agent_key:software".to_string()),
        "{:?}",
        o.selectors
    );
    assert_eq!(o.key.kind(), "software");
    assert!(!cfg.data_dir.join(PUBLIC_FILE).exists(), "no TPM key made");
    sync_over_mtls(&cfg, &o).expect("mTLS with the software key");
    // The same server still certifies TPM keys.
    cfg.tpm.agent_key = None;
    let o = attest(&cfg).expect("TPM key");
    assert!(o.selectors.contains(&"tpm:agent_key:tpm".to_string()));
}

/// A TPM reset (power cycle): swtpm's CMD_INIT, then TPM2_Startup(CLEAR).
fn reset_tpm(tpm: &Swtpm) {
    let ctrl = format!("127.0.0.1:{}", tpm.port() + 1);
    let out = std::process::Command::new("swtpm_ioctl")
        .args(["--tcp", &ctrl, "-i"])
        .output()
        .expect("swtpm_ioctl");
    assert!(out.status.success(), "{out:?}");
    let out = std::process::Command::new("tpm2_startup")
        .args(["-c", "-T", &tpm.tcti()])
        .output()
        .expect("tpm2_startup");
    assert!(
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("0x100"),
        "{out:?}"
    );
}

#[test]
fn after_a_tpm_reset_the_key_is_loaded_again_from_its_blobs() {
    use ironroot_agent::agent_key::TpmAgentKey;
    use ironroot_agent::shared_tpm::SharedTpm;
    let tpm = tpm_state().spawn();
    let dir = tempfile::tempdir().unwrap();
    let shared = SharedTpm::new(&tpm.tcti());
    let key = TpmAgentKey::load_or_create(&shared, dir.path()).expect("agent key");
    let point = TpmPublic::from_tpm2b(key.public())
        .unwrap()
        .key
        .ecc_point_uncompressed()
        .unwrap();
    let verify = |msg: &[u8], sig: &[u8]| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &point)
            .verify(msg, sig)
    };
    verify(b"before", &key.sign_der(b"before").unwrap()).expect("signed in the TPM");
    // A saved context of the key taken now is what the reset invalidates.
    let blobs = ironroot_tpm::device::KeyBlobs {
        public: std::fs::read(dir.path().join(PUBLIC_FILE)).unwrap(),
        private: std::fs::read(dir.path().join(PRIVATE_FILE)).unwrap(),
    };
    let stale = shared.with(|t| t.load_agent_key(&blobs)).unwrap();
    reset_tpm(&tpm);
    let e = shared
        .with(|t| t.sign_message(&stale, b"after"))
        .unwrap_err();
    assert_eq!(e.tpm_operation(), Some("ContextLoad"), "{e}");
    // The agent key recovers by itself.
    verify(b"after", &key.sign_der(b"after").unwrap()).expect("signed after the reset");
}
