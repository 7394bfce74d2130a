//! Hostile and damaged logs: every one is a typed error, never a panic.

use super::*;

#[test]
fn good_log_parses_and_replays() {
    let bytes = good().build();
    let log = parse(&bytes).unwrap();
    assert_eq!(log.format(), LogFormat::CryptoAgile);
    assert_eq!(log.events().len(), 14);
    assert_eq!(
        log.banks().iter().map(|b| b.alg).collect::<Vec<_>>(),
        [HashAlg::Sha1, HashAlg::Sha256]
    );
    assert!(log.digest_findings().is_empty());
    let r = log.replay();
    assert_eq!(r.get(HashAlg::Sha256, 3).unwrap().to_hex(), SHA256_SEP);
    assert_eq!(r.get(HashAlg::Sha256, 8), None);
    assert_eq!(
        r.expected(HashAlg::Sha256, 8).unwrap().to_hex(),
        "0".repeat(64)
    );
    assert_eq!(
        r.expected(HashAlg::Sha256, 17).unwrap().to_hex(),
        "f".repeat(64)
    );
    assert_eq!(
        log.events()[3].event_type.to_string(),
        "EV_EFI_VARIABLE_DRIVER_CONFIG"
    );
}

#[test]
fn empty_and_oversized_log() {
    assert_eq!(parse(&[]), Err(EventLogError::Empty));
    let bytes = good().build();
    let opts = ParseOptions {
        limits: Limits {
            max_log_size: 100,
            ..Limits::default()
        },
        ccel: false,
    };
    assert_eq!(
        EventLog::parse_with(&bytes, &opts),
        Err(EventLogError::LogTooLarge {
            size: bytes.len(),
            limit: 100
        })
    );
}

#[test]
fn truncated_everywhere_is_an_error_never_a_panic() {
    let bytes = good().build();
    let full = parse(&bytes).unwrap();
    let boundaries: Vec<usize> = full.events().iter().map(|e| e.offset).collect();
    for cut in 1..bytes.len() {
        let r = parse(&bytes[..cut]);
        // Cutting at an event boundary leaves a shorter, valid log; so does a cut whose
        // partial last event is all zero bytes (taken as fill, like the kernel does).
        if let Ok(log) = r {
            let end = cut - log.trailing_padding();
            assert!(boundaries.contains(&end) || end == bytes.len(), "cut {cut}");
            assert_eq!(
                log.events().len(),
                boundaries.iter().filter(|b| **b < end).count(),
                "cut {cut}"
            );
            continue;
        }
        assert!(
            matches!(r, Err(EventLogError::Truncated { .. })),
            "cut at {cut}: {r:?}"
        );
    }
    // A specific cut: in the middle of event 1's sha256 digest.
    let at = offset_of(&bytes, 1) + 12 + 2 + 20 + 2 + 10;
    assert_eq!(
        parse(&bytes[..at]),
        Err(EventLogError::Truncated {
            index: 1,
            field: Field::Digest,
            offset: at - 10,
            need: 32,
            have: 10
        })
    );
}

#[test]
fn oversized_event_size() {
    let mut bytes = good().build();
    let ev1 = offset_of(&bytes, 1);
    let size_at = ev1 + 12 + 22 + 34;
    // eventSize past the end of the log: truncated, reported before any allocation.
    bytes[size_at..size_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let have = bytes.len() - size_at - 4;
    assert_eq!(
        parse(&bytes),
        Err(EventLogError::Truncated {
            index: 1,
            field: Field::EventData,
            offset: size_at + 4,
            need: u64::from(u32::MAX),
            have
        })
    );
    // eventSize inside the log but over the limit.
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.event(1, EventType::EV_EFI_ACTION, &[b'a'; 5000]);
    let opts = ParseOptions {
        limits: Limits {
            max_event_data: 4096,
            ..Limits::default()
        },
        ccel: false,
    };
    let bytes = b.build();
    let off = offset_of(&bytes, 1);
    assert_eq!(
        EventLog::parse_with(&bytes, &opts),
        Err(EventLogError::LimitExceeded {
            index: 1,
            field: Field::EventSize,
            offset: off + 12 + 34,
            value: 5000,
            limit: 4096
        })
    );
}

#[test]
fn zero_and_huge_digest_counts() {
    let mut bytes = good().build();
    let ev2 = offset_of(&bytes, 2);
    bytes[ev2 + 8..ev2 + 12].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(
        parse(&bytes),
        Err(EventLogError::DigestCount {
            index: 2,
            offset: ev2 + 8,
            count: 0,
            expected: 2
        })
    );
    bytes[ev2 + 8..ev2 + 12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(EventLogError::DigestCount {
            count: u32::MAX,
            ..
        })
    ));
}

