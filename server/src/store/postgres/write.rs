//! One write transaction with the change events it makes.
//!
//! Every write that changes something goes through [`Write`]: it locks the
//! head row first, so writers of every server on the database run one at a
//! time (the rules checked inside, duplicates and bans, cannot race, and
//! writers never deadlock on each other's rows), then before commit raises
//! the head by its number of changes, appends the events at those revisions
//! and notifies the listeners. The data, the events and the head commit
//! together or not at all.
//!
//! Why a counter row and not a sequence: sequence values are handed out at
//! `nextval`, not at commit, so revision 8 could commit before 7 and a
//! follower that read up to 8 would never see 7. Behind the row lock a
//! writer commits before the next one gets its revisions.

use deadpool_postgres::{Object, Transaction};

use super::connect::pg_err;
use super::{encode, NOTIFY_CHANNEL};
use crate::store::{Change, Revision, StoreError};

/// A write in progress: the transaction and what it changed so far.
pub(super) struct Write<'a> {
    pub(super) tx: Transaction<'a>,
    events: Vec<Change>,
    head: Revision,
}

impl<'a> Write<'a> {
    /// Starts a write: opens the transaction and takes the head row's lock.
    pub(super) async fn begin(client: &'a mut Object) -> Result<Write<'a>, StoreError> {
        let tx = client.transaction().await.map_err(pg_err)?;
        let row = tx
            .query_one(
                "SELECT revision FROM store_head WHERE id = 1 FOR UPDATE",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let head = revision(row.try_get(0).map_err(pg_err)?)?;
        Ok(Write {
            tx,
            events: Vec::new(),
            head,
        })
    }

    /// Records that this transaction made `change`.
    pub(super) fn changed(&mut self, change: Change) {
        self.events.push(change);
    }

    /// Appends the events, moves the head, prunes events older than the last
    /// `kept`, and commits; returns the new head. Dropping a `Write` instead
    /// rolls it back.
    pub(super) async fn commit(self, kept: u64) -> Result<Revision, StoreError> {
        let Write { tx, events, head } = self;
        if events.is_empty() {
            tx.commit().await.map_err(pg_err)?;
            return Ok(head);
        }
        let n = i64::try_from(events.len()).map_err(|e| StoreError::backend(super::BACKEND, e))?;
        let new_head: i64 = tx
            .query_one(
                "UPDATE store_head SET revision = revision + $1 WHERE id = 1 RETURNING revision",
                &[&n],
            )
            .await
            .map_err(pg_err)?
            .try_get(0)
            .map_err(pg_err)?;
        let first = new_head - n + 1;
        let revisions: Vec<i64> = (first..=new_head).collect();
        let payloads = events
            .iter()
            .map(|c| encode("change event", c))
            .collect::<Result<Vec<String>, _>>()?;
        // One statement whatever the batch's size.
        tx.execute(
            "INSERT INTO change_events (revision, change)
             SELECT r, c::jsonb FROM unnest($1::bigint[], $2::text[]) AS e(r, c)",
            &[&revisions, &payloads],
        )
        .await
        .map_err(pg_err)?;
        // Delivered at commit, to every listening server (this one too).
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&NOTIFY_CHANNEL, &new_head.to_string()],
        )
        .await
        .map_err(pg_err)?;
        let new = revision(new_head)?;
        if let Some(keep_from) = prune_point(head, new, kept) {
            tx.execute(
                "DELETE FROM change_events WHERE revision < $1",
                &[&keep_from],
            )
            .await
            .map_err(pg_err)?;
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(new)
    }
}

/// Where to prune from (events below it go) when the head crosses a multiple
/// of the pruning step, so pruning is occasional and its cost spread.
fn prune_point(before: Revision, after: Revision, kept: u64) -> Option<i64> {
    let kept = kept.max(1);
    let step = (kept / 16).clamp(1, 4096);
    if before.0 / step == after.0 / step {
        return None;
    }
    let keep_from = after.0.checked_sub(kept)?.checked_add(1)?;
    i64::try_from(keep_from).ok()
}

/// A stored revision (BIGINT, never negative by the table's check).
pub(super) fn revision(v: i64) -> Result<Revision, StoreError> {
    u64::try_from(v)
        .map(Revision)
        .map_err(|_| StoreError::Corrupt {
            what: "head revision".into(),
            reason: format!("{v} is negative"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruning_keeps_the_last_kept_events_and_runs_once_per_step() {
        // kept 5: step 1, every write prunes down to the last 5.
        assert_eq!(prune_point(Revision(9), Revision(10), 5), Some(6));
        assert_eq!(prune_point(Revision(2), Revision(4), 5), None);
        // kept 100_000: step 4096.
        assert_eq!(prune_point(Revision(1), Revision(2), 100_000), None);
        assert_eq!(
            prune_point(Revision(200_703), Revision(200_704), 100_000),
            Some(100_705)
        );
    }
}
