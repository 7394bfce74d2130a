//! The agent's side of node attestation: the exchange with the server, the same for every
//! node attestor, and the attestors behind [`AgentNodeAttestor`] (one file each:
//! [`tpm`] for `tpm_ek` and `tpm_devid`, `join_token`; the cloud and Kubernetes ones
//! behind the `cloud` and `k8s` cargo features). The configured attestor is chosen from
//! [`NodeAttestor`] (the typed `node_attestor` of the config) in [`attestor_for`].
//!
//! The wire carries the attestor's name and opaque payloads: the attestor makes the
//! evidence, answers a challenge if the server sends one, and nothing else here knows
//! their form.

#[cfg(feature = "cloud")]
mod cloud;
mod join_token;
#[cfg(feature = "k8s")]
mod k8s;
mod tpm;

use std::sync::Arc;

use ironroot_api::node::{self as pb, node_client::NodeClient};
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_tpm::device::DeviceError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tracing::info;

use crate::agent_key::{AgentKey, AgentKeyError, TpmAgentKey};
use crate::config::{AgentConfig, AgentKeyStorage, ConfigError, NodeAttestor};
use crate::connect::{self, ConnectError};
use crate::data_dir::{DataDir, DataDirError, SavedSvid};
use crate::refused::Refused;
use crate::servers::Servers;
use crate::shared_tpm::SharedTpm;

#[cfg(feature = "cloud")]
pub use cloud::MetadataError;
pub use tpm::TpmSession;

/// A node attestor's agent half: the evidence of the first message and, for attestors whose
/// server half sends one, the answer to the challenge. One instance serves one exchange.
/// Payloads are the attestor's own form (the server's attestor of the same name decodes
/// them).
pub trait AgentNodeAttestor: Send {
    /// The name sent to the server (`tpm_ek`, ...), SPIRE's for the attestors SPIRE has.
    fn name(&self) -> &'static str;
    /// The evidence (`AttestParams.payload`); never empty.
    fn evidence(&mut self) -> Result<Vec<u8>, AttestError>;
    /// The answer (`ChallengeResponse.payload`) to the server's challenge
    /// (`Challenge.payload`). Attestors without a challenge refuse one.
    fn answer(&mut self, challenge: &[u8]) -> Result<Vec<u8>, AttestError> {
        let _ = challenge;
        Err(AttestError::UnexpectedChallenge {
            attestor: self.name(),
        })
    }
}

/// The attestor `attestor` names (the config's `node_attestor` with its options), for one
/// exchange; the TPM attestors with the TPM-resident agent key and the test hooks.
fn attestor_for<'h>(
    cfg: &AgentConfig,
    attestor: NodeAttestor<'_>,
    tpm_key: Option<Arc<TpmAgentKey>>,
    hooks: &mut Hooks<'h>,
) -> Result<Box<dyn AgentNodeAttestor + 'h>, AttestError> {
    let mut tpm_attestor = |identity| {
        tpm::TpmNodeAttestor::new(
            identity,
            &cfg.tpm,
            tpm_key.clone(),
            hooks.tpm_evidence.take(),
            hooks.answer.take(),
        )
    };
    Ok(match attestor {
        NodeAttestor::TpmEk { enroll_devid } => {
            Box::new(tpm_attestor(tpm::TpmIdentity::Ek { enroll_devid }))
        }
        NodeAttestor::TpmDevId { certificate_path } => {
            Box::new(tpm_attestor(tpm::TpmIdentity::DevId { certificate_path }))
        }
        NodeAttestor::JoinToken { token } => {
            Box::new(join_token::JoinTokenNodeAttestor::new(token))
        }
        #[cfg(feature = "cloud")]
        NodeAttestor::AwsIid(c) => Box::new(cloud::aws_iid::AwsIidNodeAttestor::new(c)),
        #[cfg(feature = "cloud")]
        NodeAttestor::GcpIit(c) => Box::new(cloud::gcp_iit::GcpIitNodeAttestor::new(c)),
        #[cfg(feature = "cloud")]
        NodeAttestor::AzureMsi(c) => Box::new(cloud::azure_msi::AzureMsiNodeAttestor::new(c)),
        #[cfg(feature = "cloud")]
        NodeAttestor::AzureImds(c) => Box::new(cloud::azure_imds::AzureImdsNodeAttestor::new(c)),
        #[cfg(feature = "k8s")]
        NodeAttestor::K8sPsat {
            cluster,
            token_path,
        } => Box::new(k8s::K8sPsatNodeAttestor::new(cluster, token_path)),
        #[allow(unreachable_patterns)]
        _ => {
            let kind = cfg.node_attestor;
            return Err(ConfigError::NotBuilt {
                attestor: kind.name(),
                feature: kind.feature().unwrap_or("?"),
            }
            .into());
        }
    })
}

