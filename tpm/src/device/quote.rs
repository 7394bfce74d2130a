//! TPM2_Quote and TPM2_Certify with the attestation key.

use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{AttestInfo, Data, Signature, SignatureScheme};
use tss_esapi::traits::Marshall;

use super::hash::from_tss;
use super::pcr::{check_selection, selection_list};
use super::{AttestationKey, DeviceError, LoadedKey, Quote, Tpm};
use crate::verify::HashAlg;

/// How often a quote is retried when a PCR changes between the quote and the read of the
/// values (a measurement landing in between): then the values would not match the digest.
const QUOTE_ATTEMPTS: usize = 3;

fn data(op: &'static str, bytes: &[u8]) -> Result<Data, DeviceError> {
    Data::try_from(bytes.to_vec()).map_err(|_| {
        DeviceError::invalid(
            op,
            format!("{} bytes of qualifying data (at most 64)", bytes.len()),
        )
    })
}

/// The hash the TPM used for the quote's pcrDigest: the signing scheme's. `None` when the
/// scheme has none this crate computes.
fn scheme_hash(sig: &Signature) -> Option<HashAlg> {
    let alg = match sig {
        Signature::RsaSsa(s) | Signature::RsaPss(s) => s.hashing_algorithm(),
        Signature::EcDsa(s) | Signature::EcDaa(s) | Signature::Sm2(s) | Signature::EcSchnorr(s) => {
            s.hashing_algorithm()
        }
        _ => return None,
    };
    Some(from_tss(alg)).filter(|h| h.is_known())
}

fn marshall<T: Marshall>(what: &'static str, v: &T) -> Result<Vec<u8>, DeviceError> {
    v.marshall().map_err(DeviceError::tpm(what))
}

impl Tpm {
    /// TPM2_Quote by `ak` over `selection` (bank -> PCR indices), with `nonce` (at most 64
    /// bytes) as qualifyingData. Returns the signed TPMS_ATTEST, the signature and the PCR
    /// values, checked against the attest's pcrDigest (retried if a PCR moved meanwhile).
    pub fn quote(
        &mut self,
        ak: &AttestationKey,
        nonce: &[u8],
        selection: &[(HashAlg, Vec<u32>)],
    ) -> Result<Quote, DeviceError> {
        const OP: &str = "Quote";
        let sel = check_selection(OP, selection)?;
        let list = selection_list(&sel)?;
        let nonce = data(OP, nonce)?;
        for _ in 0..QUOTE_ATTEMPTS {
            let (attest, signature) = self.with_key(&ak.slot, |tpm, h| {
                tpm.ctx
                    .execute_with_session(Some(AuthSession::Password), |c| {
                        c.quote(h, nonce.clone(), SignatureScheme::Null, list.clone())
                    })
                    .map_err(DeviceError::tpm(OP))
            })?;
            let pcrs = self.read_selection(&sel)?;
            let AttestInfo::Quote { info } = attest.attested() else {
                return Err(DeviceError::unexpected(
                    OP,
                    "the TPM returned no quote info",
                ));
            };
            let hash = scheme_hash(&signature)
                .ok_or_else(|| DeviceError::unexpected(OP, "signature scheme without a hash"))?;
            let values: Vec<&[u8]> = pcrs.iter().map(|v| v.digest.as_slice()).collect();
            let pcr_digest = hash.hash_parts(&values);
            if pcr_digest.as_ref().map(|d| d.as_bytes()) == Some(info.pcr_digest().value()) {
                return Ok(Quote {
                    attest: marshall("MU(TPMS_ATTEST)", &attest)?,
                    signature: marshall("MU(TPMT_SIGNATURE)", &signature)?,
                    pcrs,
                });
            }
        }
        Err(DeviceError::unexpected(
            OP,
            format!(
                "the PCR values read after the quote never matched its pcrDigest in \
                 {QUOTE_ATTEMPTS} attempts (PCRs kept changing)"
            ),
        ))
    }

    /// TPM2_Certify of `object` by `ak`: proves `object` lives in the same TPM. Returns the
    /// marshalled TPMS_ATTEST and TPMT_SIGNATURE.
    pub fn certify(
        &mut self,
        object: &LoadedKey,
        ak: &AttestationKey,
        qualifying_data: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), DeviceError> {
        const OP: &str = "Certify";
        let qualifying = data(OP, qualifying_data)?;
        let (attest, signature) = self.with_key(&object.slot, |tpm, obj| {
            tpm.with_key(&ak.slot, |tpm, signer| {
                // Two password sessions: ADMIN role for the object, USER role for the AK.
                tpm.ctx
                    .execute_with_sessions(
                        (
                            Some(AuthSession::Password),
                            Some(AuthSession::Password),
                            None,
                        ),
                        |c| c.certify(obj.into(), signer, qualifying, SignatureScheme::Null),
                    )
                    .map_err(DeviceError::tpm(OP))
            })
        })?;
        Ok((
            marshall("MU(TPMS_ATTEST)", &attest)?,
            marshall("MU(TPMT_SIGNATURE)", &signature)?,
        ))
    }
}
