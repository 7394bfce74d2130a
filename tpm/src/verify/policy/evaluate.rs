//! Policy evaluation: every rule is checked and every failure reported.

use std::collections::BTreeSet;

use super::model::{HexDigest, Policy};
use super::violation::{PolicyRule, PolicyViolation};
use crate::verify::eventlog::uefi::{Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use crate::verify::eventlog::{
    BootState, Digest, FindingMessage, HashAlg, MeasuredEvent, PcrBanks, VariableEvent,
};

mod boot_loader;

/// A Secure Boot configuration variable a rule reads: vendor GUID and name.
type ConfigVar = (Guid, &'static str);

const PK: ConfigVar = (EFI_GLOBAL_VARIABLE, "PK");
const KEK: ConfigVar = (EFI_GLOBAL_VARIABLE, "KEK");
const DB: ConfigVar = (EFI_IMAGE_SECURITY_DATABASE, "db");

pub(super) struct Ctx<'a> {
    pub(super) policy: &'a Policy,
    pub(super) out: Vec<PolicyViolation>,
}

impl Ctx<'_> {
    pub(super) fn push(
        &mut self,
        rule: PolicyRule,
        pcr: Option<u32>,
        ev: Option<&MeasuredEvent>,
        digest: Option<Digest>,
        message: String,
    ) {
        self.out.push(PolicyViolation {
            policy: self.policy.name.clone(),
            rule,
            pcr: pcr.or(ev.map(|e| e.pcr)),
            event_index: ev.map(|e| e.event_index),
            event_type: ev.map(|e| e.event_type),
            digest,
            message,
        });
    }

    /// The event's digest in the policy bank, or a violation saying it has none.
    pub(super) fn digest(&mut self, rule: PolicyRule, ev: &MeasuredEvent) -> Option<Digest> {
        let bank = self.policy.bank;
        let d = ev.digest(bank).copied();
        if d.is_none() {
            let have: Vec<String> = ev.digests.iter().map(|d| d.alg().to_string()).collect();
            self.push(
                rule,
                None,
                Some(ev),
                None,
                format!("the log has no {bank} digest for this event (banks: {}); set `bank` to one of them", have.join(", ")),
            );
        }
        d
    }
}

fn allowed(list: &[HexDigest], d: &Digest) -> bool {
    list.iter().any(|h| h.matches(d))
}

/// Evaluates `policy` against boot facts extracted in the policy's bank
/// ([`EventLog::boot_state`](crate::verify::eventlog::EventLog::boot_state)) and the
/// replayed PCRs. Returns every violation, not just the first.
pub fn evaluate_state(
    policy: &Policy,
    state: &BootState,
    pcrs: &PcrBanks,
) -> Result<(), Vec<PolicyViolation>> {
    let mut cx = Ctx {
        policy,
        out: Vec::new(),
    };
    if state.bank != policy.bank {
        cx.push(
            PolicyRule::Pcrs,
            None,
            None,
            None,
            format!(
                "the boot facts were read in bank {}, the policy's bank is {}",
                state.bank, policy.bank
            ),
        );
        return Err(cx.out);
    }
    profile_findings(&mut cx, state);
    if policy.require_secure_boot {
        secure_boot(&mut cx, state);
    }
    let vars = [
        (PolicyRule::Pk, PK, &policy.pk, &state.pk),
        (PolicyRule::Kek, KEK, &policy.kek, &state.kek),
        (PolicyRule::Db, DB, &policy.db, &state.db),
    ];
    for (rule, var, list, event) in vars {
        if let Some(list) = list {
            variable_allow_list(&mut cx, rule, var, list, event.as_ref());
        }
    }
    if !policy.dbx_required.is_empty() {
        if let Some(v) = &state.dbx {
            dbx(&mut cx, v);
        } else {
            cx.push(
                PolicyRule::DbxRequired,
                Some(7),
                None,
                None,
                "the log has no verified PCR7 dbx variable event before the PCR7 separator".into(),
            );
        }
    }
    if let Some(list) = &policy.boot_applications {
        let apps: Vec<&MeasuredEvent> = state.boot_applications.iter().collect();
        allow_list(
            &mut cx,
            PolicyRule::BootApplications,
            4,
            "boot application",
            list,
            &apps,
        );
    }
    if policy.reads_boot_loader() {
        boot_loader::check(&mut cx, state);
    }
    exact_pcrs(&mut cx, pcrs);
    if cx.out.is_empty() {
        Ok(())
    } else {
        Err(cx.out)
    }
}

/// Every departure from the TCG PC Client profile in a PCR some rule reads is a
/// violation of the first rule that reads it: an event the profile does not put there
/// cannot be classified, so nothing the rule concludes from that PCR would hold.
fn profile_findings(cx: &mut Ctx<'_>, state: &BootState) {
    let reads = cx.policy.pcrs_read();
    for f in &state.findings {
        let Some(rules) = reads.get(&f.pcr) else {
            continue;
        };
        let names: Vec<String> = rules.iter().map(ToString::to_string).collect();
        cx.out.push(PolicyViolation {
            policy: cx.policy.name.clone(),
            rule: rules[0],
            pcr: Some(f.pcr),
            event_index: f.event_index,
            event_type: f.event_type,
            digest: f.digest,
            message: format!(
                "the event log breaks the TCG PC Client profile in a PCR this policy reads ({}): {}",
                names.join(", "),
                FindingMessage(f)
            ),
        });
    }
}

