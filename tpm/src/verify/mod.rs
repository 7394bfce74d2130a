//! Pure-Rust verification of TPM evidence: TPM structures (public areas, Names, quotes,
//! certifications, signatures), the EK, quote, DevID and agent key checks, EK and DevID
//! certificate paths, software MakeCredential, the TCG firmware event log, PCR replay and
//! the measured-boot policy. No libtss2 and no I/O: callers hand in bytes (and the time).

pub mod agent_key;
pub mod certchain;
mod credential;
pub mod devid;
pub mod ek;
pub mod eventlog;
pub mod policy;
pub mod quote;
pub mod replay;
pub mod tpm2;

pub use credential::{make_credential, MadeCredential};
pub use eventlog::HashAlg;
pub use tpm2::{
    pcr_digest, verify_signature, Attest, Attested, ClockInfo, EccCurve, KdfScheme, KeyScheme,
    ObjectAttributes, PcrSelection, PublicKey, PublicParts, SignatureValue, SymAlgorithm, SymMode,
    SymmetricDef, TpmError, TpmPublic, TpmSignature, DEFAULT_RSA_EXPONENT, MAX_TPMT_PUBLIC_SIZE,
    TPM_GENERATED_VALUE,
};
