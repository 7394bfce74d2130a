//! The authorized-entry cache: the server's in-memory [`EntryIndex`] of
//! entries, nodes and federated bundles, loaded from a store snapshot and
//! kept current by following the store's change feed.
//!
//! Agents' syncs and signing requests read only this (never scanning the
//! store), so a store outage stops writes, not syncs: the cache keeps
//! serving the last view it had while the follower retries.
//!
//! A change notice reaches exactly the agents it concerns: an entry under
//! an agent wakes that agent; an alias entry, a federated bundle or a reload
//! wakes every agent (through [`Changes`]). A change of the CA journal (another
//! server rotated) wakes the CA instead ([`AuthorizedCache::watch_ca_journal`]),
//! which wakes every agent once it has taken the new keys up.

pub(crate) mod index;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard};
use std::time::Duration;

use ironroot_api::spiffe_id::SpiffeId;
use ironroot_runtime::backoff::Backoff;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::changes::Changes;
use crate::store::{ChangesSince, DataStore, Revision, StoreError, MAX_CHANGES_PER_READ};
pub(crate) use index::{EntryIndex, Touched};

/// How often the follower reads the feed even without a head notice (a lost
/// notice from a shared database costs at most this much delay).
const POLL_EVERY: Duration = Duration::from_secs(5);

/// The cache shared by the agent API and the node service.
pub(crate) struct AuthorizedCache {
    index: RwLock<EntryIndex>,
    store: Arc<dyn DataStore>,
    server_id: SpiffeId,
    /// Wakes every agent.
    all: Changes,
    /// Wakes one agent; senders are dropped once no stream listens.
    agents: Mutex<HashMap<SpiffeId, watch::Sender<u64>>>,
    /// The revision the index has applied, for callers waiting on their own write.
    applied: watch::Sender<Revision>,
    /// Bumped when the feed carries a CA journal change (or may have, after a reload).
    ca_journal: Changes,
    /// Bumped when the feed carries a federated bundle change (or may have, after a reload).
    federated_bundles: Changes,
}

impl AuthorizedCache {
    /// Loads the cache from a snapshot of `store`.
    pub(crate) async fn load(
        store: Arc<dyn DataStore>,
        server_id: SpiffeId,
        all: Changes,
    ) -> Result<Arc<Self>, StoreError> {
        let snapshot = store.snapshot().await?;
        for u in &snapshot.unreadable {
            warn!(backend = store.backend(), "{u}; not served");
        }
        let index = EntryIndex::load(server_id.clone(), snapshot);
        info!(
            entries = index.entry_count(),
            revision = %index.revision(),
            "authorized-entry cache loaded"
        );
        let applied = watch::Sender::new(index.revision());
        Ok(Arc::new(AuthorizedCache {
            index: RwLock::new(index),
            store,
            server_id,
            all,
            agents: Mutex::new(HashMap::new()),
            applied,
            ca_journal: Changes::default(),
            federated_bundles: Changes::default(),
        }))
    }

    /// The index, for reading. Hold it briefly: the follower waits for it.
    pub(crate) fn read(&self) -> RwLockReadGuard<'_, EntryIndex> {
        // A panic while applying leaves at worst a partly applied batch; the
        // follower reloads on its next error, and reads stay possible.
        self.index.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// A receiver that changes whenever something concerning `agent` (its
    /// entries, its node record) changes.
    pub(crate) fn watch_agent(&self, agent: &SpiffeId) -> watch::Receiver<u64> {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        agents
            .entry(agent.clone())
            .or_insert_with(|| watch::Sender::new(0))
            .subscribe()
    }

    /// A receiver that changes whenever every agent must look again.
    pub(crate) fn watch_all(&self) -> watch::Receiver<u64> {
        self.all.subscribe()
    }

    /// A receiver that changes whenever the store's CA journal may have changed: another
    /// server of the trust domain rotated, and this server's CA must follow.
    pub(crate) fn watch_ca_journal(&self) -> watch::Receiver<u64> {
        self.ca_journal.subscribe()
    }

    /// A receiver that changes whenever a federated bundle may have been stored or deleted
    /// (by an operator, this server's federation poller, or another server's).
    pub(crate) fn watch_federated_bundles(&self) -> watch::Receiver<u64> {
        self.federated_bundles.subscribe()
    }

    /// Waits (at most `timeout`) until the cache has applied everything the
    /// store had acknowledged when this was called: a caller that just wrote
    /// reads its own write.
    pub(crate) async fn catch_up(&self, timeout: Duration) -> bool {
        let target = *self.store.watch_head().borrow();
        let mut applied = self.applied.subscribe();
        tokio::time::timeout(timeout, applied.wait_for(|r| *r >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Follows the store's change feed until the process ends.
    pub(crate) fn spawn_follower(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let cache = self.clone();
        tokio::spawn(async move { cache.follow().await })
    }

    async fn follow(&self) {
        let mut head = self.store.watch_head();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            head.borrow_and_update();
            match self.catch_up_once().await {
                Ok(()) => backoff.reset(),
                Err(e) => {
                    // The last view stays served; writes fail at the store.
                    warn!(error = %ironroot_runtime::report::Chain(&e), "cannot follow the store's change feed; retrying");
                    backoff.wait().await;
                    continue;
                }
            }
            tokio::select! {
                r = head.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(POLL_EVERY) => {}
            }
        }
    }

    /// Applies every change up to the store's head (reloading from a
    /// snapshot when the feed no longer reaches back far enough).
    async fn catch_up_once(&self) -> Result<(), StoreError> {
        loop {
            let at = self.read().revision();
            match self.store.changes_since(at, MAX_CHANGES_PER_READ).await? {
                ChangesSince::Events(events) if events.is_empty() => return Ok(()),
                ChangesSince::Events(events) => {
                    let outcome = {
                        let mut ix = self.index.write().unwrap_or_else(PoisonError::into_inner);
                        let r = ix.apply(&events);
                        (r, ix.revision())
                    };
                    match outcome {
                        (Ok(touched), revision) => {
                            self.applied.send_replace(revision);
                            self.notify(&touched);
                        }
                        (Err(e), _) => {
                            warn!(error = %e, "reloading the authorized-entry cache");
                            self.reload().await?;
                        }
                    }
                }
                ChangesSince::Truncated { oldest } => {
                    warn!(at = %at, oldest = %oldest, "the change feed no longer reaches back to the cache's revision; reloading");
                    self.reload().await?;
                }
            }
        }
    }

    async fn reload(&self) -> Result<(), StoreError> {
        let snapshot = self.store.snapshot().await?;
        let index = EntryIndex::load(self.server_id.clone(), snapshot);
        let revision = index.revision();
        *self.index.write().unwrap_or_else(PoisonError::into_inner) = index;
        self.applied.send_replace(revision);
        self.all.bump();
        // The skipped part of the feed may have held a journal or bundle change.
        self.ca_journal.bump();
        self.federated_bundles.bump();
        Ok(())
    }

    fn notify(&self, t: &Touched) {
        if t.aliases || t.bundles {
            self.all.bump();
        }
        if t.bundles {
            self.federated_bundles.bump();
        }
        if t.ca {
            // The CA wakes every agent once it has followed the journal.
            self.ca_journal.bump();
        }
        if t.parents.is_empty() && t.nodes.is_empty() {
            return;
        }
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        agents.retain(|_, tx| tx.receiver_count() > 0);
        for id in t.parents.iter().chain(&t.nodes) {
            if let Some(tx) = agents.get(id) {
                tx.send_modify(|g| *g += 1);
            }
        }
    }
}
