//! Every firmware event log in the shared fixtures must parse (or fail) exactly as
//! `eventlogs/expected.json` says, replay to its PCR values and report exactly the known
//! digest mismatches; the QEMU/OVMF log must replay to the PCRs read in the guest.

use std::collections::{BTreeMap, BTreeSet};

use ironroot_tpm::verify::eventlog::{
    EventLog, EventLogError, EventType, HashAlg, ParseOptions, PcrBanks,
};
use serde_json::Value;

use ironroot_testkit::fixtures::{fixtures_or_skip, read};

/// Digest mismatches the README and expected.json notes list for real firmware and boot
/// loader bugs: (file, event index, event type). Every other checked event must match.
const KNOWN_FINDINGS: &[(&str, usize, EventType)] = &[
    // systemd-boot logged the UTF-16 command line one byte short.
    (
        "go-tpm-tools-arch-linux-workstation.bin",
        24,
        EventType::EV_IPL,
    ),
    (
        "tpm_futurepcr-HP_EliteBook_TPM2.0_UEFI_SB_Linux.bin",
        40,
        EventType::EV_IPL,
    ),
    // "invalid SCRTM version event" upstream.
    ("go-tpm-tools-gdc-host.bin", 3, EventType::EV_S_CRTM_VERSION),
    // Old shim "Shim" authority events: digest != H(event data).
    (
        "go-attestation-sb_cert_eventlog.bin",
        12,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ),
    (
        "go-attestation-sb_cert_eventlog.bin",
        14,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ),
    (
        "go-tpm-tools-debian-10.bin",
        23,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ),
    (
        "hirs-TpmLogSHA1.bin",
        26,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ),
    (
        "tpm2-tools-event-postcode.bin",
        40,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ),
    (
        "tpm2-tools-event-postcode.bin",
        54,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
    ),
];

/// bank name -> PCR index -> lowercase hex, for the PCRs the log extends.
fn replay_map(r: &PcrBanks) -> BTreeMap<String, BTreeMap<String, String>> {
    r.banks()
        .iter()
        .map(|b| {
            let pcrs = b.iter().map(|(i, d)| (i.to_string(), d.to_hex())).collect();
            (b.alg().to_string(), pcrs)
        })
        .collect()
}

fn json_map(v: &Value) -> BTreeMap<String, BTreeMap<String, String>> {
    serde_json::from_value(v.clone()).unwrap()
}

fn strings(v: &Value) -> Vec<String> {
    serde_json::from_value(v.clone()).unwrap()
}

/// Checks one log against its expected.json entry; returns the problems found.
fn check_log(name: &str, bytes: &[u8], want: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    let mut fail = |msg: String| bad.push(format!("{name}: {msg}"));
    let parsed = EventLog::parse(bytes);
    match (want["parse"].as_str(), parsed) {
        (Some("ok"), Ok(log)) => {
            if log.format().to_string() != want["format"].as_str().unwrap() {
                fail(format!("format {} != {}", log.format(), want["format"]));
            }
            if log.events().len() as u64 != want["events"].as_u64().unwrap() {
                fail(format!(
                    "{} events != {}",
                    log.events().len(),
                    want["events"]
                ));
            }
            let banks: Vec<String> = log.banks().iter().map(|b| b.alg.to_string()).collect();
            if banks != strings(&want["banks"]) {
                fail(format!("banks {banks:?} != {}", want["banks"]));
            }
            let got = replay_map(&log.replay());
            let exp = json_map(&want["replay"]);
            if got != exp {
                fail(format!("replay differs:\n got {got:?}\nwant {exp:?}"));
            }
            let found: BTreeSet<(usize, EventType)> = log
                .digest_findings()
                .iter()
                .map(|f| (f.event_index, f.event_type))
                .collect();
            let known: BTreeSet<(usize, EventType)> = KNOWN_FINDINGS
                .iter()
                .filter(|k| k.0 == name)
                .map(|k| (k.1, k.2))
                .collect();
            if found != known {
                fail(format!("digest findings {found:?} != known {known:?}"));
            }
        }
        (Some("error"), Err(e)) => {
            let msg = want["parse_error"].as_str().unwrap();
            if !e.to_string().contains(msg) {
                fail(format!("error {e} does not say {msg:?}"));
            }
            if !want["replay"].as_object().unwrap().is_empty() {
                fail("an error entry with a replay".into());
            }
        }
        (w, r) => fail(format!("expected parse {w:?}, got {r:?}")),
    }
    if let Some(ccel) = want.get("ccel") {
        bad.extend(check_ccel(name, bytes, ccel));
    }
    bad
}

