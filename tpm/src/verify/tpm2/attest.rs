//! TPMS_ATTEST: what TPM2_Quote and TPM2_Certify sign.

use super::error::TpmError;
use super::marshal::{invalid, Reader};
use super::params::read_hash;
use crate::verify::eventlog::HashAlg;

const S: &str = "TPMS_ATTEST";
/// TPM_GENERATED_VALUE: only the TPM puts this at the start of a structure it signs.
pub const TPM_GENERATED_VALUE: u32 = 0xff54_4347;
/// TPM2B_NAME buffer size (a TPMU_NAME: a TPMT_HA with a SHA-512 digest).
const MAX_NAME: usize = 66;
/// TPM2B_DATA buffer size (a TPMT_HA).
const MAX_DATA: usize = 66;
/// TPM2B_DIGEST buffer size.
const MAX_DIGEST: usize = 64;
/// A TPML_PCR_SELECTION has at most one entry per hash (HASH_COUNT); 16 is generous.
const MAX_PCR_BANKS: u32 = 16;
/// PCR_SELECT_MAX for 32 PCRs; platforms have 24.
const MAX_SIZEOF_SELECT: u8 = 4;

/// TPM_ST_ATTEST_* values (Part 2, Table 19).
mod st {
    pub(super) const NV: u16 = 0x8014;
    pub(super) const COMMAND_AUDIT: u16 = 0x8015;
    pub(super) const SESSION_AUDIT: u16 = 0x8016;
    pub(super) const CERTIFY: u16 = 0x8017;
    pub(super) const QUOTE: u16 = 0x8018;
    pub(super) const TIME: u16 = 0x8019;
    pub(super) const CREATION: u16 = 0x801A;
    pub(super) const NV_DIGEST: u16 = 0x801C;
}

/// TPMS_CLOCK_INFO at the time of signing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockInfo {
    /// Milliseconds the TPM has been powered since its clock was last set.
    pub clock: u64,
    /// TPM Resets since the clock was cleared (a reboot increments it).
    pub reset_count: u32,
    /// TPM Restarts / Resumes since the last Reset.
    pub restart_count: u32,
    /// No clock value has been reported twice (no rollback after power loss).
    pub safe: bool,
}

/// One bank of a TPML_PCR_SELECTION.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrSelection {
    /// The bank.
    pub hash: HashAlg,
    /// Selected PCR indices, ascending (the order the TPM hashes them in).
    pub pcrs: Vec<u32>,
}

/// The type-specific part of a TPMS_ATTEST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attested {
    /// TPM_ST_ATTEST_QUOTE: TPMS_QUOTE_INFO.
    Quote {
        /// Selected PCRs, bank by bank, in the order the TPM hashed them.
        pcr_select: Vec<PcrSelection>,
        /// H(selected PCR values concatenated), with the signing scheme's hash.
        pcr_digest: Vec<u8>,
    },
    /// TPM_ST_ATTEST_CERTIFY: TPMS_CERTIFY_INFO.
    Certify {
        /// Name of the certified object.
        name: Vec<u8>,
        /// Its qualified name.
        qualified_name: Vec<u8>,
    },
    /// Another TPM_ST_ATTEST_* type (NV, audit, time, creation), by its tag; its body is
    /// not decoded.
    Other(u16),
}

/// A TPMS_ATTEST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attest {
    /// magic (always [`TPM_GENERATED_VALUE`] after parsing).
    pub magic: u32,
    /// qualifiedSigner: the qualified Name of the signing key.
    pub signer: Vec<u8>,
    /// extraData: the verifier's nonce (qualifyingData).
    pub extra_data: Vec<u8>,
    /// clockInfo.
    pub clock: ClockInfo,
    /// firmwareVersion (vendor-defined).
    pub firmware_version: u64,
    /// The type-specific part.
    pub attested: Attested,
}

impl Attest {
    /// Parses a TPMS_ATTEST (as `tpm2_quote -m` / `tpm2_certify -o` write it and as it is
    /// signed). Rejects another magic ([`TpmError::BadMagic`]), an unknown type, and trailing
    /// bytes after a quote or certify body.
    pub fn parse(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let magic = r.u32(S, "magic")?;
        if magic != TPM_GENERATED_VALUE {
            return Err(TpmError::BadMagic { found: magic });
        }
        let type_at = r.offset();
        let ty = r.u16(S, "type")?;
        if !matches!(
            ty,
            st::NV
                | st::COMMAND_AUDIT
                | st::SESSION_AUDIT
                | st::CERTIFY
                | st::QUOTE
                | st::TIME
                | st::CREATION
                | st::NV_DIGEST
        ) {
            return Err(invalid(
                S,
                "type",
                type_at,
                format!("{ty:#06x} is not a TPM_ST_ATTEST_* tag"),
            ));
        }
        let signer = r.tpm2b(S, "qualifiedSigner", MAX_NAME)?.to_vec();
        let extra_data = r.tpm2b(S, "extraData", MAX_DATA)?.to_vec();
        let clock = read_clock(&mut r)?;
        let firmware_version = r.u64(S, "firmwareVersion")?;
        let attested = match ty {
            st::QUOTE => {
                let pcr_select = read_pcr_selection(&mut r)?;
                let pcr_digest = r
                    .tpm2b("TPMS_QUOTE_INFO", "pcrDigest", MAX_DIGEST)?
                    .to_vec();
                r.finish(S)?;
                Attested::Quote {
                    pcr_select,
                    pcr_digest,
                }
            }
            st::CERTIFY => {
                let name = r.tpm2b("TPMS_CERTIFY_INFO", "name", MAX_NAME)?.to_vec();
                let qualified_name = r
                    .tpm2b("TPMS_CERTIFY_INFO", "qualifiedName", MAX_NAME)?
                    .to_vec();
                r.finish(S)?;
                Attested::Certify {
                    name,
                    qualified_name,
                }
            }
            other => Attested::Other(other),
        };
        Ok(Self {
            magic,
            signer,
            extra_data,
            clock,
            firmware_version,
            attested,
        })
    }

