//! One audit record: a JSON line that names the record before it by hash.
//!
//! A record's hash is SHA-256 over its exact line bytes (without the newline),
//! so the chain does not depend on how JSON is re-encoded: any change to a
//! record's bytes changes its hash, and the next record no longer names it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev` of the very first record of a log.
pub const GENESIS_PREV: [u8; 32] = [0; 32];

/// A SHA-256 digest, written as lowercase hex in the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RecordHash(pub [u8; 32]);

impl RecordHash {
    /// The hash of one record's line (without its newline).
    pub fn of_line(line: &[u8]) -> Self {
        Self(Sha256::digest(line).into())
    }

    /// Lowercase hex, as the log writes it.
    pub fn to_hex(self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }
}

impl std::fmt::Display for RecordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for RecordHash {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for RecordHash {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::from_hex(&s).ok_or_else(|| serde::de::Error::custom("not 64 hex digits"))
    }
}

/// One line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// 0 for the first record ever written, then +1 per record, across files.
    pub seq: u64,
    /// Unix seconds when the writer appended it.
    pub time: i64,
    /// The hash of the record before it ([`GENESIS_PREV`] for seq 0).
    pub prev: RecordHash,
    /// What happened.
    pub event: Event,
}

impl Record {
    /// The record as its log line (no newline).
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string keys, no floats.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// What a record says happened. Adding a variant is compatible for writers;
/// a verifier older than the variant reports the record as unreadable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum Event {
    /// The writer opened the log: a new log (`seq` 0) or a restart.
    LogOpened {
        /// The writing program and its version.
        writer: String,
        /// Bytes of a record cut short by a crash that were removed before this
        /// record (never acknowledged: a record is acknowledged after it is on disk).
        #[serde(default, skip_serializing_if = "is_zero")]
        removed_partial_bytes: u64,
    },
    /// An administrative change, recorded before the caller is answered.
    Admin {
        /// Who asked: e.g. "uid:0" on the admin socket.
        actor: String,
        /// The verb: "entry.create", "agent.ban", ….
        action: String,
        /// What it was applied to (an entry ID, a SPIFFE ID, a trust domain).
        target: String,
        /// "ok", or the refusal as the caller saw it.
        outcome: String,
    },
    /// A node attestation, accepted or refused.
    Attestation {
        /// The node attestor's name.
        attestor: String,
        /// The agent's SPIFFE ID (empty when refused before one was known).
        agent_id: String,
        /// The peer's address.
        peer: String,
        /// "accepted", or the named reason it was refused.
        outcome: String,
    },
    /// A CA rotation step (prepare, activate, retire) or a change of CA state.
    Ca {
        /// The step.
        step: String,
        /// The authority it concerns (key label or subject key ID).
        authority: String,
    },
    /// SVIDs signed since the previous such record (batched: one record per
    /// interval, not one per SVID).
    SvidsSigned {
        /// X.509-SVIDs signed for agents' workloads and agents.
        x509: u64,
        /// JWT-SVIDs signed.
        jwt: u64,
        /// Unix seconds of the first and last signature counted.
        first: i64,
        /// See `first`.
        last: i64,
    },
    /// The chain head, signed by a key that never leaves the HSM.
    Checkpoint {
        /// The `seq` of the record it covers (the one right before it).
        covers: u64,
        /// That record's hash (the same as this record's `prev`).
        head: RecordHash,
        /// The signing key's label in the key manager.
        key: String,
        /// The signing key's public key, DER SubjectPublicKeyInfo, base64.
        public_key: String,
        /// ECDSA P-256 over [`checkpoint_message`], r||s, base64.
        signature: String,
    },
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The bytes a checkpoint signs: a fixed context, the covered `seq` and the head.
pub fn checkpoint_message(covers: u64, head: &RecordHash) -> Vec<u8> {
    let mut m = b"ironroot audit checkpoint v1\n".to_vec();
    m.extend_from_slice(&covers.to_be_bytes());
    m.extend_from_slice(&head.0);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_survives_its_own_line_and_its_hash_is_of_the_exact_bytes() {
        let r = Record {
            seq: 3,
            time: 1_796_601_600,
            prev: RecordHash([7; 32]),
            event: Event::Admin {
                actor: "uid:0".into(),
                action: "entry.create".into(),
                target: "0192".into(),
                outcome: "ok".into(),
            },
        };
        let line = r.to_line();
        assert_eq!(serde_json::from_slice::<Record>(&line).unwrap(), r);
        let mut spaced = line.clone();
        spaced.insert(1, b' ');
        assert_eq!(serde_json::from_slice::<Record>(&spaced).unwrap(), r);
        assert_ne!(RecordHash::of_line(&line), RecordHash::of_line(&spaced));
    }
}
