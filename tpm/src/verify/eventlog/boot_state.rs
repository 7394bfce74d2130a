//! What a policy looks at, pulled out of the events: Secure Boot variables and authorities
//! (PCR7), boot applications (PCR4), kernel command lines and initrds (PCR8/9/12, from the
//! Linux EFI stub, GRUB or systemd-boot), separators.

use super::alg::{Digest, HashAlg};
use super::builder::utf16_with_nul;
use super::check::{
    data_verified, looks_utf16, DigestFinding, LINUX_INITRD_TAG, LINUX_LOAD_OPTIONS_TAG,
};
use super::event_type::EventType;
use super::reader::le_u32;
use super::uefi::{
    parse_signature_lists, parse_variable, Guid, SignatureEntry, EFI_GLOBAL_VARIABLE,
    EFI_IMAGE_SECURITY_DATABASE,
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
    fn of(e: &Event) -> Self {
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
    /// True when every logged digest is the hash of the event data, so `data` can be
    /// relied on.
    pub data_verified: bool,
}

impl VariableEvent {
    fn of(e: &Event, findings: &[DigestFinding]) -> Self {
        let (guid, name, data) = match parse_variable(&e.data) {
            Some(v) => (v.guid, v.name, v.data.to_vec()),
            None => (Guid([0; 16]), String::new(), e.data.clone()),
        };
        Self {
            event: MeasuredEvent::of(e),
            guid,
            name,
            data,
            data_verified: data_verified(findings, e.index),
        }
    }

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
}

/// An EV_SEPARATOR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Separator {
    /// The event.
    pub event: MeasuredEvent,
    /// Its data: 00000000 normally, FFFFFFFF after a firmware error, "WBCL" for Windows.
    pub value: Vec<u8>,
}

impl Separator {
    /// True for the FFFFFFFF error separator.
    pub fn is_error(&self) -> bool {
        self.value == [0xFF; 4]
    }
}

/// The boot facts a measured-boot policy evaluates.
///
/// Secure Boot configuration follows the TCG PC Client Platform Firmware Profile: firmware
/// measures SecureBoot, PK, KEK, db, dbx (and any other PCR7
/// EV_EFI_VARIABLE_DRIVER_CONFIG) before the PCR7 EV_SEPARATOR; after it PCR7 only carries
/// EV_EFI_VARIABLE_AUTHORITY and actions. Software with TPM access (root on the node) can
/// extend PCR7 after boot and append a matching event to the log, which then still replays
/// to the quoted PCRs. So each variable here is the *last* measurement before the
/// *first* PCR7 separator, and configuration events after that separator are kept apart in
/// [`BootState::config_after_separator`], never used as configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BootState {
    /// The SecureBoot variable: the last PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG of it before
    /// the first PCR7 separator (in the whole log when there is no PCR7 separator; see
    /// [`BootState::pcr7_separator`]). Use [`BootState::secure_boot_enabled`] to read it.
    pub secure_boot: Option<VariableEvent>,
    /// PK, chosen like `secure_boot`.
    pub pk: Option<VariableEvent>,
    /// KEK, chosen like `secure_boot`.
    pub kek: Option<VariableEvent>,
    /// db, chosen like `secure_boot`.
    pub db: Option<VariableEvent>,
    /// dbx, chosen like `secure_boot`.
    pub dbx: Option<VariableEvent>,
    /// Every PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG after the first PCR7 separator, whatever
    /// the variable. Firmware does not measure configuration there, so these are findings
    /// (PCR7 extended after boot), not configuration.
    pub config_after_separator: Vec<VariableEvent>,
    /// PCR7 EV_EFI_VARIABLE_AUTHORITY events (what authorized each image).
    pub authorities: Vec<VariableEvent>,
    /// PCR4 EV_EFI_BOOT_SERVICES_APPLICATION events (boot loaders, kernels).
    pub boot_applications: Vec<MeasuredEvent>,
    /// Kernel command lines.
    pub kernel_cmdlines: Vec<KernelCmdline>,
    /// Initrds.
    pub initrds: Vec<Initrd>,
    /// GRUB commands.
    pub grub_commands: Vec<GrubCommand>,
    /// Separators.
    pub separators: Vec<Separator>,
}

impl BootState {
    /// True when Secure Boot was on for this boot: the log has a PCR7 separator, and the
    /// last SecureBoot variable measured before it has data its digests vouch for
    /// ([`VariableEvent::data_verified`]) and that data is exactly `[1]`. False otherwise:
    /// SecureBoot 0 or absent (0-byte data), not measured, data not matching its digest,
    /// or no PCR7 separator (then a SecureBoot event cannot be told apart from one appended
    /// after boot). SecureBoot events after the separator never count.
    pub fn secure_boot_enabled(&self) -> bool {
        self.pcr7_separator().is_some()
            && self
                .secure_boot
                .as_ref()
                .is_some_and(|v| v.data_verified && v.data == [1])
    }

    /// The first PCR7 EV_SEPARATOR: the end of the Secure Boot configuration.
    pub fn pcr7_separator(&self) -> Option<&Separator> {
        self.separators.iter().find(|s| s.event.pcr == 7)
    }