/// The TDX CCEL logs: rejected as TPM logs, but a CCEL-aware parse gives the RTMRs.
fn check_ccel(name: &str, bytes: &[u8], want: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    match EventLog::parse(bytes) {
        Err(EventLogError::SpecIdPcrIndex { pcr: 1, offset: 0 }) => {}
        other => bad.push(format!(
            "{name}: strict parse should reject pcr 1: {other:?}"
        )),
    }
    let opts = ParseOptions {
        ccel: true,
        ..ParseOptions::default()
    };
    let log = match EventLog::parse_with(bytes, &opts) {
        Ok(l) => l,
        Err(e) => return vec![format!("{name}: ccel parse failed: {e}")],
    };
    if log.events().len() as u64 != want["events"].as_u64().unwrap() {
        bad.push(format!("{name}: ccel events {}", log.events().len()));
    }
    let banks: Vec<String> = log.banks().iter().map(|b| b.alg.to_string()).collect();
    if banks != strings(&want["banks"]) {
        bad.push(format!("{name}: ccel banks {banks:?}"));
    }
    if log.trailing_padding() as u64 != want["trailing_0xff_bytes"].as_u64().unwrap() {
        bad.push(format!("{name}: padding {}", log.trailing_padding()));
    }
    if replay_map(&log.replay()) != json_map(&want["replay_by_mr_index"]) {
        bad.push(format!(
            "{name}: ccel replay {:?}",
            replay_map(&log.replay())
        ));
    }
    bad
}

#[test]
fn every_fixture_log_matches_expected_json() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let logs = dir.join("eventlogs");
    let expected: Value = serde_json::from_slice(&read(&logs.join("expected.json"))).unwrap();
    let expected = expected.as_object().unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    files.sort();
    let mut bad = Vec::new();
    for name in &files {
        match expected.get(name) {
            Some(want) => bad.extend(check_log(name, &read(&logs.join(name)), want)),
            None => bad.push(format!("{name}: no entry in expected.json")),
        }
    }
    for name in expected.keys().filter(|k| *k != "_about") {
        if !files.contains(name) {
            bad.push(format!("{name}: in expected.json but not on disk"));
        }
    }
    for (file, _, _) in KNOWN_FINDINGS {
        assert!(files.iter().any(|f| f == file), "{file} missing");
    }
    assert!(files.len() >= 39, "only {} logs", files.len());
    assert!(
        bad.is_empty(),
        "{} problems:\n{}",
        bad.len(),
        bad.join("\n")
    );
    println!("checked {} event logs against expected.json", files.len());
}

#[test]
fn hcrtm_log_pcr0_needs_the_hcrtm_seed() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let name = "tpm2-tss-binary_measurements_hcrtm.bin";
    let log = EventLog::parse(&read(&dir.join("eventlogs").join(name))).unwrap();
    assert_eq!(log.startup_locality(), 4);
    // Upstream tpm2-tss test value (fapi-eventlog.c check_eventlog_pcr0).
    assert_eq!(
        log.replay().get(HashAlg::Sha1, 0).unwrap().to_hex(),
        "15f4e6ca457d1af6bc49511a93ba3500ad69acc5"
    );
}

/// pcrs.txt lines `sha256:N=HEX` read in the guest after boot.
fn guest_pcrs(text: &str) -> Vec<(u32, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("sha256:"))
        .map(|l| {
            let (i, v) = l.split_once('=').unwrap();
            (i.parse().unwrap(), v.trim().to_ascii_lowercase())
        })
        .collect()
}

#[test]
fn ovmf_log_replays_to_guest_pcrs() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let ovmf = dir.join("ovmf-qemu");
    let log = EventLog::parse(&read(&ovmf.join("eventlog.bin"))).unwrap();
    assert_eq!(log.events().len(), 25);
    assert!(
        log.digest_findings().is_empty(),
        "{:?}",
        log.digest_findings()
    );
    let replay = log.replay();
    let pcrs = guest_pcrs(&String::from_utf8(read(&ovmf.join("pcrs.txt"))).unwrap());
    assert_eq!(pcrs.len(), 24);
    for (i, want) in pcrs {
        // PCR10 is extended by IMA after boot, not by firmware.
        if i == 10 {
            continue;
        }
        let got = replay.expected(HashAlg::Sha256, i).unwrap().to_hex();
        assert_eq!(got, want, "sha256 PCR{i}");
    }
    let st = log.boot_state(HashAlg::Sha256);
    assert!(!st.secure_boot_enabled());
    assert_eq!(
        st.secure_boot.as_ref().map(|v| v.data.as_slice()),
        Some(&[0][..])
    );
    assert_eq!(st.boot_applications.len(), 1);
    assert_eq!(st.boot_applications[0].event_index, 10);
    assert_eq!(st.kernel_cmdlines.len(), 1);
    assert_eq!(st.initrds.len(), 1);
    assert_eq!(
        st.initrds[0]
            .event
            .digest(HashAlg::Sha256)
            .unwrap()
            .to_hex(),
        "a245490ce81998a117dd16f75cdfcbb8ce5e5c1ad459111153f61483821aebcd"
    );
    assert!(st.authorities.is_empty());
    assert_eq!(st.separators.len(), 8);
    assert_eq!(
        (
            st.pk.is_some(),
            st.kek.is_some(),
            st.db.is_some(),
            st.dbx.is_some()
        ),
        (true, true, true, true)
    );
}
