//! Tampering, replay seeds, padding and digest checks.

use super::*;

#[test]
fn flipped_digest_changes_replay_and_is_a_finding() {
    let good_bytes = good().build();
    let good_log = parse(&good_bytes).unwrap();
    let mut bytes = good_bytes.clone();
    // Event 6 is the PCR4 EV_EFI_ACTION; flip one bit of its sha256 digest.
    let ev = &good_log.events()[6];
    assert_eq!(ev.event_type, EventType::EV_EFI_ACTION);
    let at = ev.offset + 12 + 22 + 2;
    bytes[at] ^= 1;
    let log = parse(&bytes).unwrap();
    assert_ne!(
        log.replay().get(HashAlg::Sha256, 4),
        good_log.replay().get(HashAlg::Sha256, 4)
    );
    assert_eq!(
        log.replay().get(HashAlg::Sha1, 4),
        good_log.replay().get(HashAlg::Sha1, 4)
    );
    let f = log.digest_findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].event_index, 6);
    assert_eq!(f[0].event_type, EventType::EV_EFI_ACTION);
    assert_eq!(f[0].pcr, 4);
    assert_eq!(f[0].found.alg(), HashAlg::Sha256);
    assert_eq!(
        f[0].expected,
        HashAlg::Sha256
            .hash(b"Calling EFI Application from Boot Option")
            .unwrap()
    );
    assert_eq!(f[0].found.as_bytes()[0], f[0].expected.as_bytes()[0] ^ 1);
    // And the data changed instead of the digest is found the same way.
    let mut bytes = good_bytes;
    let last = ev.offset + 12 + 22 + 34 + 4;
    bytes[last] = b'X';
    let log = parse(&bytes).unwrap();
    assert_eq!(log.digest_findings().len(), 2); // both banks
    assert_eq!(log.replay(), good_log.replay());
}

#[test]
fn dropped_and_reordered_events_change_replay() {
    let mk = |order: &[usize]| {
        let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
        let evs: [&[u8]; 3] = [b"one", b"two", b"three"];
        for i in order {
            b.event(5, EventType::EV_EFI_ACTION, evs[*i]);
        }
        parse(&b.build())
            .unwrap()
            .replay()
            .get(HashAlg::Sha256, 5)
            .copied()
    };
    let base = mk(&[0, 1, 2]);
    assert!(base.is_some());
    assert_ne!(mk(&[0, 2]), base, "dropped event");
    assert_ne!(mk(&[1, 0, 2]), base, "reordered events");
    assert_eq!(mk(&[0, 1, 2]), base);
}

#[test]
fn pcr_index_out_of_range() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.event(24, EventType::EV_EFI_ACTION, b"x");
    let bytes = b.build();
    assert_eq!(
        parse(&bytes),
        Err(EventLogError::PcrIndexOutOfRange {
            index: 1,
            offset: offset_of_raw(&bytes),
            event_type: EventType::EV_EFI_ACTION,
            pcr: 24
        })
    );
    // EV_NO_ACTION with 0xFFFFFFFF is fine (Windows logs) and not replayed.
    let mut b = LogBuilder::sha1_legacy();
    b.event(0, EventType::EV_SEPARATOR, &[0; 4]);
    b.raw_event(u32::MAX, EventType::EV_NO_ACTION, &[&[7; 20]], b"WBCL");
    let log = parse(&b.build()).unwrap();
    assert_eq!(log.events().len(), 2);
    assert_eq!(log.replay().bank(HashAlg::Sha1).unwrap().iter().count(), 1);
}

/// Offset of event 1 of a one-bank sha256 log with an empty vendorInfo.
fn offset_of_raw(_bytes: &[u8]) -> usize {
    32 + 33
}

#[test]
fn startup_locality_and_hcrtm_seed_pcr0() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.startup_locality(3).separators(&[0]);
    let log = parse(&b.build()).unwrap();
    assert_eq!(log.startup_locality(), 3);
    let mut seed = [0u8; 32];
    seed[31] = 3;
    let sep = HashAlg::Sha256.hash(&[0; 4]).unwrap();
    let want = HashAlg::Sha256
        .hash_parts(&[&seed, sep.as_bytes()])
        .unwrap();
    assert_eq!(log.replay().get(HashAlg::Sha256, 0), Some(&want));

    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.measure(0, EventType::EV_EFI_HCRTM_EVENT, b"hcrtm", b"HCRTM");
    let log = parse(&b.build()).unwrap();
    seed[31] = 4;
    let h = HashAlg::Sha256.hash(b"hcrtm").unwrap();
    let want = HashAlg::Sha256.hash_parts(&[&seed, h.as_bytes()]).unwrap();
    assert_eq!(log.replay().get(HashAlg::Sha256, 0), Some(&want));

    // A first StartupLocality event in a SHA-1 log is an ordinary event, not a Spec ID.
    let mut b = LogBuilder::sha1_legacy();
    b.startup_locality(3);
    let log = parse(&b.build()).unwrap();
    assert_eq!(log.format(), LogFormat::Sha1Legacy);
    assert_eq!(log.replay().bank(HashAlg::Sha1).unwrap().iter().count(), 0);
    assert_eq!(
        log.replay().expected(HashAlg::Sha1, 0).unwrap().to_hex(),
        "0000000000000000000000000000000000000003"
    );
}

#[test]
fn trailing_padding_is_accepted_but_garbage_is_not() {
    let mut bytes = good().build();
    let n = parse(&bytes).unwrap().events().len();
    bytes.extend_from_slice(&[0xFF; 1000]);
    let log = parse(&bytes).unwrap();
    assert_eq!(log.trailing_padding(), 1000);
    assert_eq!(log.events().len(), n);
    bytes.push(0x01);
    assert!(parse(&bytes).is_err());
}

#[test]
fn legacy_log_and_grub_checks() {
    let mut b = LogBuilder::sha1_legacy();
    b.event(0, EventType::EV_S_CRTM_VERSION, b"1.0\0")
        .measure(
            8,
            EventType::EV_IPL,
            b"linux /vmlinuz quiet",
            b"grub_cmd: linux /vmlinuz quiet\0",
        )
        .measure(
            8,
            EventType::EV_IPL,
            b"/vmlinuz quiet",
            b"kernel_cmdline: /vmlinuz quiet\0",
        )
        .measure(8, EventType::EV_IPL, b"set x=1\0", b"grub_cmd set x=1\0")
        .measure(
            8,
            EventType::EV_IPL,
            b"tampered",
            b"kernel_cmdline: /vmlinuz single\0",
        );
    let log = parse(&b.build()).unwrap();
    assert_eq!(log.format(), LogFormat::Sha1Legacy);
    let f = log.digest_findings();
    assert_eq!(f.len(), 1);
    assert_eq!(f[0].event_index, 4);
    assert_eq!(f[0].checked_against, CheckedAgainst::GrubString);
    assert_eq!(
        f[0].expected,
        HashAlg::Sha1.hash(b"/vmlinuz single").unwrap()
    );
    let st = log.boot_state(HashAlg::Sha1);
    assert_eq!(st.kernel_cmdlines.len(), 2);
    assert_eq!(
        st.kernel_cmdlines[0].text.as_deref(),
        Some("/vmlinuz quiet")
    );
    assert!(st.kernel_cmdlines[0].text_verified);
    assert!(!st.kernel_cmdlines[1].text_verified);
    assert_eq!(st.grub_commands.len(), 2);
}
