//! The agent SVID's private key: in the TPM (the default for TPM node attestors) or in
//! memory (join tokens, and TPMs without room).
//!
//! A TPM-resident key ([`TpmAgentKey`]) is an ECC P-256 restricted signing key the TPM
//! generated under the storage root key (see `ironroot_tpm::device`); its private part
//! never exists outside the TPM. It is certified by the AK at every attestation and signs
//! the agent's CSR and its mTLS handshakes in the TPM (`crate::tls_key`).
//!
//! Kept across restarts and renewals: the key's public area and its private area wrapped
//! by the storage root key live in `data_dir` ([`PUBLIC_FILE`], [`PRIVATE_FILE`]); they are
//! useless without this TPM. Renewals (re-attestation at half life) reuse the key: each
//! attestation certifies it afresh over the server's nonce, so a new key would prove
//! nothing more, and the key cannot leak (the usual reason to rotate one). A new key is
//! made only when the files are missing or no longer load (another TPM, a cleared owner
//! hierarchy, altered files).

use std::path::Path;
use std::sync::{Arc, Mutex};

use ironroot_tpm::device::{ecdsa_p256_der, tpm_key_csr, DeviceError, KeyBlobs, LoadedKey, Tpm};
use ironroot_tpm::verify::{TpmError, TpmPublic};
use tracing::{info, warn};

use crate::data_dir::{DataDir, DataDirError};
pub use crate::data_dir::{PRIVATE_FILE, PUBLIC_FILE};
use crate::shared_tpm::SharedTpm;

/// Why the agent key could not be made or loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentKeyError {
    /// A software P-256 key could not be generated.
    #[error("cannot generate the agent key")]
    Generate(#[source] rcgen::Error),
    /// The CSR for a software key could not be built or signed.
    #[error("cannot build the agent CSR")]
    Csr(#[source] rcgen::Error),
    /// The TPM refused to create or load the agent key (or could not be reached).
    #[error("cannot make the agent key in the TPM")]
    Create(#[source] DeviceError),
    /// The TPM's public area for the key does not parse, or is not the restricted P-256 signing
    /// key the server's certify check requires.
    #[error("the agent key's public area")]
    Public(#[source] TpmError),
    /// The key blobs in the data directory could not be read or written.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
}

/// Subject of the agent's CSR (the server sets the SVID's subject; the CSR only carries the
/// key and proves it signs).
const CSR_SUBJECT: &str = "ironroot-agent";

/// The agent SVID's key.
#[derive(Clone)]
pub enum AgentKey {
    /// PKCS#8 DER, made in memory for this SVID.
    Software(Arc<Vec<u8>>),
    /// In the TPM.
    Tpm(Arc<TpmAgentKey>),
}

impl std::fmt::Debug for AgentKey {
    /// Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AgentKey({})", self.kind())
    }
}

impl AgentKey {
    /// A fresh software key (ECDSA P-256) and a CSR for it.
    pub fn software() -> Result<(AgentKey, Vec<u8>), AgentKeyError> {
        let key = rcgen::KeyPair::generate().map_err(AgentKeyError::Generate)?;
        let csr = rcgen::CertificateParams::default()
            .serialize_request(&key)
            .map_err(AgentKeyError::Csr)?
            .der()
            .to_vec();
        Ok((AgentKey::Software(Arc::new(key.serialize_der())), csr))
    }

    /// `"tpm"` or `"software"`, as in the `tpm:agent_key:` selector.
    pub fn kind(&self) -> &'static str {
        match self {
            AgentKey::Software(_) => "software",
            AgentKey::Tpm(_) => "tpm",
        }
    }

    /// The PKCS#8 DER of a software key; `None` for a TPM key (it has none outside the TPM).
    pub fn pkcs8(&self) -> Option<&[u8]> {
        match self {
            AgentKey::Software(k) => Some(k),
            AgentKey::Tpm(_) => None,
        }
    }
}

/// The TPM-resident agent key. Signs through the process's [`SharedTpm`].
pub struct TpmAgentKey {
    tpm: SharedTpm,
    blobs: KeyBlobs,
    /// The key as a saved context; reloaded from `blobs` when the TPM no longer has it.
    loaded: Mutex<LoadedKey>,
    spki_der: Vec<u8>,
}

impl std::fmt::Debug for TpmAgentKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TpmAgentKey")
            .field("tpm", &self.tpm)
            .finish_non_exhaustive()
    }
}