fn secure_boot(cx: &mut Ctx<'_>, state: &BootState) {
    let rule = PolicyRule::RequireSecureBoot;
    match &state.secure_boot {
        None => cx.push(
            rule,
            Some(7),
            None,
            None,
            "the log has no verified PCR7 SecureBoot variable event before the PCR7 separator"
                .into(),
        ),
        Some(v) => {
            let d = v.event.digest(cx.policy.bank).copied();
            if !v.data_verified {
                cx.push(rule, None, Some(&v.event), d, "the SecureBoot event data does not match its digest, so its value cannot be trusted".into());
            } else if v.data != [1] {
                let what = match v.data.first() {
                    None => "absent (0-byte data)".to_string(),
                    Some(b) => format!("{b}"),
                };
                cx.push(
                    rule,
                    None,
                    Some(&v.event),
                    d,
                    format!("SecureBoot is {what}, not 1: enable Secure Boot in the firmware"),
                );
            }
        }
    }
    if state.authorities.is_empty() {
        cx.push(
            rule,
            Some(7),
            None,
            None,
            "no EV_EFI_VARIABLE_AUTHORITY event: no image was verified against db (firmware may have fallen back to an unverified loader)".into(),
        );
    }
    if state.boot_applications.is_empty() {
        cx.push(
            rule,
            Some(4),
            None,
            None,
            "no code was measured in PCR4: the boot loader or kernel was not measured".into(),
        );
    }
}

/// PK, KEK or db: the one measurement before the PCR7 separator must be allowed.
fn variable_allow_list(
    cx: &mut Ctx<'_>,
    rule: PolicyRule,
    (_, name): ConfigVar,
    list: &[HexDigest],
    event: Option<&VariableEvent>,
) {
    let Some(v) = event else {
        cx.push(
            rule,
            Some(7),
            None,
            None,
            format!("the log has no verified PCR7 {name} variable event before the PCR7 separator"),
        );
        return;
    };
    let Some(d) = cx.digest(rule, &v.event) else {
        return;
    };
    if !allowed(list, &d) {
        cx.push(rule, None, Some(&v.event), Some(d), format!("{name} ({} bytes) is not an allowed value: add this digest to `{rule}` if the new {name} is trusted", v.data.len()));
    }
}

/// `dbx_required` against the one dbx measurement before the PCR7 separator (never a
/// union of several).
fn dbx(cx: &mut Ctx<'_>, v: &VariableEvent) {
    let rule = PolicyRule::DbxRequired;
    let d = v.event.digest(cx.policy.bank).copied();
    if !v.data_verified {
        cx.push(
            rule,
            None,
            Some(&v.event),
            d,
            "the dbx event data does not match its digest, so its entries cannot be trusted".into(),
        );
        return;
    }
    let Some(entries) = v.signature_entries() else {
        cx.push(
            rule,
            None,
            Some(&v.event),
            d,
            "the dbx contents are not a valid EFI_SIGNATURE_LIST".into(),
        );
        return;
    };
    let present: BTreeSet<[u8; 32]> = entries.iter().map(|e| e.fingerprint()).collect();
    for req in &cx.policy.dbx_required.clone() {
        let found = <[u8; 32]>::try_from(req.0.as_slice()).is_ok_and(|r| present.contains(&r));
        if !found {
            let digest = Digest::new(HashAlg::Sha256, &req.0);
            cx.push(
                rule,
                None,
                Some(&v.event),
                digest,
                "this required dbx entry is missing: apply the dbx update".into(),
            );
        }
    }
}

fn allow_list(
    cx: &mut Ctx<'_>,
    rule: PolicyRule,
    pcr: u32,
    what: &str,
    list: &[HexDigest],
    events: &[&MeasuredEvent],
) {
    if events.is_empty() && !list.is_empty() {
        cx.push(
            rule,
            Some(pcr),
            None,
            None,
            format!("no {what} was measured"),
        );
    }
    for ev in events {
        let Some(d) = cx.digest(rule, ev) else {
            continue;
        };
        if !allowed(list, &d) {
            cx.push(rule, None, Some(ev), Some(d), format!("this {what} digest is not allowed: add it to `{rule}` if the {what} is trusted"));
        }
    }
}

fn exact_pcrs(cx: &mut Ctx<'_>, pcrs: &PcrBanks) {
    for p in &cx.policy.pcrs.clone() {
        let want = hex::encode(&p.value.0);
        match pcrs.expected(p.bank, p.index) {
            None => cx.push(
                PolicyRule::Pcrs,
                Some(p.index),
                None,
                None,
                format!("the log has no {} bank to replay", p.bank),
            ),
            Some(got) if !p.value.matches(&got) => cx.push(
                PolicyRule::Pcrs,
                Some(p.index),
                None,
                Some(got),
                format!("replayed value differs from the policy's {want}"),
            ),
            Some(_) => {}
        }
    }
}
