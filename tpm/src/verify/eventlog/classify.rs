//! Builds a [`BootState`] from the events, in one bank. The rules (see `boot_state` and
//! `profile`): separators and PCR4 strings by digest, PCR7 by its shape, PCR8/9/12 kept
//! whole with what each event claims to be; every departure from the profile is a finding.

use super::alg::HashAlg;
use super::boot_state::{
    BootState, CmdlineSource, GrubCommand, Initrd, InitrdSource, KernelCmdline, LoaderClaim,
    LoaderEvent, MeasuredEvent, Separator, VariableEvent,
};
use super::builder::string_encodings;
use super::check::{
    data_verified, looks_utf16, DigestFinding, LINUX_INITRD_TAG, LINUX_LOAD_OPTIONS_TAG,
};
use super::event_type::EventType;
use super::finding::{ProfileFinding, ProfileRule};
use super::profile::{
    digest_is_hash_of, is_separator_digest, pcr4_action, type_allowed_in_pcr,
    DMA_PROTECTION_DISABLED, UEFI_DEBUG_MODE,
};
use super::reader::le_u32;
use super::uefi::parse_variable;
use super::Event;

/// GRUB's string prefixes and what each claims (GRUB hashes the text after the prefix, so
/// the prefix itself is not bound).
const GRUB_STRINGS: [(&str, LoaderClaim); 5] = [
    ("kernel_cmdline: ", LoaderClaim::KernelCmdline),
    ("grub_kernel_cmdline ", LoaderClaim::KernelCmdline),
    ("grub_cmd: ", LoaderClaim::String),
    ("grub_cmd ", LoaderClaim::String),
    ("module_cmdline: ", LoaderClaim::String),
];

struct Extract<'a> {
    s: BootState,
    digest_findings: &'a [DigestFinding],
    /// Index of the first PCR7 separator.
    pcr7_separator: Option<usize>,
    /// Paths named by the latest GRUB `initrd` command (a hint only: it relies on the
    /// order of PCR8 and PCR9 events, which is not bound).
    initrd_paths: Vec<String>,
}

pub(crate) fn extract(
    events: &[Event],
    digest_findings: &[DigestFinding],
    bank: HashAlg,
) -> BootState {
    let mut x = Extract {
        s: BootState::new(bank),
        digest_findings,
        pcr7_separator: None,
        initrd_paths: Vec::new(),
    };
    for e in events {
        if e.event_type != EventType::EV_NO_ACTION {
            x.event(e);
        }
    }
    if x.pcr7_separator.is_none() {
        x.s.findings.push(ProfileFinding {
            pcr: 7,
            event_index: None,
            event_type: None,
            digest: None,
            rule: ProfileRule::Pcr7WithoutSeparator,
        });
    }
    x.s
}

