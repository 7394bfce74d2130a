//! A policy failure, with what an operator needs to find and fix it.

use std::fmt;

use crate::verify::eventlog::{Digest, EventType};

/// The policy rule (its TOML key) that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PolicyRule {
    /// `require_secure_boot`.
    RequireSecureBoot,
    /// `pk`.
    Pk,
    /// `kek`.
    Kek,
    /// `db`.
    Db,
    /// `dbx_required`.
    DbxRequired,
    /// `boot_applications`.
    BootApplications,
    /// `kernel_cmdlines` / `kernel_cmdline_digests`.
    KernelCmdlines,
    /// `initrds`.
    Initrds,
    /// `boot_loader_strings`.
    BootLoaderStrings,
    /// `boot_loader_digests`.
    BootLoaderDigests,
    /// `pcrs`.
    Pcrs,
}

impl fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::RequireSecureBoot => "require_secure_boot",
            Self::Pk => "pk",
            Self::Kek => "kek",
            Self::Db => "db",
            Self::DbxRequired => "dbx_required",
            Self::BootApplications => "boot_applications",
            Self::KernelCmdlines => "kernel_cmdlines",
            Self::Initrds => "initrds",
            Self::BootLoaderStrings => "boot_loader_strings",
            Self::BootLoaderDigests => "boot_loader_digests",
            Self::Pcrs => "pcrs",
        })
    }
}

/// One failed check. `Display` reads as one line an operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyViolation {
    /// Policy name.
    pub policy: String,
    /// The rule.
    pub rule: PolicyRule,
    /// The PCR concerned.
    pub pcr: Option<u32>,
    /// The event concerned (index in the log), if one.
    pub event_index: Option<usize>,
    /// Its type.
    pub event_type: Option<EventType>,
    /// The digest that failed (logged, replayed or required).
    pub digest: Option<Digest>,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for PolicyViolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "policy {:?} rule {}:", self.policy, self.rule)?;
        if let Some(p) = self.pcr {
            write!(f, " PCR{p}")?;
        }
        if let Some(i) = self.event_index {
            write!(f, " event {i}")?;
        }
        if let Some(t) = self.event_type {
            write!(f, " {t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, " {d}")?;
        }
        write!(f, ": {}", self.message)
    }
}
