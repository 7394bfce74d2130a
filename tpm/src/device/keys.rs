//! Where keys live and how they are brought in for one command and sent away after it.

use tss_esapi::constants::CapabilityType;
use tss_esapi::handles::{KeyHandle, ObjectHandle, PersistentTpmHandle, TpmHandle};
use tss_esapi::interface_types::dynamic_handles::Persistent;
use tss_esapi::interface_types::resource_handles::Provision;
use tss_esapi::interface_types::session_handles::AuthSession;
use tss_esapi::structures::{CapabilityData, Name, Public};
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::utils::TpmsContext;

use super::{DeviceError, Tpm, TransientUsage};
use crate::verify::HashAlg;

/// Owner-hierarchy persistent handles (TPM 2.0 Part 2, 7.6: 0x81000000..0x817FFFFF).
const OWNER_PERSISTENT: std::ops::RangeInclusive<u32> = 0x8100_0000..=0x817F_FFFF;

/// Where a key is: a persistent handle, or a saved context of a transient object.
#[derive(Clone, Debug)]
pub(crate) enum KeySlot {
    Persistent(u32),
    Saved(Box<TpmsContext>),
}

impl KeySlot {
    pub(crate) fn persistent(&self) -> Option<u32> {
        match self {
            KeySlot::Persistent(h) => Some(*h),
            KeySlot::Saved(_) => None,
        }
    }
}

/// An ESYS handle brought in for one command.
struct Loaded {
    handle: ObjectHandle,
    /// Loaded from a saved context: must be flushed (a persistent one is only closed).
    transient: bool,
}

/// Keeps the first error: the command's, else the clean-up's.
fn first_err<T>(
    out: Result<T, DeviceError>,
    cleanup: Result<(), DeviceError>,
) -> Result<T, DeviceError> {
    match (out, cleanup) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(v), Ok(())) => Ok(v),
    }
}

impl Tpm {
    fn load_slot(&mut self, slot: &KeySlot) -> Result<Loaded, DeviceError> {
        match slot {
            KeySlot::Persistent(h) => {
                let handle = persistent_tpm_handle(*h)?;
                let handle = self
                    .ctx
                    .tr_from_tpm_public(TpmHandle::Persistent(handle))
                    .map_err(DeviceError::tpm("ReadPublic (persistent key)"))?;
                Ok(Loaded {
                    handle,
                    transient: false,
                })
            }
            KeySlot::Saved(saved) => {
                let handle = self
                    .ctx
                    .context_load((**saved).clone())
                    .map_err(DeviceError::tpm("ContextLoad"))?;
                Ok(Loaded {
                    handle,
                    transient: true,
                })
            }
        }
    }

    fn release(&mut self, mut loaded: Loaded) -> Result<(), DeviceError> {
        if loaded.transient {
            self.ctx
                .flush_context(loaded.handle)
                .map_err(DeviceError::tpm("FlushContext"))
        } else {
            self.ctx
                .tr_close(&mut loaded.handle)
                .map_err(DeviceError::tpm("TR_Close"))
        }
    }

    /// Runs `f` with the key in `slot` loaded, then flushes (or closes) it, also on error.
    pub(crate) fn with_key<T>(
        &mut self,
        slot: &KeySlot,
        f: impl FnOnce(&mut Tpm, KeyHandle) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let loaded = self.load_slot(slot)?;
        let out = f(self, loaded.handle.into());
        let cleanup = self.release(loaded);
        first_err(out, cleanup)
    }

    /// Runs `f` on a freshly made transient object, then flushes it, also on error.
    pub(crate) fn with_transient<T>(
        &mut self,
        handle: KeyHandle,
        f: impl FnOnce(&mut Tpm, KeyHandle) -> Result<T, DeviceError>,
    ) -> Result<T, DeviceError> {
        let out = f(self, handle);
        let cleanup = self
            .ctx
            .flush_context(handle.into())
            .map_err(DeviceError::tpm("FlushContext"));
        first_err(out, cleanup)
    }

    /// Reads a fresh transient object's public area, saves its context (so it can be
    /// loaded again later) and flushes it, freeing its slot.
    pub(crate) fn describe_and_save(
        &mut self,
        handle: KeyHandle,
    ) -> Result<(Public, Name, Name, KeySlot), DeviceError> {
        self.with_transient(handle, |tpm, h| {
            let (public, name, qn) = tpm
                .ctx
                .execute_without_session(|c| c.read_public(h))
                .map_err(DeviceError::tpm("ReadPublic"))?;
            let saved = tpm
                .ctx
                .context_save(h.into())
                .map_err(DeviceError::tpm("ContextSave"))?;
            Ok((public, name, qn, KeySlot::Saved(Box::new(saved))))
        })
    }

