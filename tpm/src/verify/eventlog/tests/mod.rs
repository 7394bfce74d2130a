//! Unit tests on hand-built logs: hostile lengths (`limits`), tampering and replay rules
//! (`replay`).

use super::uefi::EFI_GLOBAL_VARIABLE;
use super::*;

mod limits;
mod replay;

const SHA256_SEP: &str = "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969";

/// A small good crypto-agile boot: firmware, PCR7 config, a boot app, separators, EBS.
pub(super) fn good() -> LogBuilder {
    let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha1, HashAlg::Sha256]);
    b.event(0, EventType::EV_S_CRTM_VERSION, &[0, 0])
        .measure(0, EventType::EV_EFI_PLATFORM_FIRMWARE_BLOB, b"fw", &[1; 16])
        .variable(
            7,
            EventType::EV_EFI_VARIABLE_DRIVER_CONFIG,
            &EFI_GLOBAL_VARIABLE,
            "SecureBoot",
            &[0],
        )
        .separators(&[7])
        .measure(
            4,
            EventType::EV_EFI_BOOT_SERVICES_APPLICATION,
            b"kernel",
            &[2; 40],
        )
        .event(
            4,
            EventType::EV_EFI_ACTION,
            b"Calling EFI Application from Boot Option",
        )
        .separators(&[0, 1, 2, 3, 4, 5, 6]);
    b
}

pub(super) fn parse(bytes: &[u8]) -> Result<EventLog, EventLogError> {
    EventLog::parse(bytes)
}

/// Offset of event `n` (n >= 1) in a crypto-agile log.
pub(super) fn offset_of(bytes: &[u8], n: usize) -> usize {
    parse(bytes).unwrap().events()[n].offset
}
