//! PCR selection, reads and extends.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::PcrHandle;
use tss_esapi::interface_types::algorithm::HashingAlgorithm;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Digest, DigestValues, PcrSelectionList};
use tss_esapi::tss2_esys::{ESYS_TR_PCR0, TPML_PCR_SELECTION, TPMS_PCR_SELECTION};

use super::hash::{from_tss, to_tss};
use super::{DeviceError, PcrValue, Tpm};
use crate::verify::HashAlg;

/// PC Client TPMs have 24 PCRs (3 octets of selection).
const PCR_COUNT: u32 = 24;

/// A checked selection: no bank twice, indices below 24, ascending without repeats (the
/// order in which the TPM reads and hashes them).
pub(crate) type Selection = Vec<(HashAlg, Vec<u32>)>;

pub(crate) fn check_selection(
    op: &'static str,
    selection: &[(HashAlg, Vec<u32>)],
) -> Result<Selection, DeviceError> {
    if selection.is_empty() || selection.len() > 16 {
        return Err(DeviceError::invalid(
            op,
            "select between 1 and 16 PCR banks",
        ));
    }
    let mut out: Selection = Vec::with_capacity(selection.len());
    for (bank, indices) in selection {
        if out.iter().any(|(b, _)| b == bank) {
            return Err(DeviceError::invalid(
                op,
                format!("bank {bank} selected twice"),
            ));
        }
        to_tss(op, *bank)?;
        if let Some(i) = indices.iter().find(|&&i| i >= PCR_COUNT) {
            return Err(DeviceError::invalid(
                op,
                format!("PCR index {i} is not below 24"),
            ));
        }
        let mut idx = indices.clone();
        idx.sort_unstable();
        idx.dedup();
        if idx.is_empty() {
            return Err(DeviceError::invalid(
                op,
                format!("no PCR selected in bank {bank}"),
            ));
        }
        out.push((*bank, idx));
    }
    Ok(out)
}

/// The TPML_PCR_SELECTION for a checked selection, banks in the caller's order (tss-esapi's
/// builder keeps them in a HashMap, and the order decides the quote's pcrDigest).
pub(crate) fn selection_list(sel: &Selection) -> Result<PcrSelectionList, DeviceError> {
    let mut tpml = TPML_PCR_SELECTION::default();
    for ((bank, indices), slot) in sel.iter().zip(tpml.pcrSelections.iter_mut()) {
        let mut bits = [0u8; 4];
        for &i in indices {
            // i < 24, checked by check_selection.
            if let Some(b) = bits.get_mut((i / 8) as usize) {
                *b |= 1 << (i % 8);
            }
        }
        *slot = TPMS_PCR_SELECTION {
            hash: bank.id(),
            sizeofSelect: 3,
            pcrSelect: bits,
        };
    }
    tpml.count = sel.len().min(tpml.pcrSelections.len()) as u32;
    PcrSelectionList::try_from(tpml).map_err(DeviceError::tpm("MU(TPML_PCR_SELECTION)"))
}

impl Tpm {
    /// The values of a checked selection, in its order. TPM2_PCR_Read returns at most 8
    /// digests a call, so it is repeated for what is left.
    pub(crate) fn read_selection(&mut self, sel: &Selection) -> Result<Vec<PcrValue>, DeviceError> {
        let mut remaining = selection_list(sel)?;
        let mut got: Vec<PcrValue> = Vec::new();
        while !remaining.is_empty() {
            let (_, read, digests) = self
                .ctx
                .execute_without_session(|c| c.pcr_read(remaining.clone()))
                .map_err(DeviceError::tpm("PCR_Read"))?;
            let mut values = digests.value().iter();
            let mut progress = false;
            for s in read.get_selections() {
                let bank = from_tss(s.hashing_algorithm());
                for slot in s.selected() {
                    let index = u32::from(slot).trailing_zeros();
                    let d = values.next().ok_or_else(|| {
                        DeviceError::unexpected("PCR_Read", "fewer digests than selected PCRs")
                    })?;
                    got.push(PcrValue {
                        bank,
                        index,
                        digest: d.value().to_vec(),
                    });
                    progress = true;
                }
            }
            if !progress {
                return Err(DeviceError::unexpected(
                    "PCR_Read",
                    "the TPM returned no value for the selected PCRs (is the bank active?)",
                ));
            }
            remaining
                .subtract(&read)
                .map_err(DeviceError::tpm("PCR_Read"))?;
        }
        let mut out = Vec::new();
        for (bank, indices) in sel {
            for &index in indices {
                let v = got
                    .iter()
                    .find(|v| v.bank == *bank && v.index == index)
                    .ok_or_else(|| {
                        DeviceError::unexpected(
                            "PCR_Read",
                            format!("no value for PCR {index} of bank {bank}"),
                        )
                    })?;
                out.push(v.clone());
            }
        }
        Ok(out)
    }

