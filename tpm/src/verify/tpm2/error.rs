//! The one error type of TPM structure parsing, signature checks and MakeCredential.

/// Why TPM evidence was rejected or a TPM operation could not be done in software.
///
/// Parsing errors name the TPM structure and field (as in TPM 2.0 Part 2) and the byte
/// offset in the input, so an operator can find the bad byte in a hex dump.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TpmError {
    /// The input ends inside a field.
    #[error(
        "{structure}.{field} is truncated at byte {offset}: it needs {needed} bytes, \
         {available} are left"
    )]
    Truncated {
        /// TPM structure being read (`TPMT_PUBLIC`).
        structure: &'static str,
        /// Field within it (`unique`).
        field: &'static str,
        /// Byte offset of the field in the input.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// A field holds a value the specification does not allow (or a size above its cap).
    #[error("{structure}.{field} at byte {offset} is invalid: {reason}")]
    Invalid {
        /// TPM structure being read.
        structure: &'static str,
        /// Field within it.
        field: &'static str,
        /// Byte offset of the field in the input.
        offset: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A well-formed value this implementation does not handle (an algorithm, curve, key
    /// size or attestation type), or refuses (SHA-1 signatures).
    #[error("{structure}.{field} is not supported: {reason}")]
    Unsupported {
        /// TPM structure (or operation) concerned.
        structure: &'static str,
        /// Field within it.
        field: &'static str,
        /// What was found and what is supported.
        reason: String,
    },
    /// TPMS_ATTEST.magic is not TPM_GENERATED_VALUE: the TPM did not make this structure.
    #[error(
        "TPMS_ATTEST.magic is {found:#010x}, not TPM_GENERATED_VALUE 0xff544347: \
         this was not produced by a TPM"
    )]
    BadMagic {
        /// The magic found.
        found: u32,
    },
    /// A signature does not verify, or cannot have been made by this key.
    #[error("signature is invalid: {reason}")]
    SignatureInvalid {
        /// Why.
        reason: String,
    },
    /// Two keys that must be the same are not (a TPM public and a certificate's key).
    #[error("key mismatch: {reason}")]
    KeyMismatch {
        /// What differs.
        reason: String,
    },
    /// A key lacks what an operation needs (a signing attribute, a restricted decryption
    /// key with a symmetric algorithm for MakeCredential).
    #[error("key cannot be used for {purpose}: {reason}")]
    KeyUnsuitable {
        /// The operation.
        purpose: &'static str,
        /// What the key lacks.
        reason: String,
    },
    /// Attested content differs from what the verifier expected (nonce, PCR digest, name).
    #[error("{what} does not match: expected {expected}, attested {found}")]
    EvidenceMismatch {
        /// What was compared (`quote extraData (nonce)`).
        what: &'static str,
        /// Expected value (hex).
        expected: String,
        /// Value in the evidence (hex).
        found: String,
    },
    /// A cryptographic primitive failed (randomness, an invalid public point).
    #[error("{operation} failed: {reason}")]
    Crypto {
        /// The operation.
        operation: &'static str,
        /// The library's reason.
        reason: String,
    },
}
