//! `eventlog show`'s report: what the log says, event by event, and what it replays to.
//! Its JSON form is a stable schema (`ironroot.eventlog.v1`, documented in
//! docs/attestation.md "Operator tools"); fields are only ever added to it.

use ironroot_tpm::verify::eventlog::{DigestFinding, Event, EventLog, EventType};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::decode::{decode, EventData};

/// The `schema` value of the JSON report.
pub(crate) const EVENTLOG_SCHEMA: &str = "ironroot.eventlog.v1";

/// A JSON object whose keys keep the order given (PCR indices in numeric order, banks in
/// the log's order), where a `BTreeMap` would sort "10" before "2".
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ordered<V>(pub Vec<(String, V)>);

impl<V: Serialize> Serialize for Ordered<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Whether an event's logged digests are the hash of its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DigestCheck {
    /// Every digest (of a bank this parser computes) is the hash of the whole event data.
    MatchesData,
    /// The log's digest findings name this event: its digest is not the hash of what the
    /// profile says it measures, so its data cannot be relied on.
    Mismatch,
    /// The digest is of something else, as the profile allows for this type: content the
    /// log does not carry (code, files, tables) or a form derived from the data (GRUB's
    /// string without its prefix, the Linux EFI stub's command line or initrd).
    NotOfData,
    /// EV_NO_ACTION: never extended into a PCR.
    NotExtended,
}

/// One event.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EventReport {
    /// 0-based index (the Spec ID event is 0).
    pub(crate) index: usize,
    /// Byte offset in the log.
    pub(crate) offset: usize,
    /// pcrIndex.
    pub(crate) pcr: u32,
    /// The profile's name, or `EV_UNKNOWN(0x........)`.
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    /// The raw eventType.
    pub(crate) type_value: u32,
    /// Bank -> lowercase hex, in the log's order.
    pub(crate) digests: Ordered<String>,
    /// Bytes of event data.
    pub(crate) data_size: usize,
    /// The event data, lowercase hex.
    pub(crate) data_hex: String,
    /// Decoded data where the profile defines it; `null` otherwise.
    pub(crate) data: Option<EventData>,
    /// Whether the digests are the hash of the data.
    pub(crate) digest_check: DigestCheck,
}

/// One digest finding of the log (an event whose digest is not the hash of its data).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct FindingReport {
    pub(crate) event_index: usize,
    pub(crate) pcr: u32,
    #[serde(rename = "type")]
    pub(crate) event_type: String,
    pub(crate) bank: String,
    /// What the digest was compared with.
    pub(crate) checked_against: String,
    /// The digest in the log (the one replayed).
    pub(crate) logged: String,
    /// The hash of the data.
    pub(crate) expected: String,
    /// One line for an operator.
    pub(crate) message: String,
}

/// The whole report.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct EventLogReport {
    /// [`EVENTLOG_SCHEMA`].
    pub(crate) schema: &'static str,
    /// `crypto-agile` or `sha1-legacy`.
    pub(crate) format: String,
    /// The banks the log carries, in its order.
    pub(crate) banks: Vec<String>,
    /// The locality PCR0 starts from (StartupLocality, or 4 for an H-CRTM log).
    pub(crate) startup_locality: u8,
    /// Fill bytes after the last event.
    pub(crate) trailing_padding: usize,
    pub(crate) events: Vec<EventReport>,
    pub(crate) digest_findings: Vec<FindingReport>,
    /// Bank -> every departure from the TCG PC Client profile, judged on that bank's
    /// digests (what a policy in that bank sees; `BootState::findings`).
    pub(crate) profile_findings: Ordered<Vec<ProfileFindingReport>>,
    /// Bank -> PCR index (decimal string) -> lowercase hex, for every PCR an event extends.
    pub(crate) replay: Ordered<Ordered<String>>,
}

/// One departure from the profile.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProfileFindingReport {
    pub(crate) pcr: u32,
    pub(crate) event_index: Option<usize>,
    #[serde(rename = "type")]
    pub(crate) event_type: Option<String>,
    /// The whole finding as one line.
    pub(crate) message: String,
}

impl EventLogReport {
    /// The report of a parsed log.
    pub(crate) fn of(log: &EventLog) -> Self {
        let findings = log.digest_findings();
        let replay = log
            .replay()
            .banks()
            .iter()
            .map(|b| {
                let pcrs = b.iter().map(|(i, d)| (i.to_string(), d.to_hex())).collect();
                (b.alg().to_string(), Ordered(pcrs))
            })
            .collect();
        Self {
            schema: EVENTLOG_SCHEMA,
            format: log.format().to_string(),
            banks: log.banks().iter().map(|b| b.alg.to_string()).collect(),
            startup_locality: log.startup_locality(),
            trailing_padding: log.trailing_padding(),
            events: log
                .events()
                .iter()
                .map(|ev| event(log, ev, findings))
                .collect(),
            digest_findings: findings.iter().map(finding).collect(),
            profile_findings: Ordered(
                log.banks()
                    .iter()
                    .filter(|b| b.alg.is_known())
                    .map(|b| {
                        let state = log.boot_state(b.alg);
                        let list = state
                            .findings
                            .iter()
                            .map(|f| ProfileFindingReport {
                                pcr: f.pcr,
                                event_index: f.event_index,
                                event_type: f.event_type.map(|t| t.to_string()),
                                message: f.to_string(),
                            })
                            .collect();
                        (b.alg.to_string(), list)
                    })
                    .collect(),
            ),
            replay: Ordered(replay),
        }
    }
}

fn event(log: &EventLog, ev: &Event, findings: &[DigestFinding]) -> EventReport {
    EventReport {
        index: ev.index,
        offset: ev.offset,
        pcr: ev.pcr,
        event_type: ev.event_type.to_string(),
        type_value: ev.event_type.as_u32(),
        digests: Ordered(
            ev.digests
                .iter()
                .map(|d| (d.alg().to_string(), d.to_hex()))
                .collect(),
        ),
        data_size: ev.data.len(),
        data_hex: hex::encode(&ev.data),
        data: decode(log, ev),
        digest_check: digest_check(ev, findings),
    }
}

/// The log's findings decide a mismatch; a plain hash comparison tells the two other cases
/// apart (it never overrides a finding).
fn digest_check(ev: &Event, findings: &[DigestFinding]) -> DigestCheck {
    if ev.event_type == EventType::EV_NO_ACTION {
        return DigestCheck::NotExtended;
    }
    if findings.iter().any(|f| f.event_index == ev.index) {
        return DigestCheck::Mismatch;
    }
    let mut known = ev.digests.iter().filter(|d| d.alg().is_known()).peekable();
    let any = known.peek().is_some();
    if any && known.all(|d| d.alg().hash(&ev.data).is_some_and(|h| h == *d)) {
        DigestCheck::MatchesData
    } else {
        DigestCheck::NotOfData
    }
}

fn finding(f: &DigestFinding) -> FindingReport {
    FindingReport {
        event_index: f.event_index,
        pcr: f.pcr,
        event_type: f.event_type.to_string(),
        bank: f.found.alg().to_string(),
        checked_against: f.checked_against.to_string(),
        logged: f.found.to_hex(),
        expected: f.expected.to_hex(),
        message: f.to_string(),
    }
}
