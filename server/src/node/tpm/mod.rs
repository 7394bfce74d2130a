//! The TPM node attestors. `tpm_ek`: the EK certificate chains to a
//! manufacturer CA (or the EK is on an allow-list). `tpm_devid`: a DevID
//! certificate from a DevID CA, its key certified by the AK and signing the
//! server nonce. Both: credential activation binds the AK to the EK, and a
//! fresh quote plus the event log must satisfy the node's measured-boot policy.
//! The agent SVID key: TPM-resident and certified by the AK, or (if allowed) a
//! software key.

mod agent_key;
pub mod anchors;
mod evidence;
mod pending;
pub mod policies;
pub(super) mod setup;

use std::sync::Arc;
use std::time::Duration;

use ironroot_api::node as pb;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_runtime::unix_now;
use ironroot_tpm::verify::certchain::Anchors;
use ironroot_tpm::verify::ek;
use ironroot_tpm::verify::{make_credential, TpmPublic};
use rand::RngCore;

use super::nonce::NonceRegistry;
use super::{decode_payload, AttestError, Begun, Evidence, NodeAttestor};
use crate::ca::devid_ca::DevIdCa;
use pending::PendingTpm;
use policies::PolicySet;

/// The selector type of both TPM attestors (kept from before the attestor seam rather than
/// each attestor's name): an entry, a policy binding or a ban written for a TPM holds
/// whichever TPM attestor the node uses.
pub(crate) const SELECTOR_TYPE: &str = "tpm";

/// PCRs quoted whatever the policy: what firmware and boot loaders measure,
/// including every PCR the policy's boot facts come from (4, 7, 8, 9, and 12
/// for systemd-boot/stub command lines), so no event a rule reads is unquoted.
const BASE_PCRS: [u32; 11] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12];

/// Which identity a TPM attestor trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TpmKind {
    /// `tpm_ek`: the EK certificate chains to a manufacturer CA, or the EK's hash is on
    /// the allow-list.
    Ek,
    /// `tpm_devid`: a DevID certificate from a DevID CA, its key certified by the AK and
    /// signing the server's nonce.
    DevId,
}

/// Settings shared by both TPM attestors.
pub struct TpmShared {
    /// The trust domain agent IDs are made in.
    pub trust_domain: TrustDomain,
    /// Manufacturer CAs an EK certificate must chain to (`tpm_ek`).
    pub ek_anchors: Anchors,
    /// SHA-256 (hex) of EK public keys accepted without a certificate (`tpm_ek`).
    pub ek_hash_allow_list: Vec<String>,
    /// DevID CAs a DevID certificate must chain to (`tpm_devid`).
    pub devid_anchors: Anchors,
    /// The measured-boot policies, and which binds a node.
    pub policies: PolicySet,
    /// Nonces of open challenges, each answerable once.
    pub nonces: Arc<NonceRegistry>,
    /// How long an agent has to answer a challenge.
    pub challenge_ttl: Duration,
    /// The server's own DevID CA, when it issues LDevIDs.
    pub devid_ca: Option<Arc<DevIdCa>>,
    /// Refuse agent SVID keys that are not TPM-resident (see `agent_key`).
    pub require_tpm_agent_key: bool,
}

/// The `tpm_ek` or `tpm_devid` node attestor: the identity check of its kind, then
/// credential activation, a fresh quote and the event log judged by the node's policy.
pub struct TpmAttestor {
    /// Which identity it trusts.
    pub kind: TpmKind,
    /// Settings both kinds share (the two attestors hold the same `Arc`).
    pub shared: Arc<TpmShared>,
}

/// A `tpm:` selector: policies are bound to these before the service prefixes the values.
fn selector(value: impl std::fmt::Display) -> Result<Selector, AttestError> {
    Selector::new(SELECTOR_TYPE, value.to_string())
        .map_err(|e| AttestError::rejected("selectors", e.to_string()))
}

