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
    /// committed (a lost acknowledgement), so the key stays.
    pub(super) fn replace(
        &mut self,
        store: &dyn DataStore,
        km: &dyn KeyManager,
        mut next: CaJournal,
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
                let made: Vec<&str> = labels(&next)
                    .filter(|l| !labels(&self.journal).any(|old| old == *l))
                    .collect();
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
            Err(e) => Err(CaError::Store(e)),
        }
    }
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
