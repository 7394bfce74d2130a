//! The agent's side of node attestation: gather TPM evidence, answer the
//! server's challenge (credential activation, quote, event log, DevID
//! signature, TPM2_Certify of the agent key), and receive the agent SVID.
//!
//! The TPM is reached through the process's [`SharedTpm`], leased for the
//! exchange and locked only for the synchronous TPM work, never across an
//! `.await`.

use std::sync::Arc;

use ironroot_api::node::{self as pb, node_client::NodeClient};
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_tpm::device::{
    devid_csr, read_event_log, AttestationKey, DeviceError, EndorsementKey, LoadedKey, Tpm,
};
use ironroot_tpm::verify::HashAlg;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::info;

use crate::agent_key::{AgentKey, AgentKeyError, TpmAgentKey};
use crate::config::{AgentConfig, AgentKeyStorage, ConfigError, NodeAttestor};
use crate::connect::{self, ConnectError};
use crate::data_dir::{DataDir, DataDirError, SavedSvid};
use crate::refused::Refused;
use crate::servers::Servers;
use crate::shared_tpm::{SharedTpm, TpmLease};

/// Why an attestation did not give the agent an SVID.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The blocking task that makes or loads the agent key ([`KeySource::for_config`]) did
    /// not finish (it panicked or was cancelled).
    #[error("agent key worker failed")]
    KeyWorker,
    /// The configured TPM-resident agent key could not be made or loaded.
    #[error("the TPM-resident agent key (tpm.agent_key = \"software\" keeps a software key)")]
    TpmAgentKey(#[source] AgentKeyError),
    /// A software agent key or its CSR could not be made.
    #[error(transparent)]
    AgentKey(#[from] AgentKeyError),
    /// The TPM refused to sign the CSR of the TPM-resident agent key.
    #[error("cannot sign the agent CSR in the TPM")]
    AgentCsr(#[source] DeviceError),
    /// `tpm.agent_key = "tpm"` with the join_token attestor: nothing would certify that the key
    /// lives in a TPM, so the agent refuses rather than present an unprovable key.
    #[error("a join_token agent cannot present a TPM-resident key (no TPM evidence certifies it)")]
    JoinTokenWithTpmKey,
    /// The configuration does not name a usable node attestor.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The DevID certificate chain (tpm_devid) could not be read.
    #[error("DevID certificate {}", path.display())]
    DevIdCertificate {
        /// The PEM file read.
        path: std::path::PathBuf,
        /// Why it was unusable.
        #[source]
        source: ConnectError,
    },
    /// The challenge names a PCR bank the wire enum does not define (or leaves it unspecified);
    /// holds the name or raw value.
    #[error("the server asked for PCR bank {0:?}, which this agent cannot quote")]
    PcrBank(String),
    /// A TPM operation of the exchange failed (activation, quote, signing, certify).
    #[error(transparent)]
    Tpm(#[from] DeviceError),
    /// The server could not be reached over TLS, or its bundle could not be read.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The attestation stream closed before the agent could send its next message.
    #[error("attestation stream closed")]
    StreamClosed,
    /// The server refused the evidence, or the exchange (the status says why).
    #[error("{0}")]
    Refused(Refused),
    /// The server sent a TPM challenge although the agent attested with a join token.
    #[error("the server sent a TPM challenge to a join_token agent")]
    UnexpectedChallenge,
    /// The server ended the stream without a result or a status.
    #[error("the server closed the attestation stream without a result")]
    NoResult,
}

/// What the server granted.
#[derive(Debug, Clone)]
pub struct AttestOutcome {
    /// The agent's SPIFFE ID, as the server assigned it.
    pub spiffe_id: String,
    /// The node selectors the server derived from the evidence (`type:value`).
    pub selectors: Vec<String>,
    /// The name of the boot policy the evidence met (empty for a join token).
    pub boot_policy: String,
    /// The agent X.509-SVID (DER), leaf first, then any intermediates.
    pub svid_chain: Vec<Vec<u8>>,
    /// The trust domain's root certificates (DER), to verify the server with from now on.
    pub root_cas: Vec<Vec<u8>>,
    /// When the agent SVID expires, in Unix seconds.
    pub expires_at: i64,
    /// The agent SVID's key (in the TPM, or PKCS#8 in memory; never sent).
    pub key: AgentKey,
    /// An LDevID issued on enrollment (then the DevID CA); empty otherwise.
    pub devid_chain: Vec<Vec<u8>>,
}

impl AttestOutcome {
    /// Keeps the agent SVID in `data_dir`, and an enrolled LDevID where tpm_devid
    /// will read it.
    pub fn save(&self, cfg: &AgentConfig) -> Result<(), DataDirError> {
        let data_dir = DataDir::new(&cfg.data_dir);
        data_dir.save_svid(&SavedSvid {
            chain: &self.svid_chain,
            roots: &self.root_cas,
            key: &self.key,
        })?;
        if self.devid_chain.is_empty() {
            return Ok(());
        }
        let path = cfg.devid_certificate_path();
        data_dir.save_devid(&path, &self.devid_chain)?;
        info!(path = %path.display(), "LDevID certificate enrolled");
        Ok(())
    }
}

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

/// Where the agent SVID key of the next attestation comes from. A running agent keeps
/// one for its lifetime, so the TPM key is loaded once.
#[derive(Clone, Debug)]
pub enum KeySource {
    /// A new software key for each SVID.
    Software,
    /// The TPM-resident key (reused by every attestation).
    Tpm(Arc<TpmAgentKey>),
}

impl KeySource {
    /// What `cfg` asks for: the TPM key kept in `data_dir` (made if needed) or software.
    pub fn for_config(cfg: &AgentConfig) -> Result<KeySource, AttestError> {
        Ok(match cfg.agent_key_storage() {
            AgentKeyStorage::Software => KeySource::Software,
            AgentKeyStorage::Tpm => KeySource::Tpm(
                TpmAgentKey::load_or_create(&SharedTpm::new(&cfg.tpm.tcti), &cfg.data_dir)
                    .map_err(AttestError::TpmAgentKey)?,
            ),
        })
    }

    /// The key and a CSR for it (signed in the TPM for a TPM key).
    fn key_and_csr(&self) -> Result<(AgentKey, Vec<u8>), AttestError> {
        match self {
            KeySource::Software => Ok(AgentKey::software()?),
            KeySource::Tpm(k) => {
                let csr = k.csr().map_err(AttestError::AgentCsr)?;
                Ok((AgentKey::Tpm(k.clone()), csr))
            }
        }
    }
}

/// Lets tests change what the agent sends (to show the server rejects
/// replayed or forged evidence). Production uses `Hooks::default()`.
pub(crate) type AnswerHook<'a> =
    &'a mut (dyn FnMut(&mut TpmSession, &pb::Challenge, &mut pb::ChallengeResponse) + Send);

/// Changes to the two messages before they are sent; `Hooks::default()` changes nothing.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called on the first message (the evidence) before it is sent.
    pub params: Option<&'a mut (dyn FnMut(&mut pb::AttestParams) + Send)>,
    /// Called on the answer to the TPM challenge before it is sent, with the session that made it.
    pub answer: Option<AnswerHook<'a>>,
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

fn read_chain(path: &std::path::Path) -> Result<Vec<Vec<u8>>, AttestError> {
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
    cfg: &AgentConfig,
    agent_key: Option<Arc<TpmAgentKey>>,
) -> Result<(TpmSession, pb::TpmEvidence, Option<pb::DevIdEnrollment>), AttestError> {
    let t = &cfg.tpm;
    let shared = SharedTpm::new(&t.tcti);
    let lease = shared.lease();
    let attestor = cfg.node_attestor()?;
    let devid_chain = match &attestor {
        NodeAttestor::TpmDevId { certificate_path } => Some(read_chain(certificate_path)?),
        _ => None,
    };
    let enroll_devid = matches!(attestor, NodeAttestor::TpmEk { enroll_devid: true });
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
    Ok((session, evidence, enroll))
}

/// Answers the challenge with the TPM.
fn answer(
    s: &mut TpmSession,
    ch: &pb::Challenge,
    cfg: &AgentConfig,
) -> Result<pb::ChallengeResponse, AttestError> {
    let selection = ch
        .pcr_selection
        .iter()
        .map(|sel| Ok((bank(sel.bank)?, sel.pcrs.clone())))
        .collect::<Result<Vec<_>, AttestError>>()?;
    let event_log = read_event_log(&cfg.tpm.event_log_path)?;
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
        Ok::<_, DeviceError>(pb::ChallengeResponse {
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

/// One attestation with the configured node attestor and agent key.
pub async fn attest(cfg: &AgentConfig) -> Result<AttestOutcome, AttestError> {
    let keys = KeySource::for_config(cfg)?;
    attest_with(cfg, &keys, Hooks::default()).await
}

/// [`attest`] with the agent key from `keys`, and hooks on the messages sent.
pub async fn attest_with(
    cfg: &AgentConfig,
    keys: &KeySource,
    hooks: Hooks<'_>,
) -> Result<AttestOutcome, AttestError> {
    attest_via(&Servers::from_config(cfg), cfg, keys, hooks).await
}

/// [`attest_with`] at the first of `servers` that answers, from the current one on; an
/// exchange that fails after connecting moves `servers` on to the next one.
pub async fn attest_via(
    servers: &Servers,
    cfg: &AgentConfig,
    keys: &KeySource,
    mut hooks: Hooks<'_>,
) -> Result<AttestOutcome, AttestError> {
    let tpm_key = match keys {
        KeySource::Tpm(k) => Some(k.clone()),
        KeySource::Software => None,
    };
    let attestor = cfg.node_attestor()?;
    let uses_tpm = cfg.node_attestor.uses_tpm();
    if tpm_key.is_some() && !uses_tpm {
        return Err(AttestError::JoinTokenWithTpmKey);
    }
    // One TPM connection from the CSR to the answer.
    let _lease = uses_tpm.then(|| SharedTpm::new(&cfg.tpm.tcti).lease());
    let (key, csr) = keys.key_and_csr()?;
    let name = cfg.node_attestor.name();
    let (mut session, mut params) = match attestor {
        NodeAttestor::JoinToken { token } => (
            None,
            pb::AttestParams {
                attestor: name.into(),
                csr,
                join_token: token.to_owned(),
                tpm: None,
                devid_enrollment: None,
            },
        ),
        _ => {
            let (s, evidence, devid_enrollment) = tpm_evidence(cfg, tpm_key)?;
            (
                Some(s),
                pb::AttestParams {
                    attestor: name.into(),
                    csr,
                    tpm: Some(evidence),
                    join_token: String::new(),
                    devid_enrollment,
                },
            )
        }
    };
    if let Some(h) = hooks.params.as_mut() {
        h(&mut params);
    }
    // The bootstrap bundle, plus the last bundle the server sent over an
    // authenticated connection: after a CA rotation the server's SVID chains
    // to a root the bootstrap bundle does not have.
    let mut roots = connect::read_bundle(&cfg.trust_bundle_path)?;
    let latest = DataDir::new(&cfg.data_dir).bundle();
    if latest.exists() {
        for r in connect::read_bundle(&latest)? {
            if !roots.contains(&r) {
                roots.push(r);
            }
        }
    }
    let server_id = SpiffeId::server(&cfg.trust_domain);
    let (channel, server) = connect::channel(servers, roots, server_id).await?;
    let exchanged = exchange(channel, params, session.as_mut(), key, &mut hooks, cfg).await;
    if exchanged.is_err() {
        servers.failed(&server);
    }
    exchanged
}

/// The attestation stream with one server: params, the challenge and its answer (TPM
/// attestors), the result.
async fn exchange(
    channel: tonic::transport::Channel,
    params: pb::AttestParams,
    mut session: Option<&mut TpmSession>,
    key: AgentKey,
    hooks: &mut Hooks<'_>,
    cfg: &AgentConfig,
) -> Result<AttestOutcome, AttestError> {
    let mut client = NodeClient::new(channel)
        .max_encoding_message_size(16 * 1024 * 1024)
        .max_decoding_message_size(16 * 1024 * 1024);
    let (tx, rx) = mpsc::channel(2);
    tx.send(pb::AttestRequest {
        step: Some(pb::attest_request::Step::Params(params)),
    })
    .await
    .map_err(|_| AttestError::StreamClosed)?;
    let rejected = |s: tonic::Status| AttestError::Refused(s.into());
    let mut inbound = client
        .attest(ReceiverStream::new(rx))
        .await
        .map_err(rejected)?
        .into_inner();
    loop {
        let msg = inbound.message().await.map_err(rejected)?;
        match msg.and_then(|m| m.step) {
            Some(pb::attest_response::Step::Challenge(ch)) => {
                let s = session
                    .as_deref_mut()
                    .ok_or(AttestError::UnexpectedChallenge)?;
                let mut resp = answer(s, &ch, cfg)?;
                if let Some(h) = hooks.answer.as_mut() {
                    h(s, &ch, &mut resp);
                }
                tx.send(pb::AttestRequest {
                    step: Some(pb::attest_request::Step::ChallengeResponse(resp)),
                })
                .await
                .map_err(|_| AttestError::StreamClosed)?;
            }
            Some(pb::attest_response::Step::Result(r)) => {
                return Ok(AttestOutcome {
                    spiffe_id: r.spiffe_id,
                    selectors: r.selectors,
                    boot_policy: r.boot_policy,
                    svid_chain: r.svid_chain,
                    root_cas: r.root_cas,
                    expires_at: r.expires_at,
                    key,
                    devid_chain: r.devid_certificate_chain,
                })
            }
            None => return Err(AttestError::NoResult),
        }
    }
}

/// Makes (or reuses) the DevID key and writes a CSR for it.
pub fn provision_devid(cfg: &AgentConfig, subject_cn: &str) -> Result<Vec<u8>, DeviceError> {
    SharedTpm::new(&cfg.tpm.tcti).with(|tpm| {
        let key = tpm.devid_key(cfg.tpm.devid_handle)?;
        devid_csr(tpm, &key, subject_cn)
    })
}
