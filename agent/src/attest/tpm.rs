//! `tpm_ek` and `tpm_devid`, the agent's half: gather the TPM evidence (EK, AK, the DevID
//! key's certify, an LDevID enrollment, the TPM-resident agent key), then answer the
//! server's challenge (credential activation, quote, event log, DevID signature,
//! TPM2_Certify of the agent key). The typed messages travel encoded in the seam's
//! payloads: `TpmAttestation`, `TpmChallenge`, `TpmChallengeResponse`.
//!
//! The TPM is reached through the process's [`SharedTpm`], leased for the exchange and
//! locked only for the synchronous TPM work, never across an `.await`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironroot_api::node as pb;
use ironroot_tpm::device::{
    devid_csr, read_event_log, AttestationKey, DeviceError, EndorsementKey, LoadedKey, Tpm,
};
use ironroot_tpm::verify::HashAlg;
use prost::Message;
use sha2::{Digest, Sha256};

use super::{AgentNodeAttestor, AnswerHook, AttestError, EvidenceHook};
use crate::agent_key::TpmAgentKey;
use crate::config::TpmConfig;
use crate::connect;
use crate::shared_tpm::{SharedTpm, TpmLease};

/// The TPM during one attestation, with the keys the exchange uses.
pub struct TpmSession {
    /// Use with [`SharedTpm::with`]; the connection stays open for the exchange.
    pub tpm: SharedTpm,
    /// The endorsement key whose certificate (or public key) the evidence carries.
    pub ek: EndorsementKey,
    /// The attestation key under the EK: quotes and certifies with it.
    pub ak: AttestationKey,
    /// The DevID key for tpm_devid, which signs the server's DevID nonce; `None` for tpm_ek.
    pub devid: Option<LoadedKey>,
    /// The TPM-resident agent key, certified by the AK in the answer.
    pub agent_key: Option<Arc<TpmAgentKey>>,
    _lease: TpmLease,
}

/// Which TPM identity the agent presents, with its options.
#[derive(Debug, Clone)]
pub(super) enum TpmIdentity {
    /// `tpm_ek`; `enroll_devid` asks for an LDevID in the same exchange.
    Ek {
        /// `tpm.enroll_devid`.
        enroll_devid: bool,
    },
    /// `tpm_devid`, with the DevID certificate chain's PEM file.
    DevId {
        /// The chain's file.
        certificate_path: PathBuf,
    },
}

/// The agent's `tpm_ek` or `tpm_devid` attestor for one exchange.
pub(super) struct TpmNodeAttestor<'h> {
    identity: TpmIdentity,
    tpm: TpmConfig,
    agent_key: Option<Arc<TpmAgentKey>>,
    session: Option<TpmSession>,
    evidence_hook: Option<EvidenceHook<'h>>,
    answer_hook: Option<AnswerHook<'h>>,
}

impl<'h> TpmNodeAttestor<'h> {
    pub(super) fn new(
        identity: TpmIdentity,
        tpm: &TpmConfig,
        agent_key: Option<Arc<TpmAgentKey>>,
        evidence_hook: Option<EvidenceHook<'h>>,
        answer_hook: Option<AnswerHook<'h>>,
    ) -> Self {
        TpmNodeAttestor {
            identity,
            tpm: tpm.clone(),
            agent_key,
            session: None,
            evidence_hook,
            answer_hook,
        }
    }
}

impl AgentNodeAttestor for TpmNodeAttestor<'_> {
    fn name(&self) -> &'static str {
        match self.identity {
            TpmIdentity::Ek { .. } => "tpm_ek",
            TpmIdentity::DevId { .. } => "tpm_devid",
        }
    }

    fn evidence(&mut self) -> Result<Vec<u8>, AttestError> {
        let (session, mut attestation) =
            tpm_evidence(&self.tpm, &self.identity, self.agent_key.clone())?;
        self.session = Some(session);
        if let Some(h) = self.evidence_hook.as_mut() {
            h(&mut attestation);
        }
        Ok(attestation.encode_to_vec())
    }

    fn answer(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AttestError> {
        let name = self.name();
        let ch = pb::TpmChallenge::decode(challenge).map_err(|e| AttestError::BadChallenge {
            attestor: name,
            reason: e.to_string(),
        })?;
        let s = self
            .session
            .as_mut()
            .ok_or(AttestError::UnexpectedChallenge { attestor: name })?;
        let mut resp = answer(s, &ch, &self.tpm.event_log_path)?;
        if let Some(h) = self.answer_hook.as_mut() {
            h(s, &ch, &mut resp);
        }
        Ok(resp.encode_to_vec())
    }
}

/// The bank the server asks for, as the wire names it (a `HashAlgorithm` by TPM_ALG_ID).
/// Any named algorithm is passed on: whether the TPM has that bank is the TPM's answer.
fn bank(raw: i32) -> Result<HashAlg, AttestError> {
    pb::HashAlgorithm::tpm_alg_id_of(raw)
        .map(HashAlg::from_id)
        .ok_or_else(|| {
            AttestError::PcrBank(match pb::HashAlgorithm::try_from(raw) {
                Ok(named) => named.as_str_name().to_owned(),
                Err(_) => format!("HashAlgorithm value {raw}"),
            })
        })
}

fn read_chain(path: &Path) -> Result<Vec<Vec<u8>>, AttestError> {
    connect::read_bundle(path).map_err(|source| AttestError::DevIdCertificate {
        path: path.to_owned(),
        source,
    })
}

