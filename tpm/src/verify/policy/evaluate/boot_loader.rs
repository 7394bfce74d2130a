//! The boot-loader PCRs (8, 9, 12) are judged as a whole, by digest.
//!
//! What a measurement there claims to be (a command line, an initrd, a GRUB command, a
//! file) comes from its type, its EV_EVENT_TAG id or its string prefix, and none of these
//! is covered by the extend: root on the node can turn the claim of any event into any
//! other. So every digest in these PCRs must be one the policy allows under one of its
//! boot-loader lists, whatever it claims, and a list's "at least one" requirement is met
//! by digest too. The claim is used only to name the list an operator should look at.

use super::super::model::HexDigest;
use super::super::violation::PolicyRule;
use super::{allowed, Ctx};
use crate::verify::eventlog::{string_encodings, BootState, Digest, HashAlg, LoaderClaim};

/// Every digest the policy allows in PCR8/9/12, by list.
struct Allowed {
    cmdlines: Vec<Digest>,
    initrds: Vec<HexDigest>,
    others: Vec<Digest>,
}

fn string_digests(bank: HashAlg, texts: &[String]) -> Vec<Digest> {
    texts
        .iter()
        .flat_map(|t| string_encodings(t))
        .filter_map(|bytes| bank.hash(&bytes))
        .collect()
}

fn hex_digests(bank: HashAlg, list: &[HexDigest]) -> Vec<Digest> {
    list.iter()
        .filter_map(|h| Digest::new(bank, &h.0))
        .collect()
}

impl Allowed {
    fn of(cx: &Ctx<'_>) -> Self {
        let p = cx.policy;
        let bank = p.bank;
        let mut cmdlines = string_digests(bank, p.kernel_cmdlines.as_deref().unwrap_or(&[]));
        cmdlines.extend(hex_digests(
            bank,
            p.kernel_cmdline_digests.as_deref().unwrap_or(&[]),
        ));
        let mut others = string_digests(bank, p.boot_loader_strings.as_deref().unwrap_or(&[]));
        others.extend(hex_digests(
            bank,
            p.boot_loader_digests.as_deref().unwrap_or(&[]),
        ));
        Self {
            cmdlines,
            initrds: p.initrds.clone().unwrap_or_default(),
            others,
        }
    }

    fn contains(&self, d: &Digest) -> bool {
        self.cmdlines.contains(d) || allowed(&self.initrds, d) || self.others.contains(d)
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
    let allow = Allowed::of(cx);
    let mut cmdline_seen = false;
    let mut initrd_seen = false;
    for le in &state.loader_events {
        let rule = rule_for(cx, le.claim, le.verified_string.is_some());
        let Some(d) = cx.digest(rule, &le.event) else {
            continue;
        };
        cmdline_seen |= allow.cmdlines.contains(&d);
        initrd_seen |= allowed(&allow.initrds, &d);
        if allow.contains(&d) {
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
