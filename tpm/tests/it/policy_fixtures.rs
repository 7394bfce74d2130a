//! Measured-boot policy against real firmware logs: the QEMU/OVMF boot and every fixture.

use ironroot_tpm::verify::eventlog::uefi::{
    EFI_CERT_SHA256, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};
use ironroot_tpm::verify::eventlog::{EventLog, EventType, HashAlg, LogBuilder};
use ironroot_tpm::verify::policy::{
    evaluate, generate_policy, HexDigest, PcrValue, Policy, PolicyRule,
};

use ironroot_testkit::fixtures::{fixtures_or_skip, read};

fn ovmf_bytes() -> Option<(Vec<u8>, String)> {
    let dir = fixtures_or_skip()?.join("ovmf-qemu");
    let pcrs = String::from_utf8(read(&dir.join("pcrs.txt"))).unwrap();
    Some((read(&dir.join("eventlog.bin")), pcrs))
}

/// Flips the first byte of the sha256 digest of event `i` (one-bank crypto-agile log).
fn tamper(bytes: &mut [u8], log: &EventLog, i: usize) {
    let at = log.events()[i].offset + 4 + 4 + 4 + 2;
    bytes[at] ^= 0xFF;
}

#[test]
fn ovmf_passes_its_generated_policy_and_round_trips() {
    let Some((bytes, pcrs)) = ovmf_bytes() else {
        return;
    };
    let log = EventLog::parse(&bytes).unwrap();
    let mut policy = generate_policy("ovmf-direct-boot", &log);
    assert!(
        !policy.require_secure_boot,
        "SecureBoot is off in this boot"
    );
    assert_eq!(policy.boot_applications.as_ref().unwrap().len(), 1);
    assert_eq!(policy.kernel_cmdline_digests.as_ref().unwrap().len(), 1);
    assert_eq!(
        policy.kernel_cmdlines, None,
        "the EFI stub does not log the text"
    );
    assert_eq!(
        policy.initrds,
        Some(vec![HexDigest(
            hex::decode("a245490ce81998a117dd16f75cdfcbb8ce5e5c1ad459111153f61483821aebcd")
                .unwrap()
        )])
    );
    // Pin every firmware PCR to what the guest read (PCR10 is IMA, outside the log).
    for line in pcrs.lines() {
        let (i, v) = line
            .strip_prefix("sha256:")
            .unwrap()
            .split_once('=')
            .unwrap();
        let index: u32 = i.parse().unwrap();
        if index <= 9 {
            policy.pcrs.push(PcrValue {
                bank: HashAlg::Sha256,
                index,
                value: HexDigest(hex::decode(v.trim()).unwrap()),
            });
        }
    }
    assert_eq!(evaluate(&policy, &log), Ok(()));
    let text = policy.to_toml().unwrap();
    assert!(text.contains("name = \"ovmf-direct-boot\""), "{text}");
    let back = Policy::from_toml(&text).unwrap();
    assert_eq!(back, policy);
    assert_eq!(evaluate(&back, &log), Ok(()));
}

