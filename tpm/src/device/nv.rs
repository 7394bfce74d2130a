//! NV index reads (EK and platform certificates live there).

use tss_esapi::abstraction::nv::max_nv_buffer_size;
use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::resource_handles::NvAuth;
use tss_esapi::interface_types::session_handles::AuthSession;

use super::{DeviceError, Tpm};

/// NV index handles (TPM 2.0 Part 2, 7.4: handle type 0x01).
const NV_INDEX_RANGE: std::ops::RangeInclusive<u32> = 0x0100_0000..=0x01FF_FFFF;
/// Larger than any certificate a TPM stores; guards against a bogus size.
const MAX_NV_READ: usize = 64 * 1024;

impl Tpm {
    /// The whole contents of NV index `index`, or `None` when it is not defined. Reads with
    /// the index's own auth when it allows that (TPMA_NV_AUTHREAD), else owner or platform.
    pub fn read_nv(&mut self, index: u32) -> Result<Option<Vec<u8>>, DeviceError> {
        const OP: &str = "NV_Read";
        if !NV_INDEX_RANGE.contains(&index) {
            return Err(DeviceError::invalid(
                OP,
                format!("{index:#010x} is not an NV index handle"),
            ));
        }
        if !self.handle_exists(index)? {
            return Ok(None);
        }
        let tpm_handle = NvIndexTpmHandle::new(index)
            .map_err(|e| DeviceError::invalid(OP, format!("{index:#010x}: {e}")))?;
        let mut esys = self
            .ctx
            .execute_without_session(|c| c.tr_from_tpm_public(TpmHandle::NvIndex(tpm_handle)))
            .map_err(DeviceError::tpm("NV_ReadPublic"))?;
        let out = self.read_nv_handle(index, esys);
        let close = self
            .ctx
            .tr_close(&mut esys)
            .map_err(DeviceError::tpm("TR_Close"));
        let data = out?;
        close?;
        Ok(Some(data))
    }

    fn read_nv_handle(&mut self, index: u32, esys: ObjectHandle) -> Result<Vec<u8>, DeviceError> {
        let nv: NvIndexHandle = esys.into();
        let (public, _) = self
            .ctx
            .execute_without_session(|c| c.nv_read_public(nv))
            .map_err(DeviceError::tpm("NV_ReadPublic"))?;
        let size = public.data_size();
        if size > MAX_NV_READ {
            return Err(DeviceError::unexpected(
                "NV_Read",
                format!("index {index:#010x} claims {size} bytes"),
            ));
        }
        let attrs = public.attributes();
        let auth = if attrs.auth_read() {
            NvAuth::NvIndex(nv)
        } else if attrs.owner_read() {
            NvAuth::Owner
        } else if attrs.pp_read() {
            NvAuth::Platform
        } else {
            return Err(DeviceError::unexpected(
                "NV_Read",
                format!("index {index:#010x} is readable only by policy"),
            ));
        };
        let chunk = max_nv_buffer_size(&mut self.ctx)
            .map_err(DeviceError::tpm("GetCapability(max NV buffer)"))?
            .max(1);
        let mut data = Vec::with_capacity(size);
        while data.len() < size {
            let want = chunk.min(size - data.len());
            let (Ok(want16), Ok(offset16)) = (u16::try_from(want), u16::try_from(data.len()))
            else {
                return Err(DeviceError::unexpected("NV_Read", "offset beyond 64 KiB"));
            };
            let part = self
                .ctx
                .execute_with_session(Some(AuthSession::Password), |c| {
                    c.nv_read(auth, nv, want16, offset16)
                })
                .map_err(DeviceError::tpm("NV_Read"))?;
            if part.is_empty() {
                return Err(DeviceError::unexpected(
                    "NV_Read",
                    "the TPM returned no data",
                ));
            }
            data.extend_from_slice(&part);
        }
        Ok(data)
    }
}
