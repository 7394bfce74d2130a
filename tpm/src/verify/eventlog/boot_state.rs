//! What a policy looks at, pulled out of the events: Secure Boot variables and authorities
//! (PCR7), code measured in PCR4, what boot loaders measured in PCR8/9/12 (kernel command
//! lines, initrds, commands, files), separators, and every way the log departs from the
//! TCG PC Client Platform Firmware Profile ([`ProfileFinding`]).
//!
//! Everything here that a policy decides on is bound by the digests of one bank (the
//! quoted one): separators are recognised by digest, PCR4 strings by a digest that is the
//! hash of the string, PCR7 variables by data their digest vouches for, and PCR7's
//! before/after-separator positions by the hash chain of PCR7 itself. Event types, data a
//! digest does not cover and the order of events in different PCRs are not bound; they
//! only name things for an operator (the `claim`s and hints) or add findings.

use super::alg::{Digest, HashAlg};
use super::event_type::EventType;
use super::finding::ProfileFinding;
use super::uefi::{
    parse_signature_lists, Guid, SignatureEntry, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};
use super::Event;

/// Where an event is and what it extended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeasuredEvent {
    /// Event index.
    pub event_index: usize,
    /// PCR.
    pub pcr: u32,
    /// Event type.
    pub event_type: EventType,
    /// Logged digests, one per bank.
    pub digests: Vec<Digest>,
}

impl MeasuredEvent {
    pub(crate) fn of(e: &Event) -> Self {
        Self {
            event_index: e.index,
            pcr: e.pcr,
            event_type: e.event_type,
            digests: e.digests.clone(),
        }
    }

    /// The logged digest of one bank.
    pub fn digest(&self, alg: HashAlg) -> Option<&Digest> {
        self.digests.iter().find(|d| d.alg() == alg)
    }
}

/// A measured UEFI variable (EV_EFI_VARIABLE_DRIVER_CONFIG or EV_EFI_VARIABLE_AUTHORITY).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VariableEvent {
    /// The event.
    pub event: MeasuredEvent,
    /// Vendor GUID (all zero when the UEFI_VARIABLE_DATA could not be parsed).
    pub guid: Guid,
    /// Variable name (empty when it could not be parsed).
    pub name: String,
    /// VariableData (the whole event data when it could not be parsed).
    pub data: Vec<u8>,
    /// True when the digest of the policy bank, and every other logged digest of a known
    /// bank, is the hash of the event data, so `data` (and `guid`, `name`) can be relied on.
    pub data_verified: bool,
}

impl VariableEvent {
    /// The EFI_SIGNATURE_LIST entries of PK, KEK, db or dbx; `None` if malformed.
    pub fn signature_entries(&self) -> Option<Vec<SignatureEntry>> {
        parse_signature_lists(&self.data)
    }

    /// The DER certificate of an EV_EFI_VARIABLE_AUTHORITY: an EFI_SIGNATURE_DATA (owner
    /// GUID then DER) from firmware, or bare DER from old shim.
    pub fn certificate_der(&self) -> Option<&[u8]> {
        let is_der = |b: &[u8]| b.first() == Some(&0x30);
        if is_der(&self.data) {
            return Some(&self.data);
        }
        let rest = self.data.get(16..)?;
        is_der(rest).then_some(rest)
    }
}

/// Who measured a kernel command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdlineSource {
    /// Linux EFI stub, PCR9 EV_EVENT_TAG "LOADED_IMAGE::LoadOptions": the digest is of the
    /// UTF-16LE command line with its NUL; the text is not in the log.
    EfiStub,
    /// GRUB, PCR8 EV_IPL "kernel_cmdline: ..." (digest of the text after the prefix).
    Grub,
    /// systemd-boot / systemd-stub, PCR8 or PCR12 EV_IPL with the UTF-16LE command line.
    SystemdBoot,
}

