//! A policy from a known-good boot.

use super::model::{HexDigest, Policy};
use crate::verify::eventlog::{CmdlineSource, EventLog, HashAlg, MeasuredEvent, VariableEvent};

fn uniq(v: impl IntoIterator<Item = HexDigest>) -> Vec<HexDigest> {
    let mut out: Vec<HexDigest> = Vec::new();
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

fn var_digests(bank: HashAlg, evs: &[VariableEvent]) -> Option<Vec<HexDigest>> {
    (!evs.is_empty()).then(|| digests(bank, evs.iter().map(|v| &v.event)))
}

/// Writes a policy that the boot in `log` passes: its Secure Boot state (required when
/// the boot was verified), PK/KEK/db digests, every dbx entry, boot applications, kernel
/// command lines (as text when the log carries it verified, else as digests) and initrds.
/// Exact PCR values are left out: add them by hand where a PCR must not change at all.
pub fn generate_policy(name: &str, log: &EventLog) -> Policy {
    let state = log.boot_state();
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
        // Digests of a bank this crate cannot compute cannot be checked: pin nothing.
        return p;
    }
    p.require_secure_boot = state.secure_boot_enabled() == Some(true)
        && state.secure_boot.iter().all(|v| v.data_verified)
        && !state.authorities.is_empty()
        && !state.boot_applications.is_empty();
    p.pk = var_digests(bank, &state.pk);
    p.kek = var_digests(bank, &state.kek);
    p.db = var_digests(bank, &state.db);
    // Require the dbx entries only when every dbx event can be trusted and read, else the
    // boot would fail its own policy.
    let dbx: Option<Vec<_>> = state
        .dbx
        .iter()
        .map(|v| v.data_verified.then(|| v.signature_entries()).flatten())
        .collect();
    p.dbx_required = uniq(
        dbx.into_iter()
            .flatten()
            .flatten()
            .map(|e| HexDigest(e.fingerprint().to_vec())),
    );
    p.boot_applications = Some(digests(bank, &state.boot_applications));
    if !state.kernel_cmdlines.is_empty() {
        let mut texts = Vec::new();
        let mut others = Vec::new();
        for c in &state.kernel_cmdlines {
            match (&c.text, c.text_verified, c.source) {
                (Some(t), true, CmdlineSource::Grub | CmdlineSource::SystemdBoot) => {
                    if !texts.contains(t) {
                        texts.push(t.clone());
                    }
                }
                _ => others.push(&c.event),
            }
        }
        p.kernel_cmdlines = (!texts.is_empty()).then_some(texts);
        p.kernel_cmdline_digests = (!others.is_empty()).then(|| digests(bank, others));
    }
    if !state.initrds.is_empty() {
        p.initrds = Some(digests(bank, state.initrds.iter().map(|i| &i.event)));
    }
    p
}
