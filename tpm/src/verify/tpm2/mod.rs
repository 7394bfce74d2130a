//! TPM 2.0 structures the server receives as evidence (TPM 2.0 Library, Part 2), parsed
//! without libtss2: public areas and Names, attestations (quote, certify) and signatures.
//!
//! All parsing is bounded: every TPM2B size is checked against its Part 2 cap and against
//! the bytes present before anything is copied, so hostile input gives a [`TpmError`]
//! naming the structure, field and byte offset, never a panic or a large allocation.
//!
//! Checking a quote from an agent:
//!
//! ```no_run
//! use ironroot_tpm::verify::{verify_signature, Attest, TpmError, TpmPublic, TpmSignature};
//!
//! fn check_quote(
//!     ak_tpm2b_public: &[u8],
//!     quote: &[u8],
//!     signature: &[u8],
//!     nonce: &[u8],
//!     pcr_values_in_selection_order: &[&[u8]],
//! ) -> Result<(), TpmError> {
//!     let ak = TpmPublic::from_tpm2b(ak_tpm2b_public)?;
//!     ak.ensure_attestation_key()?;
//!     let sig = TpmSignature::parse(signature)?;
//!     verify_signature(&ak, quote, &sig)?;
//!     // The TPM digests the PCRs with the signing scheme's hash.
//!     Attest::parse(quote)?.check_quote(nonce, sig.hash, pcr_values_in_selection_order)?;
//!     Ok(())
//! }
//! ```

mod alg;
mod attest;
mod error;
mod marshal;
mod params;
mod public;
mod signature;
mod spki;

pub(crate) use alg::uncomputable;
pub use attest::{pcr_digest, Attest, Attested, ClockInfo, PcrSelection, TPM_GENERATED_VALUE};
pub use error::TpmError;
pub use params::{
    EccCurve, KdfScheme, KeyScheme, ObjectAttributes, SymAlgorithm, SymMode, SymmetricDef,
};
pub use public::{PublicKey, PublicParts, TpmPublic, DEFAULT_RSA_EXPONENT, MAX_TPMT_PUBLIC_SIZE};
pub use signature::{verify_signature, SignatureValue, TpmSignature};

pub(crate) use marshal::put_tpm2b;

#[cfg(test)]
pub(crate) mod fixtures_for_tests;
