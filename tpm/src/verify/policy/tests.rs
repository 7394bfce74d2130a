//! Policy rules on hand-built logs.

use super::*;
use crate::verify::eventlog::uefi::{
    EFI_CERT_SHA256, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};
use crate::verify::eventlog::{utf16_with_nul, EventLog, EventType, HashAlg, LogBuilder};

fn dbx_list(hashes: &[[u8; 32]]) -> Vec<u8> {
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

/// PCR7 Secure Boot configuration with SecureBoot = `sb`.
fn pcr7(b: &mut LogBuilder, sb: &[u8]) {
    let t = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
    b.variable(7, t, &EFI_GLOBAL_VARIABLE, "SecureBoot", sb)
        .variable(7, t, &EFI_GLOBAL_VARIABLE, "PK", b"pk-cert")
        .variable(7, t, &EFI_GLOBAL_VARIABLE, "KEK", b"kek-cert")
        .variable(7, t, &EFI_IMAGE_SECURITY_DATABASE, "db", b"db-cert")
        .variable(
            7,
            t,
            &EFI_IMAGE_SECURITY_DATABASE,
            "dbx",
            &dbx_list(&[[1; 32], [2; 32]]),
        )
        .separators(&[7]);
}

/// A Secure Boot verified boot: authority and a measured kernel.
fn verified_boot() -> EventLog {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    pcr7(&mut b, &[1]);
    let mut auth = [0x55u8; 16].to_vec();
    auth.extend_from_slice(&[0x30, 0x82, 0x01, 0x00]);
    b.variable(
        7,
        EventType::EV_EFI_VARIABLE_AUTHORITY,
        &EFI_IMAGE_SECURITY_DATABASE,
        "db",
        &auth,
    )
    .measure(
        4,
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
        b"kernel",
        &[0; 40],
    )
    .linux_tag(
        0x8F3B_22ED,
        "LOADED_IMAGE::LoadOptions",
        &utf16_with_nul("console=ttyS0 quiet"),
    )
    .linux_tag(0x8F3B_22EC, "Linux initrd", b"initrd")
    .separators(&[0, 1, 2, 3, 4, 5, 6]);
    EventLog::parse(&b.build()).unwrap()
}

/// SecureBoot reads 1 but the firmware fell back to a legacy loader: no authority event,
/// no kernel event (the OVMF direct-boot case).
fn fallback_boot() -> EventLog {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    pcr7(&mut b, &[1]);
    b.separators(&[0, 1, 2, 3, 4, 5, 6]);
    EventLog::parse(&b.build()).unwrap()
}

fn secure_policy() -> Policy {
    let mut p = Policy::new("sb");
    p.require_secure_boot = true;
    p
}

#[test]
fn verified_boot_passes_require_secure_boot() {
    assert_eq!(evaluate(&secure_policy(), &verified_boot()), Ok(()));
    let state = verified_boot().boot_state();
    assert_eq!(
        state.authorities[0].certificate_der(),
        Some(&[0x30, 0x82, 1, 0][..])
    );
}

#[test]
fn secure_boot_one_alone_is_not_enough() {
    let v = evaluate(&secure_policy(), &fallback_boot()).unwrap_err();
    assert_eq!(v.len(), 2, "{v:#?}");
    assert!(v.iter().all(|x| x.rule == PolicyRule::RequireSecureBoot));
    assert_eq!(v[0].pcr, Some(7));
    assert!(v[0].message.contains("EV_EFI_VARIABLE_AUTHORITY"));
    assert_eq!(v[1].pcr, Some(4));
    assert!(v[1].message.contains("EV_EFI_BOOT_SERVICES_APPLICATION"));
    assert!(v[1]
        .to_string()
        .starts_with("policy \"sb\" rule require_secure_boot: PCR4:"));
}

#[test]
fn secure_boot_off_or_untrusted_value() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    pcr7(&mut b, &[0]);
    let log = EventLog::parse(&b.build()).unwrap();
    let v = evaluate(&secure_policy(), &log).unwrap_err();
    assert_eq!(v.len(), 3);
    assert_eq!(v[0].event_index, Some(1));
    assert_eq!(
        v[0].event_type,
        Some(EventType::EV_EFI_VARIABLE_DRIVER_CONFIG)
    );
    assert!(v[0].message.contains("SecureBoot is 0"), "{}", v[0]);

    // Data says 1 but the digest is of 0: the value is a lie.
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    let lie =
        crate::verify::eventlog::uefi::encode_variable(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
    let truth =
        crate::verify::eventlog::uefi::encode_variable(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[0]);
    b.measure(7, EventType::EV_EFI_VARIABLE_DRIVER_CONFIG, &truth, &lie);
    let log = EventLog::parse(&b.build()).unwrap();
    assert_eq!(log.digest_findings().len(), 1);
    let v = evaluate(&secure_policy(), &log).unwrap_err();
    assert!(
        v[0].message.contains("does not match its digest"),
        "{}",
        v[0]
    );
}

#[test]
fn dbx_required_entries() {
    let log = verified_boot();
    let mut p = Policy::new("dbx");
    p.dbx_required = vec![HexDigest(vec![1; 32]), HexDigest(vec![2; 32])];
    assert_eq!(evaluate(&p, &log), Ok(()));
    p.dbx_required.push(HexDigest(vec![3; 32]));
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, PolicyRule::DbxRequired);
    assert_eq!(v[0].digest.unwrap().as_bytes(), &[3; 32]);
    assert_eq!(v[0].event_index, Some(5));
}

