//! The CA journal: which keys exist, which one is active, and the rotation
//! schedule over them. Kept in the store so a restart resumes the same keys.
//! The planning here is pure (time is an argument) so the schedule is unit tested.

use serde::{Deserialize, Serialize};

pub(crate) const JOURNAL_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum SlotStatus {
    /// Published in the bundle, not yet signing.
    Prepared,
    /// Signing.
    Active,
    /// Replaced; stays in the bundle until it expires.
    Old,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct X509Slot {
    pub(crate) key_label: String,
    pub(crate) status: SlotStatus,
    #[serde(with = "ironroot_api::serde_b64::bytes")]
    pub(crate) cert_der: Vec<u8>,
    /// Upstream certificates between this CA and the roots (empty for a root CA).
    #[serde(with = "ironroot_api::serde_b64::list", default)]
    pub(crate) upstream_chain: Vec<Vec<u8>>,
    /// The upstream roots this CA certificate chains to, published while it is unexpired
    /// (an OpenBao upstream's root; empty for a root CA and before this field existed).
    #[serde(with = "ironroot_api::serde_b64::list", default)]
    pub(crate) upstream_roots: Vec<Vec<u8>>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct JwtSlot {
    pub(crate) key_label: String,
    pub(crate) key_id: String,
    pub(crate) status: SlotStatus,
    #[serde(with = "ironroot_api::serde_b64::bytes")]
    pub(crate) public_key_der: Vec<u8>,
    pub(crate) not_before: i64,
    pub(crate) not_after: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CaJournal {
    pub(crate) version: u32,
    pub(crate) x509: Vec<X509Slot>,
    pub(crate) jwt: Vec<JwtSlot>,
    /// Goes up by one each time the published bundle changes.
    pub(crate) bundle_sequence: u64,
}

/// What a slot needs to expose for the schedule.
pub(crate) trait Slot {
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
pub(crate) enum Step {
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
pub(crate) fn plan<S: Slot>(slots: &[S], now: i64) -> Vec<Step> {
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
pub(crate) fn activate_prepared<S: Slot>(slots: &mut [S], now: i64) -> bool {
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

#[cfg(test)]
mod tests;
