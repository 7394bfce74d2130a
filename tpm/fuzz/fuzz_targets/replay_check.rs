//! The replay check on arbitrary logs: it accepts exactly when every quoted PCR is the
//! value the log replays to, and every mismatch it reports is one of the quoted PCRs.
//!
//! Input: [flags, PCR to alter, log...]. flags bits 0-2: the bank; bit 3: alter the quoted
//! value of one PCR (a log that no longer reproduces the quote).
#![no_main]

use ironroot_tpm::verify::eventlog::{EventLog, HashAlg};
use ironroot_tpm::verify::replay::{check_replay, ReplayError};
use libfuzzer_sys::fuzz_target;

const BANKS: [HashAlg; 5] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
    HashAlg::Sm3_256,
];
const QUOTED: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12];

fuzz_target!(|data: &[u8]| {
    let [flags, alter, log @ ..] = data else {
        return;
    };
    let Ok(log) = EventLog::parse(log) else {
        return;
    };
    let bank = BANKS[usize::from(flags & 7) % BANKS.len()];
    let replay = log.replay();
    let mut quoted: Vec<(u32, Vec<u8>)> = QUOTED
        .iter()
        .map(|&i| {
            let v = replay
                .expected(bank, i)
                .map(|d| d.as_bytes().to_vec())
                .unwrap_or_else(|| vec![0; 32]);
            (i, v)
        })
        .collect();
    let altered = flags & 8 != 0;
    if altered {
        let slot = usize::from(*alter) % quoted.len();
        if let Some(b) = quoted[slot].1.first_mut() {
            *b ^= 1;
        }
    }
    let reproduces = quoted
        .iter()
        .all(|(i, v)| replay.expected(bank, *i).is_some_and(|d| d.as_bytes() == v));
    match check_replay(&log, bank, &quoted) {
        Ok(()) => assert!(reproduces, "a log that does not reproduce the quote passed"),
        Err(ReplayError::Mismatch(m)) => {
            assert!(!reproduces, "a log that reproduces the quote was refused");
            assert!(m.iter().all(|m| QUOTED.contains(&m.pcr)));
        }
        Err(e) => {
            let _ = (e.rule(), e.to_string());
        }
    }
});
