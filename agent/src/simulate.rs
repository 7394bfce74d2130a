//! `ironroot-agent tpm simulate-boot`: for labs and the demo only. A software
//! TPM (swtpm) has booted no firmware, so its PCRs are empty and there is no
//! event log. This writes the event log of a simple UEFI + Linux boot and
//! extends the software TPM's PCRs exactly as that firmware would, so the
//! whole attestation path (quote, replay, policy) runs for real. It refuses a
//! hardware TPM (`device:` TCTI): there the firmware measures the boot.

use ironroot_tpm::device::{DeviceError, Tpm};
use ironroot_tpm::verify::eventlog::uefi::EFI_GLOBAL_VARIABLE;
use ironroot_tpm::verify::eventlog::{EventLog, EventLogError, EventType, HashAlg, LogBuilder};

/// Why a simulated boot could not be replayed into the TPM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimulateError {
    /// The TCTI is not a software TPM's (holds the TCTI): a real TPM's PCRs belong to its
    /// firmware.
    #[error("simulate-boot only drives a software TPM (swtpm:/mssim: TCTI), not {0:?}")]
    NotSoftwareTpm(String),
    /// The log to replay does not parse.
    #[error(transparent)]
    EventLog(#[from] EventLogError),
    /// The software TPM could not be opened or refused a PCR extend.
    #[error(transparent)]
    Tpm(#[from] DeviceError),
}

/// What the simulated machine boots.
#[derive(Clone)]
pub struct SimulatedBoot<'a> {
    /// The firmware image: its bytes are the S-CRTM version event and its hash the firmware
    /// blob measured in PCR0.
    pub firmware: &'a [u8],
    /// The kernel image, whose hash is the PCR4 boot application event.
    pub kernel: &'a [u8],
    /// The kernel command line (PCR9, as the Linux EFI stub measures it: UTF-16LE with a NUL).
    pub cmdline: &'a str,
    /// The initrd, whose hash is the PCR9 "Linux initrd" event.
    pub initrd: &'a [u8],
    /// The SecureBoot variable's value.
    pub secure_boot: bool,
    /// Leave out the kernel (PCR4) event, as OVMF's unverified fallback loader does.
    pub no_kernel_event: bool,
}

impl Default for SimulatedBoot<'_> {
    fn default() -> Self {
        SimulatedBoot {
            firmware: b"ironroot simulated firmware 1.0",
            kernel: b"ironroot simulated kernel image",
            cmdline: "console=ttyS0 root=/dev/vda1 ro",
            initrd: b"ironroot simulated initrd",
            secure_boot: false,
            no_kernel_event: false,
        }
    }
}

/// The event log of `boot` (crypto-agile, sha256 bank).
pub fn event_log(boot: &SimulatedBoot<'_>) -> Vec<u8> {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, boot.firmware);
    b.measure(
        0,
        EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB,
        boot.firmware,
        &[0u8; 16],
    );
    b.variable(
        7,
        EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
        &EFI_GLOBAL_VARIABLE,
        "SecureBoot",
        &[u8::from(boot.secure_boot)],
    );
    if !boot.no_kernel_event {
        b.measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            boot.kernel,
            &[0u8; 32],
        );
    }
    let mut cmd = Vec::new();
    for u in boot.cmdline.encode_utf16().chain(std::iter::once(0)) {
        cmd.extend_from_slice(&u.to_le_bytes());
    }
    b.linux_tag(0x8F3B_22ED, "LOADED_IMAGE::LoadOptions", &cmd);
    b.linux_tag(0x8F3B_22EC, "Linux initrd", boot.initrd);
    b.separators(&[0, 1, 2, 3, 4, 5, 6, 7]);
    b.build()
}

/// Extends the software TPM's sha256 PCRs with every measured event of `log`.
pub fn replay_into(tcti: &str, log: &[u8]) -> Result<usize, SimulateError> {
    if !(tcti.starts_with("swtpm") || tcti.starts_with("mssim")) {
        return Err(SimulateError::NotSoftwareTpm(tcti.to_owned()));
    }
    let parsed = EventLog::parse(log)?;
    let mut tpm = Tpm::open(tcti)?;
    let mut n = 0;
    for e in parsed.events() {
        if e.event_type == EventType::EV_NO_ACTION {
            continue;
        }
        if let Some(d) = e.digests.iter().find(|d| d.alg() == HashAlg::Sha256) {
            tpm.pcr_extend_digest(e.pcr, HashAlg::Sha256, d.as_bytes())?;
            n += 1;
        }
    }
    Ok(n)
}
