//! Forged and replayed evidence, DevID attestation and join tokens, against
//! the real server and a swtpm per test. Hooks change what the agent sends.

use crate::common::*;
use ironroot_agent::config::NodeAttestorKind;
use ironroot_api::node as pb;
use ironroot_tpm::device::Tpm;
use ironroot_tpm::verify::HashAlg;

#[test]
fn a_replayed_quote_is_rejected() {
    let env = good_env("forged_replayed_quote");
    let (_tpm, cfg) = booted(&env);
    let mut saved: Option<pb::TpmChallengeResponse> = None;
    with_answer(&cfg, &mut |_, _, r| saved = Some(r.clone())).expect("first attestation passes");
    let old = saved.expect("answer captured");
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| {
            r.quote_attest = old.quote_attest.clone();
            r.quote_signature = old.quote_signature.clone();
            r.pcr_values = old.pcr_values.clone();
        }),
        "quote nonce",
        &["already used", "replayed"],
    );
}

#[test]
fn a_quote_over_another_nonce_is_rejected() {
    let env = good_env("forged_other_nonce");
    let (_tpm, cfg) = booted(&env);
    assert_rejected(
        with_answer(&cfg, &mut |s, ch, r| {
            let sel: Vec<(HashAlg, Vec<u32>)> =
                vec![(HashAlg::Sha256, ch.pcr_selection[0].pcrs.clone())];
            let q = s
                .tpm
                .with(|t| t.quote(&s.ak, &[7u8; 32], &sel))
                .expect("quote");
            r.quote_attest = q.attest;
            r.quote_signature = q.signature;
        }),
        "quote nonce",
        &["another nonce"],
    );
}

#[test]
fn forged_answers_are_rejected() {
    let env = good_env("forged_answers");
    let (_tpm, cfg) = booted(&env);
    // The secret of another TPM: the AK is not bound to this EK.
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| r.activated_secret = vec![0u8; 32]),
        "credential activation",
        &["not in the TPM that holds this EK"],
    );
    // A flipped byte in the signed attest.
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| {
            let n = r.quote_attest.len();
            r.quote_attest[n - 1] ^= 1;
        }),
        "quote signature",
        &["not signed by the attested AK"],
    );
    // PCR values that do not match the quote.
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| r.pcr_values[4].digest[0] ^= 1),
        "quote",
        &["pcrDigest"],
    );
    // A PCR value in no bank: UNSPECIFIED, or a number the wire enum does not define.
    for raw in [pb::HashAlgorithm::Unspecified as i32, 5] {
        assert_rejected(
            with_answer(&cfg, &mut |_, _, r| r.pcr_values[0].bank = raw),
            "PCR values",
            &["pcr_values.bank", "not a hash algorithm"],
        );
    }
    // A truncated event log.
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| {
            let n = r.event_log.len();
            r.event_log.truncate(n - 7);
        }),
        "event log",
        &[],
    );
    // An AK that is not a restricted key: swap in the EK's public area.
    let e = with_tpm_evidence(&cfg, &mut |p| {
        if let Some(t) = p.evidence.as_mut() {
            t.ak_public = t.ek_public.clone();
        }
    });
    assert_rejected(e, "AK attributes", &["restricted signing key"]);
    // Names and payloads the seam refuses: attest_seam.rs.
}

