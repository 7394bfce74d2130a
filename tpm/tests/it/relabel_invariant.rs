//! The measured-boot invariant, checked on every real firmware log and a hand-built
//! Secure Boot log: an edit of the log that still reproduces the quote either changes
//! nothing the policy sees or is rejected. Concretely: take a good boot's policy (pinned
//! and unpinned), make a bad boot (one measurement in a policy PCR changed, as booting
//! something else would), quote what that boot extended, then relabel events (every type,
//! unknown types, EV_NO_ACTION) and edit data no digest covers (tag ids, GRUB prefixes,
//! action strings): a rejected bad boot must stay rejected.

use ironroot_testkit::fixtures::{fixtures_or_skip, read};
use ironroot_tpm::verify::eventlog::uefi::{EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use ironroot_tpm::verify::eventlog::{
    Digest, Event, EventLog, EventType, HashAlg, LogBuilder, LogFormat,
};
use ironroot_tpm::verify::policy::{
    generate_policy_with, judge, GenerateOptions, MeasuredBootRejection, Policy,
};

/// PCRs the server always quotes (server/src/node/tpm: BASE_PCRS).
const QUOTED: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12];

const TYPES: [EventType; 16] = [
    EventType::EV_SEPARATOR,
    EventType::EV_ACTION,
    EventType::EV_EVENT_TAG,
    EventType::EV_IPL,
    EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
    EventType::EV_EFI_VARIABLE_BOOT,
    EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
    EventType::EV_EFI_BOOT_SERVICES_DRIVER,
    EventType::EV_EFI_ACTION,
    EventType::EV_EFI_VARIABLE_AUTHORITY,
    EventType::EV_NO_ACTION,
    EventType::EV_POST_CODE,
    EventType::EV_COMPACT_HASH,
    EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB,
    EventType::EV_EFI_GPT_EVENT,
    EventType::Unknown(0x0000_1234),
];

/// Data a log supplier may write where no digest covers it.
fn data_edits(e: &Event) -> Vec<Vec<u8>> {
    let mut out = vec![
        Vec::new(),
        b"Calling EFI Application from Boot Option".to_vec(),
        0x8F3B_22ECu32.to_le_bytes().to_vec(),
        0x8F3B_22EDu32.to_le_bytes().to_vec(),
    ];
    for (from, to) in [
        (&b"kernel_cmdline: "[..], &b"grub_cmd: "[..]),
        (b"grub_cmd: ", b"kernel_cmdline: "),
    ] {
        if let Some(rest) = e.data.strip_prefix(from) {
            out.push([to, rest].concat());
        }
    }
    if e.data.len() >= 4 {
        // Another tag id, same tagged-event payload.
        let mut d = e.data.clone();
        d[..4].copy_from_slice(&0x8F3B_22ECu32.to_le_bytes());
        out.push(d.clone());
        d[..4].copy_from_slice(&0x8F3B_22EDu32.to_le_bytes());
        out.push(d);
    }
    out
}

fn rebuild(format: LogFormat, banks: &[HashAlg], events: &[Event]) -> Vec<u8> {
    LogBuilder::from_events(format, banks, events)
}

fn quote(log: &EventLog, bank: HashAlg, policy: &Policy) -> Vec<(u32, Vec<u8>)> {
    let replay = log.replay();
    let mut pcrs: Vec<u32> = QUOTED.to_vec();
    pcrs.extend(policy.pcrs.iter().map(|p| p.index));
    pcrs.sort_unstable();
    pcrs.dedup();
    pcrs.into_iter()
        .filter_map(|i| Some((i, replay.expected(bank, i)?.as_bytes().to_vec())))
        .collect()
}

struct Case {
    name: String,
    format: LogFormat,
    banks: Vec<HashAlg>,
    events: Vec<Event>,
}

impl Case {
    fn log(&self, events: &[Event]) -> Option<EventLog> {
        EventLog::parse(&rebuild(self.format, &self.banks, events)).ok()
    }
}

/// One measurement of `pcr` changed in `bank` (a different thing booted).
fn bad_boot(events: &[Event], pcr: u32, bank: HashAlg) -> Option<Vec<Event>> {
    let mut out = events.to_vec();
    let e = out
        .iter_mut()
        .find(|e| e.pcr == pcr && e.event_type != EventType::EV_NO_ACTION)?;
    let d = e.digests.iter_mut().find(|d| d.alg() == bank)?;
    let mut bytes = d.as_bytes().to_vec();
    bytes[0] ^= 0x5A;
    *d = Digest::new(bank, &bytes)?;
    Some(out)
}

