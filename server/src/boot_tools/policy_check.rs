//! `policy check`'s report: the verdict and every violation. Its JSON form is a stable
//! schema (`ironroot.policy-check.v1`, documented in docs/attestation.md "Operator tools").

use std::fmt::Write;

use ironroot_tpm::verify::eventlog::EventLog;
use ironroot_tpm::verify::policy::{evaluate, Policy, PolicyViolation};
use serde::Serialize;

/// The `schema` value of the JSON report.
pub(crate) const POLICY_CHECK_SCHEMA: &str = "ironroot.policy-check.v1";

/// The outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Verdict {
    /// Every rule holds (exit status 0).
    Pass,
    /// At least one violation (exit status 1).
    Fail,
    /// The policy or the log could not be used (exit status 2).
    Unusable,
}

/// A digest, with its bank.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct DigestReport {
    pub(crate) bank: String,
    pub(crate) hex: String,
}

/// One violation, field by field, and as the one line the server logs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ViolationReport {
    /// The policy rule (its TOML key).
    pub(crate) rule: String,
    pub(crate) pcr: Option<u32>,
    pub(crate) event_index: Option<usize>,
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    pub(crate) digest: Option<DigestReport>,
    /// What is wrong and what to do.
    pub(crate) message: String,
    /// The whole violation as one line (what an attestation rejection says).
    pub(crate) text: String,
}

impl From<&PolicyViolation> for ViolationReport {
    fn from(v: &PolicyViolation) -> Self {
        Self {
            rule: v.rule.to_string(),
            pcr: v.pcr,
            event_index: v.event_index,
            event_type: v.event_type.map(|t| t.to_string()),
            digest: v.digest.as_ref().map(|d| DigestReport {
                bank: d.alg().to_string(),
                hex: d.to_hex(),
            }),
            message: v.message.clone(),
            text: v.to_string(),
        }
    }
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct PolicyCheckReport {
    /// [`POLICY_CHECK_SCHEMA`].
    pub(crate) schema: &'static str,
    pub(crate) verdict: Verdict,
    /// The policy's name (`null` when the policy is unusable).
    pub(crate) policy: Option<String>,
    /// Every violation (empty unless the verdict is `fail`).
    pub(crate) violations: Vec<ViolationReport>,
    /// Why the input is unusable (only with `unusable`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl PolicyCheckReport {
    /// Evaluates `policy` against `log`.
    pub(crate) fn evaluate(policy: &Policy, log: &EventLog) -> Self {
        let violations: Vec<ViolationReport> = match evaluate(policy, log) {
            Ok(()) => Vec::new(),
            Err(v) => v.iter().map(ViolationReport::from).collect(),
        };
        Self {
            schema: POLICY_CHECK_SCHEMA,
            verdict: if violations.is_empty() {
                Verdict::Pass
            } else {
                Verdict::Fail
            },
            policy: Some(policy.name.clone()),
            violations,
            error: None,
        }
    }

    /// The report for input that cannot be evaluated.
    pub(crate) fn unusable(error: String) -> Self {
        Self {
            schema: POLICY_CHECK_SCHEMA,
            verdict: Verdict::Unusable,
            policy: None,
            violations: Vec::new(),
            error: Some(error),
        }
    }

    /// The report as text.
    pub(crate) fn render(&self) -> String {
        let name = self.policy.as_deref().unwrap_or("?");
        match self.verdict {
            Verdict::Pass => format!("PASS: the event log satisfies policy {name:?}\n"),
            Verdict::Unusable => format!(
                "UNUSABLE: {}\n",
                self.error.as_deref().unwrap_or("unusable input")
            ),
            Verdict::Fail => {
                let mut o = format!(
                    "FAIL: policy {name:?}: {} violation(s)\n",
                    self.violations.len()
                );
                for v in &self.violations {
                    let _ = writeln!(o, "  {}", v.text);
                }
                o
            }
        }
    }
}
