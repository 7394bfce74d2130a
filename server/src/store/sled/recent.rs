//! The newest change events, kept as written: the authorized-entry cache
//! follows the feed right behind each write, and reading a write's events
//! from memory spares decoding again what was just encoded (a 1,000-entry
//! batch is one record of 1,000 entries).
//!
//! What is kept always ends at the head and has no gap: a write's events are
//! added after it is durable; a write that failed part way clears it (the
//! feed is then read from sled, which knows what landed), and so does a gap.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::store::{ChangeEvent, Revision};

/// Most events kept (about 4 batches of 1,000; a follower further behind
/// reads sled).
const KEPT: usize = 4_096;

#[derive(Default)]
pub(super) struct Recent {
    events: Mutex<VecDeque<ChangeEvent>>,
}

impl Recent {
    fn lock(&self) -> MutexGuard<'_, VecDeque<ChangeEvent>> {
        // A panic while held leaves at worst fewer events: still contiguous.
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds the events of a durable write (the next revisions after the last kept).
    pub(super) fn push(&self, written: Vec<ChangeEvent>) {
        let Some(first) = written.first() else {
            return;
        };
        let mut events = self.lock();
        if events
            .back()
            .is_some_and(|last| last.revision.0 + 1 != first.revision.0)
        {
            events.clear();
        }
        events.extend(written);
        let over = events.len().saturating_sub(KEPT);
        events.drain(..over);
    }

    /// Forgets everything (a write whose outcome is unknown).
    pub(super) fn forget(&self) {
        self.lock().clear();
    }

    /// Forgets the events before `first_kept` (pruned from sled).
    pub(super) fn drop_before(&self, first_kept: Revision) {
        let mut events = self.lock();
        while events.front().is_some_and(|e| e.revision < first_kept) {
            events.pop_front();
        }
    }

    /// The events after `after`, at most `limit`, if what is kept reaches back
    /// to `after` (`None`: read sled).
    pub(super) fn after(&self, after: Revision, limit: usize) -> Option<Vec<ChangeEvent>> {
        let events = self.lock();
        let first = events.front()?.revision.0;
        let last = events.back()?.revision.0;
        let next = after.0.checked_add(1)?;
        if next < first || after.0 > last {
            return None;
        }
        let skip = usize::try_from(next - first).ok()?;
        Some(events.iter().skip(skip).take(limit).cloned().collect())
    }
}
