//! Event data decoded where the TCG PC Client Platform Firmware Profile (or the boot loader
//! that logs the event) defines its layout. For display only: nothing decoded here is
//! trusted (whether a digest vouches for the data is reported separately), and data without
//! the expected layout is left undecoded (the raw bytes are always shown as hex).

use ironroot_tpm::verify::eventlog::uefi::{
    parse_signature_lists, parse_variable, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};
use ironroot_tpm::verify::eventlog::{Event, EventLog, EventType, LogFormat};
use serde::Serialize;

use super::devpath::{self, utf16_until_nul};

/// The Linux EFI stub's PCR9 tagged events (linux/include/linux/efi.h).
const LINUX_INITRD_TAG: u32 = 0x8F3B_22EC;
const LINUX_LOAD_OPTIONS_TAG: u32 = 0x8F3B_22ED;

/// A Spec ID bank, as the Spec ID event declares it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct SpecIdBank {
    /// Bank name (`sha256`; `alg_0x....` for an algorithm this parser does not know).
    pub(crate) alg: String,
    /// TPM_ALG_ID.
    pub(crate) alg_id: u16,
    /// Declared digest size.
    pub(crate) digest_size: u16,
}

/// Decoded event data; `kind` names the structure.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum EventData {
    /// TCG_EfiSpecIDEvent (the first event of a crypto-agile log).
    SpecId {
        platform_class: u32,
        spec_version: String,
        spec_errata: u8,
        uintn_size: u8,
        algorithms: Vec<SpecIdBank>,
        vendor_info_hex: String,
    },
    /// TCG_EfiStartupLocalityEvent: the locality the TPM was started from.
    StartupLocality { locality: u8 },
    /// Another EV_NO_ACTION with a text signature (e.g. `SP800-155 Event3`).
    NoAction { signature: String },
    /// EV_SEPARATOR: `normal` (00000000), `error` (FFFFFFFF) or `other`.
    Separator { value_hex: String, meaning: String },
    /// A string (actions, S-CRTM version, boot loader EV_IPL, ...).
    Text { encoding: String, text: String },
    /// UEFI_VARIABLE_DATA.
    UefiVariable {
        guid: String,
        name: String,
        data_length: usize,
        #[serde(skip_serializing_if = "Option::is_none")]
        secure_boot: Option<u8>,
        #[serde(skip_serializing_if = "Option::is_none")]
        signature_entries: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        boot_order: Option<Vec<String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        device_path: Option<String>,
    },
    /// TCG_PCClientTaggedEvent.
    TaggedEvent {
        tag_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        tag_name: Option<String>,
        data_size: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        text: Option<String>,
    },
    /// UEFI_IMAGE_LOAD_EVENT (boot services application / driver, runtime driver).
    ImageLoad {
        location: String,
        length: u64,
        link_time_address: String,
        /// The device path as text, when it parses.
        #[serde(skip_serializing_if = "Option::is_none")]
        device_path: Option<String>,
        /// The device path bytes, when it does not.
        #[serde(skip_serializing_if = "Option::is_none")]
        device_path_hex: Option<String>,
    },
    /// UEFI_PLATFORM_FIRMWARE_BLOB(2).
    FirmwareBlob {
        base: String,
        length: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Decodes `ev` of `log`; `None` when the type has no defined layout or the data lacks it.
pub(super) fn decode(log: &EventLog, ev: &Event) -> Option<EventData> {
    let data = ev.data.as_slice();
    use EventType as T;
    match ev.event_type {
        T::EV_NO_ACTION => no_action(log, ev),
        T::EV_SEPARATOR => Some(separator(data)),
        T::EV_ACTION
        | T::EV_EFI_ACTION
        | T::EV_S_CRTM_VERSION
        | T::EV_S_CRTM_CONTENTS
        | T::EV_IPL
        | T::EV_OMIT_BOOT_DEVICE_EVENTS
        | T::EV_POST_CODE
        | T::EV_PLATFORM_CONFIG_FLAGS
        | T::EV_COMPACT_HASH
        | T::EV_EFI_HCRTM_EVENT => {
            text(data).map(|(encoding, text)| EventData::Text { encoding, text })
        }
        T::EV_EFI_VARIABLE_DRIVER_CONFIG
        | T::EV_EFI_VARIABLE_BOOT
        | T::EV_EFI_VARIABLE_BOOT2
        | T::EV_EFI_VARIABLE_AUTHORITY => variable(data),
        T::EV_EVENT_TAG => tagged(data),
        T::EV_EFI_BOOT_SERVICES_APPLICATION
        | T::EV_EFI_BOOT_SERVICES_DRIVER
        | T::EV_EFI_RUNTIME_SERVICES_DRIVER => image_load(data),
        T::EV_EFI_PLATFORM_FIRMWARE_BLOB => Some(EventData::FirmwareBlob {
            base: format!("{:#x}", u64_at(data, 0)?),
            length: u64_at(data, 8)?,
            description: None,
        }),
        T::EV_EFI_PLATFORM_FIRMWARE_BLOB2 => {
            let n = usize::from(*data.first()?);
            let desc = data.get(1..1 + n)?;
            Some(EventData::FirmwareBlob {
                base: format!("{:#x}", u64_at(data, 1 + n)?),
                length: u64_at(data, 9 + n)?,
                description: text(desc).map(|(_, t)| t),
            })
        }
        _ => None,
    }
}

fn no_action(log: &EventLog, ev: &Event) -> Option<EventData> {
    if ev.index == 0 && log.format() == LogFormat::CryptoAgile {
        let s = log.spec_id()?;
        return Some(EventData::SpecId {
            platform_class: s.platform_class,
            spec_version: format!("{}.{}", s.spec_version_major, s.spec_version_minor),
            spec_errata: s.spec_errata,
            uintn_size: s.uintn_size,
            algorithms: s
                .algorithms
                .iter()
                .map(|b| SpecIdBank {
                    alg: b.alg.to_string(),
                    alg_id: b.alg.id(),
                    digest_size: b.digest_size,
                })
                .collect(),
            vendor_info_hex: hex::encode(&s.vendor_info),
        });
    }
    let data = ev.data.as_slice();
    if let Some(rest) = data.strip_prefix(b"StartupLocality\0".as_slice()) {
        return Some(EventData::StartupLocality {
            locality: *rest.first()?,
        });
    }
    // Other EV_NO_ACTION events open with a 16-byte NUL-padded ASCII signature.
    let sig = data.get(..16)?;
    let end = sig.iter().position(|b| *b == 0).unwrap_or(16);
    let (text, pad) = sig.split_at(end);
    let printable = !text.is_empty() && text.iter().all(|b| (0x20..0x7F).contains(b));
    (printable && pad.iter().all(|b| *b == 0)).then(|| EventData::NoAction {
        signature: String::from_utf8_lossy(text).into_owned(),
    })
}

fn separator(data: &[u8]) -> EventData {
    let meaning = match data {
        [0, 0, 0, 0] => "normal",
        [0xFF, 0xFF, 0xFF, 0xFF] => "error",
        _ => "other",
    };
    EventData::Separator {
        value_hex: hex::encode(data),
        meaning: meaning.into(),
    }
}

fn printable(c: char) -> bool {
    !c.is_control() || matches!(c, '\n' | '\t' | '\r')
}

/// The data as text: UTF-16LE (firmware strings, systemd-boot) or UTF-8/ASCII (actions,
/// GRUB), without trailing NULs; `None` for binary data or nothing.
pub(super) fn text(data: &[u8]) -> Option<(String, String)> {
    if let Some(s) = utf16_text(data) {
        return Some(("utf-16le".into(), s));
    }
    let end = data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let s = std::str::from_utf8(data.get(..end)?).ok()?;
    (!s.is_empty() && s.chars().all(printable)).then(|| ("utf-8".into(), s.to_string()))
}

/// UTF-16LE text of Latin-1 characters, NUL-terminated or not, with only NULs after its
/// end. An odd final NUL byte is allowed (old systemd-boot logged one byte short).
fn utf16_text(data: &[u8]) -> Option<String> {
    let units_ok = data.len() >= 4 && data.chunks(2).all(|c| matches!(c, [_, 0] | [0]));
    if !units_ok {
        return None;
    }
    let s = utf16_until_nul(data);
    let after = (s.chars().count() + 1) * 2;
    let tail_is_nul = data.get(after.min(data.len())..)?.iter().all(|b| *b == 0);
    (tail_is_nul && !s.is_empty() && s.chars().all(printable)).then_some(s)
}

fn variable(data: &[u8]) -> Option<EventData> {
    let v = parse_variable(data)?;
    let global = v.guid == EFI_GLOBAL_VARIABLE;
    let secure_boot = (global && v.name == "SecureBoot" && v.data.len() == 1)
        .then(|| v.data.first().copied())
        .flatten();
    let lists = (global && (v.name == "PK" || v.name == "KEK"))
        || (v.guid == EFI_IMAGE_SECURITY_DATABASE && (v.name == "db" || v.name == "dbx"));
    let signature_entries = lists
        .then(|| parse_signature_lists(v.data).map(|e| e.len()))
        .flatten();
    let boot_order = (global && v.name == "BootOrder" && v.data.len() % 2 == 0).then(|| {
        v.data
            .chunks_exact(2)
            .map(|c| format!("Boot{:04X}", u16::from_le_bytes([c[0], c[1]])))
            .collect()
    });
    let (description, device_path) = if global && is_boot_option(&v.name) {
        load_option(v.data).unzip()
    } else {
        (None, None)
    };
    Some(EventData::UefiVariable {
        guid: v.guid.to_string(),
        name: v.name.clone(),
        data_length: v.data.len(),
        secure_boot,
        signature_entries,
        boot_order,
        description,
        device_path: device_path.flatten(),
    })
}

/// `Boot` followed by four hex digits.
fn is_boot_option(name: &str) -> bool {
    name.len() == 8 && name.starts_with("Boot") && name[4..].chars().all(|c| c.is_ascii_hexdigit())
}

/// EFI_LOAD_OPTION: Attributes (u32), FilePathListLength (u16), Description (CHAR16, NUL
/// terminated), FilePathList, OptionalData. The description, and the path as text.
fn load_option(data: &[u8]) -> Option<(String, Option<String>)> {
    let path_len = usize::from(u16::from_le_bytes(data.get(4..6)?.try_into().ok()?));
    let rest = data.get(6..)?;
    let nul = rest.chunks_exact(2).position(|c| c == [0, 0])?;
    let description = utf16_until_nul(rest);
    let path_start = 6 + (nul + 1) * 2;
    let path = data.get(path_start..path_start + path_len)?;
    Some((description, devpath::to_text(path)))
}

fn tagged(data: &[u8]) -> Option<EventData> {
    let id = u32_at(data, 0)?;
    let size = u32_at(data, 4)?;
    let body = data.get(8..8 + usize::try_from(size).ok()?);
    let tag_name = match id {
        LINUX_INITRD_TAG => Some("INITRD_EVENT_TAG_ID".to_string()),
        LINUX_LOAD_OPTIONS_TAG => Some("LOAD_OPTIONS_EVENT_TAG_ID".to_string()),
        _ => None,
    };
    Some(EventData::TaggedEvent {
        tag_id: format!("{id:#010x}"),
        tag_name,
        data_size: size,
        text: body.and_then(text).map(|(_, t)| t),
    })
}

/// UEFI_IMAGE_LOAD_EVENT: location, length and link-time address (u64 each), the device
/// path length (u64) and the device path.
fn image_load(data: &[u8]) -> Option<EventData> {
    let location = u64_at(data, 0)?;
    let length = u64_at(data, 8)?;
    let link = u64_at(data, 16)?;
    // A path length past the data (or past usize) leaves the path undecoded, not the rest.
    let path = usize::try_from(u64_at(data, 24)?)
        .ok()
        .and_then(|n| 32usize.checked_add(n))
        .and_then(|end| data.get(32..end));
    let text = path.and_then(devpath::to_text);
    let device_path_hex = match (&text, path) {
        (None, Some(p)) => Some(hex::encode(p)),
        (None, None) => Some(hex::encode(data.get(32..).unwrap_or_default())),
        _ => None,
    };
    Some(EventData::ImageLoad {
        location: format!("{location:#x}"),
        length,
        link_time_address: format!("{link:#x}"),
        device_path: text,
        device_path_hex,
    })
}

#[cfg(test)]
mod tests;