    /// The values of `indices` in `bank`, in the order asked.
    pub fn pcr_read(
        &mut self,
        bank: HashAlg,
        indices: &[u32],
    ) -> Result<Vec<PcrValue>, DeviceError> {
        let sel = check_selection("PCR_Read", &[(bank, indices.to_vec())])?;
        let values = self.read_selection(&sel)?;
        indices
            .iter()
            .map(|&i| {
                values
                    .iter()
                    .find(|v| v.index == i)
                    .cloned()
                    .ok_or_else(|| DeviceError::unexpected("PCR_Read", format!("no PCR {i}")))
            })
            .collect()
    }

    /// The banks the TPM has PCRs allocated in (TPM2_GetCapability(PCRS)).
    pub(crate) fn active_banks(&mut self) -> Result<Vec<HashingAlgorithm>, DeviceError> {
        let (data, _) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::AssignedPcr, 0, 16))
            .map_err(DeviceError::tpm("GetCapability(PCRs)"))?;
        let CapabilityData::AssignedPcr(list) = data else {
            return Err(DeviceError::unexpected(
                "GetCapability(PCRs)",
                "wrong capability",
            ));
        };
        Ok(list
            .get_selections()
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| s.hashing_algorithm())
            .collect())
    }

    /// Extends PCR `index` in one bank with a given digest (what firmware does for an
    /// event whose digest is not the hash of its data, e.g. an Authenticode image hash).
    pub fn pcr_extend_digest(
        &mut self,
        index: u32,
        bank: HashAlg,
        digest_bytes: &[u8],
    ) -> Result<(), DeviceError> {
        const OP: &str = "PCR_Extend";
        if index >= PCR_COUNT {
            return Err(DeviceError::invalid(
                OP,
                format!("PCR index {index} is not below 24"),
            ));
        }
        let size = bank.known_size().ok_or_else(|| {
            DeviceError::invalid(OP, format!("{bank} is not a hash this crate computes"))
        })?;
        if digest_bytes.len() != size {
            return Err(DeviceError::invalid(
                OP,
                format!(
                    "a {bank} digest is {size} bytes, not {}",
                    digest_bytes.len()
                ),
            ));
        }
        let handle = PcrHandle::try_from(ESYS_TR_PCR0 + index)
            .map_err(|e| DeviceError::invalid(OP, format!("PCR {index}: {e}")))?;
        let mut values = DigestValues::new();
        let d = Digest::try_from(digest_bytes.to_vec()).map_err(DeviceError::tpm(OP))?;
        values.set(to_tss(OP, bank)?, d);
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(DeviceError::tpm(OP))
    }

    /// Extends PCR `index` in every active bank with that bank's hash of `data`, as an
    /// event of the measured boot would be.
    pub fn pcr_extend(&mut self, index: u32, data: &[u8]) -> Result<(), DeviceError> {
        const OP: &str = "PCR_Extend";
        if index >= PCR_COUNT {
            return Err(DeviceError::invalid(
                OP,
                format!("PCR index {index} is not below 24"),
            ));
        }
        let handle = PcrHandle::try_from(ESYS_TR_PCR0 + index)
            .map_err(|e| DeviceError::invalid(OP, format!("PCR {index}: {e}")))?;
        let mut values = DigestValues::new();
        for alg in self.active_banks()? {
            let bank = from_tss(alg);
            let d = bank.hash(data).ok_or_else(|| {
                DeviceError::unexpected(OP, format!("cannot hash for the {bank} bank"))
            })?;
            let d = Digest::try_from(d.as_bytes().to_vec()).map_err(DeviceError::tpm(OP))?;
            values.set(alg, d);
        }
        self.ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.pcr_extend(handle, values)
            })
            .map_err(DeviceError::tpm(OP))
    }
}

#[cfg(test)]
mod tests;
