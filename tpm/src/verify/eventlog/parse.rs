//! The byte-level parser: TCG_PCR_EVENT (SHA-1 format) and TCG_PCR_EVENT2 (crypto agile)
//! after a Spec ID Event03, with limits on every length.

use super::alg::{Digest, HashAlg, MAX_DIGEST_SIZE};
use super::error::{EventLogError, Field, SpecIdProblem};
use super::event_type::EventType;
use super::reader::Reader;
use super::{Bank, Event, LogFormat, SpecId};

/// Signature of the crypto-agile Spec ID event (TCG_EfiSpecIDEventStruct).
const SPEC_ID_EVENT03: &[u8; 16] = b"Spec ID Event03\0";
/// Size of a TCG_PCR_EVENT header before the event data.
const LEGACY_HEADER: usize = 32;
/// Highest PCR index a TPM has (PCR0-23).
pub(crate) const MAX_PCR: u32 = 23;

/// Hard limits applied while parsing. The defaults fit every real firmware log seen (the
/// largest fixtures are ~70 KiB and ~200 events; a TDX CCEL area is 256 KiB) with a wide
/// margin, and bound what one hostile log can make the parser hold to about twice its
/// size plus ~0.5 KiB per event (under 10 MiB with the defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest log accepted, in bytes.
    pub max_log_size: usize,
    /// Most events accepted (the Spec ID event counts).
    pub max_events: usize,
    /// Largest `eventSize` accepted.
    pub max_event_data: u32,
    /// Most algorithms a Spec ID event may declare.
    pub max_algorithms: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_log_size: 4 << 20,
            max_events: 10_000,
            max_event_data: 1 << 20,
            max_algorithms: 8,
        }
    }
}

/// How to parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Length limits.
    pub limits: Limits,
    /// Accept an Intel TDX CCEL log, whose `pcrIndex` fields are TDX MR indexes (the Spec ID
    /// event has index 1). A TPM PC Client log must have the Spec ID event in PCR 0, so this
    /// is off by default.
    pub ccel: bool,
}

pub(crate) struct Parsed {
    pub(crate) format: LogFormat,
    pub(crate) spec_id: Option<SpecId>,
    pub(crate) banks: Vec<Bank>,
    pub(crate) events: Vec<Event>,
    pub(crate) trailing_padding: usize,
}

pub(crate) fn parse(bytes: &[u8], opts: &ParseOptions) -> Result<Parsed, EventLogError> {
    let limits = &opts.limits;
    if bytes.is_empty() {
        return Err(EventLogError::Empty);
    }
    if bytes.len() > limits.max_log_size {
        return Err(EventLogError::LogTooLarge {
            size: bytes.len(),
            limit: limits.max_log_size,
        });
    }
    let mut r = Reader::new(bytes);

    // The first event is always in the SHA-1 TCG_PCR_EVENT format; it announces a
    // crypto-agile log only if it is EV_NO_ACTION carrying "Spec ID Event03" (a first
    // EV_NO_ACTION with another signature, e.g. StartupLocality, is an ordinary event).
    let first = legacy_event(&mut r, limits)?;
    let is_spec_id =
        first.event_type == EventType::EV_NO_ACTION && first.data.starts_with(SPEC_ID_EVENT03);
    let (format, spec_id, banks) = if is_spec_id {
        if first.pcr != 0 && !opts.ccel {
            return Err(EventLogError::SpecIdPcrIndex {
                offset: first.offset,
                pcr: first.pcr,
            });
        }
        let spec = spec_id(&first.data, first.offset + LEGACY_HEADER, limits)?;
        let banks = spec.algorithms.clone();
        (LogFormat::CryptoAgile, Some(spec), banks)
    } else {
        let sha1 = Bank {
            alg: HashAlg::Sha1,
            digest_size: 20,
        };
        (LogFormat::Sha1Legacy, None, vec![sha1])
    };
    let mut events = vec![first];

    let mut trailing_padding = 0;
    while r.remaining() > 0 {
        // Fixed-size log areas (ACPI TPM2 LAML, TDX CCEL) are filled with 0xFF or 0x00 after
        // the last event. A tail that is all one fill byte is padding, as the Linux kernel
        // treats a zero event as the end: it could at most be a cut-off event, which extends
        // nothing a quote would not then contradict.
        let rest = r.rest();
        if rest.iter().all(|b| *b == 0xFF) || rest.iter().all(|b| *b == 0) {
            trailing_padding = rest.len();
            break;
        }
        let index = events.len();
        if index >= limits.max_events {
            return Err(EventLogError::TooManyEvents {
                index,
                offset: r.pos(),
                limit: limits.max_events,
            });
        }
        r.index = index;
        let ev = match format {
            LogFormat::Sha1Legacy => legacy_event(&mut r, limits)?,
            LogFormat::CryptoAgile => agile_event(&mut r, &banks, limits)?,
        };
        events.push(ev);
    }
    Ok(Parsed {
        format,
        spec_id,
        banks,
        events,
        trailing_padding,
    })
}

