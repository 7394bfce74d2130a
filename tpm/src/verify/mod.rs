//! Pure-Rust verification of TPM evidence: TPM structures (public areas, Names, quotes,
//! certifications, signatures), the TPM-resident agent key, software MakeCredential, the
//! TCG firmware event log, PCR replay and the measured-boot policy. No libtss2 and no I/O: callers hand in bytes.

pub mod agent_key;
mod credential;
pub mod eventlog;
pub mod policy;
pub mod tpm2;

pub use credential::{make_credential, MadeCredential};
pub use tpm2::{
    pcr_digest, verify_signature, Attest, Attested, ClockInfo, EccCurve, KdfScheme, KeyScheme,
    ObjectAttributes, PcrSelection, PublicKey, PublicParts, SignatureValue, SymAlgorithm, SymMode,
    SymmetricDef, TpmError, TpmHashAlg, TpmPublic, TpmSignature, DEFAULT_RSA_EXPONENT,
    MAX_TPMT_PUBLIC_SIZE, TPM_GENERATED_VALUE,
};