/// A measured kernel command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelCmdline {
    /// The event.
    pub event: MeasuredEvent,
    /// Who measured it.
    pub source: CmdlineSource,
    /// The text, when the log carries it.
    pub text: Option<String>,
    /// True when the logged digest matches the text.
    pub text_verified: bool,
}

/// Who measured an initrd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitrdSource {
    /// Linux EFI stub, PCR9 EV_EVENT_TAG "Linux initrd".
    EfiStub,
    /// GRUB, PCR9 EV_IPL of a file named by an `initrd` command.
    Grub,
}

/// A measured initrd (the digest is of the file).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initrd {
    /// The event.
    pub event: MeasuredEvent,
    /// Who measured it.
    pub source: InitrdSource,
    /// GRUB's path, when known.
    pub path: Option<String>,
}

/// A GRUB command (PCR8 EV_IPL "grub_cmd: ...").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubCommand {
    /// Event index.
    pub event_index: usize,
    /// The command line as logged (without the prefix).
    pub text: String,
    /// True when the digest is the hash of `text`.
    pub verified: bool,
}

/// A separator: an event in PCR0-7 whose digest (in the bank read) is the hash of 00000000
/// or FFFFFFFF, whatever its type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Separator {
    /// The event.
    pub event: MeasuredEvent,
    /// True for the FFFFFFFF value (a firmware error, or TPM 1.2-era firmware).
    pub error_value: bool,
}

/// A measurement in PCR8, 9 or 12 (where boot loaders measure), with what the log claims it
/// is. The claim comes from the event type, tag id or string prefix, none of which the
/// digest binds: a policy allows these measurements by digest, whatever they claim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoaderEvent {
    /// The event.
    pub event: MeasuredEvent,
    /// What the log says it is.
    pub claim: LoaderClaim,
    /// The string it measured, when the digest of the bank read is the hash of it (GRUB's
    /// strings after their prefix, systemd-boot's UTF-16 strings).
    pub verified_string: Option<String>,
}

/// What a boot-loader measurement says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoaderClaim {
    /// A kernel command line.
    KernelCmdline,
    /// An initrd.
    Initrd,
    /// A GRUB command or other boot-loader string.
    String,
    /// A file or anything else.
    Other,
}

/// The boot facts a measured-boot policy evaluates, read in one bank (the quoted one).
///
/// Secure Boot configuration follows the TCG PC Client Platform Firmware Profile: firmware
/// measures SecureBoot, PK, KEK, db, dbx (and any other PCR7
/// EV_EFI_VARIABLE_DRIVER_CONFIG) before the one PCR7 separator; after it PCR7 only carries
/// EV_EFI_VARIABLE_AUTHORITY. Software with TPM access (root on the node) can extend PCR7
/// after boot and append a matching event to the log, which then still replays to the
/// quoted PCRs; so each variable here is the one verified measurement before the PCR7
/// separator, and anything else in PCR7 is a [`ProfileFinding`], never configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootState {
    /// The bank every digest decision was made in.
    pub bank: HashAlg,
    /// The SecureBoot variable: its verified measurement before the PCR7 separator. Use
    /// [`BootState::secure_boot_enabled`] to read it.
    pub secure_boot: Option<VariableEvent>,
    /// PK, chosen like `secure_boot`.
    pub pk: Option<VariableEvent>,
    /// KEK, chosen like `secure_boot`.
    pub kek: Option<VariableEvent>,
    /// db, chosen like `secure_boot`.
    pub db: Option<VariableEvent>,
    /// dbx, chosen like `secure_boot`.
    pub dbx: Option<VariableEvent>,
    /// PCR7 EV_EFI_VARIABLE_AUTHORITY events after the separator (what authorized each
    /// image). Their data is informational.
    pub authorities: Vec<VariableEvent>,
    /// PCR7 "DMA Protection Disabled" was measured.
    pub dma_protection_disabled: bool,
    /// Every PCR4 measurement of code: each PCR4 event except separators and the profile's
    /// action strings whose digest is the hash of the string. Classified by digest, not by
    /// type: an EV_EFI_BOOT_SERVICES_APPLICATION relabelled as anything stays here.
    pub boot_applications: Vec<MeasuredEvent>,
    /// Every measurement in PCR8, 9 and 12.
    pub loader_events: Vec<LoaderEvent>,
    /// Kernel command lines, as the log claims them (hints for operators and
    /// `generate_policy`; a policy allows PCR8/9/12 measurements by digest).
    pub kernel_cmdlines: Vec<KernelCmdline>,
    /// Initrds, as the log claims them (hints, like `kernel_cmdlines`).
    pub initrds: Vec<Initrd>,
    /// GRUB commands (hints).
    pub grub_commands: Vec<GrubCommand>,
    /// Separators (PCR0-7, by digest).
    pub separators: Vec<Separator>,
    /// Every departure from the profile in PCR0-9 and 12.
    pub findings: Vec<ProfileFinding>,
}