/// Checks the invariant for one good log. `exhaustive`: every type on every event; else
/// one type per event, rotating, so every type is used across the suite.
fn check(case: &Case, exhaustive: bool) -> usize {
    let good = case.log(&case.events).expect("rebuilt log parses");
    let mut judged = 0;
    for pins in [true, false] {
        let opts = if pins {
            GenerateOptions::default()
        } else {
            GenerateOptions { pin_pcrs: vec![] }
        };
        let policy = generate_policy_with("good", &good, &opts);
        if policy.validate().is_err() {
            continue;
        }
        let bank = policy.bank;
        assert_eq!(
            judge(&policy, &good, &quote(&good, bank, &policy)),
            Ok(()),
            "{}: the good boot passes its own policy (pins: {pins})",
            case.name
        );
        let changed: &[u32] = if exhaustive {
            &[4, 7, 8, 9, 12]
        } else {
            &[4, 7, 9]
        };
        for &pcr in changed {
            let Some(bad_events) = bad_boot(&case.events, pcr, bank) else {
                continue;
            };
            let bad = case.log(&bad_events).expect("bad log parses");
            let quoted = quote(&bad, bank, &policy);
            if judge(&policy, &bad, &quoted).is_ok() {
                // The policy does not read this change (e.g. no rule on that PCR).
                continue;
            }
            // A log that does not reproduce the quote is never accepted.
            let other = quote(&good, bank, &policy);
            assert!(
                judge(&policy, &bad, &other).is_err(),
                "{}: a log judged against another boot's quote passed",
                case.name
            );
            let read = policy.pcrs_read();
            for (j, e) in bad_events.iter().enumerate().skip(1) {
                // Events in PCRs no rule reads can only break the replay (EV_NO_ACTION):
                // sample them.
                if !exhaustive && !read.contains_key(&e.pcr) && j % 5 != 0 {
                    continue;
                }
                let types: Vec<EventType> = if exhaustive {
                    TYPES.to_vec()
                } else {
                    vec![TYPES[(j + pcr as usize) % TYPES.len()]]
                };
                let mut edits: Vec<(EventType, Vec<u8>)> =
                    types.into_iter().map(|t| (t, e.data.clone())).collect();
                let all_data = data_edits(e);
                let data: Vec<Vec<u8>> = if exhaustive {
                    all_data
                } else {
                    all_data.into_iter().skip(j % 4).take(1).collect()
                };
                edits.extend(data.into_iter().map(|d| (e.event_type, d)));
                for (t, data) in edits {
                    let mut forged = bad_events.clone();
                    forged[j].event_type = t;
                    forged[j].data = data;
                    let Some(log) = case.log(&forged) else {
                        continue;
                    };
                    judged += 1;
                    let verdict = judge(&policy, &log, &quoted);
                    assert!(
                        verdict.is_err(),
                        "{}: bad boot (PCR{pcr} changed) accepted after event {j} became {t} \
                         (pins: {pins})",
                        case.name
                    );
                }
            }
        }
    }
    judged
}

fn case_of(name: &str, bytes: &[u8]) -> Option<Case> {
    let log = EventLog::parse(bytes).ok()?;
    let banks: Vec<HashAlg> = log.banks().iter().map(|b| b.alg).collect();
    if banks.iter().any(|b| !b.is_known()) {
        return None;
    }
    Some(Case {
        name: name.to_string(),
        format: log.format(),
        banks,
        events: log.events().to_vec(),
    })
}

/// A Secure Boot verified boot with GRUB-style PCR8 strings.
fn secure_boot_case() -> Case {
    let t = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, b"fw 1.0\0")
        .variable(7, t, &EFI_GLOBAL_VARIABLE, "SecureBoot", &[1])
        .variable(7, t, &EFI_GLOBAL_VARIABLE, "PK", b"pk")
        .variable(7, t, &EFI_GLOBAL_VARIABLE, "KEK", b"kek")
        .variable(7, t, &EFI_IMAGE_SECURITY_DATABASE, "db", b"db")
        .variable(7, t, &EFI_IMAGE_SECURITY_DATABASE, "dbx", b"")
        .separators(&[0, 1, 2, 3, 4, 5, 6, 7])
        .event(
            4,
            EventType::EV_EFI_ACTION,
            b"Calling EFI Application from Boot Option",
        )
        .variable(
            7,
            EventType::EV_EFI_VARIABLE_AUTHORITY,
            &EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &[0x30, 0x82, 0, 0],
        )
        .measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"shim+grub",
            &[0; 32],
        )
        .measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"kernel",
            &[1; 32],
        )
        .measure(
            8,
            EventType::EV_IPL,
            b"linux /vmlinuz ro",
            b"grub_cmd: linux /vmlinuz ro\0",
        )
        .measure(
            8,
            EventType::EV_IPL,
            b"/vmlinuz ro",
            b"kernel_cmdline: /vmlinuz ro\0",
        )
        .measure(9, EventType::EV_IPL, b"initrd bytes", b"/initrd.img\0")
        .linux_tag(0x8F3B_22ED, "LOADED_IMAGE::LoadOptions", b"c\0m\0d\0\0\0")
        .linux_tag(0x8F3B_22EC, "Linux initrd", b"initrd 2");
    case_of("secure-boot", &b.build()).expect("built log")
}

