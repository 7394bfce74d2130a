//! Writes TCG event logs: for tests, benchmarks and fuzz seeds here and in other crates.

use super::alg::{Digest, HashAlg};
use super::event_type::EventType;
use super::uefi::{encode_variable, Guid};
use super::{Event, LogFormat};

/// Builds a crypto-agile or SHA-1 format log. Digests are computed from what the caller
/// says was measured, so a built log replays and checks like real firmware output.
#[derive(Clone, Debug)]
pub struct LogBuilder {
    banks: Vec<(HashAlg, u16)>,
    legacy: bool,
    out: Vec<u8>,
    events: usize,
}

impl LogBuilder {
    /// A crypto-agile log (Spec ID Event03) with these banks.
    pub fn crypto_agile(banks: &[HashAlg]) -> Self {
        let sized: Vec<(HashAlg, u16)> = banks
            .iter()
            .map(|a| (*a, a.known_size().unwrap_or(32) as u16))
            .collect();
        Self::crypto_agile_sized(&sized, &[])
    }

    /// A crypto-agile log with explicit digest sizes (for unknown algorithms) and vendor
    /// info in the Spec ID event.
    pub fn crypto_agile_sized(banks: &[(HashAlg, u16)], vendor_info: &[u8]) -> Self {
        let mut spec = Vec::new();
        spec.extend_from_slice(b"Spec ID Event03\0");
        spec.extend_from_slice(&0u32.to_le_bytes()); // platformClass
        spec.extend_from_slice(&[0, 2, 0, 2]); // minor, major, errata, uintnSize
        spec.extend_from_slice(&(banks.len() as u32).to_le_bytes());
        for (alg, size) in banks {
            spec.extend_from_slice(&alg.id().to_le_bytes());
            spec.extend_from_slice(&size.to_le_bytes());
        }
        spec.push(vendor_info.len() as u8);
        spec.extend_from_slice(vendor_info);
        let mut b = Self {
            banks: banks.to_vec(),
            legacy: false,
            out: Vec::new(),
            events: 0,
        };
        b.push_legacy(0, EventType::EV_NO_ACTION, &[0; 20], &spec);
        b
    }

    /// A SHA-1 format (TCG_PCR_EVENT) log.
    pub fn sha1_legacy() -> Self {
        Self {
            banks: vec![(HashAlg::Sha1, 20)],
            legacy: true,
            out: Vec::new(),
            events: 0,
        }
    }

    fn push_legacy(&mut self, pcr: u32, t: EventType, sha1: &[u8], data: &[u8]) {
        self.events += 1;
        self.out.extend_from_slice(&pcr.to_le_bytes());
        self.out.extend_from_slice(&t.as_u32().to_le_bytes());
        self.out.extend_from_slice(sha1);
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
    }

    /// The bytes of a log of `format` with exactly `events` (as parsed, the Spec ID event of
    /// a crypto-agile log first: it is written anew from `banks`). For editing a parsed log
    /// in tests, benchmarks and fuzzing: change an event's type, data or digests, then
    /// rebuild.
    pub fn from_events(format: LogFormat, banks: &[HashAlg], events: &[Event]) -> Vec<u8> {
        let (mut b, skip) = match format {
            LogFormat::CryptoAgile => (Self::crypto_agile(banks), 1),
            LogFormat::Sha1Legacy => (Self::sha1_legacy(), 0),
        };
        for e in events.iter().skip(skip) {
            let d: Vec<&[u8]> = e.digests.iter().map(Digest::as_bytes).collect();
            b.raw_event(e.pcr, e.event_type, &d, &e.data);
        }
        b.build()
    }

    /// An event whose digests are given (one per bank, in bank order; missing ones are
    /// zero). Use it to log a digest that does not match the data.
    pub fn raw_event(
        &mut self,
        pcr: u32,
        t: EventType,
        digests: &[&[u8]],
        data: &[u8],
    ) -> &mut Self {
        if self.legacy {
            let d = digests.first().copied().unwrap_or(&[0; 20]);
            self.push_legacy(pcr, t, d, data);
            return self;
        }
        self.events += 1;
        self.out.extend_from_slice(&pcr.to_le_bytes());
        self.out.extend_from_slice(&t.as_u32().to_le_bytes());
        self.out
            .extend_from_slice(&(self.banks.len() as u32).to_le_bytes());
        for (i, (alg, size)) in self.banks.iter().enumerate() {
            self.out.extend_from_slice(&alg.id().to_le_bytes());
            let zero = vec![0u8; usize::from(*size)];
            let d = digests.get(i).copied().unwrap_or(&zero);
            self.out.extend_from_slice(d);
        }
        self.out
            .extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.out.extend_from_slice(data);
        self
    }

