//! Decoding of built logs, including data that lies about its own layout.

use ironroot_tpm::verify::eventlog::uefi::{EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use ironroot_tpm::verify::eventlog::{utf16_with_nul, EventLog, EventType, HashAlg, LogBuilder};

use super::{decode, text, EventData};
use crate::boot_tools::report::{DigestCheck, EventLogReport};

fn log(build: impl FnOnce(&mut LogBuilder)) -> EventLog {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    build(&mut b);
    EventLog::parse(&b.build()).expect("built log parses")
}

fn decoded(l: &EventLog, index: usize) -> Option<EventData> {
    decode(l, &l.events()[index])
}

#[test]
fn spec_id_startup_locality_and_separators() {
    let l = log(|b| {
        b.startup_locality(3);
        b.event(7, EventType::EV_SEPARATOR, &[0; 4]);
        b.event(4, EventType::EV_SEPARATOR, &[0xFF; 4]);
        b.event(12, EventType::EV_SEPARATOR, b"WBCL");
    });
    let Some(EventData::SpecId {
        spec_version,
        algorithms,
        ..
    }) = decoded(&l, 0)
    else {
        panic!("event 0 is the Spec ID event");
    };
    assert_eq!(spec_version, "2.0");
    let algs: Vec<&str> = algorithms.iter().map(|a| a.alg.as_str()).collect();
    assert_eq!(algs, ["sha1", "sha256"]);
    assert_eq!(
        decoded(&l, 1),
        Some(EventData::StartupLocality { locality: 3 })
    );
    let meanings: Vec<String> = (2..5)
        .map(|i| match decoded(&l, i) {
            Some(EventData::Separator { meaning, .. }) => meaning,
            other => panic!("not a separator: {other:?}"),
        })
        .collect();
    assert_eq!(meanings, ["normal", "error", "other"]);
}

#[test]
fn uefi_variables() {
    let mut boot0001 = 1u32.to_le_bytes().to_vec();
    let path = [0x7F, 0xFF, 4, 0];
    boot0001.extend_from_slice(&(path.len() as u16).to_le_bytes());
    boot0001.extend_from_slice(&utf16_with_nul("Linux"));
    boot0001.extend_from_slice(&path);
    let l = log(|b| {
        let t = EventType::EV_EFI_VARIABLE_DRIVER_CONFIG;
        b.variable(7, t, &EFI_GLOBAL_VARIABLE, "SecureBoot", &[1]);
        b.variable(7, t, &EFI_IMAGE_SECURITY_DATABASE, "dbx", &[]);
        let t = EventType::EV_EFI_VARIABLE_BOOT;
        b.variable(1, t, &EFI_GLOBAL_VARIABLE, "BootOrder", &[1, 0, 0, 0]);
        b.variable(1, t, &EFI_GLOBAL_VARIABLE, "Boot0001", &boot0001);
    });
    let Some(EventData::UefiVariable {
        guid,
        name,
        secure_boot,
        ..
    }) = decoded(&l, 1)
    else {
        panic!("SecureBoot decodes");
    };
    assert_eq!(guid, "8be4df61-93ca-11d2-aa0d-00e098032b8c");
    assert_eq!((name.as_str(), secure_boot), ("SecureBoot", Some(1)));
    assert!(matches!(
        decoded(&l, 2),
        Some(EventData::UefiVariable {
            signature_entries: Some(0),
            ..
        })
    ));
    let Some(EventData::UefiVariable { boot_order, .. }) = decoded(&l, 3) else {
        panic!("BootOrder decodes");
    };
    assert_eq!(boot_order.unwrap(), ["Boot0001", "Boot0000"]);
    let Some(EventData::UefiVariable {
        description,
        device_path,
        ..
    }) = decoded(&l, 4)
    else {
        panic!("Boot0001 decodes");
    };
    assert_eq!(description.as_deref(), Some("Linux"));
    assert_eq!(device_path.as_deref(), Some(""));
}

#[test]
fn tagged_events_name_the_linux_tags() {
    let l = log(|b| {
        b.linux_tag(0x8F3B_22ED, "LOADED_IMAGE::LoadOptions", b"x");
        b.linux_tag(0x8F3B_22EC, "Linux initrd", b"y");
        b.linux_tag(0x1234, "other", b"z");
    });
    let names: Vec<Option<String>> = (1..4)
        .map(|i| match decoded(&l, i) {
            Some(EventData::TaggedEvent { tag_name, .. }) => tag_name,
            other => panic!("not a tagged event: {other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            Some("LOAD_OPTIONS_EVENT_TAG_ID".to_string()),
            Some("INITRD_EVENT_TAG_ID".to_string()),
            None
        ]
    );
    assert!(matches!(
        decoded(&l, 3),
        Some(EventData::TaggedEvent { tag_id, text: Some(t), .. }) if tag_id == "0x00001234" && t == "other"
    ));
}

#[test]
fn image_load_with_a_lying_path_length_shows_hex() {
    let mut data = Vec::new();
    for v in [0x1000u64, 0x2000, 0, u64::MAX] {
        data.extend_from_slice(&v.to_le_bytes());
    }
    data.extend_from_slice(&[4, 4, 8, 0, b'a', 0, 0, 0]);
    let l = log(|b| {
        b.measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"image",
            &data,
        );
        b.measure(4, EventType::EV_EFI_BOOT_SERVICES_APPLICATION, b"i", &[1]);
    });
    let Some(EventData::ImageLoad {
        location,
        length,
        device_path,
        device_path_hex,
        ..
    }) = decoded(&l, 1)
    else {
        panic!("the fixed header decodes");
    };
    assert_eq!((location.as_str(), length), ("0x1000", 0x2000));
    assert_eq!(device_path, None);
    assert_eq!(device_path_hex.as_deref(), Some("0404080061000000"));
    // Too short for UEFI_IMAGE_LOAD_EVENT: nothing decoded.
    assert_eq!(decoded(&l, 2), None);
}

#[test]
fn strings_and_unknown_types() {
    let l = log(|b| {
        b.event(
            5,
            EventType::EV_EFI_ACTION,
            b"Exit Boot Services Invocation",
        );
        b.event(0, EventType::EV_S_CRTM_VERSION, &utf16_with_nul("edk2-1.0"));
        b.event(8, EventType::EV_IPL, b"grub_cmd: linux /vmlinuz\0");
        b.event(0, EventType::EV_IPL, &[0x33, 0xC0, 0x8E, 0xD0]);
        b.event(4, EventType::from_u32(0xABCD), b"??");
    });
    let texts: Vec<Option<EventData>> = (1..5).map(|i| decoded(&l, i)).collect();
    let t = |e: &str, s: &str| {
        Some(EventData::Text {
            encoding: e.into(),
            text: s.into(),
        })
    };
    assert_eq!(
        texts,
        [
            t("utf-8", "Exit Boot Services Invocation"),
            t("utf-16le", "edk2-1.0"),
            t("utf-8", "grub_cmd: linux /vmlinuz"),
            None,
        ]
    );
    let report = EventLogReport::of(&l);
    let unknown = &report.events[5];
    assert_eq!(unknown.event_type, "EV_UNKNOWN(0x0000abcd)");
    assert_eq!(
        (unknown.data.clone(), unknown.data_hex.as_str()),
        (None, "3f3f")
    );
}

#[test]
fn text_needs_printable_data() {
    assert_eq!(text(b""), None);
    assert_eq!(text(&[0, 0, 0, 0]), None);
    assert_eq!(text(b"a\x01b"), None);
    // UTF-16 followed by something other than NULs is not a string.
    let mut s = utf16_with_nul("ab");
    s.extend_from_slice(&[0x41, 0]);
    assert_eq!(text(&s), None);
}

#[test]
fn digest_checks() {
    let l = log(|b| {
        b.event(5, EventType::EV_EFI_ACTION, b"ok");
        b.raw_event(5, EventType::EV_EFI_ACTION, &[&[1; 20], &[2; 32]], b"lie");
        b.measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"code",
            b"x",
        );
    });
    let r = EventLogReport::of(&l);
    let checks: Vec<DigestCheck> = r.events.iter().map(|e| e.digest_check).collect();
    assert_eq!(
        checks,
        [
            DigestCheck::NotExtended,
            DigestCheck::MatchesData,
            DigestCheck::Mismatch,
            DigestCheck::NotOfData,
        ]
    );
    assert_eq!(r.digest_findings.len(), 2, "one finding per bank");
    assert!(r.digest_findings.iter().all(|f| f.event_index == 2));
}
