//! Policy rules on hand-built logs.

use super::*;
use crate::verify::eventlog::uefi::{
    EFI_CERT_SHA256, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};
use crate::verify::eventlog::{
    utf16_with_nul, EventLog, EventType, HashAlg, LogBuilder, ProfileRule,
};

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
    let state = verified_boot().boot_state(HashAlg::Sha256);
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
    assert!(v[1].message.contains("no code was measured in PCR4"));
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
    assert_eq!((v[0].pcr, v[0].event_index), (Some(7), Some(1)));
    assert!(
        v[0].message
            .contains("configuration event whose digest is not the hash of its data"),
        "{}",
        v[0]
    );
    assert!(
        v.iter()
            .any(|x| x.message.contains("PCR7 has no separator")),
        "{v:#?}"
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
    // PCR9 is read whole: the initrd must be allowed too.
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(
        (v.len(), v[0].rule, v[0].event_index),
        (1, PolicyRule::KernelCmdlines, Some(10))
    );
    assert!(v[0].message.contains("an initrd"), "{}", v[0]);
    let initrd = HashAlg::Sha256.hash(b"initrd").unwrap();
    p.initrds = Some(vec![HexDigest::of(&initrd)]);
    assert_eq!(evaluate(&p, &log), Ok(()));
    p.kernel_cmdlines = Some(vec!["console=ttyS0 quiet single".into()]);
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(v.len(), 2, "{v:#?}");
    assert_eq!(
        (v[0].rule, v[0].pcr, v[0].event_index),
        (PolicyRule::KernelCmdlines, Some(9), Some(9))
    );
    assert!(v[0]
        .message
        .contains("a kernel command line (its claim is not authenticated)"));
    assert!(v[1]
        .message
        .contains("no allowed kernel command line was measured"));
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

// --- PCR7 configuration is what firmware measured before the PCR7 separator ---

/// Logs PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG `name` = `value` (GUID by name).
fn config<'a>(b: &'a mut LogBuilder, name: &str, value: &[u8]) -> &'a mut LogBuilder {
    let guid = match name {
        "db" | "dbx" => &EFI_IMAGE_SECURITY_DATABASE,
        _ => &EFI_GLOBAL_VARIABLE,
    };
    b.variable(
        7,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        guid,
        name,
        value,
    )
}

/// What follows the PCR7 configuration in a verified boot: the PCR7 separator (when
/// `pcr7_separator`), an authority, a boot application, the PCR0-6 separators.
fn rest_of_boot(b: &mut LogBuilder, pcr7_separator: bool) {
    if pcr7_separator {
        b.separators(&[7]);
    }
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
    .separators(&[0, 1, 2, 3, 4, 5, 6]);
}

fn parse(b: &LogBuilder) -> EventLog {
    EventLog::parse(&b.build()).unwrap()
}

fn sha256(data: &[u8]) -> HexDigest {
    HexDigest::of(&HashAlg::Sha256.hash(data).unwrap())
}

/// The digest a PCR7 config event of `name` = `value` logs.
fn config_digest(name: &str, value: &[u8]) -> HexDigest {
    let guid = match name {
        "db" | "dbx" => &EFI_IMAGE_SECURITY_DATABASE,
        _ => &EFI_GLOBAL_VARIABLE,
    };
    sha256(&crate::verify::eventlog::uefi::encode_variable(
        guid, name, value,
    ))
}

fn rules_and_events(v: &[PolicyViolation]) -> Vec<(PolicyRule, Option<usize>)> {
    v.iter().map(|x| (x.rule, x.event_index)).collect()
}

