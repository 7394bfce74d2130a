//! Checks of event digests against event data, for the event types whose digest the PC
//! Client Platform Firmware Profile (or the boot loader that logs them) defines as a hash of
//! what the event itself carries. Mismatches are findings, not parse errors: real firmware
//! and boot loaders have such bugs (old shim "Shim" authority events, an odd-sized
//! systemd-boot command line, a bad S-CRTM version), and the PCR replay uses the logged
//! digests either way. What a finding means is that the event's data cannot be trusted.

use std::fmt;

use super::alg::Digest;
use super::event_type::EventType;
use super::reader::le_u32;
use super::uefi::parse_variable;
use super::Event;

/// Tagged-event IDs the Linux EFI stub uses in PCR9; their digest is of the command line or
/// the initrd, not of the event data.
pub(crate) const LINUX_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;
pub(crate) const LINUX_INITRD_TAG: u32 = 0x8F3B_22EC;

/// GRUB's EV_IPL string prefixes: upstream (`grub_cmd: `...) and the older Red Hat / Fedora
/// patch (`grub_cmd `, `grub_kernel_cmdline `). GRUB hashes the string after the prefix.
pub(crate) const GRUB_PREFIXES: [&str; 5] = [
    "grub_cmd: ",
    "kernel_cmdline: ",
    "module_cmdline: ",
    "grub_cmd ",
    "grub_kernel_cmdline ",
];

/// What an event's digest was checked against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckedAgainst {
    /// The whole event data (separators, actions, S-CRTM version, UEFI variables, GPT,
    /// tagged events).
    EventData,
    /// The VariableData of an EV_EFI_VARIABLE_BOOT (EDK2), or the whole UEFI_VARIABLE_DATA.
    BootVariableData,
    /// A GRUB EV_IPL string without its prefix (with or without its NUL).
    GrubString,
    /// A systemd-boot UTF-16 command line (EV_IPL in PCR8/12).
    Utf16CommandLine,
}

impl fmt::Display for CheckedAgainst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::EventData => "the event data",
            Self::BootVariableData => "the boot variable data",
            Self::GrubString => "the GRUB string after its prefix",
            Self::Utf16CommandLine => "the UTF-16 command line in the event data",
        })
    }
}

/// A logged digest that is not the hash of what its event says was measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DigestFinding {
    /// Event index.
    pub event_index: usize,
    /// Event type.
    pub event_type: EventType,
    /// PCR the event extends.
    pub pcr: u32,
    /// What the digest was compared with.
    pub checked_against: CheckedAgainst,
    /// Hash of the event's data (the first form tried), in the bank's algorithm.
    pub expected: Digest,
    /// The digest in the log (the one replayed).
    pub found: Digest,
}

impl fmt::Display for DigestFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "event {} ({}, PCR{}): logged digest {} is not the hash of {} ({})",
            self.event_index,
            self.event_type,
            self.pcr,
            self.found,
            self.checked_against,
            self.expected.to_hex()
        )
    }
}

/// The byte strings an event's digest may be the hash of, and what they are; `None` when
/// the digest is of something the log does not carry (code, files, tables).
fn candidates(ev: &Event) -> Option<(CheckedAgainst, [Option<&[u8]>; 2])> {
    let data = ev.data.as_slice();
    use EventType as T;
    match ev.event_type {
        T::EV_SEPARATOR
        | T::EV_ACTION
        | T::EV_S_CRTM_VERSION
        | T::EV_OMIT_BOOT_DEVICE_EVENTS
        | T::EV_EFI_ACTION
        | T::EV_EFI_GPT_EVENT
        | T::EV_EFI_VARIABLE_DRIVER_CONFIG
        | T::EV_EFI_VARIABLE_BOOT2
        | T::EV_EFI_VARIABLE_AUTHORITY => Some((CheckedAgainst::EventData, [Some(data), None])),
        T::EV_EVENT_TAG => {
            let tag = le_u32(data, 0);
            if tag == Some(LINUX_LOAD_OPTIONS_TAG) || tag == Some(LINUX_INITRD_TAG) {
                return None;
            }
            Some((CheckedAgainst::EventData, [Some(data), None]))
        }
        T::EV_EFI_VARIABLE_BOOT => {
            // The profile says UEFI_VARIABLE_DATA; EDK2 hashes only VariableData.
            let var = parse_variable(data).map(|v| v.data);
            Some((CheckedAgainst::BootVariableData, [var, Some(data)]))
        }
        T::EV_IPL => ipl_candidates(ev.pcr, data),
        _ => None,
    }
}

fn ipl_candidates(pcr: u32, data: &[u8]) -> Option<(CheckedAgainst, [Option<&[u8]>; 2])> {
    for p in GRUB_PREFIXES {
        if let Some(rest) = data.strip_prefix(p.as_bytes()) {
            let trimmed = rest.strip_suffix(&[0]).unwrap_or(rest);
            return Some((CheckedAgainst::GrubString, [Some(trimmed), Some(rest)]));
        }
    }
    if (pcr == 8 || pcr == 12) && looks_utf16(data) {
        return Some((CheckedAgainst::Utf16CommandLine, [Some(data), None]));
    }
    None
}

/// True for UTF-16LE text of ASCII characters (a systemd-boot command line). An odd final
/// byte is allowed: old systemd-boot logged the string one byte short.
pub(crate) fn looks_utf16(data: &[u8]) -> bool {
    data.len() >= 2
        && data.chunks(2).all(|c| match c {
            [lo, 0] => *lo == 0 || *lo == b'\t' || *lo == b'\n' || (0x20..0x7F).contains(lo),
            [lo] => *lo == 0,
            _ => false,
        })
}

/// Checks every digest of every checkable event.
pub(crate) fn check_events(events: &[Event]) -> Vec<DigestFinding> {
    let mut out = Vec::new();
    for ev in events {
        if ev.event_type == EventType::EV_NO_ACTION {
            continue;
        }
        let Some((against, forms)) = candidates(ev) else {
            continue;
        };
        for found in &ev.digests {
            let alg = found.alg();
            let mut first = None;
            let mut matched = false;
            for form in forms.iter().flatten() {
                let Some(h) = alg.hash(form) else { break };
                first.get_or_insert(h);
                if h == *found {
                    matched = true;
                    break;
                }
            }
            if let (false, Some(expected)) = (matched, first) {
                out.push(DigestFinding {
                    event_index: ev.index,
                    event_type: ev.event_type,
                    pcr: ev.pcr,
                    checked_against: against,
                    expected,
                    found: *found,
                });
            }
        }
    }
    out
}

/// True when every known-bank digest of `ev` matches its data (or the event type has no
/// data check). Used to decide whether event data may be relied on.
pub(crate) fn data_verified(findings: &[DigestFinding], index: usize) -> bool {
    // `check_events` lists findings in event order.
    findings
        .binary_search_by_key(&index, |f| f.event_index)
        .is_err()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_detection() {
        let s: Vec<u8> = "quiet root=/dev/sda\0"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        assert!(looks_utf16(&s));
        assert!(looks_utf16(&s[..s.len() - 1]));
        assert!(!looks_utf16(b"grub_cmd: x"));
        assert!(!looks_utf16(&[0x30, 0x82]));
    }
}
