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
