//! The feed listener: moves this server's head when any server on the
//! database commits a write.
//!
//! It holds a connection of its own (a pooled one would be handed to a
//! query and miss notices), `LISTEN`s on [`NOTIFY_CHANNEL`] and advances the
//! head to each notice's payload. Notices are a wake-up, not the record: the
//! events table is. So a lost notice only delays: the head is also read
//! every [`HEAD_POLL`], and once after every (re)connect, for what was
//! committed while nobody listened. A lost connection is made again with
//! backoff, for as long as the store is open.

use std::sync::Arc;
use std::time::Duration;

use ironroot_runtime::backoff::Backoff;
use tokio::sync::{mpsc, watch};
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{AsyncMessage, NoTls, Socket};
use tracing::{debug, warn};

use super::connect::pg_err;
use super::tls::Connector;
use super::{advance, read_head, BACKEND, NOTIFY_CHANNEL};
use crate::store::{Revision, StoreError};

/// How often the head is read even without notices.
const HEAD_POLL: Duration = Duration::from_secs(2);
/// A head read that takes longer means the connection is dead.
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Reconnection delays: quick at first (a restart), then up to this.
const RECONNECT_FIRST: Duration = Duration::from_millis(250);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Runs until aborted (the store's drop).
pub(super) async fn run(
    config: tokio_postgres::Config,
    connector: Connector,
    head: Arc<watch::Sender<Revision>>,
) {
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_MAX);
    loop {
        let lost = match &connector {
            Connector::Plain => listen(&config, NoTls, &head, &mut backoff).await,
            Connector::Tls(tls) => listen(&config, tls.clone(), &head, &mut backoff).await,
        };
        if let Err(e) = lost {
            warn!(error = %e, source = ?std::error::Error::source(&e),
                "store feed listener disconnected; reconnecting");
        }
        backoff.wait().await;
    }
}

/// Aborts a task when dropped: the connection driver ends with its listener.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's life: returns when it is lost.
async fn listen<T>(
    config: &tokio_postgres::Config,
    tls: T,
    head: &watch::Sender<Revision>,
    backoff: &mut Backoff,
) -> Result<(), StoreError>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, mut connection) = config.connect(tls).await.map_err(pg_err)?;
    let (notices, mut rx) = mpsc::unbounded_channel();
    // The connection must be driven for queries to progress; its driver
    // forwards the notifications it reads.
    let _driver = AbortOnDrop(tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if notices.send(Ok(n.payload().to_owned())).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    let _ = notices.send(Err(e));
                    return;
                }
                None => return,
            }
        }
    }));
    client
        .batch_execute(&format!("LISTEN {NOTIFY_CHANNEL}"))
        .await
        .map_err(pg_err)?;
    backoff.reset();
    debug!("store feed listener connected");
    let mut poll = tokio::time::interval(HEAD_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            notice = rx.recv() => match notice {
                Some(Ok(payload)) => match payload.parse::<u64>() {
                    Ok(r) => advance(head, Revision(r)),
                    Err(_) => warn!(payload, "ignoring a store notice that is not a revision"),
                },
                Some(Err(e)) => return Err(pg_err(e)),
                None => return Err(closed()),
            },
            // The first tick is immediate: what was committed before LISTEN.
            _ = poll.tick() => {
                match tokio::time::timeout(HEAD_READ_TIMEOUT, read_head(&client)).await {
                    Ok(r) => advance(head, r?),
                    Err(_) => return Err(closed()),
                }
            }
        }
    }
}

fn closed() -> StoreError {
    StoreError::Unavailable {
        backend: BACKEND,
        source: "the listening connection stopped answering".into(),
    }
}
