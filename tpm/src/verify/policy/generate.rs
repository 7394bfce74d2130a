//! A policy from a known-good boot.

use super::model::{HexDigest, Policy};
use crate::verify::eventlog::uefi::{Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use crate::verify::eventlog::{
    BootState, CmdlineSource, EventLog, HashAlg, MeasuredEvent, VariableEvent,
};

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

/// The measurement of a Secure Boot variable a policy may pin: only when the log has a
/// PCR7 separator and nothing measured that variable after it (else the evaluation of the
/// pin fails, see `evaluate::config_findings`).
fn pinnable<'a>(
    state: &'a BootState,
    event: Option<&'a VariableEvent>,
    guid: &Guid,
    name: &str,
) -> Option<&'a VariableEvent> {
    if state.pcr7_separator().is_none()
        || state.config_after_separator_of(guid, name).next().is_some()
    {
        return None;
    }
    event
}

fn var_digest(bank: HashAlg, event: Option<&VariableEvent>) -> Option<Vec<HexDigest>> {
    event
        .and_then(|v| v.event.digest(bank))
        .map(|d| vec![HexDigest::of(d)])
}

/// Writes a policy that the boot in `log` passes: its Secure Boot state (required when
/// the boot was verified), PK/KEK/db digests, every dbx entry, boot applications, kernel
/// command lines (as text when the log carries it verified, else as digests) and initrds.
/// Exact PCR values are left out: add them by hand where a PCR must not change at all.
///
/// Secure Boot configuration is read as [`BootState`] does (the last measurement before
/// the PCR7 separator). It is neither required nor pinned when the log has no PCR7
/// separator, nor when configuration was measured after it: such a log would fail those
/// rules, so the generated policy leaves them out rather than trust it.
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
    p.require_secure_boot = state.secure_boot_enabled()
        && state.config_after_separator.is_empty()
        && !state.authorities.is_empty()
        && !state.boot_applications.is_empty();
    let gv = EFI_GLOBAL_VARIABLE;
    let isd = EFI_IMAGE_SECURITY_DATABASE;
    p.pk = var_digest(bank, pinnable(&state, state.pk.as_ref(), &gv, "PK"));
    p.kek = var_digest(bank, pinnable(&state, state.kek.as_ref(), &gv, "KEK"));
    p.db = var_digest(bank, pinnable(&state, state.db.as_ref(), &isd, "db"));
    // Require the dbx entries only when the dbx event can be trusted and read, else the
    // boot would fail its own policy.
    let dbx = pinnable(&state, state.dbx.as_ref(), &isd, "dbx")
        .filter(|v| v.data_verified)
        .and_then(VariableEvent::signature_entries);
    p.dbx_required = uniq(
        dbx.into_iter()
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
