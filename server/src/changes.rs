//! A generation counter that goes up whenever registration entries or the
//! trust bundle change. Agents hold a WatchChanges stream on it, so a new
//! entry reaches a waiting workload within about a second, not a poll period.

use tokio::sync::watch;

#[derive(Clone)]
pub(crate) struct Changes {
    tx: watch::Sender<u64>,
}

impl Default for Changes {
    fn default() -> Self {
        let (tx, _rx) = watch::channel(0);
        Changes { tx }
    }
}

impl Changes {
    /// Records a change and wakes every watcher.
    pub(crate) fn bump(&self) {
        self.tx.send_modify(|g| *g += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.tx.subscribe()
    }
}
