//! Policy evaluation: every rule is checked and every failure reported.

use std::collections::BTreeSet;

use super::model::{HexDigest, Policy};
use super::violation::{PolicyRule, PolicyViolation};
use crate::verify::eventlog::uefi::{Guid, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE};
use crate::verify::eventlog::{
    utf16_with_nul, BootState, CmdlineSource, Digest, HashAlg, MeasuredEvent, PcrBanks,
    VariableEvent,
};

/// A Secure Boot configuration variable a rule reads: vendor GUID and name.
type ConfigVar = (Guid, &'static str);

const PK: ConfigVar = (EFI_GLOBAL_VARIABLE, "PK");
const KEK: ConfigVar = (EFI_GLOBAL_VARIABLE, "KEK");
const DB: ConfigVar = (EFI_IMAGE_SECURITY_DATABASE, "db");
const DBX: ConfigVar = (EFI_IMAGE_SECURITY_DATABASE, "dbx");

struct Ctx<'a> {
    policy: &'a Policy,
    out: Vec<PolicyViolation>,
}

impl Ctx<'_> {
    fn push(
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
    fn digest(&mut self, rule: PolicyRule, ev: &MeasuredEvent) -> Option<Digest> {
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

/// Evaluates `policy` against extracted boot facts and the replayed PCRs. Returns every
/// violation, not just the first.
pub fn evaluate_state(
    policy: &Policy,
    state: &BootState,
    pcrs: &PcrBanks,
) -> Result<(), Vec<PolicyViolation>> {
    let mut cx = Ctx {
        policy,
        out: Vec::new(),
    };
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
            config_findings(&mut cx, rule, Some(&var), state);
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
                "the log has no PCR7 dbx variable event before the PCR7 separator".into(),
            );
        }
        config_findings(&mut cx, PolicyRule::DbxRequired, Some(&DBX), state);
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
    if policy.kernel_cmdlines.is_some() || policy.kernel_cmdline_digests.is_some() {
        cmdlines(&mut cx, state);
    }
    if let Some(list) = &policy.initrds {
        let initrds: Vec<&MeasuredEvent> = state.initrds.iter().map(|i| &i.event).collect();
        allow_list(&mut cx, PolicyRule::Initrds, 9, "initrd", list, &initrds);
    }
    exact_pcrs(&mut cx, pcrs);
    if cx.out.is_empty() {
        Ok(())
    } else {
        Err(cx.out)
    }
}

/// Violations of `rule` when the log's PCR7 configuration cannot be relied on: no PCR7
/// separator (configuration is whatever was measured before it, so without one a
/// configuration event cannot be told apart from one appended after boot), or
/// EV_EFI_VARIABLE_DRIVER_CONFIG events after it (of `var`, or of any variable when `None`).
fn config_findings(cx: &mut Ctx<'_>, rule: PolicyRule, var: Option<&ConfigVar>, state: &BootState) {
    if state.pcr7_separator().is_none() {
        cx.push(
            rule,
            Some(7),
            None,
            None,
            "the log has no PCR7 EV_SEPARATOR: firmware measures the Secure Boot configuration (SecureBoot, PK, KEK, db, dbx) before it, so without it a configuration event cannot be told apart from one appended after boot".into(),
        );
    }
    let late: Vec<&VariableEvent> = match var {
        Some((guid, name)) => state.config_after_separator_of(guid, name).collect(),
        None => state.config_after_separator.iter().collect(),
    };
    for v in late {
        let d = v.event.digest(cx.policy.bank).copied();
        let what = if v.name.is_empty() {
            "an unparsable UEFI variable".to_string()
        } else {
            format!("variable {}", v.name)
        };
        cx.push(
            rule,
            None,
            Some(&v.event),
            d,
            format!("EV_EFI_VARIABLE_DRIVER_CONFIG of {what} after the PCR7 separator: firmware measures Secure Boot configuration before the separator, so this is not configuration (PCR7 may have been extended from the OS after boot) and it is ignored"),
        );
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
            "the log has no PCR7 SecureBoot variable event before the PCR7 separator".into(),
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
    config_findings(cx, rule, None, state);
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
            "no EV_EFI_BOOT_SERVICES_APPLICATION event: the boot loader or kernel was not measured"
                .into(),
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
            format!("the log has no PCR7 {name} variable event before the PCR7 separator"),
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

/// The digests a boot loader would log for `text`.
fn cmdline_forms(bank: HashAlg, source: CmdlineSource, text: &str) -> Vec<Digest> {
    let forms: Vec<Vec<u8>> = match source {
        CmdlineSource::EfiStub | CmdlineSource::SystemdBoot => {
            let with_nul = utf16_with_nul(text);
            let without = with_nul
                .get(..with_nul.len().saturating_sub(2))
                .unwrap_or(&[])
                .to_vec();
            vec![with_nul, without]
        }
        CmdlineSource::Grub => {
            let mut with_nul = text.as_bytes().to_vec();
            with_nul.push(0);
            vec![text.as_bytes().to_vec(), with_nul]
        }
    };
    forms.iter().filter_map(|f| bank.hash(f)).collect()
}

fn cmdlines(cx: &mut Ctx<'_>, state: &BootState) {
    let rule = PolicyRule::KernelCmdlines;
    let texts = cx.policy.kernel_cmdlines.clone().unwrap_or_default();
    let digests = cx.policy.kernel_cmdline_digests.clone().unwrap_or_default();
    if state.kernel_cmdlines.is_empty() && !(texts.is_empty() && digests.is_empty()) {
        cx.push(
            rule,
            Some(9),
            None,
            None,
            "no kernel command line was measured".into(),
        );
    }
    for c in &state.kernel_cmdlines {
        let Some(d) = cx.digest(rule, &c.event) else {
            continue;
        };
        let ok = allowed(&digests, &d)
            || texts
                .iter()
                .any(|t| cmdline_forms(cx.policy.bank, c.source, t).contains(&d));
        if !ok {
            let shown = match (&c.text, c.text_verified) {
                (Some(t), true) => format!("command line {t:?}"),
                (Some(t), false) => {
                    format!("command line (logged text {t:?} does not match the digest)")
                }
                (None, _) => "command line (text not in the log)".to_string(),
            };
            cx.push(rule, None, Some(&c.event), Some(d), format!("{shown} is not allowed: add it to `kernel_cmdlines` (or its digest to `kernel_cmdline_digests`) if trusted"));
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
