//! Checks an audit log: pure, no I/O (the caller reads the files), so it can be
//! fuzzed.
//!
//! What holds for a log that passes:
//! - every record names the hash of the one before it, and `seq` counts up by one
//!   from 0 (or from where an archived part ends, when allowed), across files;
//! - every checkpoint names the record right before it and its signature verifies
//!   against the pinned key (or, with no key pinned, against the one key every
//!   checkpoint of the log carries);
//! - the log reaches the head the writer last recorded, when that head is given.
//!
//! So editing, deleting, inserting or reordering any record breaks a link that the
//! report names (the first one), and so does cutting the log short of a known head.
//! A forger who rewrites the whole chain after a point still cannot make the
//! checkpoints after it verify without the HSM's key.

use base64::Engine;
use p256::ecdsa::signature::Verifier;
use p256::pkcs8::DecodePublicKey;

use crate::record::{checkpoint_message, Event, Record, RecordHash, GENESIS_PREV};

/// One file of a log, in the order the writer wrote them.
#[derive(Clone, Copy, Debug)]
pub struct LogFile<'a> {
    /// A name for messages (the path).
    pub name: &'a str,
    /// Its bytes.
    pub bytes: &'a [u8],
}

/// What the caller knows beyond the files.
#[derive(Clone, Debug, Default)]
pub struct VerifyOptions {
    /// The checkpoint key's public key (DER SubjectPublicKeyInfo) from a trusted
    /// place (the HSM, an operator's copy). Without it the checkpoints are checked
    /// against the key the log carries, which a forger could replace wholesale.
    pub public_key: Option<Vec<u8>>,
    /// The head the writer last recorded (`seq`, hash): the log must reach it.
    pub expected_head: Option<(u64, RecordHash)>,
    /// Accept a log whose first file starts after record 0 (older files archived).
    pub allow_pruned_start: bool,
}

/// What a log that passed holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Records checked.
    pub records: u64,
    /// The first and last `seq`.
    pub first_seq: u64,
    /// See `first_seq`.
    pub last_seq: u64,
    /// The last record's hash.
    pub head: RecordHash,
    /// Checkpoints found (all verified).
    pub checkpoints: u64,
    /// The `seq` of the last checkpoint, if any.
    pub last_checkpoint: Option<u64>,
    /// Records after the last checkpoint (not yet covered by a signature).
    pub unsealed: u64,
    /// Where the checkpoint key came from.
    pub key: KeySource,
}

/// Where the key the checkpoints were checked against came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeySource {
    /// The caller pinned it.
    Pinned,
    /// Taken from the log's own checkpoints (consistent, but not anchored).
    FromLog,
    /// The log has no checkpoint.
    NoCheckpoint,
}

/// The first broken link: where, and which rule.
#[derive(Debug, thiserror::Error)]
#[error("{file}, line {line}{}: {rule}", seq.map(|s| format!(" (record {s})")).unwrap_or_default())]
pub struct Broken {
    /// The file's name.
    pub file: String,
    /// 1-based line in it.
    pub line: usize,
    /// The record's `seq`, when it could be read.
    pub seq: Option<u64>,
    /// What does not hold (boxed: the hashes some rules carry make it large).
    pub rule: Box<ChainBreak>,
}

