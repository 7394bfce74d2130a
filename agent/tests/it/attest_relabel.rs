//! The measured-boot forgeries of root on a booted node, end to end: the "firmware" boots
//! something the policy does not allow and extends the swtpm's PCRs as it goes; then root
//! relabels events in the log and extends more from the OS (appending matching events), so
//! the log still replays to a real quote. Every forgery must be rejected, under a policy
//! with pinned PCRs and under allow-lists alone, with a reason naming the rule, PCR and
//! event; the honest golden boot stays accepted under both.

use crate::common::*;
use ironroot_tpm::verify::eventlog::uefi::{EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use ironroot_tpm::verify::eventlog::{
    utf16_with_nul, Event, EventLog, EventType, HashAlg, LogBuilder, LogFormat,
};
use ironroot_tpm::verify::policy::{generate_policy_with, GenerateOptions};

const LOAD_OPTIONS: u32 = 0x8F3B_22ED;
const INITRD: u32 = 0x8F3B_22EC;

/// What the machine booted.
#[derive(Clone)]
struct Firmware {
    secure_boot: bool,
    kernel: &'static [u8],
    cmdline: &'static str,
    initrd: &'static [u8],
}

const GOLDEN: Firmware = Firmware {
    secure_boot: true,
    kernel: b"golden kernel",
    cmdline: "console=ttyS0 root=/dev/vda1 ro",
    initrd: b"golden initrd",
};

/// The firmware's log: PCR0, the PCR7 Secure Boot configuration, separators, then the
/// boot manager calling the kernel (authority in PCR7 when Secure Boot is on), the Linux
/// EFI stub's command line and initrd in PCR9.
fn boot(fw: &Firmware) -> Vec<Event> {
    let cfg = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, b"fw 1.0\0")
        .variable(
            7,
            cfg,
            &EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            &[u8::from(fw.secure_boot)],
        )
        .variable(7, cfg, &EFI_GLOBAL_VARIABLE, "PK", b"pk")
        .variable(7, cfg, &EFI_GLOBAL_VARIABLE, "KEK", b"kek")
        .variable(7, cfg, &EFI_IMAGE_SECURITY_DATABASE, "db", b"db")
        .variable(7, cfg, &EFI_IMAGE_SECURITY_DATABASE, "dbx", b"")
        .separators(&[0, 1, 2, 3, 4, 5, 6, 7])
        .event(
            4,
            EventType::EV_EFI_ACTION,
            b"Calling EFI Application from Boot Option",
        );
    if fw.secure_boot {
        b.variable(
            7,
            EventType::EV_EFI_VARIABLE_AUTHORITY,
            &EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &[0x30, 0x82, 0, 0],
        );
    }
    b.measure(
        4,
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
        fw.kernel,
        &[0; 40],
    )
    .linux_tag(
        LOAD_OPTIONS,
        "LOADED_IMAGE::LoadOptions",
        &utf16_with_nul(fw.cmdline),
    )
    .linux_tag(INITRD, "Linux initrd", fw.initrd);
    EventLog::parse(&b.build()).unwrap().events().to_vec()
}

fn index_of(events: &[Event], pcr: u32, t: EventType) -> usize {
    events
        .iter()
        .position(|e| e.pcr == pcr && e.event_type == t)
        .expect("event present")
}

/// Root's append: extend `pcr` from the OS with what `add` measures, logging it.
fn append(events: &mut Vec<Event>, add: impl FnOnce(&mut LogBuilder)) {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    add(&mut b);
    let extra = EventLog::parse(&b.build()).unwrap();
    let base = events.len();
    for (n, mut e) in extra.events().iter().skip(1).cloned().enumerate() {
        e.index = base + n;
        events.push(e);
    }
}

fn bytes(events: &[Event]) -> Vec<u8> {
    LogBuilder::from_events(LogFormat::CryptoAgile, &[HashAlg::Sha256], events)
}

struct Forgery {
    name: &'static str,
    log: Vec<u8>,
    /// Words the rejection must contain (PCR and event).
    names: Vec<String>,
}

