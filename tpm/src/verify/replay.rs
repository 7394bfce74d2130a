//! The event log against the quote: replaying the log's digests of the quoted bank must
//! reproduce every quoted PCR. The comparison is [`replay_mismatches`], the one the
//! measured-boot invariant tests judge with; this module names each mismatch with the last
//! event the log records for that PCR, so an operator can see where the log and the TPM
//! part ways.

use std::fmt;

use crate::verify::eventlog::{EventLog, HashAlg};
use crate::verify::policy::replay_mismatches;

/// A quoted PCR the log does not reproduce, as an operator reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrMismatch {
    /// PCR index.
    pub pcr: u32,
    /// The bank replayed.
    pub bank: HashAlg,
    /// The quoted value.
    pub quoted: Vec<u8>,
    /// What the log replays to (hex; empty when the index is not a PCR).
    pub replayed: String,
    /// The last event of that PCR in the log: its index and type.
    pub last_event: Option<(usize, String)>,
}

impl fmt::Display for PcrMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PCR {} ({}): quoted {}, log replays to {}",
            self.pcr,
            self.bank,
            hex::encode(&self.quoted),
            self.replayed
        )?;
        if let Some((index, event_type)) = &self.last_event {
            write!(f, " (last event #{index} {event_type})")?;
        }
        Ok(())
    }
}

/// Why the event log was not accepted as the record of the quoted boot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The log has no digests of the quoted bank.
    #[error("the log has no {0} bank to replay")]
    NoBank(HashAlg),
    /// The log does not reproduce these quoted PCRs.
    #[error(
        "the event log does not reproduce the quoted PCRs (altered, truncated or reordered \
         log, or PCRs extended after boot): {}",
        list(.0)
    )]
    Mismatch(Vec<PcrMismatch>),
}

impl ReplayError {
    /// The rule that failed, in an operator's words.
    pub fn rule(&self) -> &'static str {
        match self {
            Self::NoBank(_) => "event log",
            Self::Mismatch(_) => "event log replay",
        }
    }
}

fn list(v: &[PcrMismatch]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The log must reproduce every `quoted` PCR (index, value) of `bank`.
pub fn check_replay(
    log: &EventLog,
    bank: HashAlg,
    quoted: &[(u32, Vec<u8>)],
) -> Result<(), ReplayError> {
    let mismatches = replay_mismatches(log, bank, quoted).map_err(|_| ReplayError::NoBank(bank))?;
    if mismatches.is_empty() {
        return Ok(());
    }
    let described = mismatches
        .into_iter()
        .map(|m| PcrMismatch {
            pcr: m.pcr,
            bank,
            last_event: log
                .events()
                .iter()
                .rev()
                .find(|e| e.pcr == m.pcr)
                .map(|e| (e.index, e.event_type.to_string())),
            replayed: m.replayed.map(|d| d.to_hex()).unwrap_or_default(),
            quoted: m.quoted,
        })
        .collect();
    Err(ReplayError::Mismatch(described))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::eventlog::{EventType, LogBuilder};

    fn log() -> EventLog {
        let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
        b.event(0, EventType::EV_S_CRTM_VERSION, &[0, 0])
            .measure(4, EventType::EV_EFI_ACTION, b"boot", b"boot")
            .separators(&[0, 4, 7]);
        EventLog::parse(&b.build()).unwrap()
    }

    fn quoted(log: &EventLog, pcrs: &[u32]) -> Vec<(u32, Vec<u8>)> {
        let replay = log.replay();
        pcrs.iter()
            .map(|&i| {
                let v = replay.expected(HashAlg::Sha256, i).unwrap();
                (i, v.as_bytes().to_vec())
            })
            .collect()
    }

    #[test]
    fn a_log_that_reproduces_the_quote_passes() {
        let log = log();
        check_replay(&log, HashAlg::Sha256, &quoted(&log, &[0, 4, 7, 9])).unwrap();
    }

    #[test]
    fn a_mismatch_names_the_pcr_and_the_last_event_of_it() {
        let log = log();
        let mut q = quoted(&log, &[0, 4, 7]);
        q[1].1[0] ^= 1;
        let e = check_replay(&log, HashAlg::Sha256, &q).unwrap_err();
        let ReplayError::Mismatch(m) = &e else {
            panic!("{e}")
        };
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].pcr, 4);
        assert_eq!(m[0].quoted, q[1].1);
        let (index, event_type) = m[0].last_event.clone().unwrap();
        assert_eq!(event_type, EventType::EV_SEPARATOR.to_string());
        assert_eq!(log.events()[index].pcr, 4);
        assert_eq!(e.rule(), "event log replay");
        assert!(e.to_string().contains("PCR 4 (sha256): quoted "), "{e}");
    }

    #[test]
    fn a_bank_the_log_lacks_is_named() {
        let log = log();
        let e = check_replay(&log, HashAlg::Sha384, &[(0, vec![0; 48])]).unwrap_err();
        assert_eq!(e, ReplayError::NoBank(HashAlg::Sha384));
        assert_eq!(e.rule(), "event log");
    }
}
