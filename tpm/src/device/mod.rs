//! TPM access for the agent (cargo feature `device`, tss-esapi 7.7 over libtss2).
//!
//! [`Tpm`] wraps one ESYS context and offers what node attestation needs: the endorsement
//! key and its certificate, an attestation key, credential activation, quotes, certify, a
//! DevID key with its CSR, the agent SVID key (restricted signing, kept as blobs outside the
//! TPM), signing, NV and PCR access.
//!
//! Transient objects: swtpm over TCP has no resource manager and only 3 object slots, and a
//! real TPM's are few too. So no operation leaves a transient object loaded: a key that is
//! not persisted is kept as a saved context (`TPM2_ContextSave`) and loaded only for the
//! command that uses it, then flushed; every session is flushed after its command.
//! Keys an agent uses on every attestation (AK, DevID) should be persisted: a real TPM takes
//! seconds to make them.
//!
//! Authorization: hierarchy auth values are empty unless set with
//! [`Tpm::set_endorsement_auth`] / [`Tpm::set_owner_auth`]; keys made here have empty auth.

mod agent_key;
mod ak;
mod credential;
mod csr;
mod devid;
mod ek;
mod error;
mod eventlog;
mod hash;
mod keys;
mod nv;
mod pcr;
mod quote;
mod sign;
mod srk;
mod tcti;

use tss_esapi::handles::ObjectHandle;
use tss_esapi::structures::Auth;
use tss_esapi::Context;

use crate::verify::HashAlg;

pub use agent_key::KeyBlobs;
pub use csr::{devid_csr, ecdsa_p256_der, tpm_key_csr};
pub use error::DeviceError;
pub use eventlog::{read_event_log, DEFAULT_EVENT_LOG_PATH, MAX_EVENT_LOG_SIZE};
pub use sign::MAX_SIGNED_MESSAGE;

/// An open TPM. Methods take `&mut self`: one command at a time, as the TPM itself.
pub struct Tpm {
    ctx: Context,
    tcti: String,
    /// Endorsement keys already made in this session, so a second call does not pay for
    /// another CreatePrimary.
    eks: Vec<EndorsementKey>,
}

impl std::fmt::Debug for Tpm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tpm").field("tcti", &self.tcti).finish()
    }
}

impl Tpm {
    /// Opens the TPM behind `tcti`: `"device:/dev/tpmrm0"` on a machine (the kernel's
    /// resource manager), `"swtpm:host=127.0.0.1,port=2321"` (or `"mssim:..."`) for a
    /// software TPM. The error names the TCTI.
    pub fn open(tcti: &str) -> Result<Self, DeviceError> {
        Ok(Tpm {
            ctx: tcti::open(tcti)?,
            tcti: tcti.to_string(),
            eks: Vec::new(),
        })
    }

    /// The TCTI this TPM was opened with.
    pub fn tcti(&self) -> &str {
        &self.tcti
    }

    /// Sets the endorsement hierarchy's auth value (empty by default; some machines set it).
    pub fn set_endorsement_auth(&mut self, auth: &[u8]) -> Result<(), DeviceError> {
        self.set_hierarchy_auth(ObjectHandle::Endorsement, auth)
    }

    /// Sets the owner (storage) hierarchy's auth value, needed to persist keys.
    pub fn set_owner_auth(&mut self, auth: &[u8]) -> Result<(), DeviceError> {
        self.set_hierarchy_auth(ObjectHandle::Owner, auth)
    }

    fn set_hierarchy_auth(&mut self, h: ObjectHandle, auth: &[u8]) -> Result<(), DeviceError> {
        let auth = Auth::try_from(auth.to_vec())
            .map_err(|e| DeviceError::invalid("set hierarchy auth", e.to_string()))?;
        self.ctx
            .tr_set_auth(h, auth)
            .map_err(DeviceError::tpm("TR_SetAuth"))
    }
}

/// Which endorsement key (TCG EK Credential Profile templates).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EkAlgorithm {
    /// RSA-2048, template L-1; certificate in NV 0x01c00002; persisted at 0x81010001.
    Rsa2048,
    /// ECC NIST P-256, template L-2; certificate in NV 0x01c0000a; persisted at 0x81010002.
    EccP256,
    /// ECC NIST P-384, template H-3 (swtpm's ECC EK); certificate in NV 0x01c00016.
    EccP384,
}

/// Which attestation key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum AkAlgorithm {
    /// ECC P-256, ECDSA with SHA-256 (the default: fast on real TPMs).
    #[default]
    EccP256,
    /// RSA-2048, RSASSA-PKCS1-v1_5 with SHA-256.
    Rsa2048,
}

/// One PCR's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrValue {
    /// The bank, by its hash algorithm.
    pub bank: HashAlg,
    /// The PCR index (0..=23).
    pub index: u32,
    /// The value (digest size of the bank).
    pub digest: Vec<u8>,
}

/// The endorsement key: public part, certificate, and where the TPM holds it.
#[derive(Clone, Debug)]
pub struct EndorsementKey {
    /// TPM2B_PUBLIC bytes: u16 big-endian size, then TPMT_PUBLIC.
    pub public: Vec<u8>,
    /// The EK certificate (DER) from NV, `None` when the TPM has none.
    pub certificate: Option<Vec<u8>>,
    /// The template it was made from.
    pub alg: EkAlgorithm,
    pub(crate) slot: keys::KeySlot,
    /// The EK's qualified name, to check that a persisted AK was made under it.
    pub(crate) qualified_name: Vec<u8>,
}

impl EndorsementKey {
    /// The persistent handle holding the EK, or `None` when it is transient (re-created
    /// from the template; kept as a saved context by this module).
    pub fn handle(&self) -> Option<u32> {
        self.slot.persistent()
    }
}

/// The attestation key: a restricted signing key under the EK.
#[derive(Clone, Debug)]
pub struct AttestationKey {
    /// TPM2B_PUBLIC bytes.
    pub public: Vec<u8>,
    /// The TPM name (nameAlg id, then the digest of the public area).
    pub name: Vec<u8>,
    pub(crate) slot: keys::KeySlot,
}

impl AttestationKey {
    /// The persistent handle, or `None` for an AK that was not persisted.
    pub fn handle(&self) -> Option<u32> {
        self.slot.persistent()
    }
}

/// Another key resident in the TPM (a DevID, the agent SVID key).
#[derive(Clone, Debug)]
pub struct LoadedKey {
    /// TPM2B_PUBLIC bytes.
    pub public: Vec<u8>,
    /// The TPM name.
    pub name: Vec<u8>,
    pub(crate) slot: keys::KeySlot,
}

impl LoadedKey {
    /// The persistent handle, or `None` when the key is transient.
    pub fn handle(&self) -> Option<u32> {
        self.slot.persistent()
    }
}

/// Transient objects and sessions loaded in the TPM ([`Tpm::transient_usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransientUsage {
    /// Loaded transient objects (handles 0x80xxxxxx).
    pub objects: usize,
    /// Loaded HMAC and policy sessions.
    pub sessions: usize,
}

/// A TPM2_Quote.
#[derive(Clone, Debug)]
pub struct Quote {
    /// The marshalled TPMS_ATTEST: exactly the bytes the AK signed.
    pub attest: Vec<u8>,
    /// The marshalled TPMT_SIGNATURE.
    pub signature: Vec<u8>,
    /// The quoted PCR values, banks in the order asked, indices ascending within a bank:
    /// the order the TPM hashed them into the attest's pcrDigest.
    pub pcrs: Vec<PcrValue>,
}
