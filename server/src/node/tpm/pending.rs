//! The second half of a TPM attestation: the agent's answer to the challenge.
//! Order matters: the cheap binding checks (secret, nonce, signatures, the
//! agent key's certify) come before the event log is parsed.

use std::sync::Arc;

use ironroot_api::node as pb;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_runtime::unix_now;
use ironroot_tpm::verify::devid::DevIdKey;
use ironroot_tpm::verify::eventlog::{EventLog, HashAlg};
use ironroot_tpm::verify::policy::{evaluate, Policy};
use ironroot_tpm::verify::TpmPublic;

use super::agent_key;
use super::evidence;
use super::{selector, TpmShared};
use crate::node::{decode_payload, AttestError, Attested, PendingAttestation};

pub(super) struct PendingTpm {
    /// The attestor's name (`tpm_ek`, `tpm_devid`), for payload refusals.
    pub(crate) name: &'static str,
    pub(crate) shared: Arc<TpmShared>,
    pub(crate) ak: TpmPublic,
    pub(crate) secret: [u8; 32],
    pub(crate) quote_nonce: [u8; 32],
    pub(crate) devid: Option<(DevIdKey, [u8; 32])>,
    /// A TPM-resident agent key to be certified over its nonce; `None`: a software key
    /// (admitted by `begin` only when configuration allows it).
    pub(crate) agent_key: Option<(TpmPublic, [u8; 32])>,
    pub(crate) bank: HashAlg,
    pub(crate) pcrs: Vec<u32>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) agent_id: SpiffeId,
    pub(crate) selectors: Vec<Selector>,
    /// A DevID key to certify once everything passed, with its LDevID subject CN.
    pub(crate) enroll: Option<(rcgen::PublicKey, String)>,
}

/// Compares without an early exit, so timing says nothing about the secret.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PendingAttestation for PendingTpm {
    fn finish(self: Box<Self>, response: &[u8]) -> Result<Attested, AttestError> {
        let r: pb::TpmChallengeResponse = decode_payload(
            self.name,
            "challenge response",
            "TpmChallengeResponse",
            response,
        )?;
        let r = &r;
        let now = unix_now();
        if !same_secret(&r.activated_secret, &self.secret) {
            return Err(AttestError::rejected(
                "credential activation",
                "the activated secret does not match: the AK is not in the TPM that holds this EK",
            ));
        }
        let quoted = evidence::check_quote(
            &self.shared.nonces,
            &self.ak,
            &self.quote_nonce,
            self.bank,
            &self.pcrs,
            r,
            now,
        )?;
        let agent_key = match &self.agent_key {
            Some((key, nonce)) => {
                agent_key::check_certified(&self.shared.nonces, &self.ak, key, nonce, r, now)?;
                "tpm"
            }
            None => "software",
        };
        if let Some((key, nonce)) = &self.devid {
            self.shared
                .nonces
                .consume(nonce, now)
                .map_err(|e| AttestError::rejected("DevID nonce", e.to_string()))?;
            evidence::check_devid_signature(key, nonce, &r.devid_signature)?;
        }
        let log = EventLog::parse(&r.event_log)
            .map_err(|e| AttestError::malformed("event log", e.to_string()))?;
        evidence::check_replay(&log, self.bank, &quoted)?;
        if let Err(violations) = evaluate(&self.policy, &log) {
            let list: Vec<String> = violations.iter().map(|v| v.to_string()).collect();
            return Err(AttestError::rejected(
                "measured-boot policy",
                format!(
                    "policy '{}' failed {} rule(s): {}",
                    self.policy.name,
                    list.len(),
                    list.join("; ")
                ),
            ));
        }
        let secure_boot = if evidence::secure_boot_verified(&log, self.bank) {
            "enabled"
        } else {
            "disabled"
        };
        let mut selectors = self.selectors;
        selectors.push(selector(format!("secure_boot:{secure_boot}"))?);
        selectors.push(selector(format!("boot_policy:{}", self.policy.name))?);
        selectors.push(selector(format!("agent_key:{agent_key}"))?);
        // Only a node that passed every check gets an LDevID.
        let devid_chain = match (&self.enroll, &self.shared.devid_ca) {
            (Some((key, cn)), Some(ca)) => {
                let cert = ca
                    .issue(key, cn)
                    .map_err(|e| AttestError::rejected("DevID enrollment", e.to_string()))?;
                vec![cert, ca.cert_der.clone()]
            }
            _ => Vec::new(),
        };
        Ok(Attested {
            agent_id: self.agent_id,
            // The service gives them back their type (`tpm`).
            selectors: selectors.into_iter().map(|s| s.value).collect(),
            boot_policy: Some(self.policy.name.clone()),
            devid_chain,
        })
    }
}
