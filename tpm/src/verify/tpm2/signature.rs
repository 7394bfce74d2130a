//! TPMT_SIGNATURE and its verification with ring.

use ring::signature::{self as rs, RsaPublicKeyComponents, UnparsedPublicKey};

use super::alg::{alg_name, id};
use super::error::TpmError;
use super::marshal::{invalid, left_pad, put_tpm2b, put_u16, unsupported, Reader};
use super::params::{read_hash, EccCurve};
use super::public::{PublicKey, TpmPublic};
use crate::verify::eventlog::HashAlg;

const S: &str = "TPMT_SIGNATURE";
/// TPM2B_PUBLIC_KEY_RSA buffer size (RSA-4096).
const MAX_RSA_BYTES: usize = 512;
/// TPM2B_ECC_PARAMETER buffer size (NIST P-521).
const MAX_ECC_BYTES: usize = 66;

/// The signature proper, by scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignatureValue {
    /// RSASSA-PKCS1-v1_5: the signature (modulus-sized, big-endian).
    RsaSsa(Vec<u8>),
    /// RSASSA-PSS (salt as long as the digest, as TPMs make it).
    RsaPss(Vec<u8>),
    /// ECDSA: r and s, big-endian, possibly shorter than the field.
    Ecdsa {
        /// r.
        r: Vec<u8>,
        /// s.
        s: Vec<u8>,
    },
}

/// A TPMT_SIGNATURE of a scheme this crate verifies (RSASSA, RSAPSS, ECDSA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmSignature {
    /// The hash the TPM digested the message with.
    pub hash: HashAlg,
    /// The signature.
    pub value: SignatureValue,
}

impl TpmSignature {
    /// Parses a TPMT_SIGNATURE that fills `bytes` (as `tpm2_quote -s` writes by default).
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let at = r.offset();
        let alg = r.u16(S, "sigAlg")?;
        let sig = match alg {
            id::RSASSA | id::RSAPSS => {
                let hash = read_hash(&mut r, "TPMS_SIGNATURE_RSA", "hash")?;
                let sig = r
                    .tpm2b("TPMS_SIGNATURE_RSA", "sig", MAX_RSA_BYTES)?
                    .to_vec();
                let value = if alg == id::RSASSA {
                    SignatureValue::RsaSsa(sig)
                } else {
                    SignatureValue::RsaPss(sig)
                };
                Self { hash, value }
            }
            id::ECDSA => {
                const E: &str = "TPMS_SIGNATURE_ECC";
                let hash = read_hash(&mut r, E, "hash")?;
                let r_ = r.tpm2b(E, "signatureR", MAX_ECC_BYTES)?.to_vec();
                let s_ = r.tpm2b(E, "signatureS", MAX_ECC_BYTES)?.to_vec();
                Self {
                    hash,
                    value: SignatureValue::Ecdsa { r: r_, s: s_ },
                }
            }
            id::HMAC | id::ECDAA | id::SM2 | id::ECSCHNORR | id::NULL => {
                return Err(unsupported(
                    S,
                    "sigAlg",
                    format!("{} (supported: RSASSA, RSAPSS, ECDSA)", alg_name(alg)),
                ))
            }
            other => {
                return Err(invalid(
                    S,
                    "sigAlg",
                    at,
                    format!("{} is not a signature scheme", alg_name(other)),
                ))
            }
        };
        r.finish(S)?;
        Ok(sig)
    }

    /// The TPMT_SIGNATURE bytes.
    pub fn marshal(&self) -> Result<Vec<u8>, TpmError> {
        let mut out = Vec::new();
        put_u16(&mut out, self.scheme_id());
        put_u16(&mut out, self.hash.id());
        match &self.value {
            SignatureValue::RsaSsa(sig) | SignatureValue::RsaPss(sig) => {
                put_tpm2b(&mut out, S, sig)?
            }
            SignatureValue::Ecdsa { r, s } => {
                put_tpm2b(&mut out, S, r)?;
                put_tpm2b(&mut out, S, s)?;
            }
        }
        Ok(out)
    }

    /// TPM_ALG_ID of the scheme.
    pub fn scheme_id(&self) -> u16 {
        match self.value {
            SignatureValue::RsaSsa(_) => id::RSASSA,
            SignatureValue::RsaPss(_) => id::RSAPSS,
            SignatureValue::Ecdsa { .. } => id::ECDSA,
        }
    }
}