#[test]
fn ovmf_changed_kernel_cmdline_and_initrd_are_all_reported() {
    let Some((bytes, _)) = ovmf_bytes() else {
        return;
    };
    let good = EventLog::parse(&bytes).unwrap();
    let policy = generate_policy("ovmf", &good);
    let pinned: Vec<u32> = policy.pcrs.iter().map(|p| p.index).collect();
    assert_eq!(
        pinned,
        [4, 7, 9],
        "pins by default (direct kernel boot: no PCR8)"
    );
    let mut bad = bytes.clone();
    for i in [10, 21, 22] {
        tamper(&mut bad, &good, i);
    }
    let log = EventLog::parse(&bad).unwrap();
    let v = evaluate(&policy, &log).unwrap_err();
    let got: Vec<_> = v
        .iter()
        .map(|x| (x.rule, x.pcr, x.event_index, x.event_type))
        .collect();
    assert_eq!(
        got,
        [
            (
                PolicyRule::BootApplications,
                Some(4),
                Some(10),
                Some(EventType::EV_EFI_BOOT_SERVICES_APPLICATION)
            ),
            (
                PolicyRule::KernelCmdlines,
                Some(9),
                Some(21),
                Some(EventType::EV_EVENT_TAG)
            ),
            (
                PolicyRule::Initrds,
                Some(9),
                Some(22),
                Some(EventType::EV_EVENT_TAG)
            ),
            (PolicyRule::KernelCmdlines, Some(9), None, None),
            (PolicyRule::Initrds, Some(9), None, None),
            (PolicyRule::Pcrs, Some(4), None, None),
            (PolicyRule::Pcrs, Some(9), None, None),
        ]
    );
    for (x, i) in v.iter().zip([10, 21, 22]) {
        assert_eq!(x.digest.as_ref(), log.events()[i].digest(HashAlg::Sha256));
    }
    assert_eq!(v[5].digest.as_ref(), log.replay().get(HashAlg::Sha256, 4));
    let line = v[0].to_string();
    assert!(
        line.starts_with(
            "policy \"ovmf\" rule boot_applications: PCR4 event 10 EV_EFI_BOOT_SERVICES_APPLICATION sha256:"
        ),
        "{line}"
    );
}

#[test]
fn every_fixture_passes_its_own_generated_policy() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let mut checked = 0;
    for entry in std::fs::read_dir(dir.join("eventlogs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("bin") {
            continue;
        }
        let Ok(log) = EventLog::parse(&read(&path)) else {
            continue;
        };
        let policy = generate_policy("self", &log);
        let back = Policy::from_toml(&policy.to_toml().unwrap()).unwrap();
        assert_eq!(back, policy, "{}", path.display());
        if let Err(v) = evaluate(&back, &log) {
            panic!("{}: {v:#?}", path.display());
        }
        checked += 1;
    }
    assert_eq!(checked, 36);
}

/// Drops events from a crypto-agile log by byte ranges.
fn without(bytes: &[u8], log: &EventLog, drop: impl Fn(EventType, u32) -> bool) -> Vec<u8> {
    let ev = log.events();
    let mut out = Vec::new();
    for (i, e) in ev.iter().enumerate() {
        let end = ev.get(i + 1).map_or(bytes.len(), |n| n.offset);
        if i == 0 || !drop(e.event_type, e.pcr) {
            out.extend_from_slice(&bytes[e.offset..end]);
        }
    }
    out
}

#[test]
fn secure_boot_on_without_authority_or_kernel_fails_require_secure_boot() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let path = dir
        .join("eventlogs")
        .join("keylime-binary_bios_measurements-secureboot.bin");
    let bytes = read(&path);
    let log = EventLog::parse(&bytes).unwrap();
    let policy = generate_policy("sb", &log);
    assert!(policy.require_secure_boot);
    assert_eq!(evaluate(&policy, &log), Ok(()));

    // What the OVMF fallback loader leaves: SecureBoot=1, no authority, no PCR4 app.
    let stripped = without(&bytes, &log, |t, pcr| {
        t == EventType::EV_EFI_VARIABLE_AUTHORITY
            || (t == EventType::EV_EFI_BOOT_SERVICES_APPLICATION && pcr == 4)
    });
    let fallback = EventLog::parse(&stripped).unwrap();
    assert!(fallback.boot_state(HashAlg::Sha256).secure_boot_enabled());
    let mut only_sb = Policy::new("sb-only");
    only_sb.require_secure_boot = true;
    let v = evaluate(&only_sb, &fallback).unwrap_err();
    let got: Vec<_> = v.iter().map(|x| (x.rule, x.pcr)).collect();
    assert_eq!(
        got,
        [
            (PolicyRule::RequireSecureBoot, Some(7)),
            (PolicyRule::RequireSecureBoot, Some(4)),
        ]
    );
    // The full generated policy also says which allowed applications went missing.
    let v = evaluate(&policy, &fallback).unwrap_err();
    assert!(v.iter().any(|x| x.rule == PolicyRule::BootApplications));
}