/// The rules a log can break, each in words an operator can act on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChainBreak {
    /// No records at all.
    #[error("no audit records")]
    Empty,
    /// The line is not a record.
    #[error("not an audit record ({reason}): the line was edited or damaged")]
    Unreadable {
        /// The parser's complaint.
        reason: String,
    },
    /// The last line has no newline.
    #[error(
        "the last record is cut short: the file was truncated, or the writer crashed while \
         writing it and has not started again (it removes such a tail on start and says so)"
    )]
    CutShort,
    /// The first record is not record 0 and pruned starts are not allowed.
    #[error(
        "the log starts at record {first}, not 0: earlier records were removed (pass \
         --allow-pruned-start if older files were archived on purpose)"
    )]
    StartsLate {
        /// The first `seq` found.
        first: u64,
    },
    /// Record 0 does not start a chain.
    #[error("record 0 does not start a log (its prev is not all zeros): it was edited")]
    BadGenesis,
    /// `seq` does not follow.
    #[error("expected record {expected}, found record {found}: {}", gap_cause(*expected, *found))]
    SequenceGap {
        /// The `seq` that should come next.
        expected: u64,
        /// The `seq` found.
        found: u64,
    },
    /// `prev` is not the previous record's hash.
    #[error(
        "this record does not chain to the record before it (it names {named}, that record \
         hashes to {actual}): the record before it was changed, or records between them were \
         removed or reordered"
    )]
    BrokenLink {
        /// The hash this record names.
        named: RecordHash,
        /// The previous record's actual hash.
        actual: RecordHash,
    },
    /// A checkpoint covers something other than the record right before it.
    #[error("the checkpoint covers record {covers} with head {head}, but it follows record {previous}: it was moved or edited")]
    CheckpointMisplaced {
        /// What the checkpoint says it covers.
        covers: u64,
        /// The head it names.
        head: RecordHash,
        /// The record actually before it.
        previous: u64,
    },
    /// A checkpoint's key or signature cannot be decoded.
    #[error("the checkpoint's {what} cannot be decoded: it was edited")]
    CheckpointUndecodable {
        /// "public key" or "signature".
        what: &'static str,
    },
    /// A checkpoint's signature does not verify.
    #[error("the checkpoint's signature does not verify against {against}: the records it covers, or the checkpoint, were changed")]
    CheckpointSignature {
        /// "the pinned public key" or "the log's checkpoint key".
        against: &'static str,
    },
    /// With no key pinned, checkpoints carry different keys.
    #[error("the checkpoint is signed by a different key than the earlier checkpoints: pin the right one with --public-key, the log may have been re-signed")]
    CheckpointKeyChanged,
    /// The pinned key does not parse.
    #[error("the pinned public key is not a P-256 SubjectPublicKeyInfo")]
    BadPinnedKey,
    /// The log ends before the known head.
    #[error("the log ends at record {last}, but the writer recorded record {expected} as its head: records after {last} were removed")]
    Truncated {
        /// The last `seq` in the log.
        last: u64,
        /// The `seq` of the known head.
        expected: u64,
    },
    /// The known head's record differs.
    #[error("record {seq} hashes to {actual}, but the writer recorded {expected} for it: it was changed")]
    HeadChanged {
        /// The record.
        seq: u64,
        /// Its hash in the log.
        actual: RecordHash,
        /// The hash the writer recorded.
        expected: RecordHash,
    },
}

fn gap_cause(expected: u64, found: u64) -> String {
    match found - expected.min(found) {
        0 => "records are out of order or repeated".into(),
        1 => format!("record {expected} is missing here (removed, or moved elsewhere)"),
        _ => format!(
            "records {expected}..{} are missing here (removed, or moved elsewhere)",
            found - 1
        ),
    }
}

struct Cursor {
    last: Option<(u64, RecordHash)>,
    first_seq: u64,
    records: u64,
    checkpoints: u64,
    last_checkpoint: Option<u64>,
    log_key: Option<Vec<u8>>,
}