/// Root on a booted node extends PCR7 and appends matching SecureBoot=1 and dbx events:
/// the log still replays, but they are after the PCR7 separator, so they are findings.
#[test]
fn config_appended_after_pcr7_separator_is_not_configuration() {
    // Events: 1 SecureBoot=0, 2 PK, 3 KEK, 4 db, 5 dbx{1,2}, 6 PCR7 separator, 7 authority,
    // 8 boot app, 9-15 separators, then the forgeries: 16 SecureBoot=1, 17 dbx{3}.
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    pcr7(&mut b, &[0]);
    rest_of_boot(&mut b, false);
    config(&mut b, "SecureBoot", &[1]);
    config(&mut b, "dbx", &dbx_list(&[[3; 32]]));
    let log = parse(&b);
    assert!(log.digest_findings().is_empty());

    let state = log.boot_state(HashAlg::Sha256);
    assert!(!state.secure_boot_enabled());
    assert_eq!(state.pcr7_separator().map(|s| s.event.event_index), Some(6));
    let sb = state.secure_boot.as_ref().unwrap();
    assert_eq!((sb.event.event_index, sb.data.as_slice()), (1, &[0][..]));
    assert_eq!(state.dbx.as_ref().unwrap().event.event_index, 5);
    let late: Vec<_> = state
        .findings_in(7)
        .map(|f| (f.event_index, f.rule.clone()))
        .collect();
    assert_eq!(
        late,
        [
            (Some(16), ProfileRule::Pcr7NotAllowedAfterSeparator),
            (Some(17), ProfileRule::Pcr7NotAllowedAfterSeparator)
        ]
    );

    let mut p = secure_policy();
    p.dbx_required = vec![HexDigest(vec![3; 32])];
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(
        rules_and_events(&v),
        [
            (PolicyRule::RequireSecureBoot, Some(16)),
            (PolicyRule::RequireSecureBoot, Some(17)),
            (PolicyRule::RequireSecureBoot, Some(1)),
            (PolicyRule::DbxRequired, Some(5)),
        ],
        "{v:#?}"
    );
    let line = v[0].to_string();
    assert!(
        line.starts_with(
            "policy \"sb\" rule require_secure_boot: PCR7 event 16 EV_EFI_VARIABLE_DRIVER_CONFIG"
        ),
        "{line}"
    );
    assert!(line.contains("after the PCR7 separator"), "{line}");
    assert!(
        line.contains("(require_secure_boot, dbx_required)"),
        "names every rule reading PCR7: {line}"
    );
    assert!(v[2].message.contains("SecureBoot is 0"), "{}", v[2]);
    assert_eq!(v[3].digest.unwrap().as_bytes(), &[3; 32]);
    assert!(v[3].message.contains("missing"), "{}", v[3]);

    // Its own policy does not trust the tampered PCR7: nothing required from dbx, and the
    // boot passes it.
    let own = generate_policy("own", &log);
    assert!(!own.require_secure_boot);
    assert!(own.dbx_required.is_empty());
    assert_eq!(evaluate(&own, &log), Ok(()));
}

/// Firmware that measured no SecureBoot variable: an appended SecureBoot=1 must not stand
/// in for it, and on a verified boot an appended variable fails the rules that read it.
#[test]
fn appended_config_cannot_fill_in_or_pass() {
    // Events: 1 PK, 2 PCR7 separator, 3 authority, 4 boot app, 5-11 separators, then the
    // forgery: 12 SecureBoot=1.
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    config(&mut b, "PK", b"pk-cert");
    rest_of_boot(&mut b, true);
    config(&mut b, "SecureBoot", &[1]);
    let log = parse(&b);
    let state = log.boot_state(HashAlg::Sha256);
    assert!(!state.secure_boot_enabled());
    assert_eq!(state.secure_boot, None);
    let v = evaluate(&secure_policy(), &log).unwrap_err();
    assert_eq!(
        rules_and_events(&v),
        [
            (PolicyRule::RequireSecureBoot, Some(12)),
            (PolicyRule::RequireSecureBoot, None),
        ],
        "{v:#?}"
    );
    assert!(
        v[1].message.contains("no verified PCR7 SecureBoot"),
        "{}",
        v[1]
    );

    // A verified boot whose PK is pinned, with another PK appended after the separator.
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    pcr7(&mut b, &[1]);
    rest_of_boot(&mut b, false);
    config(&mut b, "PK", b"pk-cert");
    let log = parse(&b);
    assert!(
        !log.boot_state(HashAlg::Sha256).secure_boot_enabled(),
        "PCR7 no longer has the profile's shape"
    );
    let mut p = Policy::new("pk");
    p.pk = Some(vec![config_digest("PK", b"pk-cert")]);
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(rules_and_events(&v), [(PolicyRule::Pk, Some(16))]);
    // Every rule reading PCR7 refuses it: an appended event means PCR7 was extended after
    // the firmware, and nothing read from PCR7 can be relied on.
    p.pk = None;
    p.kek = Some(vec![config_digest("KEK", b"kek-cert")]);
    let v = evaluate(&p, &log).unwrap_err();
    assert_eq!(rules_and_events(&v), [(PolicyRule::Kek, Some(16))]);
}