#[test]
fn join_tokens_work_once() {
    let env = good_env("join_token_once");
    let out = env
        .server
        .cli_ok(&["token", "generate", "--ttl", "60", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = v["token"].as_str().unwrap().to_string();
    let (_tpm, mut cfg) = booted(&env);
    cfg.node_attestor = NodeAttestorKind::JoinToken;
    cfg.join_token = Some(token);
    let o = attest(&cfg).expect("join token attestation");
    assert!(
        o.spiffe_id
            .starts_with("spiffe://example.org/spire/agent/join_token/"),
        "{}",
        o.spiffe_id
    );
    assert!(o.selectors.contains(&"join_token:attested".to_string()));
    assert_rejected(attest(&cfg), "join token", &["unknown or already used"]);
    cfg.join_token = Some("not-a-token".into());
    assert_rejected(attest(&cfg), "join token", &["unknown or already used"]);
}

/// A DevID CA (in the test) signs the CSR of the DevID key in `tpm`, with keyUsage
/// digitalSignature as the DevID profile wants.
fn issue_devid(
    ca: &(rcgen::Issuer<'static, rcgen::KeyPair>, String),
    tpm: &ironroot_testkit::swtpm::Swtpm,
    cn: &str,
    out: &std::path::Path,
) -> Vec<u8> {
    issue_devid_with(
        ca,
        tpm,
        cn,
        out,
        &[rcgen::KeyUsagePurpose::DigitalSignature],
    )
}

fn issue_devid_with(
    ca: &(rcgen::Issuer<'static, rcgen::KeyPair>, String),
    tpm: &ironroot_testkit::swtpm::Swtpm,
    cn: &str,
    out: &std::path::Path,
    key_usages: &[rcgen::KeyUsagePurpose],
) -> Vec<u8> {
    let mut t = Tpm::open(&tpm.tcti()).unwrap();
    let key = t.devid_key(0x8101_0020).unwrap();
    let csr = ironroot_tpm::device::devid_csr(&mut t, &key, cn).unwrap();
    let csr_der = rustls_pki_types::CertificateSigningRequestDer::from(csr);
    let req = rcgen::CertificateSigningRequestParams::from_der(&csr_der).unwrap();
    let mut params = req.params;
    params.key_usages = key_usages.to_vec();
    params.not_before = time::OffsetDateTime::now_utc() - time::Duration::minutes(1);
    params.not_after = time::OffsetDateTime::now_utc() + time::Duration::days(1);
    let cert = params.signed_by(&req.public_key, &ca.0).unwrap();
    std::fs::write(out, cert.pem()).unwrap();
    key.public
}

fn devid_ca(cn: &str) -> (rcgen::Issuer<'static, rcgen::KeyPair>, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = p.self_signed(&key).unwrap();
    (rcgen::Issuer::new(p, key), cert.pem())
}

fn devid_env(test: &str, trusted_ca_pem: &str) -> Env {
    let ca = tpm_state().ek_ca_bundle();
    let d = std::env::temp_dir().join(format!("devid-ca-{}-{test}.pem", std::process::id()));
    std::fs::write(&d, trusted_ca_pem).unwrap();
    start_server(
        test,
        &format!(
            "ek_ca_bundle = \"{}\"\ndevid_ca_bundle = \"{}\"\ndefault_policy = \"good\"",
            ca.display(),
            d.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
    )
}

#[test]
fn tpm_devid_happy_path_and_rejections() {
    let ca = devid_ca("Fleet DevID CA");
    let env = devid_env("devid", &ca.1);
    let (tpm, mut cfg) = booted(&env);
    let cert_path = env.dir.path().join("devid.pem");
    issue_devid(&ca, &tpm, "gw-0042", &cert_path);
    cfg.node_attestor = NodeAttestorKind::TpmDevId;
    cfg.tpm.devid_certificate_path = Some(cert_path.clone());
    let o = attest(&cfg).expect("tpm_devid attestation passes");
    assert!(
        o.spiffe_id
            .starts_with("spiffe://example.org/spire/agent/tpm_devid/"),
        "{}",
        o.spiffe_id
    );
    assert!(
        o.selectors
            .contains(&"tpm:devid_subject_cn:gw-0042".to_string()),
        "{:?}",
        o.selectors
    );
    assert!(
        o.selectors
            .contains(&"tpm:devid_issuer_cn:Fleet DevID CA".to_string()),
        "{:?}",
        o.selectors
    );
    assert_eq!(o.boot_policy, "good");

    // A DevID from a CA the server does not trust.
    let rogue = devid_ca("Rogue CA");
    let rogue_path = env.dir.path().join("rogue.pem");
    issue_devid(&rogue, &tpm, "gw-0042", &rogue_path);
    let mut c2 = cfg.clone();
    c2.tpm.devid_certificate_path = Some(rogue_path);
    assert_rejected(attest(&c2), "DevID certificate", &["does not chain"]);

    // A DevID from the trusted CA whose keyUsage does not allow signing.
    let no_sign_path = env.dir.path().join("no-sign.pem");
    issue_devid_with(
        &ca,
        &tpm,
        "gw-0042",
        &no_sign_path,
        &[rcgen::KeyUsagePurpose::KeyEncipherment],
    );
    let mut c3 = cfg.clone();
    c3.tpm.devid_certificate_path = Some(no_sign_path);
    assert_rejected(
        attest(&c3),
        "DevID certificate",
        &["[leaf-key-usage]", "digitalSignature"],
    );

    // A genuine DevID (trusted CA) whose key lives in another TPM: the AK of this
    // TPM certifies this TPM's key, not that one.
    let other = tpm_state().spawn();
    let other_path = env.dir.path().join("other-devid.pem");
    let other_public = issue_devid(&ca, &other, "gw-0099", &other_path);
    let other_chain = std::fs::read_to_string(&other_path).unwrap();
    let other_der = pem::parse(other_chain).unwrap().into_contents();
    let e = with_tpm_evidence(&cfg, &mut |p| {
        if let Some(t) = p.evidence.as_mut() {
            t.devid_public = other_public.clone();
            t.devid_certificate_chain = vec![other_der.clone()];
        }
    });
    assert_rejected(e, "DevID certify", &["the DevID key is not in this TPM"]);

    // The DevID signature over the nonce made by another key.
    assert_rejected(
        with_answer(&cfg, &mut |_, _, r| r.devid_signature[3] ^= 1),
        "DevID signature",
        &["did not sign this challenge's nonce"],
    );
}

#[test]
fn ek_attestation_enrolls_an_ldevid_that_tpm_devid_accepts() {
    let ca = tpm_state().ek_ca_bundle();
    let env = start_server(
        "devid_enrollment",
        &format!(
            "ek_ca_bundle = \"{}\"\ndevid_issuer = true\ndefault_policy = \"good\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
    );
    let (_tpm, mut cfg) = booted(&env);
    cfg.tpm.enroll_devid = true;
    let o = attest(&cfg).expect("tpm_ek with enrollment passes");
    assert_eq!(o.devid_chain.len(), 2, "LDevID then the DevID CA");
    let ek_hash = o.spiffe_id.rsplit('/').next().unwrap().to_string();
    let path = env.dir.path().join("ldevid.pem");
    let pem: String = o
        .devid_chain
        .iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
        .collect();
    std::fs::write(&path, pem).unwrap();

    // The enrolled node now attests with tpm_devid, under the server's own DevID CA.
    cfg.tpm.enroll_devid = false;
    cfg.node_attestor = NodeAttestorKind::TpmDevId;
    cfg.tpm.devid_certificate_path = Some(path);
    let o = attest(&cfg).expect("tpm_devid with the enrolled LDevID passes");
    assert!(
        o.spiffe_id.contains("/spire/agent/tpm_devid/"),
        "{}",
        o.spiffe_id
    );
    assert!(
        o.selectors
            .contains(&format!("tpm:devid_subject_cn:{ek_hash}")),
        "{:?}",
        o.selectors
    );
    assert!(
        o.selectors
            .contains(&"tpm:devid_issuer_cn:ironroot DevID CA example.org".to_string()),
        "{:?}",
        o.selectors
    );

    // A server that does not issue LDevIDs refuses the request.
    let plain = good_env("devid_enrollment_refused");
    let (_t2, mut c2) = booted(&plain);
    c2.tpm.enroll_devid = true;
    assert_rejected(attest(&c2), "DevID enrollment", &["does not issue LDevIDs"]);
}

#[test]
fn a_banned_agent_cannot_attest_until_evicted() {
    let env = good_env("ban_and_evict");
    let (_tpm, cfg) = booted(&env);
    let o = attest(&cfg).expect("first attestation passes");
    env.server
        .cli_ok(&["agent", "ban", "--spiffe-id", &o.spiffe_id]);
    let listed = env.server.cli_ok(&["agent", "list", "--output", "json"]);
    assert!(listed.contains("\"banned\": true"), "{listed}");
    assert_rejected(attest(&cfg), "ban list", &["is banned"]);
    env.server
        .cli_ok(&["agent", "evict", "--spiffe-id", &o.spiffe_id]);
    attest(&cfg).expect("after eviction the node attests again");
}

#[test]
fn only_join_token_agents_renew_without_attesting() {
    let env = good_env("renew_agent_svid");
    let (_tpm, mut cfg) = booted(&env);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A TPM agent must re-attest with a fresh quote.
    let o = attest(&cfg).expect("tpm_ek attestation");
    let e = rt
        .block_on(ironroot_agent::sync::renew_agent_svid(
            &cfg,
            &agent_svid(&o),
        ))
        .unwrap_err();
    assert!(
        format!("{e:#}").contains("renews by attesting again"),
        "{e:#}"
    );

    // A join_token agent renews over mTLS; its old SVID is then refused.
    cfg.node_attestor = NodeAttestorKind::JoinToken;
    cfg.join_token = Some(env.server.join_token());
    let o = attest(&cfg).expect("join_token attestation");
    let old = agent_svid(&o);
    let renewed = rt
        .block_on(ironroot_agent::sync::renew_agent_svid(&cfg, &old))
        .expect("join_token renewal");
    assert_ne!(renewed.chain[0], old.chain[0]);
    let cache = ironroot_agent::cache::Cache::new("example.org");
    rt.block_on(async {
        let ch = ironroot_agent::sync::agent_channel(&cfg, &renewed)
            .await
            .unwrap();
        let mut c = ironroot_api::agent::agent_client::AgentClient::new(ch);
        ironroot_agent::sync::sync_once(&mut c, &cache)
            .await
            .expect("new SVID syncs");
        let ch = ironroot_agent::sync::agent_channel(&cfg, &old)
            .await
            .unwrap();
        let mut c = ironroot_api::agent::agent_client::AgentClient::new(ch);
        let e = ironroot_agent::sync::sync_once(&mut c, &cache)
            .await
            .unwrap_err();
        assert!(format!("{e:#}").contains("not its current one"), "{e:#}");
    });
}

#[test]
fn an_agent_cannot_obtain_another_agents_entries() {
    let env = good_env("entry_authorization");
    let (_tpm, cfg) = booted(&env);
    let o = attest(&cfg).expect("attestation");
    let mine = env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/mine",
        "--parent-id",
        &o.spiffe_id,
        "--selector",
        "unix:uid:0",
        "--output",
        "json",
    ]);
    let theirs = env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/theirs",
        "--parent-id",
        "spiffe://example.org/spire/agent/tpm_ek/someone-else",
        "--selector",
        "unix:uid:0",
        "--output",
        "json",
    ]);
    let id_of = |j: &str| {
        let v: serde_json::Value = serde_json::from_str(j).unwrap();
        v["entries"][0]["id"].as_str().unwrap().to_string()
    };
    let (mine, theirs) = (id_of(&mine), id_of(&theirs));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = ironroot_agent::sync::agent_channel(&cfg, &agent_svid(&o))
            .await
            .unwrap();
        let mut c = ironroot_api::agent::agent_client::AgentClient::new(ch);
        // Sync lists only this agent's entries.
        let synced = c
            .sync_entries(ironroot_api::agent::SyncEntriesRequest::default())
            .await
            .unwrap()
            .into_inner();
        let ids: Vec<&str> = synced.entries.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, vec![mine.as_str()]);
        // Asking to sign the other agent's entry directly is refused.
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .der()
            .to_vec();
        let r = c
            .batch_new_x509_svid(ironroot_api::agent::BatchNewX509SvidRequest {
                requests: vec![
                    ironroot_api::agent::X509SvidRequest {
                        entry_id: theirs.clone(),
                        csr: csr.clone(),
                    },
                    ironroot_api::agent::X509SvidRequest {
                        entry_id: mine.clone(),
                        csr,
                    },
                ],
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.results[0].svid_chain.is_empty());
        assert!(
            r.results[0].error.contains("is not authorized"),
            "{:?}",
            r.results[0]
        );
        assert!(
            !r.results[1].svid_chain.is_empty(),
            "{:?}",
            r.results[1].error
        );
        let e = c
            .new_jwt_svid(ironroot_api::agent::NewJwtSvidRequest {
                entry_id: theirs,
                audience: vec!["x".into()],
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
    });
    // Without an agent SVID the agent API is closed.
    let e = rt.block_on(async {
        let roots = ironroot_agent::connect::read_bundle(&cfg.trust_bundle_path).unwrap();
        let id =
            ironroot_api::spiffe_id::SpiffeId::parse("spiffe://example.org/spire/server").unwrap();
        let servers = ironroot_agent::servers::Servers::from_config(&cfg);
        let (ch, _) = ironroot_agent::connect::channel(&servers, roots, id)
            .await
            .unwrap();
        ironroot_api::agent::agent_client::AgentClient::new(ch)
            .sync_entries(ironroot_api::agent::SyncEntriesRequest::default())
            .await
            .unwrap_err()
    });
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
}

/// After the first sync an agent gets deltas: only the entries changed since
/// the revision it knows, plus the ids of everything it may serve. Merged,
/// the agent's cache always equals what a full sync gives, including when a
/// node alias starts to match and brings in an entry that did not change.
#[test]
fn syncs_after_the_first_are_deltas_that_converge() {
    use ironroot_api::agent::SyncEntriesRequest;
    let env = good_env("sync_delta");
    let (_tpm, cfg) = booted(&env);
    let o = attest(&cfg).expect("attestation");
    let create = |spiffe: &str, parent: &str, selector: &str| -> String {
        let out = env.server.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            spiffe,
            "--parent-id",
            parent,
            "--selector",
            selector,
            "--output",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["entries"][0]["id"].as_str().unwrap().to_string()
    };
    let a = create("spiffe://example.org/a", &o.spiffe_id, "unix:uid:1");
    let b = create("spiffe://example.org/b", &o.spiffe_id, "unix:uid:2");
    // Under an alias that does not match this node yet.
    let node_selector = o
        .selectors
        .iter()
        .find(|s| s.starts_with("tpm:"))
        .expect("a tpm selector")
        .clone();
    let under_alias = create(
        "spiffe://example.org/via-alias",
        "spiffe://example.org/rack/1",
        "unix:uid:3",
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = ironroot_agent::sync::agent_channel(&cfg, &agent_svid(&o))
            .await
            .unwrap();
        let mut c = ironroot_api::agent::agent_client::AgentClient::new(ch);
        let sync = |c: &mut ironroot_api::agent::agent_client::AgentClient<_>, known: u64| {
            let mut c = c.clone();
            async move {
                c.sync_entries(SyncEntriesRequest {
                    known_revision: known,
                })
                .await
                .unwrap()
                .into_inner()
            }
        };
        let ids = |r: &ironroot_api::agent::SyncEntriesResponse| {
            let mut v: Vec<String> = r.entries.iter().map(|e| e.id.clone()).collect();
            v.sort();
            v
        };
        // The cache follows the store within milliseconds; wait for our writes.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let full = loop {
            let r = sync(&mut c, 0).await;
            if r.entries.len() == 2 || std::time::Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(!full.delta);
        let mut want = vec![a.clone(), b.clone()];
        want.sort();
        assert_eq!(ids(&full), want);
        let r1 = full.revision;
        assert!(r1 > 0);

        // Nothing changed: an empty delta that still names every entry.
        let same = sync(&mut c, r1).await;
        assert!(same.delta);
        assert!(same.entries.is_empty(), "{:?}", same.entries);
        let mut named = same.entry_ids.clone();
        named.sort();
        assert_eq!(named, want);

        // Change one, delete one, add one here and one elsewhere.
        env.server.cli_ok(&[
            "entry",
            "update",
            "--entry-id",
            &a,
            "--spiffe-id",
            "spiffe://example.org/a",
            "--parent-id",
            &o.spiffe_id,
            "--selector",
            "unix:uid:11",
        ]);
        env.server.cli_ok(&["entry", "delete", "--entry-id", &b]);
        let c_id = create("spiffe://example.org/c", &o.spiffe_id, "unix:uid:4");
        create(
            "spiffe://example.org/elsewhere",
            "spiffe://example.org/spire/agent/tpm_ek/other",
            "unix:uid:5",
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let delta = loop {
            let r = sync(&mut c, r1).await;
            if r.entry_ids.contains(&c_id) || std::time::Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        assert!(delta.delta);
        let mut changed = vec![a.clone(), c_id.clone()];
        changed.sort();
        assert_eq!(ids(&delta), changed, "only what changed after r1");
        let mut named = delta.entry_ids.clone();
        named.sort();
        assert_eq!(
            named, changed,
            "b is gone, the other agent's entry never here"
        );
        assert!(delta.revision > r1);

        // The agent's own merge: a delta-following cache equals a full sync,
        // also when an alias starts to match and brings in an old entry.
        let cache = ironroot_agent::cache::Cache::new("example.org");
        let mut state = ironroot_agent::sync::SyncState::default();
        ironroot_agent::sync::sync_from(&mut c, &cache, &mut state)
            .await
            .unwrap();
        create(
            "spiffe://example.org/rack/1",
            "spiffe://example.org/spire/server",
            &node_selector,
        );
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            ironroot_agent::sync::sync_from(&mut c, &cache, &mut state)
                .await
                .unwrap();
            if cache.entry_ids().contains(&under_alias) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the alias's entry never reached the delta-following cache"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let mut cached: Vec<String> = cache.entry_ids();
        cached.sort();
        let mut want = ids(&sync(&mut c, 0).await);
        want.sort();
        assert_eq!(cached, want);
        assert!(want.contains(&under_alias));
    });
}

/// A ban ends the agent's change stream at once (PERMISSION_DENIED), rather
/// than leaving a banned agent connected until its next call.
#[test]
fn a_ban_ends_the_agents_change_stream() {
    let env = good_env("ban_ends_stream");
    let (_tpm, cfg) = booted(&env);
    let o = attest(&cfg).expect("attestation");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let ch = ironroot_agent::sync::agent_channel(&cfg, &agent_svid(&o))
            .await
            .unwrap();
        let mut c = ironroot_api::agent::agent_client::AgentClient::new(ch);
        let mut notices = c
            .watch_changes(ironroot_api::agent::WatchChangesRequest {})
            .await
            .unwrap()
            .into_inner();
        assert!(
            notices.message().await.unwrap().is_some(),
            "a first notice at once"
        );
        env.server
            .cli_ok(&["agent", "ban", "--spiffe-id", &o.spiffe_id]);
        let end = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            loop {
                match notices.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the stream ends within seconds of the ban");
        let e = end.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
        assert!(e.message().contains("banned"), "{e:?}");
    });
}