fn common_name(name: &x509_cert::name::Name) -> Option<String> {
    let cn = der::asn1::ObjectIdentifier::new_unwrap("2.5.4.3");
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == cn)
        .and_then(|atv| {
            atv.value
                .decode_as::<der::asn1::Utf8StringRef>()
                .map(|s| s.to_string())
                .or_else(|_| {
                    atv.value
                        .decode_as::<der::asn1::PrintableStringRef>()
                        .map(|s| s.to_string())
                })
                .ok()
        })
        .filter(|cn| !cn.is_empty())
}

impl TpmAttestor {
    /// EK trust: certificate chain to a manufacturer CA, else the allow-list.
    fn check_ek(&self, tpm: &pb::TpmEvidence, ek: &TpmPublic) -> Result<String, AttestError> {
        ek::check_ek(
            ek,
            &tpm.ek_certificate,
            &self.shared.ek_anchors,
            &self.shared.ek_hash_allow_list,
            unix_now() as u64,
        )
        .map_err(|e| evidence::rejection(e.rule(), e.is_malformed(), &e))
    }
}

impl TpmAttestor {
    /// An LDevID request: the AK certified the DevID key, and the CSR (signed by
    /// that key) carries it. The subject CN will be the EK hash, not the CSR's.
    fn check_enrollment(
        &self,
        e: &pb::DevIdEnrollment,
        ak: &TpmPublic,
        ek_hash: &str,
    ) -> Result<(rcgen::PublicKey, String), AttestError> {
        if self.shared.devid_ca.is_none() {
            return Err(AttestError::rejected(
                "DevID enrollment",
                "this server does not issue LDevIDs (set devid_issuer = true)",
            ));
        }
        let devid =
            evidence::certified_key(ak, &e.devid_public, &e.certify_attest, &e.certify_signature)?;
        let key = crate::ca::x509::parse_csr(&e.csr)
            .map_err(|err| AttestError::malformed("DevID enrollment", err.to_string()))?;
        if !devid.matches_spki(&rcgen::PublicKeyData::subject_public_key_info(&key)) {
            return Err(AttestError::rejected(
                "DevID enrollment",
                "the CSR's key is not the DevID key the AK certified",
            ));
        }
        Ok((key, ek_hash.to_string()))
    }
}

/// The AK must be a restricted signing key that never leaves its TPM.
fn check_ak(ak: &TpmPublic) -> Result<(), AttestError> {
    ak.ensure_attestation_key().map_err(|e| {
        AttestError::rejected(
            "AK attributes",
            format!("the attestation key must be a restricted signing key bound to the TPM: {e}"),
        )
    })
}

