//! TPM node attestation end to end: the real server (SoftHSM CA), the agent
//! library against its own swtpm per test, boots simulated by an event log
//! and matching PCR extensions. Every rejection is checked for its reason.

use crate::common::*;
use ironroot_testkit::svid::{now, webpki_verify};
use ironroot_tpm::verify::TpmPublic;
use sha2::{Digest, Sha256};

fn ek_hash(cfg: &ironroot_agent::config::AgentConfig) -> String {
    let mut t = ironroot_tpm::device::Tpm::open(&cfg.tpm.tcti).unwrap();
    let alg = cfg.tpm.ek.algorithm();
    let ek = t.endorsement_key(alg).unwrap();
    let spki = TpmPublic::from_tpm2b(&ek.public)
        .unwrap()
        .spki_der()
        .unwrap();
    hex::encode(Sha256::digest(spki))
}

fn happy_path(ek: &str) {
    let env = good_env(&format!("attest_happy_{ek}"));
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    let cfg = env.agent(&tpm, &log, ek);
    let hash = ek_hash(&cfg);
    let out = attest(&cfg).expect("attestation passes");
    assert_eq!(
        out.spiffe_id,
        format!("spiffe://example.org/spire/agent/tpm_ek/{hash}")
    );
    assert_eq!(out.boot_policy, "good");
    for s in [
        format!("tpm:ek_hash:{hash}"),
        "tpm:secure_boot:disabled".into(),
        "tpm:boot_policy:good".into(),
    ] {
        assert!(
            out.selectors.contains(&s),
            "{s} missing from {:?}",
            out.selectors
        );
    }
    // The agent SVID verifies to the bundle and names the agent.
    ironroot_testkit::svid::assert_svid_leaf(&out.svid_chain[0], &out.spiffe_id);
    webpki_verify(&out.svid_chain, &out.root_cas, now()).expect("agent SVID verifies");
    // The server recorded the node.
    let agents = env.server.cli_ok(&["agent", "list", "--output", "json"]);
    assert!(agents.contains(&out.spiffe_id), "{agents}");
    // A second attestation (a renewal) passes with a fresh challenge.
    attest(&cfg).expect("re-attestation passes");
}

#[test]
fn tpm_ek_rsa_happy_path() {
    happy_path("rsa");
}

#[test]
fn tpm_ek_ecc_p384_happy_path() {
    happy_path("ecc-p384");
}

#[test]
fn ek_certificate_from_another_ca_is_rejected() {
    // The server trusts another manufacturer's CA only.
    let ca = other_tpm_state().ek_ca_bundle();
    let env = start_server(
        "attest_ek_other_ca",
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"good\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
    );
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    let cfg = env.agent(&tpm, &log, "rsa");
    assert_rejected(
        attest(&cfg),
        "EK certificate",
        &[
            "does not chain to the configured CA bundle",
            "not on the allow-list",
        ],
    );
}

#[test]
fn ek_allow_list_admits_and_refuses() {
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    // Without a CA bundle: on the allow-list passes...
    let probe = good_env("attest_allow_probe");
    let hash = ek_hash(&probe.agent(&tpm, &log, "rsa"));
    drop(probe);
    let env = start_server(
        "attest_allow_list",
        &format!("ek_hash_allow_list = [\"{hash}\"]\ndefault_policy = \"good\""),
        &[("good", policy_toml("good", &Boot::default()))],
    );
    attest(&env.agent(&tpm, &log, "rsa")).expect("allow-listed EK passes");
    // ...off the allow-list is refused.
    let env = start_server(
        "attest_off_allow_list",
        &format!(
            "ek_hash_allow_list = [\"{}\"]\ndefault_policy = \"good\"",
            "00".repeat(32)
        ),
        &[("good", policy_toml("good", &Boot::default()))],
    );
    assert_rejected(
        attest(&env.agent(&tpm, &log, "rsa")),
        "EK certificate",
        &[&hash, "not on the allow-list"],
    );
}

#[test]
fn pcrs_extended_after_boot_break_the_replay() {
    let env = good_env("attest_extended_after");
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    // Something measured into PCR4 that the log does not show.
    let mut t = ironroot_tpm::device::Tpm::open(&tpm.tcti()).unwrap();
    t.pcr_extend(4, b"unlogged code").unwrap();
    drop(t);
    assert_rejected(
        attest(&env.agent(&tpm, &log, "rsa")),
        "event log replay",
        &["PCR 4 (sha256)"],
    );
}