    /// An event that measured `measured` and logs `data`.
    pub fn measure(&mut self, pcr: u32, t: EventType, measured: &[u8], data: &[u8]) -> &mut Self {
        let digests: Vec<Vec<u8>> = self
            .banks
            .iter()
            .map(|(alg, size)| match alg.hash(measured) {
                Some(d) => d.as_bytes().to_vec(),
                None => vec![0; usize::from(*size)],
            })
            .collect();
        let refs: Vec<&[u8]> = digests.iter().map(Vec::as_slice).collect();
        self.raw_event(pcr, t, &refs, data)
    }

    /// An event whose digest is the hash of its own data.
    pub fn event(&mut self, pcr: u32, t: EventType, data: &[u8]) -> &mut Self {
        self.measure(pcr, t, data, data)
    }

    /// An EV_NO_ACTION StartupLocality event (PCR0 starts at 00..0L).
    pub fn startup_locality(&mut self, locality: u8) -> &mut Self {
        let mut data = b"StartupLocality\0".to_vec();
        data.push(locality);
        let zeros: Vec<Vec<u8>> = self
            .banks
            .iter()
            .map(|(_, s)| vec![0; usize::from(*s)])
            .collect();
        let refs: Vec<&[u8]> = zeros.iter().map(Vec::as_slice).collect();
        self.raw_event(0, EventType::EV_NO_ACTION, &refs, &data)
    }

    /// A PCR7 EV_EFI_VARIABLE_DRIVER_CONFIG (or other variable event type).
    pub fn variable(
        &mut self,
        pcr: u32,
        t: EventType,
        guid: &Guid,
        name: &str,
        value: &[u8],
    ) -> &mut Self {
        let data = encode_variable(guid, name, value);
        self.event(pcr, t, &data)
    }

    /// The 00000000 separator in each of `pcrs`.
    pub fn separators(&mut self, pcrs: &[u32]) -> &mut Self {
        for p in pcrs {
            self.event(*p, EventType::EV_SEPARATOR, &[0; 4]);
        }
        self
    }

    /// A Linux EFI stub tagged event (PCR9): `tag` is 0x8F3B22ED (LoadOptions) or
    /// 0x8F3B22EC (initrd), `measured` what was hashed.
    pub fn linux_tag(&mut self, tag: u32, description: &str, measured: &[u8]) -> &mut Self {
        let mut data = tag.to_le_bytes().to_vec();
        data.extend_from_slice(&(description.len() as u32 + 1).to_le_bytes());
        data.extend_from_slice(description.as_bytes());
        data.push(0);
        self.measure(9, EventType::EV_EVENT_TAG, measured, &data)
    }

    /// Number of events so far (the Spec ID event counts).
    pub fn len(&self) -> usize {
        self.events
    }

    /// True before the first event (never for a crypto-agile log).
    pub fn is_empty(&self) -> bool {
        self.events == 0
    }

    /// The log bytes so far.
    pub fn build(&self) -> Vec<u8> {
        self.out.clone()
    }

    /// The banks.
    pub fn banks(&self) -> Vec<HashAlg> {
        self.banks.iter().map(|(a, _)| *a).collect()
    }
}

/// UTF-16LE with a terminating NUL, as the Linux EFI stub measures LoadOptions.
pub fn utf16_with_nul(s: &str) -> Vec<u8> {
    s.encode_utf16()
        .chain(std::iter::once(0))
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The digest a Linux EFI stub logs for a command line.
pub fn efi_stub_cmdline_digest(alg: HashAlg, cmdline: &str) -> Option<Digest> {
    alg.hash(&utf16_with_nul(cmdline))
}

/// The byte strings a boot loader may have hashed for the string `s`: GRUB hashes its
/// strings as bytes (with or without the NUL), the Linux EFI stub and systemd-boot as
/// UTF-16LE (with the NUL, or one character short in old systemd-boot).
pub fn string_encodings(s: &str) -> [Vec<u8>; 4] {
    let utf16 = utf16_with_nul(s);
    let utf16_short = utf16
        .get(..utf16.len().saturating_sub(2))
        .unwrap_or(&[])
        .to_vec();
    let mut with_nul = s.as_bytes().to_vec();
    with_nul.push(0);
    [s.as_bytes().to_vec(), with_nul, utf16, utf16_short]
}
