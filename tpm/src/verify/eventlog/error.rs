//! Parse errors. Every error names the event index, the field and its byte offset so that an
//! operator (or a fuzzer) can find the bad bytes.

use std::fmt;

use super::alg::HashAlg;
use super::event_type::EventType;

/// A field of TCG_PCR_EVENT, TCG_PCR_EVENT2 or TCG_EfiSpecIDEventStruct, named as in the
/// PC Client Platform Firmware Profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// `pcrIndex`.
    PcrIndex,
    /// `eventType`.
    EventType,
    /// `digest` (SHA-1 in TCG_PCR_EVENT) or one digest of `digests`.
    Digest,
    /// `digests.count`.
    DigestCount,
    /// `digests[].hashAlg`.
    DigestAlgorithm,
    /// `eventSize` / `eventDataSize`.
    EventSize,
    /// `event` (the event data).
    EventData,
    /// Spec ID `numberOfAlgorithms`.
    NumberOfAlgorithms,
    /// Spec ID `digestSizes[]`.
    DigestSizes,
    /// Spec ID `vendorInfoSize` / `vendorInfo`.
    VendorInfo,
    /// Spec ID fixed header (signature, platformClass, version, uintnSize).
    SpecIdHeader,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::PcrIndex => "pcrIndex",
            Self::EventType => "eventType",
            Self::Digest => "digest",
            Self::DigestCount => "digests.count",
            Self::DigestAlgorithm => "digests.hashAlg",
            Self::EventSize => "eventSize",
            Self::EventData => "event",
            Self::NumberOfAlgorithms => "numberOfAlgorithms",
            Self::DigestSizes => "digestSizes",
            Self::VendorInfo => "vendorInfo",
            Self::SpecIdHeader => "Spec ID header",
        })
    }
}

/// What is wrong with a Spec ID Event03.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecIdProblem {
    /// `numberOfAlgorithms` is 0.
    #[error("declares no algorithms")]
    NoAlgorithms,
    /// `numberOfAlgorithms` is over the limit.
    #[error("declares {count} algorithms, over the limit of {limit}")]
    TooManyAlgorithms {
        /// Declared count.
        count: u32,
        /// The limit.
        limit: u32,
    },
    /// A known algorithm declared with another size than its own.
    #[error("declares {alg} with digest size {declared} (must be {expected})")]
    WrongDigestSize {
        /// The algorithm.
        alg: HashAlg,
        /// Declared size.
        declared: u16,
        /// Real size.
        expected: usize,
    },
    /// An unknown algorithm with size 0 or over [`super::alg::MAX_DIGEST_SIZE`].
    #[error("declares {alg} with unsupported digest size {declared}")]
    BadDigestSize {
        /// The algorithm.
        alg: HashAlg,
        /// Declared size.
        declared: u16,
    },
    /// The same algorithm twice.
    #[error("declares {alg} twice")]
    DuplicateAlgorithm {
        /// The algorithm.
        alg: HashAlg,
    },
}

/// Why an event log could not be parsed. A hostile or damaged log gives one of these, never a
/// panic; `index` is the 0-based event index and `offset` the byte offset in the log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EventLogError {
    /// Zero bytes.
    #[error("the event log is empty")]
    Empty,
    /// The whole log is over [`super::Limits::max_log_size`].
    #[error("the event log is {size} bytes, over the limit of {limit}")]
    LogTooLarge {
        /// Log size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A field runs past the end of the log.
    #[error(
        "event {index}: {field}: truncated: need {need} bytes at offset {offset}, have {have}"
    )]
    Truncated {
        /// Event index.
        index: usize,
        /// The field being read.
        field: Field,
        /// Where the field starts.
        offset: usize,
        /// Bytes the field needs.
        need: u64,
        /// Bytes left in the log.
        have: usize,
    },
    /// A length field is over its limit.
    #[error("event {index}: {field} at offset {offset} is {value}, over the limit of {limit}")]
    LimitExceeded {
        /// Event index.
        index: usize,
        /// The length field.
        field: Field,
        /// Where the field is.
        offset: usize,
        /// Its value.
        value: u64,
        /// The limit.
        limit: u64,
    },
    /// More events than [`super::Limits::max_events`].
    #[error("event {index} at offset {offset}: more than {limit} events")]
    TooManyEvents {
        /// Index of the first event over the limit.
        index: usize,
        /// Its offset.
        offset: usize,
        /// The limit.
        limit: usize,
    },
    /// `digests.count` differs from the number of banks in the Spec ID event.
    #[error(
        "event {index}: digests.count at offset {offset} is {count}, but the Spec ID event declares {expected} banks"
    )]
    DigestCount {
        /// Event index.
        index: usize,
        /// Offset of `digests.count`.
        offset: usize,
        /// Its value.
        count: u32,
        /// Banks declared.
        expected: usize,
    },
    /// A digest for an algorithm the Spec ID event does not declare.
    #[error(
        "event {index}: digests.hashAlg at offset {offset} is {alg} ({id:#06x}), not declared in the Spec ID event",
        id = alg.id()
    )]
    UndeclaredAlgorithm {
        /// Event index.
        index: usize,
        /// Offset of `hashAlg`.
        offset: usize,
        /// The algorithm.
        alg: HashAlg,
    },
    /// Two digests for one algorithm in one event.
    #[error("event {index}: digests.hashAlg at offset {offset}: {alg} appears twice")]
    DuplicateAlgorithm {
        /// Event index.
        index: usize,
        /// Offset of the second `hashAlg`.
        offset: usize,
        /// The algorithm.
        alg: HashAlg,
    },
    /// The Spec ID event is not in PCR 0 (the Intel TDX CCEL log puts it in MR index 1).
    #[error("Spec ID Event03 event has PCRIndex {pcr} (must be 0)")]
    SpecIdPcrIndex {
        /// Offset of the event.
        offset: usize,
        /// Its `pcrIndex`.
        pcr: u32,
    },
    /// A malformed Spec ID event.
    #[error("Spec ID Event03: {field} at offset {offset} {problem}")]
    SpecId {
        /// The field.
        field: Field,
        /// Its offset.
        offset: usize,
        /// What is wrong.
        problem: SpecIdProblem,
    },
    /// An event (other than EV_NO_ACTION) for a PCR a TPM does not have.
    #[error("event {index}: {event_type} at offset {offset} has pcrIndex {pcr} (must be 0-23)")]
    PcrIndexOutOfRange {
        /// Event index.
        index: usize,
        /// Offset of the event.
        offset: usize,
        /// Its type.
        event_type: EventType,
        /// Its `pcrIndex`.
        pcr: u32,
    },
}
