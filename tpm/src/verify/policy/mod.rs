//! Measured-boot policy: a named TOML document saying what a good boot looks like, its
//! evaluation against a parsed event log (every failure reported, each naming the rule,
//! PCR, event and digest), and generation from a known-good boot.
//!
//! Digest rules compare the digests the log carries, which the caller has already bound to
//! the TPM by checking the replay against a quote; event data (SecureBoot value, dbx
//! entries) is used only when its digest matches it. Secure Boot configuration is what
//! firmware measured before the PCR7 separator (see
//! [`BootState`](crate::verify::eventlog::BootState)): a configuration event after it,
//! which anything able to extend PCR7 after boot can append, fails the PCR7 rules instead
//! of satisfying them.

mod evaluate;
mod generate;
mod judge;
mod model;
mod violation;

pub use evaluate::evaluate_state;
pub use generate::{generate_policy, generate_policy_with, GenerateOptions, DEFAULT_PINNED_PCRS};
pub use judge::{judge, replay_mismatches, MeasuredBootRejection, ReplayMismatch};
pub use model::{HexDigest, PcrValue, Policy, PolicyError, BOOT_LOADER_PCRS};
pub use violation::{PolicyRule, PolicyViolation};

use crate::verify::eventlog::EventLog;

/// Evaluates `policy` against `log` (its boot facts and replayed PCRs). The caller must
/// already have checked that the replay matches the quoted PCRs.
pub fn evaluate(policy: &Policy, log: &EventLog) -> Result<(), Vec<PolicyViolation>> {
    evaluate_state(policy, &log.boot_state(policy.bank), &log.replay())
}

#[cfg(test)]
mod tests;