#[test]
fn pk_kek_db_allow_lists() {
    let log = verified_boot();
    let mut p = generate_policy("keys", &log);
    assert!(p.require_secure_boot);
    assert_eq!(evaluate(&p, &log), Ok(()));
    p.kek = Some(vec![HexDigest(vec![0; 32])]);
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].rule, v[0].pcr, v[0].event_index),
        (PolicyRule::Kek, Some(7), Some(3))
    );
}

#[test]
fn efi_stub_cmdline_matches_by_text() {
    let log = verified_boot();
    let mut p = Policy::new("cmd");
    p.kernel_cmdlines = Some(vec!["console=ttyS0 quiet".into()]);
    assert_eq!(evaluate(&p, &log), Ok(()));
    p.kernel_cmdlines = Some(vec!["console=ttyS0 quiet single".into()]);
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].rule, PolicyRule::KernelCmdlines);
    assert_eq!(v[0].pcr, Some(9));
    assert!(v[0].message.contains("text not in the log"));
}

#[test]
fn grub_cmdline_matches_by_text_and_names_it() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    b.measure(
        8,
        EventType::EV_IPL,
        b"/vmlinuz ro quiet",
        b"kernel_cmdline: /vmlinuz ro quiet\0",
    );
    let log = EventLog::parse(&b.build()).unwrap();
    let mut p = Policy::new("grub");
    p.kernel_cmdlines = Some(vec!["/vmlinuz ro quiet".into()]);
    assert_eq!(evaluate(&p, &log), Ok(()));
    p.kernel_cmdlines = Some(vec!["/vmlinuz ro".into()]);
    let v = evaluate(&p, &log).unwrap_err();
    assert!(v[0].message.contains("\"/vmlinuz ro quiet\""), "{}", v[0]);
    assert_eq!(v[0].pcr, Some(8));
}

#[test]
fn missing_bank_and_exact_pcrs() {
    let mut b = LogBuilder::sha1_legacy();
    b.measure(
        4,
        EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
        b"app",
        &[0; 40],
    );
    let log = EventLog::parse(&b.build()).unwrap();
    let mut p = Policy::new("banks");
    p.boot_applications = Some(vec![HexDigest(vec![0; 32])]);
    p.pcrs = vec![PcrValue {
        bank: HashAlg::Sha1,
        index: 4,
        value: HexDigest(vec![0; 20]),
    }];
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(v.len(), 2);
    assert!(v[0].message.contains("no sha256 digest"), "{}", v[0]);
    assert_eq!(v[1].rule, PolicyRule::Pcrs);
    assert_eq!(v[1].digest, log.replay().get(HashAlg::Sha1, 4).copied());
}

#[test]
fn toml_round_trip_and_rejections() {
    let p = generate_policy("round", &verified_boot());
    let text = p.to_toml().unwrap();
    assert_eq!(Policy::from_toml(&text), Ok(p));
    let e = Policy::from_toml("name = \"x\"\nrequire_secureboot = true\n").unwrap_err();
    assert!(
        matches!(&e, PolicyError::Toml(m) if m.contains("unknown field")),
        "{e}"
    );
    let e = Policy::from_toml("name = \"x\"\ninitrds = [\"zz\"]\n").unwrap_err();
    assert!(
        matches!(&e, PolicyError::Toml(m) if m.contains("not hex")),
        "{e}"
    );
    let e = Policy::from_toml("name = \"x\"\ninitrds = [\"abcd\"]\n").unwrap_err();
    assert_eq!(
        e,
        PolicyError::DigestLength {
            policy: "x".into(),
            field: "initrds",
            position: 0,
            len: 2,
            bank: HashAlg::Sha256,
            want: 32
        }
    );
    let e = Policy::from_toml("name = \"x\"\nbank = \"md5\"\n").unwrap_err();
    assert!(
        matches!(&e, PolicyError::Toml(m) if m.contains("md5")),
        "{e}"
    );
    assert_eq!(
        Policy::from_toml("name = \"\""),
        Err(PolicyError::EmptyName)
    );
}