/// `bytes` with events appended after its last one, as root on the booted node can extend
/// them into the TPM and add them to the log (which then still replays to the quote).
fn append(bytes: &[u8], log: &EventLog, add: impl FnOnce(&mut LogBuilder)) -> Vec<u8> {
    let banks: Vec<HashAlg> = log.banks().iter().map(|b| b.alg).collect();
    let mut b = LogBuilder::crypto_agile(&banks);
    let spec_id_len = b.build().len();
    add(&mut b);
    let mut out = bytes.to_vec();
    out.extend_from_slice(&b.build()[spec_id_len..]);
    out
}

/// An EFI_SIGNATURE_LIST of EFI_CERT_SHA256 entries.
fn sha256_list(hashes: &[[u8; 32]]) -> Vec<u8> {
    let mut v = EFI_CERT_SHA256.0.to_vec();
    v.extend_from_slice(&(28 + 48 * hashes.len() as u32).to_le_bytes());
    v.extend_from_slice(&0u32.to_le_bytes());
    v.extend_from_slice(&48u32.to_le_bytes());
    for h in hashes {
        v.extend_from_slice(&[0x77; 16]);
        v.extend_from_slice(h);
    }
    v
}

#[test]
fn real_secure_boot_off_log_with_appended_secure_boot_and_dbx() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    // Lenovo, Secure Boot off; SbatLevel authority and boot applications are measured.
    let path = dir
        .join("eventlogs")
        .join("keylime-binary_bios_measurements.bin");
    let bytes = read(&path);
    let log = EventLog::parse(&bytes).unwrap();
    let own = generate_policy("lenovo", &log);
    assert!(!own.require_secure_boot);
    assert!(!own.dbx_required.is_empty());
    assert_eq!(evaluate(&own, &log), Ok(()));

    let fake_sb = log.events().len();
    let t = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
    let tampered = append(&bytes, &log, |b| {
        b.variable(7, t, &EFI_GLOBAL_VARIABLE, "SecureBoot", &[1])
            .variable(
                7,
                t,
                &EFI_IMAGE_SECURITY_DATABASE,
                "dbx",
                &sha256_list(&[[0xAB; 32]]),
            );
    });
    let tampered = EventLog::parse(&tampered).unwrap();
    assert!(tampered.digest_findings().is_empty());
    let state = tampered.boot_state(HashAlg::Sha256);
    assert!(!state.secure_boot_enabled());
    assert_eq!(state.secure_boot.as_ref().unwrap().data, [0]);
    let late: Vec<_> = state.findings_in(7).map(|f| f.event_index).collect();
    assert_eq!(late, [Some(fake_sb), Some(fake_sb + 1)]);

    let mut strict = own.clone();
    strict.require_secure_boot = true;
    strict.dbx_required.push(HexDigest(vec![0xAB; 32]));
    let v = evaluate(&strict, &tampered).unwrap_err();
    let got: Vec<_> = v.iter().map(|x| (x.rule, x.event_index)).collect();
    assert_eq!(
        got,
        [
            (PolicyRule::RequireSecureBoot, Some(fake_sb)),
            (PolicyRule::RequireSecureBoot, Some(fake_sb + 1)),
            (PolicyRule::RequireSecureBoot, Some(12)),
            (PolicyRule::DbxRequired, Some(16)),
            (PolicyRule::Pcrs, None),
        ],
        "{v:#?}"
    );
    assert_eq!(v[3].digest.unwrap().as_bytes(), &[0xAB; 32]);
    assert_eq!(v[4].pcr, Some(7), "the pinned PCR7 moved");
    // The good boot's own policy reads PCR7: the appended events fail it.
    let v = evaluate(&own, &tampered).unwrap_err();
    let got: Vec<_> = v.iter().map(|x| (x.pcr, x.event_index)).collect();
    assert_eq!(
        got,
        [
            (Some(7), Some(fake_sb)),
            (Some(7), Some(fake_sb + 1)),
            (Some(7), None)
        ],
        "{v:#?}"
    );
    // And the tampered log's own policy does not take the appended dbx as configuration.
    let from_tampered = generate_policy("tampered", &tampered);
    assert!(from_tampered.dbx_required.is_empty());
    assert_eq!(evaluate(&from_tampered, &tampered), Ok(()));
}