    /// Checks a quote against what the verifier expects: the type is a quote, extraData is
    /// `nonce`, and pcrDigest is `hash` over `pcr_values` (the PCR values in selection
    /// order: banks as selected, indices ascending). Returns the selection on success.
    /// `hash` is the signature's hash: the TPM digests the PCRs with the signing scheme's.
    pub fn check_quote(
        &self,
        nonce: &[u8],
        hash: HashAlg,
        pcr_values: &[&[u8]],
    ) -> Result<&[PcrSelection], TpmError> {
        let Attested::Quote {
            pcr_select,
            pcr_digest: attested,
        } = &self.attested
        else {
            return Err(TpmError::EvidenceMismatch {
                what: "attestation type",
                expected: "quote".into(),
                found: self.type_name(),
            });
        };
        if self.extra_data != nonce {
            return Err(TpmError::EvidenceMismatch {
                what: "quote extraData (nonce)",
                expected: hex::encode(nonce),
                found: hex::encode(&self.extra_data),
            });
        }
        let selected: usize = pcr_select.iter().map(|s| s.pcrs.len()).sum();
        if selected != pcr_values.len() {
            return Err(TpmError::EvidenceMismatch {
                what: "number of PCR values",
                expected: format!("{selected} (as selected in the quote)"),
                found: pcr_values.len().to_string(),
            });
        }
        let expected = pcr_digest(hash, pcr_values)?;
        if &expected != attested {
            return Err(TpmError::EvidenceMismatch {
                what: "quote pcrDigest",
                expected: hex::encode(expected),
                found: hex::encode(attested),
            });
        }
        Ok(pcr_select)
    }

    fn type_name(&self) -> String {
        match &self.attested {
            Attested::Quote { .. } => "quote".into(),
            Attested::Certify { .. } => "certify".into(),
            Attested::Other(t) => format!("TPM_ST {t:#06x}"),
        }
    }
}

/// pcrDigest of a quote: `hash` over the PCR values concatenated in selection order.
/// [`TpmError::Unsupported`] when `hash` is not one this crate computes.
pub fn pcr_digest(hash: HashAlg, values_in_selection_order: &[&[u8]]) -> Result<Vec<u8>, TpmError> {
    hash.digest_parts(values_in_selection_order)
}

fn read_clock(r: &mut Reader<'_>) -> Result<ClockInfo, TpmError> {
    const C: &str = "TPMS_CLOCK_INFO";
    let clock = r.u64(C, "clock")?;
    let reset_count = r.u32(C, "resetCount")?;
    let restart_count = r.u32(C, "restartCount")?;
    let at = r.offset();
    let safe = match r.u8(C, "safe")? {
        0 => false,
        1 => true,
        v => return Err(invalid(C, "safe", at, format!("{v} is not a TPMI_YES_NO"))),
    };
    Ok(ClockInfo {
        clock,
        reset_count,
        restart_count,
        safe,
    })
}

fn read_pcr_selection(r: &mut Reader<'_>) -> Result<Vec<PcrSelection>, TpmError> {
    const L: &str = "TPML_PCR_SELECTION";
    const P: &str = "TPMS_PCR_SELECTION";
    let at = r.offset();
    let count = r.u32(L, "count")?;
    if count > MAX_PCR_BANKS {
        return Err(invalid(
            L,
            "count",
            at,
            format!("{count} banks (at most {MAX_PCR_BANKS})"),
        ));
    }
    let mut out: Vec<PcrSelection> = Vec::new();
    for _ in 0..count {
        let hash_at = r.offset();
        let hash = read_hash(r, P, "hash")?;
        if out.iter().any(|s| s.hash == hash) {
            // A TPM lists each bank once; a repeated bank would make "selection order"
            // ambiguous for the verifier.
            return Err(invalid(
                P,
                "hash",
                hash_at,
                format!("bank {hash} selected twice"),
            ));
        }
        let size_at = r.offset();
        let size = r.u8(P, "sizeofSelect")?;
        if size > MAX_SIZEOF_SELECT {
            return Err(invalid(
                P,
                "sizeofSelect",
                size_at,
                format!("{size} bytes (at most {MAX_SIZEOF_SELECT})"),
            ));
        }
        let bitmap = r.take(P, "pcrSelect", usize::from(size))?;
        let pcrs = (0u32..)
            .zip(
                bitmap
                    .iter()
                    .flat_map(|byte| (0..8).map(move |bit| byte & (1 << bit) != 0)),
            )
            .filter(|(_, set)| *set)
            .map(|(i, _)| i)
            .collect();
        out.push(PcrSelection { hash, pcrs });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
