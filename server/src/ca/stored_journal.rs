//! The CA journal in the store, shared by every server of the trust domain (one
//! PostgreSQL database, one HSM token).
//!
//! Coordination rules, so that the bundle holds one key per rotation whatever the number of
//! servers:
//! - Every rotation check starts from the journal as stored, never from the copy in memory:
//!   a server that did not rotate follows the one that did, and finds its keys in the shared
//!   token by their labels. A change of the journal in the store's feed
//!   ([`Change::CaJournal`](crate::store::Change::CaJournal)) makes a server follow at once,
//!   without waiting for its next check.
//! - Every step is written with a compare-and-swap against the exact bytes it was planned
//!   from ([`DataStore::replace_ca_journal`]). Of servers that make the same step at the same
//!   moment exactly one writes; each of the others destroys the key it made for the step
//!   (no journal ever named it, so nothing signed with it) and plans again from the winner's
//!   journal, which already has the step.
//! - A write that fails without a definite answer (the store went away, an acknowledgement
//!   was lost) may or may not have been stored, so the key made for it is kept
//!   ([`UnsettledKeys`]) until a later read of the journal settles it: named by the journal,
//!   it was stored and is in use; not named by a journal that has moved on from the one the
//!   write was planned from, the write can never land (its compare-and-swap expects bytes
//!   that will not come back: every write raises the bundle sequence) and the key is
//!   destroyed. A store outage during a due step therefore leaves no key per retry.

use ironroot_hsm::KeyManager;
use tracing::{info, warn};

use super::journal::{CaJournal, JOURNAL_VERSION};
use super::{CaError, JournalError};
use crate::store::{DataStore, StoreError};

/// How many times one rotation check re-reads the journal after losing a race before it
/// gives up until the next check ([`JournalError::Contended`]).
pub(super) const MAX_ATTEMPTS: usize = 4;

/// The journal as read from the store, with the bytes a conditional write must find.
#[derive(Debug, Clone)]
pub(super) struct StoredJournal {
    /// The decoded journal (an empty one of the current version when none is stored).
    pub(super) journal: CaJournal,
    /// Its bytes in the store; `None` when no journal is stored yet.
    pub(super) bytes: Option<Vec<u8>>,
}

/// Reads the journal from the store.
pub(super) fn load(store: &dyn DataStore) -> Result<StoredJournal, CaError> {
    let Some(bytes) = crate::store::bridge::wait(store.get_ca_journal()).map_err(CaError::Store)?
    else {
        return Ok(StoredJournal {
            journal: CaJournal {
                version: JOURNAL_VERSION,
                ..CaJournal::default()
            },
            bytes: None,
        });
    };
    let journal: CaJournal = serde_json::from_slice(&bytes).map_err(JournalError::Unreadable)?;
    if journal.version != JOURNAL_VERSION {
        return Err(JournalError::Version {
            found: journal.version,
            supported: JOURNAL_VERSION,
        }
        .into());
    }
    Ok(StoredJournal {
        journal,
        bytes: Some(bytes),
    })
}

/// What writing a step's journal came to.
pub(super) enum Written {
    /// The store holds `journal` now.
    Stored,
    /// Another server wrote first: here is its journal, to plan again from.
    Lost(StoredJournal),
}