fn read_blobs(dir: &Path) -> Option<KeyBlobs> {
    DataDir::new(dir).tpm_agent_key()
}

impl TpmAgentKey {
    /// The agent key kept in `data_dir`, loaded in `tpm`; a new one (made in the TPM and
    /// written to `data_dir`) when there is none or it no longer loads.
    pub fn load_or_create(
        tpm: &SharedTpm,
        data_dir: &Path,
    ) -> Result<Arc<TpmAgentKey>, AgentKeyError> {
        if let Some(blobs) = read_blobs(data_dir) {
            match tpm.with(|t| t.load_agent_key(&blobs)) {
                Ok(loaded) => return Self::new(tpm, blobs, loaded),
                Err(e) => warn!(
                    dir = %data_dir.display(),
                    "the agent key in data_dir does not load in this TPM ({e}): making a new one"
                ),
            }
        }
        let (blobs, loaded) = tpm
            .with(|t| {
                let blobs = t.create_agent_key()?;
                let loaded = t.load_agent_key(&blobs)?;
                Ok::<_, DeviceError>((blobs, loaded))
            })
            .map_err(AgentKeyError::Create)?;
        DataDir::new(data_dir).save_tpm_agent_key(&blobs)?;
        info!(dir = %data_dir.display(), "made a new TPM-resident agent key");
        Self::new(tpm, blobs, loaded)
    }

    fn new(
        tpm: &SharedTpm,
        blobs: KeyBlobs,
        loaded: LoadedKey,
    ) -> Result<Arc<Self>, AgentKeyError> {
        let spki_der = TpmPublic::from_tpm2b(&blobs.public)
            .and_then(|p| p.spki_der())
            .map_err(AgentKeyError::Public)?;
        Ok(Arc::new(TpmAgentKey {
            tpm: tpm.clone(),
            blobs,
            loaded: Mutex::new(loaded),
            spki_der,
        }))
    }

    /// TPM2B_PUBLIC of the key (what the AK certifies and the server checks).
    pub fn public(&self) -> &[u8] {
        &self.blobs.public
    }

    /// The key as a DER SubjectPublicKeyInfo (what the agent SVID must carry).
    pub fn spki_der(&self) -> &[u8] {
        &self.spki_der
    }

    /// The TPM this key lives in.
    pub fn tpm(&self) -> &SharedTpm {
        &self.tpm
    }

    /// Runs `f` on `t` with the key: if the TPM no longer has the saved context (a TPM
    /// reset since it was saved), the key is loaded again from its blobs, once.
    pub fn run<T>(
        &self,
        t: &mut Tpm,
        f: impl Fn(&mut Tpm, &LoadedKey) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let key = self
            .loaded
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match f(t, &key) {
            Err(e) if e.tpm_operation() == Some("ContextLoad") => {
                warn!("the TPM lost the agent key's context ({e}): loading it again");
                let again = t.load_agent_key(&self.blobs)?;
                *self.loaded.lock().unwrap_or_else(|p| p.into_inner()) = again.clone();
                f(t, &again)
            }
            other => other,
        }
    }

    /// A PKCS#10 CSR for the key, signed in the TPM.
    pub fn csr(&self) -> Result<Vec<u8>, DeviceError> {
        self.tpm
            .with(|t| self.run(t, |t, k| tpm_key_csr(t, k, CSR_SUBJECT)))
    }

    /// ECDSA P-256 / SHA-256 signature of `message`, DER (as X.509 and TLS want it),
    /// made in the TPM.
    pub fn sign_der(&self, message: &[u8]) -> Result<Vec<u8>, DeviceError> {
        let rs = self
            .tpm
            .with(|t| self.run(t, |t, k| t.sign_message(k, message)))?;
        ecdsa_p256_der(&rs)
    }
}

#[cfg(test)]
mod tests;
