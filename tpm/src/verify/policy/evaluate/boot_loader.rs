//! The boot-loader PCRs (8, 9, 12) are judged as a whole, by digest.
//!
//! What a measurement there claims to be (a command line, an initrd, a GRUB command, a
//! file) comes from its type, its EV_EVENT_TAG id or its string prefix, and none of these
//! is covered by the extend: root on the node can turn the claim of any event into any
//! other. So every digest in these PCRs must be one the policy allows under one of its
//! boot-loader lists, whatever it claims, and a list's "at least one" requirement is met
//! by digest too. The claim is used only to name the list an operator should look at.

use std::collections::HashSet;

use super::super::model::{HexDigest, Policy};
use super::super::violation::PolicyRule;
use super::Ctx;
use crate::verify::eventlog::{string_encodings, BootState, Digest, HashAlg, LoaderClaim};

/// Every digest the policy allows in PCR8/9/12, by list, and the allowed strings.
///
/// A string is matched by text only for an event whose digest is the hash of that text
/// (`LoaderEvent::verified_string`), so a match by text is a match by digest: nothing
/// unbound decides. Command lines are also matched by digest (the Linux EFI stub does not
/// log the text); hashing every boot-loader string in four encodings on each evaluation
/// would cost more than the rest of the evaluation for a GRUB log.
struct Allowed<'p> {
    cmdlines: HashSet<Digest>,
    cmdline_texts: HashSet<&'p str>,
    initrds: HashSet<Digest>,
    strings: HashSet<&'p str>,
    digests: HashSet<Digest>,
}

fn hex_digests(bank: HashAlg, list: Option<&[HexDigest]>) -> HashSet<Digest> {
    list.unwrap_or(&[])
        .iter()
        .filter_map(|h| Digest::new(bank, &h.0))
        .collect()
}

fn texts(list: Option<&[String]>) -> HashSet<&str> {
    list.unwrap_or(&[]).iter().map(String::as_str).collect()
}

impl<'p> Allowed<'p> {
    fn of(policy: &'p Policy) -> Self {
        let bank = policy.bank;
        let mut cmdlines: HashSet<Digest> = policy
            .kernel_cmdlines
            .iter()
            .flatten()
            .flat_map(|t| string_encodings(t))
            .filter_map(|bytes| bank.hash(&bytes))
            .collect();
        cmdlines.extend(hex_digests(bank, policy.kernel_cmdline_digests.as_deref()));
        Self {
            cmdlines,
            cmdline_texts: texts(policy.kernel_cmdlines.as_deref()),
            initrds: hex_digests(bank, policy.initrds.as_deref()),
            strings: texts(policy.boot_loader_strings.as_deref()),
            digests: hex_digests(bank, policy.boot_loader_digests.as_deref()),
        }
    }

    fn cmdline(&self, d: &Digest, text: Option<&str>) -> bool {
        self.cmdlines.contains(d) || text.is_some_and(|t| self.cmdline_texts.contains(t))
    }

    fn contains(&self, d: &Digest, text: Option<&str>) -> bool {
        self.cmdline(d, text)
            || self.initrds.contains(d)
            || self.digests.contains(d)
            || text.is_some_and(|t| self.strings.contains(t))
    }
}

/// The list an operator should extend for a refused measurement: the one matching its
/// claim when the policy has it, else the first boot-loader list the policy has.
fn rule_for(cx: &Ctx<'_>, claim: LoaderClaim, verified_string: bool) -> PolicyRule {
    let p = cx.policy;
    let has_cmdlines = p.kernel_cmdlines.is_some() || p.kernel_cmdline_digests.is_some();
    let preferred = match claim {
        LoaderClaim::KernelCmdline if has_cmdlines => Some(PolicyRule::KernelCmdlines),
        LoaderClaim::Initrd if p.initrds.is_some() => Some(PolicyRule::Initrds),
        _ if verified_string && p.boot_loader_strings.is_some() => {
            Some(PolicyRule::BootLoaderStrings)
        }
        _ if p.boot_loader_digests.is_some() => Some(PolicyRule::BootLoaderDigests),
        _ => None,
    };
    preferred.unwrap_or_else(|| {
        [
            (has_cmdlines, PolicyRule::KernelCmdlines),
            (p.initrds.is_some(), PolicyRule::Initrds),
            (
                p.boot_loader_strings.is_some(),
                PolicyRule::BootLoaderStrings,
            ),
            (
                p.boot_loader_digests.is_some(),
                PolicyRule::BootLoaderDigests,
            ),
        ]
        .into_iter()
        .find_map(|(set, rule)| set.then_some(rule))
        .unwrap_or(PolicyRule::BootLoaderDigests)
    })
}

fn describe(claim: LoaderClaim, text: Option<&str>) -> String {
    let what = match claim {
        LoaderClaim::KernelCmdline => "a kernel command line",
        LoaderClaim::Initrd => "an initrd",
        LoaderClaim::String => "a boot-loader string",
        LoaderClaim::Other => "a boot-loader measurement",
    };
    match text {
        Some(t) => format!("{what} {t:?}"),
        None => format!("{what} (its claim is not authenticated)"),
    }
}

pub(super) fn check(cx: &mut Ctx<'_>, state: &BootState) {
    let policy = cx.policy;
    let allow = Allowed::of(policy);
    let mut cmdline_seen = false;
    let mut initrd_seen = false;
    for le in &state.loader_events {
        let rule = rule_for(cx, le.claim, le.verified_string.is_some());
        let Some(d) = cx.digest(rule, &le.event) else {
            continue;
        };
        let text = le.verified_string.as_deref();
        cmdline_seen |= allow.cmdline(&d, text);
        initrd_seen |= allow.initrds.contains(&d);
        if allow.contains(&d, text) {
            continue;
        }
        let fix = match rule {
            PolicyRule::BootLoaderStrings | PolicyRule::KernelCmdlines
                if le.verified_string.is_some() =>
            {
                format!("add the text to `{rule}` if it is trusted")
            }
            _ => format!("add this digest to `{rule}` if it is trusted"),
        };
        cx.push(
            rule,
            None,
            Some(&le.event),
            Some(d),
            format!(
                "{} is not allowed by any boot-loader list of the policy: {fix}",
                describe(le.claim, le.verified_string.as_deref())
            ),
        );
    }
    let p = cx.policy;
    let wants_cmdline = p.kernel_cmdlines.as_ref().is_some_and(|l| !l.is_empty())
        || p.kernel_cmdline_digests
            .as_ref()
            .is_some_and(|l| !l.is_empty());
    if wants_cmdline && !cmdline_seen {
        cx.push(
            PolicyRule::KernelCmdlines,
            Some(9),
            None,
            None,
            "no allowed kernel command line was measured in PCR8, 9 or 12".into(),
        );
    }
    if p.initrds.as_ref().is_some_and(|l| !l.is_empty()) && !initrd_seen {
        cx.push(
            PolicyRule::Initrds,
            Some(9),
            None,
            None,
            "no allowed initrd was measured in PCR8, 9 or 12".into(),
        );
    }
}
