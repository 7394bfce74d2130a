//! Event types of the TCG PC Client Platform Firmware Profile (Table "Events").

use std::fmt;

macro_rules! event_types {
    ($( $(#[$doc:meta])* $variant:ident = $value:literal => $name:literal, )*) => {
        /// An event's `eventType`, named as in the PC Client Platform Firmware Profile.
        /// Values the profile does not define are kept as [`EventType::Unknown`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[allow(non_camel_case_types)]
        pub enum EventType {
            $( $(#[$doc])* $variant, )*
            /// A value the profile does not define.
            Unknown(u32),
        }

        impl EventType {
            /// The event type for a raw `eventType` value.
            pub fn from_u32(value: u32) -> Self {
                match value {
                    $( $value => Self::$variant, )*
                    other => Self::Unknown(other),
                }
            }

            /// The raw `eventType` value.
            pub fn as_u32(self) -> u32 {
                match self {
                    $( Self::$variant => $value, )*
                    Self::Unknown(v) => v,
                }
            }

            /// The profile's name (`EV_...`), or `None` for an unknown value.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $( Self::$variant => Some($name), )*
                    Self::Unknown(_) => None,
                }
            }
        }
    };
}

event_types! {
    /// Deprecated (TPM 1.2).
    EV_PREBOOT_CERT = 0x0000_0000 => "EV_PREBOOT_CERT",
    /// POST code, embedded SMM/ACPI code or data.
    EV_POST_CODE = 0x0000_0001 => "EV_POST_CODE",
    /// Reserved.
    EV_UNUSED = 0x0000_0002 => "EV_UNUSED",
    /// Informational: never extended into a PCR.
    EV_NO_ACTION = 0x0000_0003 => "EV_NO_ACTION",
    /// Separator between pre-OS and OS-present measurements.
    EV_SEPARATOR = 0x0000_0004 => "EV_SEPARATOR",
    /// An action string (legacy BIOS).
    EV_ACTION = 0x0000_0005 => "EV_ACTION",
    /// A tagged event (TCG_PCClientTaggedEvent).
    EV_EVENT_TAG = 0x0000_0006 => "EV_EVENT_TAG",
    /// S-CRTM contents.
    EV_S_CRTM_CONTENTS = 0x0000_0007 => "EV_S_CRTM_CONTENTS",
    /// S-CRTM version string.
    EV_S_CRTM_VERSION = 0x0000_0008 => "EV_S_CRTM_VERSION",
    /// CPU microcode update.
    EV_CPU_MICROCODE = 0x0000_0009 => "EV_CPU_MICROCODE",
    /// Platform configuration flags.
    EV_PLATFORM_CONFIG_FLAGS = 0x0000_000A => "EV_PLATFORM_CONFIG_FLAGS",
    /// Table of devices.
    EV_TABLE_OF_DEVICES = 0x0000_000B => "EV_TABLE_OF_DEVICES",
    /// Compact hash.
    EV_COMPACT_HASH = 0x0000_000C => "EV_COMPACT_HASH",
    /// Initial program load (boot loader code, or boot loader strings and files).
    EV_IPL = 0x0000_000D => "EV_IPL",
    /// IPL partition data.
    EV_IPL_PARTITION_DATA = 0x0000_000E => "EV_IPL_PARTITION_DATA",
    /// Non-host code.
    EV_NONHOST_CODE = 0x0000_000F => "EV_NONHOST_CODE",
    /// Non-host configuration.
    EV_NONHOST_CONFIG = 0x0000_0010 => "EV_NONHOST_CONFIG",
    /// Non-host information.
    EV_NONHOST_INFO = 0x0000_0011 => "EV_NONHOST_INFO",
    /// "BOOT ATTEMPTS OMITTED".
    EV_OMIT_BOOT_DEVICE_EVENTS = 0x0000_0012 => "EV_OMIT_BOOT_DEVICE_EVENTS",
    /// POST code with a firmware blob description.
    EV_POST_CODE2 = 0x0000_0013 => "EV_POST_CODE2",
    /// Base of the EFI event types (not used by itself).
    EV_EFI_EVENT_BASE = 0x8000_0000 => "EV_EFI_EVENT_BASE",
    /// UEFI variable that configures a driver (Secure Boot policy in PCR7).
    EV_EFI_VARIABLE_DRIVER_CONFIG = 0x8000_0001 => "EV_EFI_VARIABLE_DRIVER_CONFIG",
    /// UEFI boot variable (BootOrder, Boot####).
    EV_EFI_VARIABLE_BOOT = 0x8000_0002 => "EV_EFI_VARIABLE_BOOT",
    /// UEFI boot services application (boot loader, kernel, shell).
    EV_EFI_BOOT_SERVICES_APPLICATION = 0x8000_0003 => "EV_EFI_BOOT_SERVICES_APPLICATION",
    /// UEFI boot services driver (option ROMs).
    EV_EFI_BOOT_SERVICES_DRIVER = 0x8000_0004 => "EV_EFI_BOOT_SERVICES_DRIVER",
    /// UEFI runtime services driver.
    EV_EFI_RUNTIME_SERVICES_DRIVER = 0x8000_0005 => "EV_EFI_RUNTIME_SERVICES_DRIVER",
    /// GPT partition table.
    EV_EFI_GPT_EVENT = 0x8000_0006 => "EV_EFI_GPT_EVENT",
    /// An action string.
    EV_EFI_ACTION = 0x8000_0007 => "EV_EFI_ACTION",
    /// Firmware volume.
    EV_EFI_PLATFORM_FIRMWARE_BLOB = 0x8000_0008 => "EV_EFI_PLATFORM_FIRMWARE_BLOB",
    /// UEFI handoff tables (SMBIOS, ACPI).
    EV_EFI_HANDOFF_TABLES = 0x8000_0009 => "EV_EFI_HANDOFF_TABLES",
    /// Firmware volume with a description.
    EV_EFI_PLATFORM_FIRMWARE_BLOB2 = 0x8000_000A => "EV_EFI_PLATFORM_FIRMWARE_BLOB2",
    /// Handoff tables with a description.
    EV_EFI_HANDOFF_TABLES2 = 0x8000_000B => "EV_EFI_HANDOFF_TABLES2",
    /// Boot variable measured as a whole UEFI_VARIABLE_DATA.
    EV_EFI_VARIABLE_BOOT2 = 0x8000_000C => "EV_EFI_VARIABLE_BOOT2",
    /// GPT with device path.
    EV_EFI_GPT_EVENT2 = 0x8000_000D => "EV_EFI_GPT_EVENT2",
    /// H-CRTM measurement ("HCRTM").
    EV_EFI_HCRTM_EVENT = 0x8000_0010 => "EV_EFI_HCRTM_EVENT",
    /// The db/dbx (or shim) entry that authorized an image.
    EV_EFI_VARIABLE_AUTHORITY = 0x8000_00E0 => "EV_EFI_VARIABLE_AUTHORITY",
    /// SPDM device firmware.
    EV_EFI_SPDM_FIRMWARE_BLOB = 0x8000_00E1 => "EV_EFI_SPDM_FIRMWARE_BLOB",
    /// SPDM device configuration.
    EV_EFI_SPDM_FIRMWARE_CONFIG = 0x8000_00E2 => "EV_EFI_SPDM_FIRMWARE_CONFIG",
    /// SPDM device policy.
    EV_EFI_SPDM_DEVICE_POLICY = 0x8000_00E3 => "EV_EFI_SPDM_DEVICE_POLICY",
    /// SPDM device authority.
    EV_EFI_SPDM_DEVICE_AUTHORITY = 0x8000_00E4 => "EV_EFI_SPDM_DEVICE_AUTHORITY",
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => f.write_str(n),
            None => write!(f, "EV_UNKNOWN({:#010x})", self.as_u32()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EventType;

    #[test]
    fn names_and_values() {
        assert_eq!(EventType::from_u32(3), EventType::EV_NO_ACTION);
        assert_eq!(EventType::EV_NO_ACTION.to_string(), "EV_NO_ACTION");
        assert_eq!(
            EventType::from_u32(0x8000_00E0).to_string(),
            "EV_EFI_VARIABLE_AUTHORITY"
        );
        assert_eq!(
            EventType::from_u32(0x8000_0010),
            EventType::EV_EFI_HCRTM_EVENT
        );
        assert_eq!(EventType::EV_IPL.as_u32(), 0xD);
        assert_eq!(
            EventType::from_u32(0x1234).to_string(),
            "EV_UNKNOWN(0x00001234)"
        );
        assert_eq!(EventType::from_u32(0x1234).as_u32(), 0x1234);
    }
}