impl BootState {
    /// An empty state for `bank`.
    pub(crate) fn new(bank: HashAlg) -> Self {
        Self {
            bank,
            secure_boot: None,
            pk: None,
            kek: None,
            db: None,
            dbx: None,
            authorities: Vec::new(),
            dma_protection_disabled: false,
            boot_applications: Vec::new(),
            loader_events: Vec::new(),
            kernel_cmdlines: Vec::new(),
            initrds: Vec::new(),
            grub_commands: Vec::new(),
            separators: Vec::new(),
            findings: Vec::new(),
        }
    }

    /// The PCR7 separator, when PCR7 has exactly one.
    pub fn pcr7_separator(&self) -> Option<&Separator> {
        let mut pcr7 = self.separators.iter().filter(|s| s.event.pcr == 7);
        match (pcr7.next(), pcr7.next()) {
            (Some(s), None) => Some(s),
            _ => None,
        }
    }

    /// Findings in one PCR.
    pub fn findings_in(&self, pcr: u32) -> impl Iterator<Item = &ProfileFinding> + '_ {
        self.findings.iter().filter(move |f| f.pcr == pcr)
    }

    /// True when the firmware says Secure Boot was on: PCR7 has the profile's shape (no
    /// finding in PCR7, so exactly one separator) and its one SecureBoot measurement before
    /// the separator is verified and exactly `[1]`. SecureBoot=1 alone does not mean an
    /// image was verified (OVMF falls back to an unverified loader): see
    /// [`BootState::secure_boot_verified`].
    pub fn secure_boot_enabled(&self) -> bool {
        self.findings_in(7).next().is_none()
            && self.pcr7_separator().is_some()
            && self
                .secure_boot
                .as_ref()
                .is_some_and(|v| v.data_verified && v.data == [1])
    }

    /// [`BootState::secure_boot_enabled`], at least one EV_EFI_VARIABLE_AUTHORITY after the
    /// separator (an image was verified against db) and at least one code measurement in
    /// PCR4, with no finding in PCR4: what `require_secure_boot` requires.
    pub fn secure_boot_verified(&self) -> bool {
        self.secure_boot_enabled()
            && !self.authorities.is_empty()
            && !self.boot_applications.is_empty()
            && self.findings_in(4).next().is_none()
    }

    /// Where a Secure Boot configuration variable goes, if it is one a policy reads.
    pub(crate) fn config_slot(
        &mut self,
        guid: &Guid,
        name: &str,
    ) -> Option<&mut Option<VariableEvent>> {
        match (*guid, name) {
            (EFI_GLOBAL_VARIABLE, "SecureBoot") => Some(&mut self.secure_boot),
            (EFI_GLOBAL_VARIABLE, "PK") => Some(&mut self.pk),
            (EFI_GLOBAL_VARIABLE, "KEK") => Some(&mut self.kek),
            (EFI_IMAGE_SECURITY_DATABASE, "db") => Some(&mut self.db),
            (EFI_IMAGE_SECURITY_DATABASE, "dbx") => Some(&mut self.dbx),
            _ => None,
        }
    }
}
