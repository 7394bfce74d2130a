//! What the TCG PC Client Platform Firmware Profile (and the boot loaders that extend
//! PCR8-12) allows where: event types per PCR, the action strings firmware measures, and
//! separators recognised by their digest.
//!
//! Why digests and not types: a PCR extend covers only an event's digest. The event type,
//! the data of an event whose digest is not the hash of that data, and the order of events
//! in different PCRs are whatever the log's supplier wrote. Anything classified here is
//! therefore classified by what the digest binds (a separator value, a string whose hash
//! is the digest), and the event type is only checked for plausibility: a type the
//! profile does not allow in a PCR is reported, never trusted.

use super::alg::{Digest, HashAlg};
use super::event_type::EventType;
use super::Event;

/// The two separator values of the profile: 00000000, and FFFFFFFF (measured after a
/// firmware error, and by some TPM 1.2-era firmware in every PCR).
pub(crate) const SEPARATOR_VALUES: [[u8; 4]; 2] = [[0; 4], [0xFF; 4]];

/// The strings firmware measures as EV_EFI_ACTION / EV_ACTION in PCR4 (PFP 1.05, 10.4.4
/// and the legacy BIOS boot strings), exactly.
const PCR4_ACTIONS: [&str; 6] = [
    "Calling EFI Application from Boot Option",
    "Returning from EFI Application from Boot Option",
    "Calling INT 19h",
    "Returned INT 19h",
    "Return via INT 18h",
    "Booting to Unknown Boot Device",
];

/// Legacy BIOS boot attempt strings that name the device after this prefix.
const PCR4_ACTION_PREFIXES: [&str; 3] = ["Booting BCV Device ", "Booting BEV Device ", "Booting "];

/// Longest PCR4 action string accepted: the legacy strings name a device in a few words.
const MAX_ACTION_LEN: usize = 128;

/// The PCR7 EV_EFI_ACTION that reports a platform with DMA protection turned off
/// (PFP 1.05 10.4.4): allowed before the separator, the policy can see it.
pub(crate) const DMA_PROTECTION_DISABLED: &str = "DMA Protection Disabled";
/// The PCR7 EV_EFI_ACTION that reports a firmware debugger: Secure Boot cannot be trusted.
pub(crate) const UEFI_DEBUG_MODE: &str = "UEFI Debug Mode";

/// True when the profile (or, for PCR8-12, a known boot loader) puts events of type `t` in
/// `pcr`. `None` for PCRs without such a table (10, 11, 13-23: IMA and the OS), where no
/// type is checked. EV_NO_ACTION is never extended and allowed anywhere.
pub fn type_allowed_in_pcr(pcr: u32, t: EventType) -> Option<bool> {
    use EventType as T;
    if t == T::EV_NO_ACTION {
        return Some(true);
    }
    // Tagged events and separators may appear in every PCR the profile defines (0-7).
    let common = matches!(t, T::EV_SEPARATOR | T::EV_EVENT_TAG);
    let allowed = match pcr {
        0 => {
            common
                || matches!(
                    t,
                    T::EV_POST_CODE
                        | T::EV_POST_CODE2
                        | T::EV_S_CRTM_CONTENTS
                        | T::EV_S_CRTM_VERSION
                        | T::EV_EFI_PLATFORM_FIRMWARE_BLOB
                        | T::EV_EFI_PLATFORM_FIRMWARE_BLOB2
                        | T::EV_EFI_HCRTM_EVENT
                        | T::EV_NONHOST_CODE
                        | T::EV_NONHOST_INFO
                        | T::EV_EFI_HANDOFF_TABLES
                        | T::EV_EFI_HANDOFF_TABLES2
                        | T::EV_EFI_BOOT_SERVICES_DRIVER
                        | T::EV_EFI_RUNTIME_SERVICES_DRIVER
                        | T::EV_COMPACT_HASH
                )
        }
        1 => {
            common
                || matches!(
                    t,
                    T::EV_CPU_MICROCODE
                        | T::EV_PLATFORM_CONFIG_FLAGS
                        | T::EV_TABLE_OF_DEVICES
                        | T::EV_NONHOST_CONFIG
                        | T::EV_NONHOST_INFO
                        | T::EV_EFI_VARIABLE_DRIVER_CONFIG
                        | T::EV_EFI_VARIABLE_BOOT
                        | T::EV_EFI_VARIABLE_BOOT2
                        | T::EV_EFI_HANDOFF_TABLES
                        | T::EV_EFI_HANDOFF_TABLES2
                        | T::EV_EFI_ACTION
                        | T::EV_ACTION
                        | T::EV_COMPACT_HASH
                )
        }
        2 => {
            common
                || matches!(
                    t,
                    T::EV_EFI_BOOT_SERVICES_DRIVER
                        | T::EV_EFI_RUNTIME_SERVICES_DRIVER
                        | T::EV_EFI_BOOT_SERVICES_APPLICATION
                        | T::EV_EFI_PLATFORM_FIRMWARE_BLOB
                        | T::EV_EFI_PLATFORM_FIRMWARE_BLOB2
                        | T::EV_EFI_SPDM_FIRMWARE_BLOB
                        | T::EV_NONHOST_CODE
                        | T::EV_NONHOST_INFO
                        | T::EV_POST_CODE
                        | T::EV_POST_CODE2
                        | T::EV_EFI_ACTION
                        | T::EV_ACTION
                        | T::EV_COMPACT_HASH
                )
        }
        3 => {
            common
                || matches!(
                    t,
                    T::EV_EFI_VARIABLE_DRIVER_CONFIG
                        | T::EV_EFI_SPDM_FIRMWARE_CONFIG
                        | T::EV_NONHOST_CONFIG
                        | T::EV_EFI_ACTION
                        | T::EV_ACTION
                        | T::EV_COMPACT_HASH
                )
        }
        4 => {
            common
                || matches!(
                    t,
                    T::EV_EFI_BOOT_SERVICES_APPLICATION
                        | T::EV_EFI_ACTION
                        | T::EV_ACTION
                        | T::EV_IPL
                        | T::EV_OMIT_BOOT_DEVICE_EVENTS
                        | T::EV_COMPACT_HASH
                )
        }
        5 => {
            common
                || matches!(
                    t,
                    T::EV_EFI_GPT_EVENT
                        | T::EV_EFI_GPT_EVENT2
                        | T::EV_IPL_PARTITION_DATA
                        | T::EV_EFI_VARIABLE_BOOT
                        | T::EV_EFI_VARIABLE_BOOT2
                        | T::EV_EFI_VARIABLE_DRIVER_CONFIG
                        | T::EV_EFI_ACTION
                        | T::EV_ACTION
                        | T::EV_COMPACT_HASH
                )
        }
        6 => common || matches!(t, T::EV_EFI_ACTION | T::EV_ACTION | T::EV_COMPACT_HASH),
        // PCR7's shape is checked event by event (see `boot_state`); these are its types.
        7 => matches!(
            t,
            T::EV_SEPARATOR
                | T::EV_EFI_VARIABLE_DRIVER_CONFIG
                | T::EV_EFI_VARIABLE_AUTHORITY
                | T::EV_EFI_ACTION
                | T::EV_EFI_SPDM_DEVICE_POLICY
                | T::EV_EFI_SPDM_DEVICE_AUTHORITY
        ),
        // GRUB: EV_IPL strings (PCR8) and files (PCR9); the Linux EFI stub: tagged events
        // in PCR9; systemd-boot/stub: EV_IPL and tagged events in PCR12 (Windows adds
        // separators there).
        8 => t == T::EV_IPL,
        9 => matches!(t, T::EV_IPL | T::EV_EVENT_TAG),
        12 => matches!(t, T::EV_IPL | T::EV_EVENT_TAG | T::EV_SEPARATOR),
        _ => return None,
    };
    Some(allowed)
}

