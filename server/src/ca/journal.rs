//! The CA journal: which keys exist, which one is active, and the rotation
//! schedule over them. Kept in the store so a restart resumes the same keys.
//! The planning here is pure (time is an argument) so the schedule is unit tested.

use serde::{Deserialize, Serialize};

pub const JOURNAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SlotStatus {
    /// Published in the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// Replaced; stays in the bundle until it expires.
    Old,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509Slot {
    pub key_label: String,
    pub status: SlotStatus,
    #[serde(with = "b64")]
    pub cert_der: Vec<u8>,
    /// Upstream certificates between this CA and the roots (empty for a root CA).
    #[serde(with = "b64_vec", default)]
    pub upstream_chain: Vec<Vec<u8>>,
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSlot {
    pub key_label: String,
    pub key_id: String,
    pub status: SlotStatus,
    #[serde(with = "b64")]
    pub public_key_der: Vec<u8>,
    pub not_before: i64,
    pub not_after: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaJournal {
    pub version: u32,
    pub x509: Vec<X509Slot>,
    pub jwt: Vec<JwtSlot>,
    /// Goes up by one each time the published bundle changes.
    pub bundle_sequence: u64,
}

/// What a slot needs to expose for the schedule.
pub trait Slot {
    fn status(&self) -> SlotStatus;
    fn set_status(&mut self, s: SlotStatus);
    fn not_before(&self) -> i64;
    fn not_after(&self) -> i64;
    fn key_label(&self) -> &str;
}

macro_rules! impl_slot {
    ($t:ty) => {
        impl Slot for $t {
            fn status(&self) -> SlotStatus {
                self.status
            }
            fn set_status(&mut self, s: SlotStatus) {
                self.status = s;
            }
            fn not_before(&self) -> i64 {
                self.not_before
            }
            fn not_after(&self) -> i64 {
                self.not_after
            }
            fn key_label(&self) -> &str {
                &self.key_label
            }
        }
    };
}
impl_slot!(X509Slot);
impl_slot!(JwtSlot);

/// One step of the rotation schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// No usable active key: make one and activate it at once.
    CreateActive,
    /// The active key is past half its life: make the next one and publish it.
    Prepare,
    /// The active key has a sixth of its life left (or none): switch to the prepared one.
    Activate,
    /// An old key expired: drop it from the bundle and destroy it.
    Prune { key_label: String },
}

/// The schedule of SPIRE: prepare at 1/2 of the active key's lifetime,
/// activate at 1/6 remaining, keep replaced keys published until they expire.
pub fn plan<S: Slot>(slots: &[S], now: i64) -> Vec<Step> {
    let mut steps = Vec::new();
    let active = slots
        .iter()
        .find(|s| s.status() == SlotStatus::Active && s.not_after() > now);
    let prepared = slots
        .iter()
        .find(|s| s.status() == SlotStatus::Prepared && s.not_after() > now);
    match (active, prepared) {
        (None, Some(_)) => steps.push(Step::Activate),
        (None, None) => steps.push(Step::CreateActive),
        (Some(a), p) => {
            let life = a.not_after() - a.not_before();
            let prepare_at = a.not_before() + life / 2;
            let activate_at = a.not_after() - life / 6;
            if p.is_none() && now >= prepare_at {
                steps.push(Step::Prepare);
            }
            // When the server was down for a while, Prepare and Activate come in one pass.
            if now >= activate_at {
                steps.push(Step::Activate);
            }
        }
    }
    for s in slots {
        if s.not_after() <= now {
            steps.push(Step::Prune {
                key_label: s.key_label().to_string(),
            });
        }
    }
    steps
}

/// Applies `Activate` to the slots: the prepared one becomes active, the active one old.
/// Returns false when there is nothing prepared.
pub fn activate_prepared<S: Slot>(slots: &mut [S], now: i64) -> bool {
    let Some(idx) = slots
        .iter()
        .position(|s| s.status() == SlotStatus::Prepared && s.not_after() > now)
    else {
        return false;
    };
    for s in slots.iter_mut() {
        if s.status() == SlotStatus::Active {
            s.set_status(SlotStatus::Old);
        }
    }
    if let Some(s) = slots.get_mut(idx) {
        s.set_status(SlotStatus::Active);
    }
    true
}

mod b64 {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

mod b64_vec {
    use base64::{engine::general_purpose::STANDARD, Engine};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|c| STANDARD.encode(c)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.into_iter()
            .map(|s| STANDARD.decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(label: &str, status: SlotStatus, nb: i64, na: i64) -> JwtSlot {
        JwtSlot {
            key_label: label.into(),
            key_id: label.into(),
            status,
            public_key_der: vec![],
            not_before: nb,
            not_after: na,
        }
    }

    #[test]
    fn empty_journal_creates_an_active_key() {
        assert_eq!(plan::<JwtSlot>(&[], 100), vec![Step::CreateActive]);
    }

    #[test]
    fn follows_the_half_and_sixth_schedule() {
        // lifetime 600: prepare at 300, activate at 500.
        let a = slot("a", SlotStatus::Active, 0, 600);
        assert!(plan(std::slice::from_ref(&a), 299).is_empty());
        assert_eq!(plan(std::slice::from_ref(&a), 300), vec![Step::Prepare]);
        let p = slot("b", SlotStatus::Prepared, 300, 900);
        let slots = vec![a.clone(), p.clone()];
        assert!(plan(&slots, 499).is_empty());
        assert_eq!(plan(&slots, 500), vec![Step::Activate]);
        let mut slots = slots;
        assert!(activate_prepared(&mut slots, 500));
        assert_eq!(slots[0].status, SlotStatus::Old);
        assert_eq!(slots[1].status, SlotStatus::Active);
        // the old key stays published until it expires, then is pruned
        assert!(plan(&slots, 599).is_empty());
        // at 600 the old key expires and the new one (300..900) reaches half life
        assert_eq!(
            plan(&slots, 600),
            vec![
                Step::Prepare,
                Step::Prune {
                    key_label: "a".into()
                }
            ]
        );
    }

    #[test]
    fn expired_active_with_prepared_activates_and_prunes() {
        let slots = vec![
            slot("a", SlotStatus::Active, 0, 600),
            slot("b", SlotStatus::Prepared, 300, 900),
        ];
        assert_eq!(
            plan(&slots, 700),
            vec![
                Step::Activate,
                Step::Prune {
                    key_label: "a".into()
                }
            ]
        );
    }

    #[test]
    fn everything_expired_starts_over() {
        let slots = vec![slot("a", SlotStatus::Active, 0, 600)];
        assert_eq!(
            plan(&slots, 10_000),
            vec![
                Step::CreateActive,
                Step::Prune {
                    key_label: "a".into()
                }
            ]
        );
    }

    #[test]
    fn journal_round_trips_as_json() {
        let j = CaJournal {
            version: JOURNAL_VERSION,
            x509: vec![X509Slot {
                key_label: "x".into(),
                status: SlotStatus::Active,
                cert_der: vec![1, 2, 3],
                upstream_chain: vec![vec![4]],
                not_before: 1,
                not_after: 2,
            }],
            jwt: vec![slot("j", SlotStatus::Prepared, 1, 2)],
            bundle_sequence: 7,
        };
        let s = serde_json::to_vec(&j).unwrap();
        assert_eq!(serde_json::from_slice::<CaJournal>(&s).unwrap(), j);
    }
}