#[test]
fn undeclared_and_duplicate_algorithms() {
    let mut bytes = good().build();
    let ev1 = offset_of(&bytes, 1);
    // The second digest (sha256) relabelled as sha384.
    let alg_at = ev1 + 12 + 22;
    bytes[alg_at..alg_at + 2].copy_from_slice(&0x000Cu16.to_le_bytes());
    assert_eq!(
        parse(&bytes),
        Err(EventLogError::UndeclaredAlgorithm {
            index: 1,
            offset: alg_at,
            alg: HashAlg::Sha384
        })
    );
    bytes[alg_at..alg_at + 2].copy_from_slice(&0x0004u16.to_le_bytes());
    assert!(matches!(
        parse(&bytes),
        Err(EventLogError::DuplicateAlgorithm {
            index: 1,
            alg: HashAlg::Sha1,
            ..
        })
    ));
}

#[test]
fn huge_event_count() {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    for _ in 0..20 {
        b.event(8, EventType::EV_IPL, b"grub_cmd: x");
    }
    let bytes = b.build();
    let opts = ParseOptions {
        limits: Limits {
            max_events: 10,
            ..Limits::default()
        },
        ccel: false,
    };
    assert_eq!(
        EventLog::parse_with(&bytes, &opts),
        Err(EventLogError::TooManyEvents {
            index: 10,
            offset: offset_of(&bytes, 10),
            limit: 10
        })
    );
    assert_eq!(parse(&bytes).unwrap().events().len(), 21);
}

#[test]
fn spec_id_problems() {
    // Too many algorithms.
    let banks: Vec<(HashAlg, u16)> = (0..9).map(|i| (HashAlg::Unknown(0x100 + i), 8)).collect();
    let bytes = LogBuilder::crypto_agile_sized(&banks, &[]).build();
    assert_eq!(
        parse(&bytes),
        Err(EventLogError::SpecId {
            field: Field::NumberOfAlgorithms,
            offset: 32 + 24,
            problem: SpecIdProblem::TooManyAlgorithms { count: 9, limit: 8 }
        })
    );
    // Known algorithm with a wrong size.
    let bytes = LogBuilder::crypto_agile_sized(&[(HashAlg::Sha256, 20)], &[]).build();
    assert!(matches!(
        parse(&bytes),
        Err(EventLogError::SpecId {
            problem: SpecIdProblem::WrongDigestSize {
                declared: 20,
                expected: 32,
                ..
            },
            ..
        })
    ));
    // Unknown algorithm with an absurd size.
    let bytes = LogBuilder::crypto_agile_sized(&[(HashAlg::Unknown(0x99), 65_000)], &[]).build();
    assert!(matches!(
        parse(&bytes),
        Err(EventLogError::SpecId {
            problem: SpecIdProblem::BadDigestSize {
                declared: 65_000,
                ..
            },
            ..
        })
    ));
    // No algorithms.
    let bytes = LogBuilder::crypto_agile_sized(&[], &[]).build();
    assert!(matches!(
        parse(&bytes),
        Err(EventLogError::SpecId {
            problem: SpecIdProblem::NoAlgorithms,
            ..
        })
    ));
    // vendorInfoSize larger than the event.
    let mut bytes = LogBuilder::crypto_agile(&[HashAlg::Sha256]).build();
    let last = bytes.len() - 1;
    bytes[last] = 200;
    assert!(matches!(
        parse(&bytes),
        Err(EventLogError::Truncated {
            index: 0,
            field: Field::VendorInfo,
            need: 200,
            ..
        })
    ));
    // Spec ID event outside PCR0 (the TDX CCEL layout).
    let mut bytes = LogBuilder::crypto_agile(&[HashAlg::Sha384]).build();
    bytes[0] = 1;
    assert_eq!(
        parse(&bytes),
        Err(EventLogError::SpecIdPcrIndex { offset: 0, pcr: 1 })
    );
    let ccel = ParseOptions {
        ccel: true,
        ..ParseOptions::default()
    };
    assert!(EventLog::parse_with(&bytes, &ccel).is_ok());
}

#[test]
fn vendor_info_and_unknown_bank_are_carried_not_replayed() {
    let banks = [(HashAlg::Sha256, 32), (HashAlg::Unknown(0x27), 48)];
    let mut b = LogBuilder::crypto_agile_sized(&banks, &[0xde, 0xad, 0xbe, 0xef]);
    b.separators(&[0]);
    let log = parse(&b.build()).unwrap();
    assert_eq!(log.spec_id().unwrap().vendor_info, [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(log.banks().len(), 2);
    let sep = &log.events()[1];
    assert_eq!(
        sep.digest(HashAlg::Unknown(0x27)).unwrap().as_bytes().len(),
        48
    );
    let r = log.replay();
    assert_eq!(r.banks().len(), 1);
    assert_eq!(r.get(HashAlg::Sha256, 0).unwrap().to_hex(), SHA256_SEP);
    assert!(log.digest_findings().is_empty());
}
