//! TCG PC Client firmware event log: parser (crypto-agile and SHA-1 format), PCR replay,
//! digest checks and extraction of the boot facts a policy needs.
//!
//! ```
//! use ironroot_tpm::verify::eventlog::{EventLog, EventType, HashAlg, LogBuilder};
//! let mut b = LogBuilder::crypto_agile(&[HashAlg::Sha256]);
//! b.event(4, EventType::EV_SEPARATOR, &[0; 4]);
//! let log = EventLog::parse(&b.build())?;
//! let pcr4 = log.replay().get(HashAlg::Sha256, 4).map(|d| d.to_hex());
//! assert_eq!(pcr4.as_deref(), Some("3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"));
//! # Ok::<(), ironroot_tpm::verify::eventlog::EventLogError>(())
//! ```

mod alg;
mod boot_state;
mod builder;
mod check;
mod classify;
mod error;
mod event_type;
mod finding;
mod parse;
mod profile;
mod reader;
mod replay;
pub mod uefi;

pub use alg::{Digest, HashAlg, UnknownAlgName, MAX_DIGEST_SIZE};
pub use boot_state::{
    BootState, CmdlineSource, GrubCommand, Initrd, InitrdSource, KernelCmdline, LoaderClaim,
    LoaderEvent, MeasuredEvent, Separator, VariableEvent,
};
pub use builder::{efi_stub_cmdline_digest, string_encodings, utf16_with_nul, LogBuilder};
pub use check::{CheckedAgainst, DigestFinding};
pub use error::{EventLogError, Field, SpecIdProblem};
pub use event_type::EventType;
pub use finding::{FindingMessage, ProfileFinding, ProfileRule};
pub use parse::{Limits, ParseOptions};
pub use profile::{is_separator_digest, type_allowed_in_pcr};
pub use replay::{PcrBank, PcrBanks, PCR_COUNT};

use std::fmt;

/// The two log layouts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// TCG_PCR_EVENT only (SHA-1), as TPM 1.2 and some TPM 2.0 firmware write.
    Sha1Legacy,
    /// A Spec ID Event03 then TCG_PCR_EVENT2 with one digest per declared bank.
    CryptoAgile,
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sha1Legacy => "sha1-legacy",
            Self::CryptoAgile => "crypto-agile",
        })
    }
}

/// A PCR bank declared by the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bank {
    /// Algorithm.
    pub alg: HashAlg,
    /// Digest size (from the Spec ID event).
    pub digest_size: u16,
}

/// The Spec ID Event03 of a crypto-agile log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecId {
    /// platformClass (0 client, 1 server).
    pub platform_class: u32,
    /// specVersionMajor.
    pub spec_version_major: u8,
    /// specVersionMinor.
    pub spec_version_minor: u8,
    /// specErrata (any value accepted).
    pub spec_errata: u8,
    /// uintnSize.
    pub uintn_size: u8,
    /// Declared banks, in order.
    pub algorithms: Vec<Bank>,
    /// vendorInfo.
    pub vendor_info: Vec<u8>,
}

/// One event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// 0-based index (the Spec ID event is 0).
    pub index: usize,
    /// Byte offset in the log.
    pub offset: usize,
    /// pcrIndex.
    pub pcr: u32,
    /// eventType.
    pub event_type: EventType,
    /// One digest per bank.
    pub digests: Vec<Digest>,
    /// Event data.
    pub data: Vec<u8>,
}

impl Event {
    /// The digest of one bank.
    pub fn digest(&self, alg: HashAlg) -> Option<&Digest> {
        self.digests.iter().find(|d| d.alg() == alg)
    }
}

/// A parsed firmware event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventLog {
    format: LogFormat,
    spec_id: Option<SpecId>,
    banks: Vec<Bank>,
    events: Vec<Event>,
    trailing_padding: usize,
    findings: Vec<DigestFinding>,
}

impl EventLog {
    /// Parses a TPM PC Client log with the default [`Limits`].
    pub fn parse(bytes: &[u8]) -> Result<Self, EventLogError> {
        Self::parse_with(bytes, &ParseOptions::default())
    }

    /// Parses with explicit limits and options.
    pub fn parse_with(bytes: &[u8], opts: &ParseOptions) -> Result<Self, EventLogError> {
        let p = parse::parse(bytes, opts)?;
        let findings = check::check_events(&p.events);
        Ok(Self {
            format: p.format,
            spec_id: p.spec_id,
            banks: p.banks,
            events: p.events,
            trailing_padding: p.trailing_padding,
            findings,
        })
    }

    /// The log format.
    pub fn format(&self) -> LogFormat {
        self.format
    }

    /// The Spec ID event (crypto-agile logs only).
    pub fn spec_id(&self) -> Option<&SpecId> {
        self.spec_id.as_ref()
    }

    /// The banks the log carries (SHA-1 only for the legacy format).
    pub fn banks(&self) -> &[Bank] {
        &self.banks
    }

    /// All events, including the Spec ID event.
    pub fn events(&self) -> &[Event] {
        &self.events
    }

    /// Fill bytes (all 0xFF or all 0x00) after the last event.
    pub fn trailing_padding(&self) -> usize {
        self.trailing_padding
    }

    /// Replays every bank this crate can compute.
    pub fn replay(&self) -> PcrBanks {
        replay::replay(&self.banks, &self.events)
    }

    /// Events whose logged digest is not the hash of their data.
    pub fn digest_findings(&self) -> &[DigestFinding] {
        &self.findings
    }

    /// The locality PCR0 started from (StartupLocality, or 4 for H-CRTM).
    pub fn startup_locality(&self) -> u8 {
        replay::pcr0_seed(&self.events)
    }

    /// The boot facts a measured-boot policy evaluates, with every digest decision made in
    /// `bank` (the bank the TPM quoted: digests of other banks are not bound to anything).
    pub fn boot_state(&self, bank: HashAlg) -> BootState {
        classify::extract(&self.events, &self.findings, bank)
    }
}

#[cfg(test)]
mod tests;