/// Verifies `sig` over `message` (e.g. the TPMS_ATTEST bytes) with `key`.
///
/// RSASSA and RSAPSS with RSA-2048/3072/4096, ECDSA on NIST P-256 and P-384 with SHA-256 or
/// SHA-384; the hash is the signature's. The key must have the sign attribute and, if it
/// has a scheme, the signature must use that scheme and hash (a TPM signs with no other).
/// SHA-1 signatures are refused ([`TpmError::Unsupported`]).
pub fn verify_signature(
    key: &TpmPublic,
    message: &[u8],
    sig: &TpmSignature,
) -> Result<(), TpmError> {
    if !key.object_attributes.sign_encrypt() {
        return Err(TpmError::KeyUnsuitable {
            purpose: "signature verification",
            reason: format!("attributes {} lack sign", key.object_attributes),
        });
    }
    if sig.hash == HashAlg::Sha1 {
        return Err(unsupported(
            S,
            "hash",
            "sha1: SHA-1 signatures are not accepted (create the key with a SHA-256 scheme)",
        ));
    }
    if let Some(scheme) = key.scheme {
        if scheme.id() != sig.scheme_id() || scheme.hash() != Some(sig.hash) {
            return Err(TpmError::SignatureInvalid {
                reason: format!(
                    "the signature is {}/{}, but the key signs only with {}/{}",
                    alg_name(sig.scheme_id()),
                    sig.hash,
                    alg_name(scheme.id()),
                    scheme
                        .hash()
                        .map_or_else(|| "-".to_string(), |h| h.to_string())
                ),
            });
        }
    }
    match (&key.key, &sig.value) {
        (
            PublicKey::Rsa { modulus, exponent },
            SignatureValue::RsaSsa(s) | SignatureValue::RsaPss(s),
        ) => verify_rsa(modulus, *exponent, message, sig, s),
        (PublicKey::Ecc { curve, .. }, SignatureValue::Ecdsa { r, s }) => {
            verify_ecdsa(&key.key, *curve, message, sig.hash, r, s)
        }
        (PublicKey::Rsa { .. }, _) => Err(TpmError::SignatureInvalid {
            reason: format!("{} signature from an RSA key", alg_name(sig.scheme_id())),
        }),
        (PublicKey::Ecc { .. }, _) => Err(TpmError::SignatureInvalid {
            reason: format!("{} signature from an ECC key", alg_name(sig.scheme_id())),
        }),
    }
}

