//! Hash algorithms that name TPM objects, sign attestations and derive keys, and the
//! TPM_ALG_ID / TPM_ST constants the structures use.

use hmac::{Mac, SimpleHmac};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};
use sm3::Sm3;

use super::error::TpmError;
use crate::verify::eventlog::HashAlg;

/// TPM_ALG_ID values (TPM 2.0 Part 2, Table 9) used by the structures parsed here.
pub(crate) mod id {
    pub(crate) const RSA: u16 = 0x0001;
    pub(crate) const SHA1: u16 = 0x0004;
    pub(crate) const HMAC: u16 = 0x0005;
    pub(crate) const AES: u16 = 0x0006;
    pub(crate) const MGF1: u16 = 0x0007;
    pub(crate) const KEYEDHASH: u16 = 0x0008;
    pub(crate) const XOR: u16 = 0x000A;
    pub(crate) const SHA256: u16 = 0x000B;
    pub(crate) const SHA384: u16 = 0x000C;
    pub(crate) const SHA512: u16 = 0x000D;
    pub(crate) const NULL: u16 = 0x0010;
    pub(crate) const SM3_256: u16 = 0x0012;
    pub(crate) const SM4: u16 = 0x0013;
    pub(crate) const RSASSA: u16 = 0x0014;
    pub(crate) const RSAES: u16 = 0x0015;
    pub(crate) const RSAPSS: u16 = 0x0016;
    pub(crate) const OAEP: u16 = 0x0017;
    pub(crate) const ECDSA: u16 = 0x0018;
    pub(crate) const ECDH: u16 = 0x0019;
    pub(crate) const ECDAA: u16 = 0x001A;
    pub(crate) const SM2: u16 = 0x001B;
    pub(crate) const ECSCHNORR: u16 = 0x001C;
    pub(crate) const ECMQV: u16 = 0x001D;
    pub(crate) const KDF1_SP800_56A: u16 = 0x0020;
    pub(crate) const KDF2: u16 = 0x0021;
    pub(crate) const KDF1_SP800_108: u16 = 0x0022;
    pub(crate) const ECC: u16 = 0x0023;
    pub(crate) const SYMCIPHER: u16 = 0x0025;
    pub(crate) const CAMELLIA: u16 = 0x0026;
    pub(crate) const CTR: u16 = 0x0040;
    pub(crate) const OFB: u16 = 0x0041;
    pub(crate) const CBC: u16 = 0x0042;
    pub(crate) const CFB: u16 = 0x0043;
    pub(crate) const ECB: u16 = 0x0044;
}

/// What TPM structures ask of a hash algorithm (TPMI_ALG_HASH: Names, signatures, KDFs).
/// Every structure parsed here admits only [`HashAlg::COMPUTABLE`] algorithms, so these
/// fail, with [`TpmError::Unsupported`], only for an [`HashAlg::Unknown`] built by hand.
impl HashAlg {
    /// The algorithm for a TPM_ALG_ID this crate computes; `None` for any other id
    /// (including TPM_ALG_NULL and algorithms that are not hashes).
    pub fn computable_from_id(id: u16) -> Option<Self> {
        Some(Self::from_id(id)).filter(|a| a.is_known())
    }

    /// `self` when this crate computes it; [`TpmError::Unsupported`] otherwise.
    pub fn computable(self) -> Result<Self, TpmError> {
        if self.is_known() {
            Ok(self)
        } else {
            Err(uncomputable(self))
        }
    }

    /// Digest size in bytes; [`TpmError::Unsupported`] for an algorithm this crate does not
    /// compute.
    pub fn digest_len(self) -> Result<usize, TpmError> {
        self.known_size().ok_or_else(|| uncomputable(self))
    }

    /// Hash of `data`; [`TpmError::Unsupported`] for an algorithm this crate does not
    /// compute.
    pub fn digest(self, data: &[u8]) -> Result<Vec<u8>, TpmError> {
        self.digest_parts(&[data])
    }

    /// Hash of the concatenation of `parts`; [`TpmError::Unsupported`] for an algorithm this
    /// crate does not compute.
    pub fn digest_parts(self, parts: &[&[u8]]) -> Result<Vec<u8>, TpmError> {
        self.hash_parts(parts)
            .map(|d| d.as_bytes().to_vec())
            .ok_or_else(|| uncomputable(self))
    }

    /// HMAC with this hash over the concatenation of `parts`; [`TpmError::Unsupported`] for
    /// an algorithm this crate does not compute.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, TpmError> {
        fn run<D: Digest + hmac::digest::core_api::BlockSizeUser>(
            key: &[u8],
            parts: &[&[u8]],
        ) -> Result<Vec<u8>, TpmError> {
            // HMAC takes keys of any length; the error exists only in the generic API.
            let mut mac =
                <SimpleHmac<D> as Mac>::new_from_slice(key).map_err(|e| TpmError::Crypto {
                    operation: "HMAC key setup",
                    reason: e.to_string(),
                })?;
            for p in parts {
                mac.update(p);
            }
            Ok(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Self::Sha1 => run::<Sha1>(key, parts),
            Self::Sha256 => run::<Sha256>(key, parts),
            Self::Sha384 => run::<Sha384>(key, parts),
            Self::Sha512 => run::<Sha512>(key, parts),
            Self::Sm3_256 => run::<Sm3>(key, parts),
            Self::Unknown(_) => Err(uncomputable(self)),
        }
    }
}

/// [`TpmError::Unsupported`] for a hash algorithm this crate does not compute.
pub(crate) fn uncomputable(alg: HashAlg) -> TpmError {
    TpmError::Unsupported {
        structure: "TPMI_ALG_HASH",
        field: "algorithm",
        reason: format!("{alg} is not a hash algorithm this crate computes"),
    }
}

/// Name of a TPM_ALG_ID for messages (`0x0023 (ECC)`).
pub(crate) fn alg_name(alg: u16) -> String {
    let n = match alg {
        id::RSA => "RSA",
        id::SHA1 => "SHA1",
        id::HMAC => "HMAC",
        id::AES => "AES",
        id::KEYEDHASH => "KEYEDHASH",
        id::XOR => "XOR",
        id::SHA256 => "SHA256",
        id::SHA384 => "SHA384",
        id::SHA512 => "SHA512",
        id::NULL => "NULL",
        id::SM3_256 => "SM3_256",
        id::SM4 => "SM4",
        id::RSASSA => "RSASSA",
        id::RSAES => "RSAES",
        id::RSAPSS => "RSAPSS",
        id::OAEP => "OAEP",
        id::ECDSA => "ECDSA",
        id::ECDH => "ECDH",
        id::ECDAA => "ECDAA",
        id::SM2 => "SM2",
        id::ECSCHNORR => "ECSCHNORR",
        id::ECMQV => "ECMQV",
        id::ECC => "ECC",
        id::SYMCIPHER => "SYMCIPHER",
        id::CAMELLIA => "CAMELLIA",
        id::CFB => "CFB",
        _ => return format!("{alg:#06x}"),
    };
    format!("{alg:#06x} ({n})")
}

#[cfg(test)]
mod tests;