/// Reads `eventSize` and the event data: the data must be in the log (checked first, so a
/// wild size is reported as running past the end) and under the limit.
fn event_data(r: &mut Reader<'_>, limits: &Limits) -> Result<Vec<u8>, EventLogError> {
    let size_offset = r.pos();
    let size = r.u32(Field::EventSize)?;
    let data = r.take(u64::from(size), Field::EventData)?;
    if size > limits.max_event_data {
        return Err(EventLogError::LimitExceeded {
            index: r.index,
            field: Field::EventSize,
            offset: size_offset,
            value: u64::from(size),
            limit: u64::from(limits.max_event_data),
        });
    }
    Ok(data.to_vec())
}

fn check_pcr(ev: &Event) -> Result<(), EventLogError> {
    // EV_NO_ACTION is never extended, so any index is harmless (Windows logs use 0xFFFFFFFF).
    if ev.event_type != EventType::EV_NO_ACTION && ev.pcr > MAX_PCR {
        return Err(EventLogError::PcrIndexOutOfRange {
            index: ev.index,
            offset: ev.offset,
            event_type: ev.event_type,
            pcr: ev.pcr,
        });
    }
    Ok(())
}

/// TCG_PCR_EVENT: pcrIndex, eventType, SHA-1 digest, eventDataSize, event.
fn legacy_event(r: &mut Reader<'_>, limits: &Limits) -> Result<Event, EventLogError> {
    let offset = r.pos();
    let pcr = r.u32(Field::PcrIndex)?;
    let event_type = EventType::from_u32(r.u32(Field::EventType)?);
    let digest_offset = r.pos();
    let raw = r.take(20, Field::Digest)?;
    let digest = Digest::new(HashAlg::Sha1, raw).ok_or(EventLogError::Truncated {
        index: r.index,
        field: Field::Digest,
        offset: digest_offset,
        need: 20,
        have: raw.len(),
    })?;
    let data = event_data(r, limits)?;
    let ev = Event {
        index: r.index,
        offset,
        pcr,
        event_type,
        digests: vec![digest],
        data,
    };
    check_pcr(&ev)?;
    Ok(ev)
}

/// TCG_PCR_EVENT2: pcrIndex, eventType, TPML_DIGEST_VALUES, eventSize, event. Every event
/// must carry exactly one digest per bank the Spec ID event declares.
fn agile_event(
    r: &mut Reader<'_>,
    banks: &[Bank],
    limits: &Limits,
) -> Result<Event, EventLogError> {
    let offset = r.pos();
    let pcr = r.u32(Field::PcrIndex)?;
    let event_type = EventType::from_u32(r.u32(Field::EventType)?);
    let count_offset = r.pos();
    let count = r.u32(Field::DigestCount)?;
    if usize::try_from(count).ok() != Some(banks.len()) {
        return Err(EventLogError::DigestCount {
            index: r.index,
            offset: count_offset,
            count,
            expected: banks.len(),
        });
    }
    let mut digests = Vec::with_capacity(banks.len());
    let mut seen = 0u64; // bit i: bank i already seen (banks.len() <= max_algorithms <= 64)
    for _ in 0..count {
        let alg_offset = r.pos();
        let alg = HashAlg::from_id(r.u16(Field::DigestAlgorithm)?);
        let Some((i, bank)) = banks.iter().enumerate().find(|(_, b)| b.alg == alg) else {
            return Err(EventLogError::UndeclaredAlgorithm {
                index: r.index,
                offset: alg_offset,
                alg,
            });
        };
        let bit = 1u64.checked_shl(i as u32).unwrap_or(0);
        if seen & bit != 0 {
            return Err(EventLogError::DuplicateAlgorithm {
                index: r.index,
                offset: alg_offset,
                alg,
            });
        }
        seen |= bit;
        let digest_offset = r.pos();
        let raw = r.take(u64::from(bank.digest_size), Field::Digest)?;
        // Sizes were validated with the Spec ID event, so this cannot fail; map it anyway.
        let digest = Digest::new(alg, raw).ok_or(EventLogError::LimitExceeded {
            index: r.index,
            field: Field::Digest,
            offset: digest_offset,
            value: raw.len() as u64,
            limit: MAX_DIGEST_SIZE as u64,
        })?;
        digests.push(digest);
    }
    let data = event_data(r, limits)?;
    let ev = Event {
        index: r.index,
        offset,
        pcr,
        event_type,
        digests,
        data,
    };
    check_pcr(&ev)?;
    Ok(ev)
}

