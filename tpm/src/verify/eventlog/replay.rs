//! PCR replay: extend each bank's PCRs with the logged digests, in log order.
//!
//! EV_NO_ACTION is never extended. PCR0 starts at 00..0L when a StartupLocality event says
//! the TPM was started from locality L, and at 00..04 when the log has an
//! EV_EFI_HCRTM_EVENT (TPM 2.0 Library Part 1, H-CRTM sequence). PCR17-22 reset to all
//! 0xFF, every other PCR to zero.

use super::alg::{Digest, HashAlg};
use super::event_type::EventType;
use super::parse::MAX_PCR;
use super::{Bank, Event};

/// Number of PCRs of a PC Client TPM.
pub const PCR_COUNT: usize = 24;

/// Signature of TCG_EfiStartupLocalityEvent.
const STARTUP_LOCALITY: &[u8; 16] = b"StartupLocality\0";

/// Replayed values of one bank.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBank {
    alg: HashAlg,
    size: usize,
    pcr0_seed: u8,
    values: [Option<Digest>; PCR_COUNT],
}

impl PcrBank {
    /// The bank's algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The replayed value of a PCR that at least one event extends.
    pub fn get(&self, pcr: u32) -> Option<&Digest> {
        self.values.get(usize::try_from(pcr).ok()?)?.as_ref()
    }

    /// The value the TPM should hold for `pcr` after this log: the replayed value, or the
    /// PCR's start value if no event extends it. `None` for an index over 23.
    pub fn expected(&self, pcr: u32) -> Option<Digest> {
        if pcr > MAX_PCR {
            return None;
        }
        Some(self.get(pcr).copied().unwrap_or_else(|| self.start(pcr)))
    }

    /// (PCR index, value) for every PCR the log extends, in index order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Digest)> + '_ {
        self.values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|d| (i as u32, d)))
    }

    fn start(&self, pcr: u32) -> Digest {
        match pcr {
            0 => Digest::seed(self.alg, self.size, self.pcr0_seed),
            17..=22 => Digest::ones(self.alg, self.size),
            _ => Digest::seed(self.alg, self.size, 0),
        }
    }
}

/// Replayed PCR values, bank -> PCR index -> digest. Only banks whose algorithm this crate
/// computes are replayed; an unknown algorithm's digests are carried in the events only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcrBanks {
    banks: Vec<PcrBank>,
}

impl PcrBanks {
    /// The replayed banks, in Spec ID order.
    pub fn banks(&self) -> &[PcrBank] {
        &self.banks
    }

    /// One bank.
    pub fn bank(&self, alg: HashAlg) -> Option<&PcrBank> {
        self.banks.iter().find(|b| b.alg == alg)
    }

    /// The replayed value of a PCR that at least one event extends.
    pub fn get(&self, alg: HashAlg, pcr: u32) -> Option<&Digest> {
        self.bank(alg)?.get(pcr)
    }

    /// The value the TPM should hold (see [`PcrBank::expected`]).
    pub fn expected(&self, alg: HashAlg, pcr: u32) -> Option<Digest> {
        self.bank(alg)?.expected(pcr)
    }
}

/// Locality that PCR0 starts from, per the log (0 when it says nothing).
pub(crate) fn pcr0_seed(events: &[Event]) -> u8 {
    let hcrtm = events
        .iter()
        .any(|e| e.event_type == EventType::EV_EFI_HCRTM_EVENT && e.pcr == 0);
    if hcrtm {
        return 4;
    }
    events.iter().find_map(startup_locality).unwrap_or(0)
}

/// The locality of a TCG_EfiStartupLocalityEvent (EV_NO_ACTION in PCR0).
pub(crate) fn startup_locality(e: &Event) -> Option<u8> {
    if e.event_type != EventType::EV_NO_ACTION || e.pcr != 0 {
        return None;
    }
    let rest = e.data.strip_prefix(STARTUP_LOCALITY.as_slice())?;
    rest.first().copied()
}

pub(crate) fn replay(banks: &[Bank], events: &[Event]) -> PcrBanks {
    let seed = pcr0_seed(events);
    let mut out = Vec::with_capacity(banks.len());
    for (bank_index, b) in banks.iter().enumerate() {
        let Some(size) = b.alg.known_size() else {
            continue;
        };
        let mut bank = PcrBank {
            alg: b.alg,
            size,
            pcr0_seed: seed,
            values: [None; PCR_COUNT],
        };
        for ev in events {
            if ev.event_type == EventType::EV_NO_ACTION {
                continue;
            }
            // Digests are usually in Spec ID order; fall back to a search otherwise.
            let digest = match ev.digests.get(bank_index) {
                Some(d) if d.alg() == b.alg => Some(d),
                _ => ev.digests.iter().find(|d| d.alg() == b.alg),
            };
            let (Some(digest), Ok(i)) = (digest, usize::try_from(ev.pcr)) else {
                continue;
            };
            let start = bank.start(ev.pcr);
            let Some(slot) = bank.values.get_mut(i) else {
                continue;
            };
            let current = slot.unwrap_or(start);
            *slot = current.extend(digest);
        }
        out.push(bank);
    }
    PcrBanks { banks: out }
}