fn verify_rsa(
    modulus: &[u8],
    exponent: u32,
    message: &[u8],
    sig: &TpmSignature,
    value: &[u8],
) -> Result<(), TpmError> {
    let bits = modulus.len() * 8;
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(unsupported(
            "TPMS_RSA_PARMS",
            "keyBits",
            format!("RSA-{bits} signatures (supported: 2048, 3072, 4096)"),
        ));
    }
    if value.len() != modulus.len() {
        return Err(TpmError::SignatureInvalid {
            reason: format!(
                "an RSA-{bits} signature has {} bytes, this one {}",
                modulus.len(),
                value.len()
            ),
        });
    }
    let pss = matches!(sig.value, SignatureValue::RsaPss(_));
    let params: &rs::RsaParameters = match (pss, sig.hash) {
        (false, HashAlg::Sha256) => &rs::RSA_PKCS1_2048_8192_SHA256,
        (false, HashAlg::Sha384) => &rs::RSA_PKCS1_2048_8192_SHA384,
        (false, HashAlg::Sha512) => &rs::RSA_PKCS1_2048_8192_SHA512,
        (true, HashAlg::Sha256) => &rs::RSA_PSS_2048_8192_SHA256,
        (true, HashAlg::Sha384) => &rs::RSA_PSS_2048_8192_SHA384,
        (true, HashAlg::Sha512) => &rs::RSA_PSS_2048_8192_SHA512,
        (_, h) => {
            return Err(unsupported(
                "TPMS_SIGNATURE_RSA",
                "hash",
                format!("{h} (supported: sha256, sha384, sha512)"),
            ))
        }
    };
    // ring wants both integers without leading zeros.
    let e = exponent.to_be_bytes();
    let e = e
        .get(e.iter().position(|b| *b != 0).unwrap_or(3)..)
        .unwrap_or_default();
    let n = modulus
        .get(modulus.iter().position(|b| *b != 0).unwrap_or(0)..)
        .unwrap_or_default();
    RsaPublicKeyComponents { n, e }
        .verify(params, message, value)
        .map_err(|_| TpmError::SignatureInvalid {
            reason: format!(
                "{}/{} signature does not verify with this RSA-{bits} key",
                alg_name(sig.scheme_id()),
                sig.hash
            ),
        })
}

fn verify_ecdsa(
    key: &PublicKey,
    curve: EccCurve,
    message: &[u8],
    hash: HashAlg,
    r: &[u8],
    s: &[u8],
) -> Result<(), TpmError> {
    let alg: &rs::EcdsaVerificationAlgorithm = match (curve, hash) {
        (EccCurve::NistP256, HashAlg::Sha256) => &rs::ECDSA_P256_SHA256_ASN1,
        (EccCurve::NistP256, HashAlg::Sha384) => &rs::ECDSA_P256_SHA384_ASN1,
        (EccCurve::NistP384, HashAlg::Sha256) => &rs::ECDSA_P384_SHA256_ASN1,
        (EccCurve::NistP384, HashAlg::Sha384) => &rs::ECDSA_P384_SHA384_ASN1,
        (c, h) => {
            return Err(unsupported(
                "TPMS_SIGNATURE_ECC",
                "hash",
                format!("ECDSA with {h} on {c} (supported: sha256, sha384)"),
            ))
        }
    };
    let size = curve.field_size();
    let too_long = |what: &str| TpmError::SignatureInvalid {
        reason: format!("ECDSA {what} is longer than the {curve} field ({size} bytes)"),
    };
    let r = left_pad(r, size).ok_or_else(|| too_long("r"))?;
    let s = left_pad(s, size).ok_or_else(|| too_long("s"))?;
    let point = key
        .ecc_point_uncompressed()
        .ok_or_else(|| TpmError::SignatureInvalid {
            reason: "ECC public key coordinate longer than the field".into(),
        })?;
    // ring's fixed-size format exists only for matching curve and hash sizes; its DER
    // format takes every pair, so r and s go through DER.
    UnparsedPublicKey::new(alg, &point)
        .verify(message, &der_ecdsa_signature(&r, &s))
        .map_err(|_| TpmError::SignatureInvalid {
            reason: format!("ECDSA/{hash} signature does not verify with this {curve} key"),
        })
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` for r and s of at most 48 bytes (so every length
/// fits the short form).
fn der_ecdsa_signature(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
        let digits = v.get(first..).unwrap_or_default();
        // A leading 0x00 keeps a value with its top bit set positive; zero is one 0x00.
        let pad = digits.first().is_none_or(|b| *b & 0x80 != 0);
        let len = digits.len() + usize::from(pad);
        let mut out = vec![0x02, u8::try_from(len).unwrap_or(u8::MAX)];
        if pad {
            out.push(0);
        }
        out.extend_from_slice(digits);
        out
    }
    let body = [int(r), int(s)].concat();
    let mut out = vec![0x30, u8::try_from(body.len()).unwrap_or(u8::MAX)];
    out.extend(body);
    out
}

#[cfg(test)]
mod tests;