/// Whether this build has cargo feature `feature` (the plugin features of this crate).
pub fn feature_built(feature: &str) -> bool {
    (feature == "cloud" && cfg!(feature = "cloud")) || (feature == "k8s" && cfg!(feature = "k8s"))
}

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
    /// `tpm.agent_key = "tpm"` with the join_token (or a cloud) attestor: nothing would
    /// certify that the key lives in a TPM, so the agent refuses rather than present an
    /// unprovable key.
    #[error(
        "a join_token or cloud agent cannot present a TPM-resident key (no TPM evidence \
         certifies it)"
    )]
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
    /// The server's challenge does not decode as the configured attestor's form.
    #[error(
        "the server's challenge does not decode as attestor '{attestor}' defines it: {reason} \
         (agent and server versions disagree on the attestor's wire form; upgrade the older)"
    )]
    BadChallenge {
        /// The agent's attestor.
        attestor: &'static str,
        /// The decoder's error.
        reason: String,
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
    /// The server sent a challenge to an attestor that answers none (join_token), or before
    /// the evidence.
    #[error("the server sent a challenge to attestor '{attestor}', which answers none")]
    UnexpectedChallenge {
        /// The agent's attestor.
        attestor: &'static str,
    },
    /// The cloud attestor could not fetch its evidence from the instance metadata service.
    #[cfg(feature = "cloud")]
    #[error(transparent)]
    Metadata(#[from] cloud::MetadataError),
    /// The attestor could not gather its evidence (a file or service it reads).
    #[error("attestor '{attestor}' cannot make its evidence: {reason}")]
    Evidence {
        /// The agent's attestor.
        attestor: &'static str,
        /// What failed, naming the option to check.
        reason: String,
    },
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
    &'a mut (dyn FnMut(&mut TpmSession, &pb::TpmChallenge, &mut pb::TpmChallengeResponse) + Send);

/// Changes an encoded challenge response before it is sent (any attestor).
pub(crate) type ChallengeResponseHook<'a> = &'a mut (dyn FnMut(&mut Vec<u8>) + Send);

/// Changes the TPM evidence before it is encoded.
pub(crate) type EvidenceHook<'a> = &'a mut (dyn FnMut(&mut pb::TpmAttestation) + Send);

/// Changes to the messages before they are sent; `Hooks::default()` changes nothing.
#[derive(Default)]
pub struct Hooks<'a> {
    /// Called on the first message (name, CSR, encoded evidence) before it is sent.
    pub params: Option<&'a mut (dyn FnMut(&mut pb::AttestParams) + Send)>,
    /// tpm_ek / tpm_devid: called on the TPM evidence before it is encoded.
    pub tpm_evidence: Option<EvidenceHook<'a>>,
    /// tpm_ek / tpm_devid: called on the answer to the TPM challenge before it is encoded,
    /// with the session that made it.
    pub answer: Option<AnswerHook<'a>>,
    /// Any attestor: called on the encoded answer to a challenge before it is sent.
    pub challenge_response: Option<ChallengeResponseHook<'a>>,
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
    let configured = cfg.node_attestor()?;
    let uses_tpm = cfg.node_attestor.uses_tpm();
    if tpm_key.is_some() && !uses_tpm {
        return Err(AttestError::JoinTokenWithTpmKey);
    }
    // One TPM connection from the CSR to the answer.
    let _lease = uses_tpm.then(|| SharedTpm::new(&cfg.tpm.tcti).lease());
    let (key, csr) = keys.key_and_csr()?;
    let mut attestor = attestor_for(cfg, configured, tpm_key, &mut hooks)?;
    let mut params = pb::AttestParams {
        attestor: attestor.name().into(),
        csr,
        payload: attestor.evidence()?,
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
    let exchanged = exchange(
        channel,
        params,
        attestor.as_mut(),
        key,
        hooks.challenge_response.take(),
    )
    .await;
    if exchanged.is_err() {
        servers.failed(&server);
    }
    exchanged
}

/// The attestation stream with one server: params, the challenge and its answer (for
/// attestors with one), the result.
async fn exchange(
    channel: tonic::transport::Channel,
    params: pb::AttestParams,
    attestor: &mut (dyn AgentNodeAttestor + '_),
    key: AgentKey,
    mut answer_hook: Option<ChallengeResponseHook<'_>>,
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
                let mut payload = attestor.answer(&ch.payload)?;
                if let Some(h) = answer_hook.as_mut() {
                    h(&mut payload);
                }
                tx.send(pb::AttestRequest {
                    step: Some(pb::attest_request::Step::ChallengeResponse(
                        pb::ChallengeResponse { payload },
                    )),
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
    tpm::provision_devid(&cfg.tpm, subject_cn)
}