/// Event indices in `boot_log` (0 is the Spec ID event).
const KERNEL_EVENT: usize = 4;

fn tampered(log: &[u8], f: impl Fn(&mut Vec<ironroot_tpm::verify::eventlog::Event>)) -> Vec<u8> {
    use ironroot_tpm::verify::eventlog::{EventLog, HashAlg, LogBuilder};
    let parsed = EventLog::parse(log).unwrap();
    let mut events: Vec<_> = parsed.events().iter().skip(1).cloned().collect();
    f(&mut events);
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    for e in &events {
        let d: Vec<&[u8]> = e.digests.iter().map(|d| d.as_bytes()).collect();
        b.raw_event(e.pcr, e.event_type, &d, &e.data);
    }
    b.build()
}

#[test]
fn a_tampered_log_is_rejected() {
    let env = good_env("attest_tampered_log");
    let log = boot_log(&Boot::default());
    let variants: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "flipped digest",
            tampered(&log, |ev| {
                let e = &mut ev[KERNEL_EVENT - 1];
                let mut d = e.digests[0].as_bytes().to_vec();
                d[0] ^= 1;
                e.digests[0] = ironroot_tpm::verify::eventlog::Digest::new(
                    ironroot_tpm::verify::eventlog::HashAlg::Sha256,
                    &d,
                )
                .unwrap();
            }),
            "PCR 4 (sha256)",
        ),
        (
            "dropped event",
            tampered(&log, |ev| {
                ev.remove(KERNEL_EVENT - 1);
            }),
            "PCR 4 (sha256)",
        ),
        (
            "reordered events",
            tampered(&log, |ev| {
                // two PCR9 events swapped: same digests, other order
                let i = ev.iter().position(|e| e.pcr == 9).unwrap();
                ev.swap(i, i + 1);
            }),
            "PCR 9 (sha256)",
        ),
    ];
    for (what, bad_log, pcr) in variants {
        let tpm = tpm_state().spawn();
        extend_like(&tpm, &log); // the TPM saw the real boot
        let e = assert_rejected(
            attest(&env.agent(&tpm, &bad_log, "rsa")),
            "event log replay",
            &[pcr],
        );
        eprintln!("{what}: {e}");
    }
}

#[test]
fn a_boot_the_policy_does_not_allow_is_rejected() {
    let env = good_env("attest_policy_violation");
    // Another kernel command line, measured consistently: only the policy can catch it.
    let evil = Boot {
        cmdline: "console=ttyS0 root=/dev/vda1 ro init=/bin/sh",
        ..Boot::default()
    };
    let tpm = tpm_state().spawn();
    let log = boot_log(&evil);
    extend_like(&tpm, &log);
    assert_rejected(
        attest(&env.agent(&tpm, &log, "rsa")),
        "measured-boot policy",
        &["policy 'good' failed", "PCR9"],
    );
}

#[test]
fn secure_boot_on_without_authority_or_kernel_is_rejected() {
    let sb = Boot {
        secure_boot: true,
        no_kernel_event: true,
        ..Boot::default()
    };
    let policy = "name = \"sb\"\nbank = \"sha256\"\nrequire_secure_boot = true\n".to_string();
    let ca = tpm_state().ek_ca_bundle();
    let env = start_server(
        "attest_sb_no_authority",
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"sb\"",
            ca.display()
        ),
        &[("sb", policy)],
    );
    let tpm = tpm_state().spawn();
    let log = boot_log(&sb);
    extend_like(&tpm, &log);
    let e = assert_rejected(
        attest(&env.agent(&tpm, &log, "rsa")),
        "measured-boot policy",
        &["policy 'sb' failed"],
    );
    assert!(e.contains("PCR7") || e.contains("authority"), "{e}");
    assert!(e.contains("PCR4"), "{e}");
}

#[test]
fn an_unknown_policy_name_is_rejected() {
    let ca = tpm_state().ek_ca_bundle();
    let env = start_server(
        "attest_unknown_policy",
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"nope\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
    );
    let tpm = tpm_state().spawn();
    let log = boot_log(&Boot::default());
    extend_like(&tpm, &log);
    assert_rejected(
        attest(&env.agent(&tpm, &log, "rsa")),
        "measured-boot policy",
        &["'nope', which is not loaded", "good"],
    );
}
