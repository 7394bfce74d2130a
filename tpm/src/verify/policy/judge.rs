//! The whole measured-boot decision, pure: the log must reproduce every quoted PCR, every
//! PCR the policy reads must have been quoted, and the policy must pass.
//!
//! Invariant (tested on every fixture log and fuzzed, tpm/tests/it/relabel_invariant.rs and
//! tpm/fuzz): an edit of the log that still reproduces the quote either changes nothing
//! the policy sees or is rejected. In particular relabelling any event (its type, a tag
//! id, a string prefix, data its digest does not cover) never turns a rejected boot into
//! an accepted one.

use std::fmt;

use super::evaluate_state;
use super::model::Policy;
use super::violation::PolicyViolation;
use crate::verify::eventlog::{Digest, EventLog, HashAlg};

/// A quoted PCR the log does not reproduce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplayMismatch {
    /// PCR index.
    pub pcr: u32,
    /// The quoted value.
    pub quoted: Vec<u8>,
    /// What the log replays to (`None`: the index is not a PCR).
    pub replayed: Option<Digest>,
}

impl fmt::Display for ReplayMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PCR {}: quoted {}, log replays to ",
            self.pcr,
            hex::encode(&self.quoted)
        )?;
        match &self.replayed {
            Some(d) => f.write_str(&d.to_hex()),
            None => f.write_str("nothing"),
        }
    }
}

/// Why a measured boot is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MeasuredBootRejection {
    /// The log has no digests of the policy's bank.
    #[error("the event log has no {0} bank to replay")]
    NoBank(HashAlg),
    /// A PCR the policy reads was not quoted: its events are not bound to the TPM.
    #[error("PCR {0} is read by the policy but was not quoted")]
    Unquoted(u32),
    /// The log does not reproduce the quote.
    #[error("the event log does not reproduce the quoted PCRs (altered, truncated or reordered log, or PCRs extended after boot): {}", list(.0))]
    Replay(Vec<ReplayMismatch>),
    /// The policy fails.
    #[error("{} rule(s) failed: {}", .0.len(), list(.0))]
    Policy(Vec<PolicyViolation>),
}

fn list<T: fmt::Display>(v: &[T]) -> String {
    v.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The quoted PCRs (in the policy's bank) the log does not reproduce.
pub fn replay_mismatches(
    log: &EventLog,
    bank: HashAlg,
    quoted: &[(u32, Vec<u8>)],
) -> Result<Vec<ReplayMismatch>, MeasuredBootRejection> {
    let replay = log.replay();
    let bank_values = replay
        .bank(bank)
        .ok_or(MeasuredBootRejection::NoBank(bank))?;
    Ok(quoted
        .iter()
        .filter_map(|(pcr, value)| {
            let replayed = bank_values.expected(*pcr);
            let same = replayed.is_some_and(|d| d.as_bytes() == value.as_slice());
            (!same).then(|| ReplayMismatch {
                pcr: *pcr,
                quoted: value.clone(),
                replayed,
            })
        })
        .collect())
}

/// Judges a boot: `quoted` are the PCR values (in `policy.bank`) a verified quote vouches
/// for. Fails closed: a policy PCR missing from the quote, any replay mismatch, or any
/// policy violation rejects.
pub fn judge(
    policy: &Policy,
    log: &EventLog,
    quoted: &[(u32, Vec<u8>)],
) -> Result<(), MeasuredBootRejection> {
    if let Some(pcr) = policy
        .pcrs_read()
        .into_keys()
        .find(|pcr| !quoted.iter().any(|(q, _)| q == pcr))
    {
        return Err(MeasuredBootRejection::Unquoted(pcr));
    }
    let mismatches = replay_mismatches(log, policy.bank, quoted)?;
    if !mismatches.is_empty() {
        return Err(MeasuredBootRejection::Replay(mismatches));
    }
    evaluate_state(policy, &log.boot_state(policy.bank), &log.replay())
        .map_err(MeasuredBootRejection::Policy)
}