fn forgeries() -> Vec<Forgery> {
    let mut out = Vec::new();

    // 1. A disallowed kernel command line, its tag id changed, the allowed one appended.
    let evil = Firmware {
        cmdline: "console=ttyS0 root=/dev/vda1 ro init=/bin/sh",
        ..GOLDEN
    };
    let mut ev = boot(&evil);
    let i = index_of(&ev, 9, EventType::EV_EVENT_TAG);
    ev[i].data[..4].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    append(&mut ev, |b| {
        b.linux_tag(
            LOAD_OPTIONS,
            "LOADED_IMAGE::LoadOptions",
            &utf16_with_nul(GOLDEN.cmdline),
        );
    });
    out.push(Forgery {
        name: "command line retagged, allowed one appended",
        log: bytes(&ev),
        names: vec!["PCR9".into(), format!("event {i}")],
    });

    // 2. The same command line relabelled as a boot services driver.
    let mut ev = boot(&evil);
    let i = index_of(&ev, 9, EventType::EV_EVENT_TAG);
    ev[i].event_type = EventType::EV_EFI_BOOT_SERVICES_DRIVER;
    out.push(Forgery {
        name: "command line retyped as a driver",
        log: bytes(&ev),
        names: vec![
            "PCR9".into(),
            format!("event {i}"),
            "EV_EFI_BOOT_SERVICES_DRIVER".into(),
        ],
    });

    // 3. A disallowed initrd relabelled as a command line.
    let mut ev = boot(&Firmware {
        initrd: b"evil initrd",
        ..GOLDEN
    });
    let i = ev
        .iter()
        .rposition(|e| e.pcr == 9 && e.event_type == EventType::EV_EVENT_TAG)
        .unwrap();
    ev[i].data[..4].copy_from_slice(&LOAD_OPTIONS.to_le_bytes());
    out.push(Forgery {
        name: "initrd retagged as the command line",
        log: bytes(&ev),
        names: vec!["PCR9".into(), format!("event {i}")],
    });

    // 4. A disallowed kernel relabelled as an action string, the allowed one appended.
    let mut ev = boot(&Firmware {
        kernel: b"evil kernel",
        ..GOLDEN
    });
    let i = index_of(&ev, 4, EventType::EV_EFI_BOOT_SERVICES_APPLICATION);
    ev[i].event_type = EventType::EV_EFI_ACTION;
    append(&mut ev, |b| {
        b.measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            GOLDEN.kernel,
            &[0; 40],
        );
    });
    out.push(Forgery {
        name: "kernel retyped as an action, allowed one appended",
        log: bytes(&ev),
        names: vec!["PCR4".into(), format!("event {i}")],
    });

    // 5. Secure Boot off; the real PCR7 separator retyped as an action; SecureBoot=1, an
    //    authority and a separator extended from the OS and appended.
    let mut ev = boot(&Firmware {
        secure_boot: false,
        ..GOLDEN
    });
    let i = index_of(&ev, 7, EventType::EV_SEPARATOR);
    ev[i].event_type = EventType::EV_EFI_ACTION;
    append(&mut ev, |b| {
        b.variable(
            7,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            &EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            &[1],
        )
        .variable(
            7,
            EventType::EV_EFI_VARIABLE_AUTHORITY,
            &EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &[0x30, 0x82, 0, 0],
        )
        .separators(&[7]);
    });
    out.push(Forgery {
        name: "Secure Boot forged by a retyped separator",
        log: bytes(&ev),
        names: vec![
            "PCR7".into(),
            format!("event {i}"),
            "require_secure_boot".into(),
        ],
    });
    out
}

fn server(test: &str, pins: bool) -> Env {
    let golden = EventLog::parse(&bytes(&boot(&GOLDEN))).unwrap();
    let opts = if pins {
        GenerateOptions::default()
    } else {
        GenerateOptions { pin_pcrs: vec![] }
    };
    let policy = generate_policy_with("golden", &golden, &opts);
    assert!(policy.require_secure_boot);
    assert_eq!(policy.pcrs.is_empty(), !pins);
    let ca = tpm_state().ek_ca_bundle();
    start_server(
        test,
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"golden\"",
            ca.display()
        ),
        &[("golden", policy.to_toml().unwrap())],
    )
}

fn run(test: &str, pins: bool) {
    let env = server(test, pins);
    // The honest control.
    let tpm = tpm_state().spawn();
    let golden = bytes(&boot(&GOLDEN));
    extend_like(&tpm, &golden);
    let ok = attest(&env.agent(&tpm, &golden, "rsa")).expect("the golden boot attests");
    assert!(
        ok.selectors.iter().any(|s| s == "tpm:secure_boot:enabled"),
        "{:?}",
        ok.selectors
    );
    for f in forgeries() {
        let tpm = tpm_state().spawn();
        // The TPM saw exactly what the forged log's digests say, PCR by PCR.
        extend_like(&tpm, &f.log);
        let words: Vec<&str> = f.names.iter().map(String::as_str).collect();
        let e = assert_rejected(
            attest(&env.agent(&tpm, &f.log, "rsa")),
            "measured-boot policy",
            &words,
        );
        eprintln!("[pins: {pins}] {}: {e}", f.name);
    }
}

#[test]
fn forgeries_are_rejected_under_pinned_policy() {
    run("relabel_pinned", true);
}

#[test]
fn forgeries_are_rejected_by_classification_alone() {
    run("relabel_allow_lists", false);
}