/// SecureBoot measured twice before the separator: neither order passes (firmware
/// measures each Secure Boot variable once; which one is "the" state is not decidable).
#[test]
fn secure_boot_measured_twice_is_refused() {
    for values in [[1u8, 0], [0, 1]] {
        let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
        config(&mut b, "SecureBoot", &[values[0]]);
        config(&mut b, "SecureBoot", &[values[1]]);
        rest_of_boot(&mut b, true);
        let log = parse(&b);
        let state = log.boot_state(HashAlg::Sha256);
        assert!(!state.secure_boot_enabled());
        let v = evaluate(&secure_policy(), &log).unwrap_err();
        assert!(
            v.iter().any(|x| x.event_index == Some(2)
                && x.message.contains("SecureBoot measured a second time")),
            "{v:#?}"
        );
        assert!(!generate_policy("own", &log).require_secure_boot);
    }
}

/// db and dbx measured twice before the separator: refused whichever measurement the
/// allow-lists name.
#[test]
fn db_or_dbx_measured_twice_is_refused() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    config(&mut b, "SecureBoot", &[1]);
    config(&mut b, "db", b"db-old");
    config(&mut b, "dbx", &dbx_list(&[[3; 32]]));
    config(&mut b, "db", b"db-new");
    config(&mut b, "dbx", &dbx_list(&[[1; 32]]));
    rest_of_boot(&mut b, true);
    let log = parse(&b);

    let mut p = Policy::new("keys");
    p.db = Some(vec![config_digest("db", b"db-old")]);
    p.dbx_required = vec![HexDigest(vec![3; 32])];
    for (db, dbx) in [(&b"db-old"[..], [3; 32]), (&b"db-new"[..], [1; 32])] {
        p.db = Some(vec![config_digest("db", db)]);
        p.dbx_required = vec![HexDigest(dbx.to_vec())];
        let v = evaluate(&p, &log).unwrap_err();
        let dups: Vec<_> = v
            .iter()
            .filter(|x| x.message.contains("measured a second time"))
            .map(|x| (x.rule, x.event_index))
            .collect();
        assert_eq!(
            dups,
            [(PolicyRule::Db, Some(4)), (PolicyRule::Db, Some(5))],
            "{v:#?}"
        );
    }
    // Its own policy reads nothing of the broken PCR7.
    let own = generate_policy("own", &log);
    assert_eq!((own.db.as_ref(), own.dbx_required.len()), (None, 0));
    assert!(own.pcrs.iter().all(|p| p.index != 7));
    assert_eq!(evaluate(&own, &log), Ok(()));
}

