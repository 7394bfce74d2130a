//! The device layer's one crossing between the crate's [`HashAlg`] and tss-esapi's
//! `HashingAlgorithm`. Everything above this module (the `Tpm` methods, the agent) names
//! hash algorithms as [`HashAlg`]; everything below (ESYS calls) as tss-esapi types.

use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::tss2_esys::TPMI_ALG_HASH;

use super::DeviceError;
use crate::verify::HashAlg;

/// The tss-esapi algorithm for `alg`, or [`DeviceError::InvalidArgument`] for `op` when
/// the TSS has no hash by that TPM_ALG_ID.
pub(crate) fn to_tss(op: &'static str, alg: HashAlg) -> Result<HashingAlgorithm, DeviceError> {
    match HashingAlgorithm::try_from(alg.id()) {
        Ok(HashingAlgorithm::Null) | Err(_) => Err(DeviceError::invalid(
            op,
            format!("{alg} is not a hash algorithm the TPM software stack knows"),
        )),
        Ok(h) => Ok(h),
    }
}

/// The [`HashAlg`] of a tss-esapi algorithm (by TPM_ALG_ID; SHA-3 and other hashes this
/// crate does not compute come back as [`HashAlg::Unknown`]).
pub(crate) fn from_tss(alg: HashingAlgorithm) -> HashAlg {
    HashAlg::from_id(TPMI_ALG_HASH::from(alg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_computable_algorithm() {
        for alg in HashAlg::COMPUTABLE {
            let tss = to_tss("t", alg).map_err(|e| e.to_string());
            assert_eq!(tss.map(from_tss), Ok(alg));
        }
    }

    #[test]
    fn unknown_and_null_are_refused_with_the_name() {
        for (alg, name) in [
            (HashAlg::Unknown(0x0099), "alg_0x0099"),
            (HashAlg::Unknown(0x0010), "alg_0x0010"),
        ] {
            let e = to_tss("PCR_Read", alg).err().map(|e| e.to_string());
            let e = e.unwrap_or_default();
            assert!(
                e.starts_with("PCR_Read: invalid argument") && e.contains(name),
                "{e}"
            );
        }
    }
}