#[test]
fn relabelling_never_rescues_a_bad_hand_built_secure_boot() {
    let case = secure_boot_case();
    let good = case.log(&case.events).unwrap();
    let policy = generate_policy_with("good", &good, &GenerateOptions::default());
    assert!(policy.require_secure_boot, "the case is a verified boot");
    let judged = check(&case, true);
    assert!(judged > 1000, "judged {judged}");
}

#[test]
fn relabelling_never_rescues_a_bad_boot_on_real_firmware_logs() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let mut paths: Vec<_> = std::fs::read_dir(dir.join("eventlogs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    paths.push(dir.join("ovmf-qemu").join("eventlog.bin"));
    paths.sort();
    let mut logs = 0;
    let mut judged = 0;
    for p in paths {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(case) = case_of(&name, &read(&p)) else {
            continue;
        };
        // The rebuilt log is the same log.
        let original = EventLog::parse(&read(&p)).unwrap();
        let rebuilt = case.log(&case.events).unwrap();
        if original.format() == LogFormat::CryptoAgile {
            assert_eq!(original.replay(), rebuilt.replay(), "{name}");
        }
        logs += 1;
        judged += check(&case, false);
    }
    assert!(logs >= 30, "only {logs} fixture logs judged");
    assert!(judged > 5_000, "only {judged} forged logs judged");
}

/// The attacks of issue 7 on the hand-built Secure Boot log, named.
#[test]
fn secure_boot_forgery_by_retyped_separator_is_rejected() {
    let t = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
    // Secure Boot off.
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.variable(7, t, &EFI_GLOBAL_VARIABLE, "SecureBoot", &[0])
        .variable(7, t, &EFI_GLOBAL_VARIABLE, "PK", b"pk")
        .separators(&[0, 1, 2, 3, 4, 5, 6, 7])
        .measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"kernel",
            &[1; 32],
        );
    let off = EventLog::parse(&b.build()).unwrap();
    let mut events = off.events().to_vec();
    let sep = events
        .iter()
        .position(|e| e.pcr == 7 && e.event_type == EventType::EV_SEPARATOR)
        .unwrap();
    events[sep].event_type = EventType::EV_EFI_ACTION;
    // Root extends PCR7 from the OS and appends matching events.
    let mut tail = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    let head = tail.build().len();
    tail.variable(7, t, &EFI_GLOBAL_VARIABLE, "SecureBoot", &[1])
        .variable(
            7,
            EventType::EV_EFI_VARIABLE_AUTHORITY,
            &EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &[0x30, 0x82, 0, 0],
        )
        .separators(&[7]);
    let mut bytes = rebuild(LogFormat::CryptoAgile, &[HashAlg::Sha256], &events);
    bytes.extend_from_slice(&tail.build()[head..]);
    let forged = EventLog::parse(&bytes).unwrap();
    let state = forged.boot_state(HashAlg::Sha256);
    assert!(!state.secure_boot_enabled());
    let mut policy = Policy::new("sb");
    policy.require_secure_boot = true;
    let quoted = quote(&forged, HashAlg::Sha256, &policy);
    let Err(MeasuredBootRejection::Policy(v)) = judge(&policy, &forged, &quoted) else {
        panic!("the forgery must fail the policy");
    };
    let text: Vec<String> = v.iter().map(ToString::to_string).collect();
    let joined = text.join("\n");
    assert!(
        joined.contains("rule require_secure_boot: PCR7 event")
            && joined.contains("EV_EFI_ACTION")
            && joined.contains("not typed EV_SEPARATOR"),
        "the retyped separator is named: {joined}"
    );
    assert!(joined.contains("a second PCR7 separator"), "{joined}");
    assert!(joined.contains("after the PCR7 separator"), "{joined}");
    assert!(joined.contains("SecureBoot is 0"), "{joined}");
}
