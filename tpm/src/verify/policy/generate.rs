//! A policy from a known-good boot.

use super::model::{HexDigest, PcrValue, Policy, BOOT_LOADER_PCRS};
use crate::verify::eventlog::{
    BootState, EventLog, HashAlg, LoaderClaim, MeasuredEvent, VariableEvent,
};

/// The PCRs `generate_policy` pins by default when the log extends them: the boot manager
/// code (4), the Secure Boot policy (7) and what boot loaders measured (8, 9). Firmware
/// (0, 2) and configuration (1, 3, 5) are left to the operator: they change with firmware
/// updates and settings the allow-lists do not describe.
pub const DEFAULT_PINNED_PCRS: [u32; 4] = [4, 7, 8, 9];

/// How to write a policy from a known-good boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GenerateOptions {
    /// PCRs whose exact replayed value the policy pins, when the log extends them (or,
    /// for PCR 0-7, always: a PCR the log never extends must stay at its reset value).
    /// Empty: no pin (the allow-lists alone then rest on the log's classification, see
    /// docs/attestation.md).
    pub pin_pcrs: Vec<u32>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            pin_pcrs: DEFAULT_PINNED_PCRS.to_vec(),
        }
    }
}

fn uniq<T: PartialEq>(v: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for d in v {
        if !out.contains(&d) {
            out.push(d);
        }
    }
    out
}

fn digests<'a>(bank: HashAlg, evs: impl IntoIterator<Item = &'a MeasuredEvent>) -> Vec<HexDigest> {
    uniq(
        evs.into_iter()
            .filter_map(|e| e.digest(bank))
            .map(HexDigest::of),
    )
}

/// The measurement of a Secure Boot variable a policy may pin: only when PCR7 has the
/// profile's shape (else every PCR7 rule fails anyway).
fn pinnable<'a>(
    state: &'a BootState,
    event: Option<&'a VariableEvent>,
) -> Option<&'a VariableEvent> {
    if state.findings_in(7).next().is_some() {
        return None;
    }
    event
}

fn var_digest(bank: HashAlg, event: Option<&VariableEvent>) -> Option<Vec<HexDigest>> {
    event
        .and_then(|v| v.event.digest(bank))
        .map(|d| vec![HexDigest::of(d)])
}

fn some_if_any<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

/// [`generate_policy_with`] with the default pins.
pub fn generate_policy(name: &str, log: &EventLog) -> Policy {
    generate_policy_with(name, log, &GenerateOptions::default())
}

/// Writes a policy that the boot in `log` passes: its Secure Boot state (required when the
/// boot was verified), PK/KEK/db digests, every dbx entry, the code measured in PCR4, every
/// boot-loader measurement in PCR8/9/12 (command lines and strings as text when the log
/// carries them verified, else as digests; initrds) and the exact values of
/// `opts.pin_pcrs`.
///
/// Secure Boot configuration is neither required nor pinned when PCR7 breaks the profile's
/// shape: such a log would fail those rules. A log with no bank this crate can compute
/// gives a policy with no rule, which [`Policy::validate`] refuses.
pub fn generate_policy_with(name: &str, log: &EventLog, opts: &GenerateOptions) -> Policy {
    let banks: Vec<HashAlg> = log.banks().iter().map(|b| b.alg).collect();
    let bank = if banks.contains(&HashAlg::Sha256) {
        HashAlg::Sha256
    } else {
        banks
            .iter()
            .copied()
            .find(|b| b.is_known())
            .unwrap_or(HashAlg::Sha256)
    };
    let mut p = Policy::new(name);
    p.bank = bank;
    if !banks.iter().any(|b| b.is_known()) {
        // Digests of a bank this crate cannot compute cannot be checked: no rule.
        return p;
    }
    let state = log.boot_state(bank);
    p.require_secure_boot = state.secure_boot_verified();
    p.pk = var_digest(bank, pinnable(&state, state.pk.as_ref()));
    p.kek = var_digest(bank, pinnable(&state, state.kek.as_ref()));
    p.db = var_digest(bank, pinnable(&state, state.db.as_ref()));
    // Require the dbx entries only when the dbx event can be read, else the boot would
    // fail its own policy.
    let dbx = pinnable(&state, state.dbx.as_ref()).and_then(VariableEvent::signature_entries);
    p.dbx_required = uniq(
        dbx.into_iter()
            .flatten()
            .map(|e| HexDigest(e.fingerprint().to_vec())),
    );
    if state.findings_in(4).next().is_none() {
        p.boot_applications = Some(digests(bank, &state.boot_applications));
    }
    boot_loader_lists(&mut p, &state);
    pins(&mut p, log, &state, opts);
    p
}

/// Every PCR8/9/12 measurement goes in the list its claim names (claims are trusted here:
/// this is the known-good boot, and the policy allows these digests whatever they claim).
fn boot_loader_lists(p: &mut Policy, state: &BootState) {
    if BOOT_LOADER_PCRS
        .iter()
        .any(|pcr| state.findings_in(*pcr).next().is_some())
    {
        // The boot itself breaks the profile there: a boot-loader rule would refuse it.
        return;
    }
    let bank = p.bank;
    let (mut texts, mut cmd_digests, mut initrds, mut strings, mut others) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for le in &state.loader_events {
        let Some(d) = le.event.digest(bank) else {
            continue;
        };
        let d = HexDigest::of(d);
        match (le.claim, &le.verified_string) {
            (LoaderClaim::KernelCmdline, Some(t)) => texts.push(t.clone()),
            (LoaderClaim::KernelCmdline, None) => cmd_digests.push(d),
            (LoaderClaim::Initrd, _) => initrds.push(d),
            (_, Some(t)) => strings.push(t.clone()),
            (_, None) => others.push(d),
        }
    }
    p.kernel_cmdlines = some_if_any(uniq(texts));
    p.kernel_cmdline_digests = some_if_any(uniq(cmd_digests));
    p.initrds = some_if_any(uniq(initrds));
    p.boot_loader_strings = some_if_any(uniq(strings));
    p.boot_loader_digests = some_if_any(uniq(others));
}

fn pins(p: &mut Policy, log: &EventLog, state: &BootState, opts: &GenerateOptions) {
    let replay = log.replay();
    let Some(bank) = replay.bank(p.bank) else {
        return;
    };
    for &index in &uniq(opts.pin_pcrs.iter().copied()) {
        if state.findings_in(index).next().is_some() {
            // This boot breaks the profile there: a pin would make the policy read a PCR
            // its own boot fails (`policy generate` reports the findings).
            continue;
        }
        // A firmware PCR the log never extends is pinned at its reset value (nothing may
        // be measured there); an OS PCR the log does not touch is left alone.
        let value = match bank.get(index) {
            Some(v) => *v,
            None if index <= 7 => match bank.expected(index) {
                Some(v) => v,
                None => continue,
            },
            None => continue,
        };
        p.pcrs.push(PcrValue {
            bank: p.bank,
            index,
            value: HexDigest::of(&value),
        });
    }
}