    /// Measurements of the variable `guid`/`name` after the first PCR7 separator
    /// (findings, see [`BootState::config_after_separator`]).
    pub fn config_after_separator_of<'a>(
        &'a self,
        guid: &'a Guid,
        name: &'a str,
    ) -> impl Iterator<Item = &'a VariableEvent> + 'a {
        self.config_after_separator
            .iter()
            .filter(move |v| v.guid == *guid && v.name == name)
    }

    /// Where a Secure Boot configuration variable goes, if it is one a policy reads.
    fn config_slot(&mut self, guid: &Guid, name: &str) -> Option<&mut Option<VariableEvent>> {
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

fn text(data: &[u8]) -> String {
    let trimmed = data.strip_suffix(&[0]).unwrap_or(data);
    String::from_utf8_lossy(trimmed).into_owned()
}

fn utf16_text(data: &[u8]) -> String {
    let units = data
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .take_while(|c| *c != '\0')
        .collect()
}

pub(crate) fn extract(events: &[Event], findings: &[DigestFinding]) -> BootState {
    let mut s = BootState::default();
    // Paths named by the latest GRUB `initrd` command: the PCR9 file events that follow
    // with those paths are the initrds.
    let mut initrd_paths: Vec<String> = Vec::new();
    // Set at the first PCR7 separator: configuration ends there.
    let mut pcr7_separated = false;
    for e in events {
        use EventType as T;
        match (e.event_type, e.pcr) {
            (T::EV_EFI_VARIABLE_DRIVER_CONFIG, 7) => {
                let v = VariableEvent::of(e, findings);
                if pcr7_separated {
                    s.config_after_separator.push(v);
                } else if let Some(slot) = s.config_slot(&v.guid, &v.name) {
                    // A later measurement before the separator replaces an earlier one.
                    *slot = Some(v);
                }
            }
            (T::EV_EFI_VARIABLE_AUTHORITY, 7) => {
                s.authorities.push(VariableEvent::of(e, findings));
            }
            (T::EV_EFI_BOOT_SERVICES_APPLICATION, 4) => {
                s.boot_applications.push(MeasuredEvent::of(e));
            }
            (T::EV_EVENT_TAG, 9) => match le_u32(&e.data, 0) {
                Some(LINUX_LOAD_OPTIONS_TAG) => s.kernel_cmdlines.push(KernelCmdline {
                    event: MeasuredEvent::of(e),
                    source: CmdlineSource::EfiStub,
                    text: None,
                    text_verified: false,
                }),
                Some(LINUX_INITRD_TAG) => s.initrds.push(Initrd {
                    event: MeasuredEvent::of(e),
                    source: InitrdSource::EfiStub,
                    path: None,
                }),
                _ => {}
            },
            (T::EV_IPL, 8 | 9 | 12) => ipl(&mut s, e, findings, &mut initrd_paths),
            (T::EV_SEPARATOR, pcr) => {
                pcr7_separated |= pcr == 7;
                s.separators.push(Separator {
                    event: MeasuredEvent::of(e),
                    value: e.data.clone(),
                });
            }
            _ => {}
        }
    }
    s
}

fn ipl(s: &mut BootState, e: &Event, findings: &[DigestFinding], paths: &mut Vec<String>) {
    let verified = data_verified(findings, e.index);
    if e.pcr == 9 {
        let t = text(&e.data);
        if t == "grub_linuxefi Initrd" || paths.contains(&t) {
            let path = (t != "grub_linuxefi Initrd").then_some(t);
            s.initrds.push(Initrd {
                event: MeasuredEvent::of(e),
                source: InitrdSource::Grub,
                path,
            });
        }
        return;
    }
    let t = text(&e.data);
    for prefix in ["kernel_cmdline: ", "grub_kernel_cmdline "] {
        if let Some(rest) = t.strip_prefix(prefix) {
            // The text stands for the digest only if it is exactly the bytes GRUB hashed.
            let raw = e.data.get(prefix.len()..).unwrap_or(&[]);
            let exact = raw == rest.as_bytes() || raw.strip_suffix(&[0]) == Some(rest.as_bytes());
            s.kernel_cmdlines.push(KernelCmdline {
                event: MeasuredEvent::of(e),
                source: CmdlineSource::Grub,
                text: Some(rest.to_string()),
                text_verified: verified && exact,
            });
            return;
        }
    }
    for prefix in ["grub_cmd: ", "grub_cmd "] {
        if let Some(rest) = t.strip_prefix(prefix) {
            let mut words = rest.split_whitespace();
            if let Some("initrd" | "initrdefi" | "initrd16") = words.next() {
                *paths = words.map(str::to_string).collect();
            }
            s.grub_commands.push(GrubCommand {
                event_index: e.index,
                text: rest.to_string(),
            });
            return;
        }
    }
    if e.pcr != 9 && looks_utf16(&e.data) {
        let text = utf16_text(&e.data);
        let with_nul = utf16_with_nul(&text);
        let exact = e.data == with_nul
            || Some(e.data.as_slice()) == with_nul.get(..with_nul.len().saturating_sub(2));
        s.kernel_cmdlines.push(KernelCmdline {
            event: MeasuredEvent::of(e),
            source: CmdlineSource::SystemdBoot,
            text: Some(text),
            text_verified: verified && exact,
        });
    }
}