    /// Whether a persistent object exists at `handle` (TPM2_GetCapability, no error for
    /// an empty handle).
    pub(crate) fn handle_exists(&mut self, handle: u32) -> Result<bool, DeviceError> {
        let (data, _) = self
            .ctx
            .execute_without_session(|c| c.get_capability(CapabilityType::Handles, handle, 1))
            .map_err(DeviceError::tpm("GetCapability(handles)"))?;
        Ok(match data {
            CapabilityData::Handles(list) => list.iter().any(|h| u32::from(*h) == handle),
            _ => false,
        })
    }

    /// How many transient objects and sessions the TPM holds right now (for every client
    /// of a resource manager, only this one's). This module leaves none behind: a test
    /// or `tpm info` can check that.
    pub fn transient_usage(&mut self) -> Result<TransientUsage, DeviceError> {
        let mut count = |first: u32| -> Result<usize, DeviceError> {
            let (data, _) = self
                .ctx
                .execute_without_session(|c| c.get_capability(CapabilityType::Handles, first, 64))
                .map_err(DeviceError::tpm("GetCapability(handles)"))?;
            Ok(match data {
                CapabilityData::Handles(list) => list
                    .iter()
                    .filter(|h| u32::from(**h) >> 24 == first >> 24)
                    .count(),
                _ => 0,
            })
        };
        Ok(TransientUsage {
            objects: count(0x8000_0000)?,
            sessions: count(0x0200_0000)? + count(0x0300_0000)?,
        })
    }

    /// Public area, name and qualified name of the key in `slot`.
    pub(crate) fn read_public(
        &mut self,
        slot: &KeySlot,
    ) -> Result<(Public, Name, Name), DeviceError> {
        self.with_key(slot, |tpm, h| {
            tpm.ctx
                .execute_without_session(|c| c.read_public(h))
                .map_err(DeviceError::tpm("ReadPublic"))
        })
    }

    /// Makes the transient `handle` persistent at `at` (TPM2_EvictControl, owner auth).
    /// The transient copy stays loaded: the caller flushes it.
    pub(crate) fn persist(&mut self, handle: KeyHandle, at: u32) -> Result<(), DeviceError> {
        let target = Persistent::Persistent(persistent_tpm_handle(at)?);
        let mut new = self
            .ctx
            .execute_with_session(Some(AuthSession::Password), |c| {
                c.evict_control(Provision::Owner, handle.into(), target)
            })
            .map_err(DeviceError::tpm("EvictControl"))?;
        self.ctx
            .tr_close(&mut new)
            .map_err(DeviceError::tpm("TR_Close"))
    }
}

/// Checks that `handle` is an owner-hierarchy persistent handle (where TPM2_EvictControl
/// with owner auth may put a key).
pub(crate) fn check_persistent_handle(op: &'static str, handle: u32) -> Result<(), DeviceError> {
    if OWNER_PERSISTENT.contains(&handle) {
        Ok(())
    } else {
        Err(DeviceError::invalid(
            op,
            format!("{handle:#010x} is not an owner persistent handle (0x81000000..=0x817fffff)"),
        ))
    }
}

fn persistent_tpm_handle(handle: u32) -> Result<PersistentTpmHandle, DeviceError> {
    PersistentTpmHandle::new(handle)
        .map_err(|e| DeviceError::invalid("persistent handle", format!("{handle:#010x}: {e}")))
}

/// TPM2B_PUBLIC bytes: u16 big-endian size, then the marshalled TPMT_PUBLIC.
pub(crate) fn tpm2b_public(public: &Public) -> Result<Vec<u8>, DeviceError> {
    let body = public
        .marshall()
        .map_err(DeviceError::tpm("MU(TPMT_PUBLIC)"))?;
    let size = u16::try_from(body.len())
        .map_err(|_| DeviceError::unexpected("marshal public", "public area too large"))?;
    let mut out = Vec::with_capacity(body.len() + 2);
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Parses TPM2B_PUBLIC bytes made by [`tpm2b_public`].
pub(crate) fn parse_tpm2b_public(bytes: &[u8]) -> Result<Public, DeviceError> {
    let body = bytes
        .get(2..)
        .ok_or_else(|| DeviceError::invalid("TPM2B_PUBLIC", "shorter than its size field"))?;
    Public::unmarshall(body).map_err(DeviceError::tpm("MU(TPMT_PUBLIC)"))
}

/// The qualified name of an object named `name` whose parent's qualified name is
/// `parent_qn` (TPM 2.0 Part 1, 16: QN = H_nameAlg(parent QN || name), prefixed with the
/// nameAlg id). `None` when the name's hash is not one [`HashAlg`] computes.
pub(crate) fn qualified_name(parent_qn: &[u8], name: &[u8]) -> Option<Vec<u8>> {
    let alg = HashAlg::from_id(u16::from_be_bytes([*name.first()?, *name.get(1)?]));
    let d = alg.hash_parts(&[parent_qn, name])?;
    Some([&alg.id().to_be_bytes()[..], d.as_bytes()].concat())
}

#[cfg(test)]
mod tests;