/// Checks `files` (in the writer's order) and reports the first broken link.
pub fn verify_log(files: &[LogFile<'_>], opts: &VerifyOptions) -> Result<Report, Broken> {
    let pinned = match &opts.public_key {
        Some(der) => Some(
            p256::ecdsa::VerifyingKey::from_public_key_der(der).map_err(|_| Broken {
                file: "--public-key".into(),
                line: 0,
                seq: None,
                rule: Box::new(ChainBreak::BadPinnedKey),
            })?,
        ),
        None => None,
    };
    let mut cur = Cursor {
        last: None,
        first_seq: 0,
        records: 0,
        checkpoints: 0,
        last_checkpoint: None,
        log_key: None,
    };
    let mut where_last = ("", 0usize);
    for file in files {
        let mut rest = file.bytes;
        let mut line_no = 0;
        while !rest.is_empty() {
            line_no += 1;
            let broken = |seq, rule| Broken {
                file: file.name.to_owned(),
                line: line_no,
                seq,
                rule: Box::new(rule),
            };
            let Some(end) = rest.iter().position(|b| *b == b'\n') else {
                return Err(broken(None, ChainBreak::CutShort));
            };
            let line = &rest[..end];
            rest = &rest[end + 1..];
            let record: Record = serde_json::from_slice(line).map_err(|e| {
                broken(
                    None,
                    ChainBreak::Unreadable {
                        reason: e.to_string(),
                    },
                )
            })?;
            let seq = Some(record.seq);
            check_link(&cur, &record, opts.allow_pruned_start).map_err(|r| broken(seq, r))?;
            if let Event::Checkpoint { .. } = &record.event {
                check_checkpoint(&mut cur, &record, pinned.as_ref()).map_err(|r| broken(seq, r))?;
            }
            if cur.last.is_none() {
                cur.first_seq = record.seq;
            }
            cur.last = Some((record.seq, RecordHash::of_line(line)));
            cur.records += 1;
            where_last = (file.name, line_no);
        }
    }
    let Some((last_seq, head)) = cur.last else {
        return Err(Broken {
            file: files.last().map(|f| f.name).unwrap_or("").to_owned(),
            line: 0,
            seq: None,
            rule: Box::new(ChainBreak::Empty),
        });
    };
    if let Some((expected, expected_hash)) = opts.expected_head {
        let at_end = |rule| Broken {
            file: where_last.0.to_owned(),
            line: where_last.1,
            seq: Some(last_seq),
            rule: Box::new(rule),
        };
        if last_seq < expected {
            return Err(at_end(ChainBreak::Truncated {
                last: last_seq,
                expected,
            }));
        }
        // A log that went on past the recorded head is fine (the head is only
        // written after the records); the head's own record must match, and it
        // is the last one when the log ends exactly there.
        if last_seq == expected && head != expected_hash {
            return Err(at_end(ChainBreak::HeadChanged {
                seq: last_seq,
                actual: head,
                expected: expected_hash,
            }));
        }
    }
    Ok(Report {
        records: cur.records,
        first_seq: cur.first_seq,
        last_seq,
        head,
        checkpoints: cur.checkpoints,
        last_checkpoint: cur.last_checkpoint,
        unsealed: cur
            .last_checkpoint
            .map_or(cur.records, |c| last_seq.saturating_sub(c)),
        key: match (&pinned, cur.checkpoints) {
            (_, 0) => KeySource::NoCheckpoint,
            (Some(_), _) => KeySource::Pinned,
            (None, _) => KeySource::FromLog,
        },
    })
}

fn check_link(cur: &Cursor, record: &Record, allow_pruned: bool) -> Result<(), ChainBreak> {
    match cur.last {
        None if record.seq == 0 => {
            if record.prev.0 != GENESIS_PREV {
                return Err(ChainBreak::BadGenesis);
            }
        }
        // The first record kept after archived files: its prev cannot be checked.
        None if allow_pruned => {}
        None => return Err(ChainBreak::StartsLate { first: record.seq }),
        Some((last_seq, last_hash)) => {
            let expected = last_seq.saturating_add(1);
            if record.seq != expected {
                return Err(ChainBreak::SequenceGap {
                    expected,
                    found: record.seq,
                });
            }
            if record.prev != last_hash {
                return Err(ChainBreak::BrokenLink {
                    named: record.prev,
                    actual: last_hash,
                });
            }
        }
    }
    Ok(())
}

fn check_checkpoint(
    cur: &mut Cursor,
    record: &Record,
    pinned: Option<&p256::ecdsa::VerifyingKey>,
) -> Result<(), ChainBreak> {
    let Event::Checkpoint {
        covers,
        head,
        public_key,
        signature,
        ..
    } = &record.event
    else {
        return Ok(());
    };
    let previous = record.seq.checked_sub(1);
    if previous != Some(*covers) || *head != record.prev {
        return Err(ChainBreak::CheckpointMisplaced {
            covers: *covers,
            head: *head,
            previous: previous.unwrap_or(0),
        });
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let sig_bytes = b64
        .decode(signature)
        .map_err(|_| ChainBreak::CheckpointUndecodable { what: "signature" })?;
    let sig = p256::ecdsa::Signature::from_slice(&sig_bytes)
        .map_err(|_| ChainBreak::CheckpointUndecodable { what: "signature" })?;
    let message = checkpoint_message(*covers, head);
    let (key, against) = match pinned {
        Some(k) => (*k, "the pinned public key"),
        None => {
            let der = b64
                .decode(public_key)
                .map_err(|_| ChainBreak::CheckpointUndecodable { what: "public key" })?;
            match &cur.log_key {
                Some(first) if *first != der => return Err(ChainBreak::CheckpointKeyChanged),
                _ => {}
            }
            let key = p256::ecdsa::VerifyingKey::from_public_key_der(&der)
                .map_err(|_| ChainBreak::CheckpointUndecodable { what: "public key" })?;
            cur.log_key = Some(der);
            (key, "the log's checkpoint key")
        }
    };
    key.verify(&message, &sig)
        .map_err(|_| ChainBreak::CheckpointSignature { against })?;
    cur.checkpoints += 1;
    cur.last_checkpoint = Some(record.seq);
    Ok(())
}
