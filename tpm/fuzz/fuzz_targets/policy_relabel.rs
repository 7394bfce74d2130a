//! The measured-boot invariant on arbitrary logs: take the log as a good boot and write its
//! policy (pinned or not, by the first byte); change one measurement (a bad boot) and
//! quote it; then (1) the bad log judged against the good boot's quote is never accepted
//! unless the two replay alike, and (2) if the bad boot is rejected, relabelling any one
//! event to any type, or replacing its data, never makes it accepted.
//!
//! Input: [flags, changed event, relabelled event, new type (4 bytes LE), log...].
#![no_main]

use ironroot_tpm::verify::eventlog::{Digest, Event, EventLog, EventType, HashAlg, LogBuilder};
use ironroot_tpm::verify::policy::{generate_policy_with, judge, GenerateOptions, Policy};
use libfuzzer_sys::fuzz_target;

const QUOTED: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12];

fn rebuild(log: &EventLog, events: &[Event]) -> Option<EventLog> {
    let banks: Vec<HashAlg> = log.banks().iter().map(|b| b.alg).collect();
    EventLog::parse(&LogBuilder::from_events(log.format(), &banks, events)).ok()
}

fn quote(log: &EventLog, policy: &Policy) -> Vec<(u32, Vec<u8>)> {
    let replay = log.replay();
    let mut pcrs: Vec<u32> = QUOTED.to_vec();
    pcrs.extend(policy.pcrs.iter().map(|p| p.index));
    pcrs.sort_unstable();
    pcrs.dedup();
    pcrs.into_iter()
        .filter_map(|i| Some((i, replay.expected(policy.bank, i)?.as_bytes().to_vec())))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((head, rest)) = data.split_at_checked(7) else {
        return;
    };
    let Ok(parsed) = EventLog::parse(rest) else {
        return;
    };
    let Some(good) = rebuild(&parsed, parsed.events()) else {
        return;
    };
    let opts = GenerateOptions {
        pin_pcrs: if head[0] & 1 == 0 { vec![4, 7, 8, 9] } else { vec![] },
    };
    let policy = generate_policy_with("good", &good, &opts);
    if policy.validate().is_err() {
        return;
    }
    let bank = policy.bank;
    let events = good.events().to_vec();
    if events.len() < 2 {
        return;
    }
    // The bad boot: one measurement changed.
    let k = 1 + usize::from(head[1]) % (events.len() - 1);
    let mut bad_events = events.clone();
    let Some(d) = bad_events[k].digests.iter_mut().find(|d| d.alg() == bank) else {
        return;
    };
    let mut bytes = d.as_bytes().to_vec();
    if bytes.is_empty() {
        return;
    }
    bytes[0] ^= 0x5A;
    let Some(changed) = Digest::new(bank, &bytes) else {
        return;
    };
    *d = changed;
    let Some(bad) = rebuild(&good, &bad_events) else {
        return;
    };
    let quoted = quote(&bad, &policy);
    let good_quote = quote(&good, &policy);
    if good_quote != quoted {
        assert!(
            judge(&policy, &bad, &good_quote).is_err(),
            "a log that does not reproduce the quote was accepted"
        );
    }
    if judge(&policy, &bad, &quoted).is_ok() {
        return;
    }
    let j = 1 + usize::from(head[2]) % (bad_events.len() - 1);
    let t = EventType::from_u32(u32::from_le_bytes([head[3], head[4], head[5], head[6]]) % 0x8000_00F0);
    let mut forged = bad_events.clone();
    forged[j].event_type = t;
    if head[0] & 2 != 0 {
        // Replace the data too (its first bytes: a tag id, a prefix, an action string).
        let mut d = b"Calling EFI Application from Boot Option".to_vec();
        if head[0] & 4 != 0 {
            d = forged[j].data.clone();
            if d.len() >= 4 {
                d[..4].copy_from_slice(&0x8F3B_22ECu32.to_le_bytes());
            }
        }
        forged[j].data = d;
    }
    if let Some(log) = rebuild(&good, &forged) {
        assert!(
            judge(&policy, &log, &quoted).is_err(),
            "a rejected boot was accepted after event {j} was relabelled {t}"
        );
    }
});