impl Extract<'_> {
    fn finding(&mut self, e: &Event, rule: ProfileRule) {
        self.s.findings.push(ProfileFinding {
            pcr: e.pcr,
            event_index: Some(e.index),
            event_type: Some(e.event_type),
            digest: e.digest(self.s.bank).copied(),
            rule,
        });
    }

    /// The event's data is what its digests say was measured: the bank read vouches for it,
    /// and no other known bank contradicts it.
    fn data_bound(&self, e: &Event) -> bool {
        digest_is_hash_of(e, self.s.bank, &e.data) && data_verified(self.digest_findings, e.index)
    }

    fn event(&mut self, e: &Event) {
        if type_allowed_in_pcr(e.pcr, e.event_type) == Some(false) {
            self.finding(e, ProfileRule::TypeNotAllowedInPcr);
        }
        let bank = self.s.bank;
        if e.pcr <= 7 {
            let digest = e.digest(bank);
            let separator = digest.is_some_and(is_separator_digest);
            if separator {
                if e.event_type != EventType::EV_SEPARATOR {
                    self.finding(e, ProfileRule::SeparatorDigestUnderOtherType);
                }
                self.separator(e);
                return;
            }
            if e.event_type == EventType::EV_SEPARATOR {
                self.finding(e, ProfileRule::SeparatorTypeWithoutSeparatorDigest);
            }
        }
        match e.pcr {
            4 if pcr4_action(e, bank).is_none() => {
                self.s.boot_applications.push(MeasuredEvent::of(e));
            }
            7 => self.pcr7(e),
            8 | 9 | 12 => self.loader(e),
            _ => {}
        }
    }

    fn separator(&mut self, e: &Event) {
        let error_value = e
            .digest(self.s.bank)
            .is_some_and(|d| d.alg().hash(&[0xFF; 4]).as_ref() == Some(d));
        self.s.separators.push(Separator {
            event: MeasuredEvent::of(e),
            error_value,
        });
        if e.pcr == 7 {
            match self.pcr7_separator {
                Some(first) => self.finding(e, ProfileRule::Pcr7SecondSeparator { first }),
                None => self.pcr7_separator = Some(e.index),
            }
        }
    }

    /// PCR7: configuration, then one separator, then only authorities.
    fn pcr7(&mut self, e: &Event) {
        use EventType as T;
        let before = self.pcr7_separator.is_none();
        match e.event_type {
            T::EV_EFI_VARIABLE_DRIVER_CONFIG if before => self.configuration(e),
            T::EV_EFI_VARIABLE_AUTHORITY if !before => {
                let v = self.variable(e);
                self.s.authorities.push(v);
            }
            T::EV_EFI_ACTION if before => {
                let text = self.data_bound(e).then_some(e.data.as_slice());
                match text {
                    Some(t) if t == DMA_PROTECTION_DISABLED.as_bytes() => {
                        self.s.dma_protection_disabled = true;
                    }
                    Some(t) if t == UEFI_DEBUG_MODE.as_bytes() => {
                        self.finding(e, ProfileRule::Pcr7DebugMode);
                    }
                    _ => self.finding(e, ProfileRule::Pcr7UnexpectedAction),
                }
            }
            T::EV_EFI_SPDM_DEVICE_POLICY if before => {}
            T::EV_EFI_SPDM_DEVICE_AUTHORITY if !before => {}
            T::EV_EFI_VARIABLE_DRIVER_CONFIG | T::EV_EFI_ACTION | T::EV_EFI_SPDM_DEVICE_POLICY => {
                self.finding(e, ProfileRule::Pcr7NotAllowedAfterSeparator);
            }
            T::EV_EFI_VARIABLE_AUTHORITY | T::EV_EFI_SPDM_DEVICE_AUTHORITY => {
                self.finding(e, ProfileRule::Pcr7NotAllowedBeforeSeparator);
            }
            // Any other type already has its TypeNotAllowedInPcr finding.
            _ => {}
        }
    }

    fn variable(&self, e: &Event) -> VariableEvent {
        let verified = self.data_bound(e);
        match parse_variable(&e.data) {
            Some(v) => VariableEvent {
                event: MeasuredEvent::of(e),
                guid: v.guid,
                name: v.name,
                data: v.data.to_vec(),
                data_verified: verified,
            },
            None => VariableEvent {
                event: MeasuredEvent::of(e),
                guid: super::uefi::Guid([0; 16]),
                name: String::new(),
                data: e.data.clone(),
                data_verified: false,
            },
        }
    }

    fn configuration(&mut self, e: &Event) {
        let v = self.variable(e);
        if !v.data_verified {
            self.finding(e, ProfileRule::Pcr7UnverifiedConfiguration);
            return;
        }
        let (guid, name) = (v.guid, v.name.clone());
        let Some(slot) = self.s.config_slot(&guid, &name) else {
            return;
        };
        match slot {
            Some(first) => {
                let first = first.event.event_index;
                self.finding(e, ProfileRule::Pcr7DuplicateVariable { name, first });
            }
            None => *slot = Some(v),
        }
    }

    /// PCR8, 9, 12: keep every measurement with its claim.
    fn loader(&mut self, e: &Event) {
        let bank = self.s.bank;
        let verified = |text: &str| {
            string_encodings(text)
                .iter()
                .any(|form| digest_is_hash_of(e, bank, form))
        };
        let (claim, verified_string) = match e.event_type {
            EventType::EV_EVENT_TAG => (self.tagged(e), None),
            EventType::EV_IPL => match grub_string(&e.data) {
                Some((claim, text)) => {
                    let ok = verified(&text);
                    self.grub_hint(e, claim, &text, ok);
                    (claim, ok.then_some(text))
                }
                None if e.pcr == 9 => (self.grub_file(e), None),
                None if looks_utf16(&e.data) => {
                    let text = utf16_text(&e.data);
                    let ok = verified(&text);
                    self.s.kernel_cmdlines.push(KernelCmdline {
                        event: MeasuredEvent::of(e),
                        source: CmdlineSource::SystemdBoot,
                        text: Some(text.clone()),
                        text_verified: ok,
                    });
                    (LoaderClaim::KernelCmdline, ok.then_some(text))
                }
                None => (LoaderClaim::Other, None),
            },
            _ => (LoaderClaim::Other, None),
        };
        self.s.loader_events.push(LoaderEvent {
            event: MeasuredEvent::of(e),
            claim,
            verified_string,
        });
    }

    /// A tagged event: the Linux EFI stub's command line or initrd (PCR9; systemd-stub also
    /// tags its command line in PCR12). Any other id in PCR9 is a finding.
    fn tagged(&mut self, e: &Event) -> LoaderClaim {
        match le_u32(&e.data, 0) {
            Some(LINUX_LOAD_OPTIONS_TAG) => {
                self.s.kernel_cmdlines.push(KernelCmdline {
                    event: MeasuredEvent::of(e),
                    source: CmdlineSource::EfiStub,
                    text: None,
                    text_verified: false,
                });
                LoaderClaim::KernelCmdline
            }
            Some(LINUX_INITRD_TAG) if e.pcr == 9 => {
                self.s.initrds.push(Initrd {
                    event: MeasuredEvent::of(e),
                    source: InitrdSource::EfiStub,
                    path: None,
                });
                LoaderClaim::Initrd
            }
            tag => {
                if e.pcr == 9 {
                    self.finding(e, ProfileRule::UnknownEventTag { tag });
                }
                LoaderClaim::Other
            }
        }
    }

    fn grub_hint(&mut self, e: &Event, claim: LoaderClaim, text: &str, verified: bool) {
        match claim {
            LoaderClaim::KernelCmdline => self.s.kernel_cmdlines.push(KernelCmdline {
                event: MeasuredEvent::of(e),
                source: CmdlineSource::Grub,
                text: Some(text.to_string()),
                text_verified: verified,
            }),
            _ => {
                let mut words = text.split_whitespace();
                if let Some("initrd" | "initrdefi" | "initrd16") = words.next() {
                    self.initrd_paths = words.map(str::to_string).collect();
                }
                self.s.grub_commands.push(GrubCommand {
                    event_index: e.index,
                    text: text.to_string(),
                    verified,
                });
            }
        }
    }

    /// A GRUB PCR9 file event: an initrd when its path was named by the last `initrd`
    /// command (a hint).
    fn grub_file(&mut self, e: &Event) -> LoaderClaim {
        let t = c_text(&e.data);
        if t == "grub_linuxefi Initrd" || self.initrd_paths.contains(&t) {
            let path = (t != "grub_linuxefi Initrd").then_some(t);
            self.s.initrds.push(Initrd {
                event: MeasuredEvent::of(e),
                source: InitrdSource::Grub,
                path,
            });
            return LoaderClaim::Initrd;
        }
        LoaderClaim::Other
    }
}

/// GRUB's string after its prefix (trailing NUL dropped), and what the prefix claims.
fn grub_string(data: &[u8]) -> Option<(LoaderClaim, String)> {
    GRUB_STRINGS.iter().find_map(|(prefix, claim)| {
        let rest = data.strip_prefix(prefix.as_bytes())?;
        let rest = rest.strip_suffix(&[0]).unwrap_or(rest);
        Some((*claim, String::from_utf8_lossy(rest).into_owned()))
    })
}

fn c_text(data: &[u8]) -> String {
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