/// The LDevID request for the TPM's DevID key, certified by the AK.
fn enrollment(
    tpm: &mut Tpm,
    ak: &AttestationKey,
    handle: u32,
) -> Result<pb::DevIdEnrollment, DeviceError> {
    let key = tpm.devid_key(handle)?;
    // The server sets the subject; the CSR only proves the key signs.
    let csr = devid_csr(tpm, &key, "ldevid-request")?;
    let (attest, signature) = tpm.certify(&key, ak, &[])?;
    Ok(pb::DevIdEnrollment {
        csr,
        devid_public: key.public.clone(),
        certify_attest: attest,
        certify_signature: signature,
    })
}

/// Gathers the evidence of the first message (the TPM is leased for the exchange).
fn tpm_evidence(
    t: &TpmConfig,
    identity: &TpmIdentity,
    agent_key: Option<Arc<TpmAgentKey>>,
) -> Result<(TpmSession, pb::TpmAttestation), AttestError> {
    let shared = SharedTpm::new(&t.tcti);
    let lease = shared.lease();
    let devid_chain = match identity {
        TpmIdentity::DevId { certificate_path } => Some(read_chain(certificate_path)?),
        TpmIdentity::Ek { .. } => None,
    };
    let enroll_devid = matches!(identity, TpmIdentity::Ek { enroll_devid: true });
    let (ek, ak, devid, mut evidence, enroll) = shared.with(|tpm| {
        let ek = tpm.endorsement_key(t.ek.algorithm())?;
        let persist = (t.ak_handle != 0).then_some(t.ak_handle);
        let ak = tpm.attestation_key(&ek, persist)?;
        let mut evidence = pb::TpmEvidence {
            ek_certificate: ek.certificate.clone().unwrap_or_default(),
            ek_public: ek.public.clone(),
            ak_public: ak.public.clone(),
            ..Default::default()
        };
        let mut devid = None;
        if let Some(chain) = devid_chain {
            let key = tpm.devid_key(t.devid_handle)?;
            let (attest, signature) = tpm.certify(&key, &ak, &[])?;
            evidence.devid_certificate_chain = chain;
            evidence.devid_public = key.public.clone();
            evidence.devid_certify_attest = attest;
            evidence.devid_certify_signature = signature;
            devid = Some(key);
        }
        let enroll = if enroll_devid {
            Some(enrollment(tpm, &ak, t.devid_handle)?)
        } else {
            None
        };
        Ok::<_, AttestError>((ek, ak, devid, evidence, enroll))
    })?;
    if let Some(k) = &agent_key {
        evidence.agent_key_public = k.public().to_vec();
    }
    let session = TpmSession {
        tpm: shared,
        ek,
        ak,
        devid,
        agent_key,
        _lease: lease,
    };
    Ok((
        session,
        pb::TpmAttestation {
            evidence: Some(evidence),
            devid_enrollment: enroll,
        },
    ))
}

/// Answers the challenge with the TPM.
fn answer(
    s: &mut TpmSession,
    ch: &pb::TpmChallenge,
    event_log_path: &Path,
) -> Result<pb::TpmChallengeResponse, AttestError> {
    let selection = ch
        .pcr_selection
        .iter()
        .map(|sel| Ok((bank(sel.bank)?, sel.pcrs.clone())))
        .collect::<Result<Vec<_>, AttestError>>()?;
    let event_log = read_event_log(event_log_path)?;
    let TpmSession {
        tpm,
        ek,
        ak,
        devid,
        agent_key,
        ..
    } = s;
    tpm.with(|tpm| {
        let secret = tpm.activate_credential(ak, ek, &ch.credential_blob, &ch.encrypted_secret)?;
        let quote = tpm.quote(ak, &ch.quote_nonce, &selection)?;
        let devid_signature = match (&*devid, ch.devid_nonce.is_empty()) {
            (Some(key), false) => {
                let digest = Sha256::digest(&ch.devid_nonce);
                tpm.sign_digest(key, &digest)?
            }
            _ => Vec::new(),
        };
        let (agent_key_certify_attest, agent_key_certify_signature) = match agent_key {
            Some(key) if !ch.agent_key_nonce.is_empty() => {
                key.run(tpm, |tpm, k| tpm.certify(k, ak, &ch.agent_key_nonce))?
            }
            _ => (Vec::new(), Vec::new()),
        };
        Ok::<_, DeviceError>(pb::TpmChallengeResponse {
            activated_secret: secret,
            quote_attest: quote.attest,
            quote_signature: quote.signature,
            pcr_values: quote
                .pcrs
                .into_iter()
                .map(|p| pb::PcrValue {
                    // The wire's HashAlgorithm is numbered by TPM_ALG_ID.
                    bank: i32::from(p.bank.id()),
                    index: p.index,
                    digest: p.digest,
                })
                .collect(),
            event_log,
            devid_signature,
            agent_key_certify_attest,
            agent_key_certify_signature,
        })
    })
    .map_err(AttestError::from)
}

/// Makes (or reuses) the DevID key and writes a CSR for it.
pub(super) fn provision_devid(tpm: &TpmConfig, subject_cn: &str) -> Result<Vec<u8>, DeviceError> {
    SharedTpm::new(&tpm.tcti).with(|t| {
        let key = t.devid_key(tpm.devid_handle)?;
        devid_csr(t, &key, subject_cn)
    })
}