impl NodeAttestor for TpmAttestor {
    fn name(&self) -> &'static str {
        match self.kind {
            TpmKind::Ek => "tpm_ek",
            TpmKind::DevId => "tpm_devid",
        }
    }

    fn selector_type(&self) -> &'static str {
        SELECTOR_TYPE
    }

    fn begin(&self, evidence: &Evidence<'_>) -> Result<Begun, AttestError> {
        let params: pb::TpmAttestation =
            decode_payload(self.name(), "evidence", "TpmAttestation", evidence.payload)?;
        let tpm = params
            .evidence
            .as_ref()
            .ok_or_else(|| AttestError::malformed("evidence", "no TPM evidence was sent"))?;
        let ek = TpmPublic::from_tpm2b(&tpm.ek_public)
            .map_err(|e| AttestError::malformed("EK public", e.to_string()))?;
        let ak = TpmPublic::from_tpm2b(&tpm.ak_public)
            .map_err(|e| AttestError::malformed("AK public", e.to_string()))?;
        let ek_hash = self.check_ek(tpm, &ek)?;
        check_ak(&ak)?;
        let td = &self.shared.trust_domain;
        let mut selectors = vec![selector(format!("ek_hash:{ek_hash}"))?];
        let (agent_id, devid) = match self.kind {
            TpmKind::Ek => (SpiffeId::agent(td, "tpm_ek", &ek_hash), None),
            TpmKind::DevId => {
                let d = evidence::check_devid(tpm, &ak, &self.shared.devid_anchors, unix_now())?;
                // A missing CN gives no selector rather than one shared by every such device.
                if let Some(cn) = common_name(&d.cert.tbs_certificate.subject) {
                    selectors.push(selector(format!("devid_subject_cn:{cn}"))?);
                }
                if let Some(cn) = common_name(&d.cert.tbs_certificate.issuer) {
                    selectors.push(selector(format!("devid_issuer_cn:{cn}"))?);
                }
                (
                    SpiffeId::agent(td, "tpm_devid", &d.fingerprint),
                    Some(d.key),
                )
            }
        };
        let agent_id = agent_id.map_err(|e| AttestError::rejected("agent id", e.to_string()))?;
        let enroll = match (&params.devid_enrollment, self.kind) {
            (None, _) => None,
            (Some(_), TpmKind::DevId) => {
                return Err(AttestError::rejected(
                    "DevID enrollment",
                    "enrollment is done with tpm_ek; this node already has a DevID",
                ))
            }
            (Some(e), TpmKind::Ek) => Some(self.check_enrollment(e, &ak, &ek_hash)?),
        };
        let presented =
            agent_key::check_presented(evidence.csr, tpm, self.shared.require_tpm_agent_key)?;
        let policy = self.shared.policies.select(&selectors)?;
        // Every PCR a rule reads is quoted (pins included), whatever BASE_PCRS says: an
        // unquoted PCR's events would be whatever the log says.
        let mut pcrs: Vec<u32> = BASE_PCRS.to_vec();
        pcrs.extend(policy.pcrs_read().into_keys());
        pcrs.sort_unstable();
        pcrs.dedup();

        // The wire names banks by TPM_ALG_ID. Policies parse only algorithms the wire names,
        // so a failure here is the server's own.
        let wire_bank = pb::HashAlgorithm::from_tpm_alg_id(policy.bank.id()).ok_or_else(|| {
            AttestError::internal(
                "PCR selection",
                format!("the policy's bank {} has no wire name", policy.bank),
            )
        })?;

        let mut secret = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut secret);
        let made = make_credential(&ek, &ak.name(), &secret).map_err(|e| {
            AttestError::rejected(
                "credential activation",
                format!("cannot make a credential for this EK: {e}"),
            )
        })?;
        let now = unix_now();
        let expires_at = now + self.shared.challenge_ttl.as_secs() as i64;
        let issue = || {
            self.shared
                .nonces
                .issue(now, expires_at)
                .map_err(|e| AttestError::exhausted("challenge nonces", e.to_string()))
        };
        let quote_nonce = issue()?;
        let devid_nonce = devid.as_ref().map(|_| issue()).transpose()?;
        let agent_key = match presented {
            agent_key::PresentedKey::Tpm(key) => Some((key, issue()?)),
            agent_key::PresentedKey::Software => None,
        };
        let challenge = pb::TpmChallenge {
            credential_blob: made.id_object,
            encrypted_secret: made.encrypted_secret,
            quote_nonce: quote_nonce.to_vec(),
            pcr_selection: vec![pb::PcrSelection {
                bank: wire_bank.into(),
                pcrs: pcrs.clone(),
            }],
            devid_nonce: devid_nonce.map(|n| n.to_vec()).unwrap_or_default(),
            expires_at,
            agent_key_nonce: agent_key
                .as_ref()
                .map(|(_, n)| n.to_vec())
                .unwrap_or_default(),
        };
        let pending = PendingTpm {
            name: self.name(),
            shared: self.shared.clone(),
            ak,
            secret,
            quote_nonce,
            devid: devid.zip(devid_nonce),
            agent_key,
            bank: policy.bank,
            pcrs,
            policy,
            agent_id,
            selectors,
            enroll,
        };
        Ok(Begun::Challenge(
            prost::Message::encode_to_vec(&challenge),
            Box::new(pending),
        ))
    }
}
