//! The wire's [`HashAlgorithm`] and the TPM_ALG_ID it stands for: the one place where the
//! node API's enum meets the TPM's algorithm numbers.

use crate::node::HashAlgorithm;

impl HashAlgorithm {
    /// The wire value for a TPM_ALG_ID; `None` for an algorithm the wire cannot name.
    pub fn from_tpm_alg_id(id: u16) -> Option<Self> {
        Some(match id {
            0x0004 => Self::Sha1,
            0x000B => Self::Sha256,
            0x000C => Self::Sha384,
            0x000D => Self::Sha512,
            0x0012 => Self::Sm3256,
            _ => return None,
        })
    }

    /// The TPM_ALG_ID; `None` for [`HashAlgorithm::Unspecified`], which names no algorithm.
    pub fn tpm_alg_id(self) -> Option<u16> {
        Some(match self {
            Self::Unspecified => return None,
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3256 => 0x0012,
        })
    }

    /// The TPM_ALG_ID of a raw wire value (an `i32` field); `None` when it is
    /// `HASH_ALGORITHM_UNSPECIFIED` or a number this enum does not define.
    pub fn tpm_alg_id_of(raw: i32) -> Option<u16> {
        Self::try_from(raw).ok().and_then(Self::tpm_alg_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_tpm_alg_ids() {
        for a in [
            HashAlgorithm::Sha1,
            HashAlgorithm::Sha256,
            HashAlgorithm::Sha384,
            HashAlgorithm::Sha512,
            HashAlgorithm::Sm3256,
        ] {
            let id = a.tpm_alg_id().expect("a named algorithm");
            assert_eq!(i32::from(id), a as i32);
            assert_eq!(HashAlgorithm::from_tpm_alg_id(id), Some(a));
            assert_eq!(HashAlgorithm::tpm_alg_id_of(a as i32), Some(id));
        }
    }

    #[test]
    fn unspecified_and_unknown_name_nothing() {
        assert_eq!(HashAlgorithm::Unspecified.tpm_alg_id(), None);
        assert_eq!(HashAlgorithm::tpm_alg_id_of(0), None);
        assert_eq!(HashAlgorithm::tpm_alg_id_of(5), None);
        assert_eq!(HashAlgorithm::from_tpm_alg_id(0), None);
        assert_eq!(HashAlgorithm::from_tpm_alg_id(0x0023), None);
    }
}