/// No PCR7 separator: configuration still reads, but nothing can vouch that it is not an
/// appended event, so the rules that rely on it fail and say why.
#[test]
fn no_pcr7_separator_fails_secure_boot_and_pins() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    config(&mut b, "SecureBoot", &[1]);
    config(&mut b, "PK", b"pk-cert");
    config(&mut b, "dbx", &dbx_list(&[[1; 32]]));
    rest_of_boot(&mut b, false);
    let log = parse(&b);
    let state = log.boot_state(HashAlg::Sha256);
    assert_eq!(state.pcr7_separator(), None);
    assert_eq!(state.secure_boot.as_ref().unwrap().data, [1]);
    assert!(!state.secure_boot_enabled());

    let mut p = secure_policy();
    p.pk = Some(vec![config_digest("PK", b"pk-cert")]);
    p.dbx_required = vec![HexDigest(vec![1; 32])];
    let v = evaluate(&p, &log).unwrap_err();
    let got: Vec<_> = v.iter().map(|x| (x.rule, x.pcr, x.event_index)).collect();
    assert_eq!(
        got,
        [
            (PolicyRule::RequireSecureBoot, Some(7), Some(4)),
            (PolicyRule::RequireSecureBoot, Some(7), None),
            (PolicyRule::RequireSecureBoot, Some(7), None),
        ],
        "{v:#?}"
    );
    assert!(
        v[0].message.contains("before the PCR7 separator"),
        "{}",
        v[0]
    );
    assert!(v[1].message.contains("PCR7 has no separator"), "{}", v[1]);
    assert!(
        v[1].message
            .contains("(require_secure_boot, pk, dbx_required)"),
        "{}",
        v[1]
    );

    let own = generate_policy("own", &log);
    assert!(!own.require_secure_boot);
    assert_eq!((own.pk.as_ref(), own.dbx_required.len()), (None, 0));
    assert_eq!(evaluate(&own, &log), Ok(()));
}

/// SecureBoot data that says 1 under a digest of 0 is not Secure Boot on, separator or not.
#[test]
fn secure_boot_enabled_needs_data_matching_its_digest() {
    let lie =
        crate::verify::eventlog::uefi::encode_variable(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
    let truth =
        crate::verify::eventlog::uefi::encode_variable(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[0]);
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.measure(7, EventType::EV_EFI_VARIABLE_DRIVER_CONFIG, &truth, &lie);
    rest_of_boot(&mut b, true);
    let log = parse(&b);
    let state = log.boot_state(HashAlg::Sha256);
    assert_eq!(
        state.secure_boot, None,
        "an unverified variable is not configuration"
    );
    assert!(!state.secure_boot_enabled());
    let v = evaluate(&secure_policy(), &log).unwrap_err();
    assert_eq!(
        rules_and_events(&v),
        [
            (PolicyRule::RequireSecureBoot, Some(1)),
            (PolicyRule::RequireSecureBoot, None)
        ]
    );
    assert!(
        v[0].message.contains("digest is not the hash of its data"),
        "{}",
        v[0]
    );
}

/// A policy with no rule would accept every boot: refused at load, with the way out named.
#[test]
fn a_policy_without_a_rule_is_refused() {
    let e = Policy::from_toml("name = \"empty\"\nbank = \"sha256\"\n").unwrap_err();
    assert_eq!(e, PolicyError::NoRule("empty".into()));
    assert!(e.to_string().contains("policy generate"), "{e}");
    // Any one rule is enough; an empty allow-list is a rule (nothing allowed).
    assert!(Policy::from_toml("name = \"x\"\nrequire_secure_boot = true\n").is_ok());
    assert!(Policy::from_toml("name = \"x\"\ninitrds = []\n").is_ok());
    let mut p = Policy::new("pins");
    assert_eq!(p.validate(), Err(PolicyError::NoRule("pins".into())));
    p.pcrs.push(PcrValue {
        bank: HashAlg::Sha256,
        index: 0,
        value: HexDigest(vec![0; 32]),
    });
    assert_eq!(p.validate(), Ok(()));
    assert_eq!(p.pcrs_read().into_keys().collect::<Vec<_>>(), [0]);
}

/// Which PCRs each rule reads: the boot-loader lists read 8, 9 and 12 together.
#[test]
fn rules_read_whole_pcrs() {
    let mut p = Policy::new("x");
    p.initrds = Some(vec![]);
    p.require_secure_boot = true;
    let read = p.pcrs_read();
    assert_eq!(read.keys().copied().collect::<Vec<_>>(), [4, 7, 8, 9, 12]);
    assert_eq!(read[&9], [PolicyRule::Initrds]);
    assert_eq!(read[&4], [PolicyRule::RequireSecureBoot]);
}
