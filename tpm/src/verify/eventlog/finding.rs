//! How an event log departs from the TCG PC Client Platform Firmware Profile: one finding per
//! broken rule, located by PCR and event, worded for an operator.

use std::fmt;

use super::alg::Digest;
use super::event_type::EventType;

/// The rule of the TCG PC Client Platform Firmware Profile an event breaks.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProfileRule {
    /// An event type the profile does not put in this PCR, or one it does not define.
    TypeNotAllowedInPcr,
    /// Typed EV_SEPARATOR, but its digest is not the hash of 00000000 or FFFFFFFF.
    SeparatorTypeWithoutSeparatorDigest,
    /// A separator digest under another event type: the type was changed (a separator
    /// counts as one whatever its type, and no firmware writes one so).
    SeparatorDigestUnderOtherType,
    /// PCR7 has no separator.
    Pcr7WithoutSeparator,
    /// PCR7 has a second separator (`first` is the index of the first one).
    Pcr7SecondSeparator {
        /// Index of the first PCR7 separator.
        first: usize,
    },
    /// An event type PCR7 only has after its separator, found before it.
    Pcr7NotAllowedBeforeSeparator,
    /// An event type PCR7 only has before its separator (configuration, actions), found
    /// after it: something extended PCR7 after the firmware finished.
    Pcr7NotAllowedAfterSeparator,
    /// A PCR7 configuration event whose data its digests do not vouch for, or that is not
    /// a UEFI_VARIABLE_DATA.
    Pcr7UnverifiedConfiguration,
    /// A Secure Boot variable measured twice before the PCR7 separator.
    Pcr7DuplicateVariable {
        /// Variable name.
        name: String,
        /// Index of the first measurement.
        first: usize,
    },
    /// A PCR7 EV_EFI_ACTION that is not one of the profile's strings (or whose digest is not
    /// the hash of it).
    Pcr7UnexpectedAction,
    /// PCR7 "UEFI Debug Mode": a firmware debugger was enabled, so nothing it verified can be
    /// trusted.
    Pcr7DebugMode,
    /// A PCR9 EV_EVENT_TAG whose tag id no known boot loader uses there.
    UnknownEventTag {
        /// The tag id (`None`: the data is shorter than a tag header).
        tag: Option<u32>,
    },
}

/// One way the log departs from the profile, in one PCR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProfileFinding {
    /// PCR.
    pub pcr: u32,
    /// Event index.
    pub event_index: Option<usize>,
    /// Its type.
    pub event_type: Option<EventType>,
    /// Its digest in the bank read.
    pub digest: Option<Digest>,
    /// The rule broken.
    pub rule: ProfileRule,
}

impl fmt::Display for ProfileFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PCR{}", self.pcr)?;
        if let Some(i) = self.event_index {
            write!(f, " event {i}")?;
        }
        if let Some(t) = self.event_type {
            write!(f, " ({t})")?;
        }
        write!(f, ": {}", FindingMessage(self))
    }
}

/// What a finding means, without where it is.
pub struct FindingMessage<'a>(pub &'a ProfileFinding);

impl fmt::Display for FindingMessage<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let finding = self.0;
        match &finding.rule {
            ProfileRule::TypeNotAllowedInPcr => write!(
                f,
                "the TCG PC Client profile does not put this event type in PCR{}; its type is not authenticated, so the event cannot be classified",
                finding.pcr
            ),
            ProfileRule::SeparatorTypeWithoutSeparatorDigest => f.write_str(
                "typed EV_SEPARATOR but its digest is not the hash of 00000000 or FFFFFFFF",
            ),
            ProfileRule::SeparatorDigestUnderOtherType => f.write_str(
                "its digest is the hash of a separator value but it is not typed EV_SEPARATOR: the type was changed; it counts as a separator",
            ),
            ProfileRule::Pcr7WithoutSeparator => f.write_str(
                "PCR7 has no separator: the Secure Boot configuration cannot be told apart from events appended after boot",
            ),
            ProfileRule::Pcr7SecondSeparator { first } => write!(
                f,
                "a second PCR7 separator (the first is event {first}): firmware measures exactly one"
            ),
            ProfileRule::Pcr7NotAllowedBeforeSeparator => f.write_str(
                "before the PCR7 separator the profile has only Secure Boot configuration (EV_EFI_VARIABLE_DRIVER_CONFIG) and DMA-protection / SPDM policy events",
            ),
            ProfileRule::Pcr7NotAllowedAfterSeparator => f.write_str(
                "after the PCR7 separator the profile has only EV_EFI_VARIABLE_AUTHORITY events: PCR7 was extended after the firmware's configuration was measured",
            ),
            ProfileRule::Pcr7UnverifiedConfiguration => f.write_str(
                "a Secure Boot configuration event whose digest is not the hash of its data (or whose data is not a UEFI variable): its variable and value cannot be trusted",
            ),
            ProfileRule::Pcr7DuplicateVariable { name, first } => write!(
                f,
                "Secure Boot variable {name} measured a second time before the separator (first: event {first})"
            ),
            ProfileRule::Pcr7UnexpectedAction => f.write_str(
                "an EV_EFI_ACTION in PCR7 that is not \"DMA Protection Disabled\" with a matching digest",
            ),
            ProfileRule::Pcr7DebugMode => f.write_str(
                "\"UEFI Debug Mode\": a firmware debugger was enabled during boot, so Secure Boot verification cannot be trusted",
            ),
            ProfileRule::UnknownEventTag { tag: Some(t) } => write!(
                f,
                "EV_EVENT_TAG id {t:#010x} is not one the Linux EFI stub uses in PCR9 (LoadOptions 0x8f3b22ed, initrd 0x8f3b22ec)"
            ),
            ProfileRule::UnknownEventTag { tag: None } => {
                f.write_str("EV_EVENT_TAG data too short to hold a tag id")
            }
        }
    }
}