/// True when `d` is one of the two separator values hashed with `d`'s algorithm.
pub fn is_separator_digest(d: &Digest) -> bool {
    SEPARATOR_VALUES
        .iter()
        .any(|v| d.alg().hash(v).as_ref() == Some(d))
}

/// The event's digest in `bank` is the hash of `bytes`.
pub(crate) fn digest_is_hash_of(ev: &Event, bank: HashAlg, bytes: &[u8]) -> bool {
    match (ev.digest(bank), bank.hash(bytes)) {
        (Some(found), Some(h)) => *found == h,
        _ => false,
    }
}

/// The action string a PCR4 event measured, when its `bank` digest is the hash of its data
/// and that data is one of the profile's PCR4 strings (whatever the event's type: the type
/// is not bound, the data is). Such an event measured a string, not code.
pub(crate) fn pcr4_action(ev: &Event, bank: HashAlg) -> Option<String> {
    if !digest_is_hash_of(ev, bank, &ev.data) {
        return None;
    }
    let text = std::str::from_utf8(&ev.data).ok()?;
    let printable = text.len() <= MAX_ACTION_LEN && text.bytes().all(|b| (0x20..0x7F).contains(&b));
    if !printable {
        return None;
    }
    let known = PCR4_ACTIONS.contains(&text)
        || PCR4_ACTION_PREFIXES
            .iter()
            .any(|p| text.len() > p.len() && text.starts_with(p));
    known.then(|| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::eventlog::EventType as T;

    #[test]
    fn separators_by_digest_in_every_bank() {
        for alg in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384] {
            for v in SEPARATOR_VALUES {
                assert!(is_separator_digest(&alg.hash(&v).unwrap()));
            }
            assert!(!is_separator_digest(&alg.hash(b"WBCL").unwrap()));
        }
    }

    #[test]
    fn type_table() {
        assert_eq!(
            type_allowed_in_pcr(7, T::EV_EFI_VARIABLE_AUTHORITY),
            Some(true)
        );
        assert_eq!(
            type_allowed_in_pcr(7, T::EV_EFI_BOOT_SERVICES_APPLICATION),
            Some(false)
        );
        assert_eq!(
            type_allowed_in_pcr(4, T::EV_EFI_BOOT_SERVICES_DRIVER),
            Some(false)
        );
        assert_eq!(type_allowed_in_pcr(9, T::EV_EFI_ACTION), Some(false));
        assert_eq!(type_allowed_in_pcr(4, T::Unknown(0x1234)), Some(false));
        assert_eq!(type_allowed_in_pcr(3, T::EV_NO_ACTION), Some(true));
        assert_eq!(type_allowed_in_pcr(10, T::Unknown(0x1234)), None);
    }
}