/// TCG_EfiSpecIDEventStruct: signature[16], platformClass, specVersionMinor/Major,
/// specErrata, uintnSize, numberOfAlgorithms, digestSizes[], vendorInfoSize, vendorInfo.
/// `base` is the offset of `data` in the log, for errors.
fn spec_id(data: &[u8], base: usize, limits: &Limits) -> Result<SpecId, EventLogError> {
    let mut r = Reader::new(data);
    let err_at = |e: EventLogError| shift(e, base);
    let _signature = r.take(16, Field::SpecIdHeader).map_err(err_at)?;
    let platform_class = r.u32(Field::SpecIdHeader).map_err(err_at)?;
    let spec_version_minor = r.u8(Field::SpecIdHeader).map_err(err_at)?;
    let spec_version_major = r.u8(Field::SpecIdHeader).map_err(err_at)?;
    let spec_errata = r.u8(Field::SpecIdHeader).map_err(err_at)?;
    let uintn_size = r.u8(Field::SpecIdHeader).map_err(err_at)?;
    let count_offset = base + r.pos();
    let count = r.u32(Field::NumberOfAlgorithms).map_err(err_at)?;
    let problem = |field, offset, problem| EventLogError::SpecId {
        field,
        offset,
        problem,
    };
    if count == 0 {
        return Err(problem(
            Field::NumberOfAlgorithms,
            count_offset,
            SpecIdProblem::NoAlgorithms,
        ));
    }
    let limit = limits.max_algorithms.min(64);
    if count > limit {
        return Err(problem(
            Field::NumberOfAlgorithms,
            count_offset,
            SpecIdProblem::TooManyAlgorithms { count, limit },
        ));
    }
    let mut algorithms: Vec<Bank> = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let offset = base + r.pos();
        let alg = HashAlg::from_id(r.u16(Field::DigestSizes).map_err(err_at)?);
        let declared = r.u16(Field::DigestSizes).map_err(err_at)?;
        match alg.known_size() {
            Some(expected) if expected != usize::from(declared) => {
                return Err(problem(
                    Field::DigestSizes,
                    offset,
                    SpecIdProblem::WrongDigestSize {
                        alg,
                        declared,
                        expected,
                    },
                ));
            }
            None if declared == 0 || usize::from(declared) > MAX_DIGEST_SIZE => {
                return Err(problem(
                    Field::DigestSizes,
                    offset,
                    SpecIdProblem::BadDigestSize { alg, declared },
                ));
            }
            _ => {}
        }
        if algorithms.iter().any(|b| b.alg == alg) {
            return Err(problem(
                Field::DigestSizes,
                offset,
                SpecIdProblem::DuplicateAlgorithm { alg },
            ));
        }
        algorithms.push(Bank {
            alg,
            digest_size: declared,
        });
    }
    let vendor_size = r.u8(Field::VendorInfo).map_err(err_at)?;
    let vendor_info = r
        .take(u64::from(vendor_size), Field::VendorInfo)
        .map_err(err_at)?
        .to_vec();
    Ok(SpecId {
        platform_class,
        spec_version_major,
        spec_version_minor,
        spec_errata,
        uintn_size,
        algorithms,
        vendor_info,
    })
}

/// Moves an error's offset from the Spec ID data to the log.
fn shift(e: EventLogError, base: usize) -> EventLogError {
    match e {
        EventLogError::Truncated {
            index,
            field,
            offset,
            need,
            have,
        } => EventLogError::Truncated {
            index,
            field,
            offset: offset + base,
            need,
            have,
        },
        other => other,
    }
}