impl StoredJournal {
    /// Writes `next` (the journal after one step, planned from `self`) in place of `self`,
    /// raising its bundle sequence; on success `self` becomes it.
    ///
    /// When another server wrote first, the keys `next` has and `self` does not (the one this
    /// step made) are destroyed and the journal is read again ([`Written::Lost`]). Only a
    /// definite refusal destroys anything: after any other failure the write may have
    /// committed (a lost acknowledgement), so the key stays, in `unsettled` until a later
    /// read of the journal settles it.
    pub(super) fn replace(
        &mut self,
        store: &dyn DataStore,
        km: &dyn KeyManager,
        mut next: CaJournal,
        unsettled: &mut UnsettledKeys,
    ) -> Result<Written, CaError> {
        next.bundle_sequence += 1;
        let bytes = serde_json::to_vec(&next).map_err(JournalError::Encode)?;
        match crate::store::bridge::wait(store.replace_ca_journal(self.bytes.as_deref(), &bytes)) {
            Ok(()) => {
                self.journal = next;
                self.bytes = Some(bytes);
                Ok(Written::Stored)
            }
            Err(StoreError::CaJournalChanged) => {
                let made: Vec<&str> = made_for(&self.journal, &next).collect();
                info!(
                    keys = ?made,
                    "another server of the trust domain rotated first; destroying the keys made \
                     for this step and following its journal"
                );
                for label in made {
                    if let Err(e) = km.destroy(label) {
                        // Never named by a journal, so never used: only space in the token.
                        warn!(key = label, error = %e, "cannot destroy a CA key no journal names");
                    }
                }
                Ok(Written::Lost(load(store)?))
            }
            Err(e) => {
                unsettled.remember(self, &next);
                Err(CaError::Store(e))
            }
        }
    }
}

/// Keys made for journal writes whose outcome is not known yet, held under the CA's
/// rotation lock.
#[derive(Debug, Default)]
pub(super) struct UnsettledKeys(Vec<UnsettledKey>);

#[derive(Debug)]
struct UnsettledKey {
    label: String,
    /// The stored journal's bytes the failed write was conditioned on.
    planned_from: Option<Vec<u8>>,
}

impl UnsettledKeys {
    /// Remembers the keys `next` has and `from` does not: made for a write of `next` over
    /// `from` that failed without saying whether it was stored.
    pub(super) fn remember(&mut self, from: &StoredJournal, next: &CaJournal) {
        for label in made_for(&from.journal, next) {
            warn!(
                key = label,
                "the journal write for a new CA key failed without a definite answer; the key \
                 is kept until a later rotation check reads whether the write was stored"
            );
            self.0.push(UnsettledKey {
                label: label.to_owned(),
                planned_from: from.bytes.clone(),
            });
        }
    }

    /// Settles what `stored` (just read) decides: a key the journal names is in use and
    /// forgotten here; a key it does not name, when the journal is no longer the one its
    /// write was planned from, is destroyed. A key whose destruction fails is kept for the
    /// next check.
    pub(super) fn settle(&mut self, stored: &StoredJournal, km: &dyn KeyManager) {
        self.0.retain(|k| {
            if labels(&stored.journal).any(|l| l == k.label) {
                info!(key = %k.label, "a journal write that had failed was stored after all; the key is in use");
                return false;
            }
            if stored.bytes == k.planned_from {
                // The write could still land: decide at a later check.
                return true;
            }
            match km.destroy(&k.label) {
                Ok(()) => {
                    info!(key = %k.label, "destroyed a CA key whose journal write was never stored");
                    false
                }
                // Gone already (destroyed by hand): nothing left to settle.
                Err(ironroot_hsm::HsmError::KeyNotFound { .. }) => false,
                Err(e) => {
                    warn!(key = %k.label, error = %e, "cannot destroy a CA key no journal names yet; trying again at the next check");
                    true
                }
            }
        });
    }

    /// How many keys wait to be settled.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.0.len()
    }
}

/// The key labels `next` names and `from` does not: the keys made for the step that turns
/// `from` into `next`.
fn made_for<'a>(from: &'a CaJournal, next: &'a CaJournal) -> impl Iterator<Item = &'a str> {
    labels(next).filter(move |l| !labels(from).any(|old| old == *l))
}

/// Every key label the journal names.
fn labels(j: &CaJournal) -> impl Iterator<Item = &str> {
    j.x509
        .iter()
        .map(|s| s.key_label.as_str())
        .chain(j.jwt.iter().map(|s| s.key_label.as_str()))
}

#[cfg(test)]
mod tests;
