//! An unreachable token, and getting it back without a restart.
//!
//! While the token is unreachable, every call of the key manager fails at once with the
//! outage's [`HsmError::Unreachable`] (no thread waits on a dead device, and nothing hammers
//! it), and one background thread reconnects with jittered backoff: re-initialise the module
//! (C_Finalize + C_Initialize; what p11-kit remoting and network HSM modules need before they
//! open sessions again), find the token's slot by label, open a session and log in with the
//! configured PIN source, and find the keys in use again by label. The first success ends
//! the outage.

use std::sync::{Arc, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime};

use ironroot_runtime::Backoff;

use super::Inner;
use crate::pkcs11::pool::OpError;
use crate::{HsmError, KeyManagerHealth};

/// First delay between reconnection attempts (the first attempt is immediate).
const RECONNECT_INITIAL: Duration = Duration::from_millis(250);
/// Longest delay between reconnection attempts: the token is back in use at most this long
/// (plus one attempt) after it answers again.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Whether the token answers.
pub(super) enum Status {
    /// It does (as far as the last call knows).
    Reachable,
    /// It does not.
    Unreachable(Outage),
}

/// An ongoing outage.
pub(super) struct Outage {
    /// When it was first seen.
    since: SystemTime,
    /// Same moment, for the duration logged at the end.
    started: Instant,
    /// The latest failure (first the one that showed the outage, then each attempt's).
    reason: String,
    /// A reconnection thread is running.
    reconnecting: bool,
    /// Reconnection attempts made.
    attempts: u32,
}

fn status(inner: &Inner) -> MutexGuard<'_, Status> {
    // Plain assignments only: a panic cannot leave it half-updated.
    inner.status.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(inner: &Inner, o: &Outage) -> HsmError {
    HsmError::Unreachable {
        token: inner.token_label.clone(),
        since: o.since,
        reason: o.reason.clone(),
    }
}

/// The outage's error when the token is known to be unreachable (and a reconnection thread
/// is made sure of).
pub(super) fn outage_error(inner: &Arc<Inner>) -> Option<HsmError> {
    let mut st = status(inner);
    let Status::Unreachable(o) = &mut *st else {
        return None;
    };
    if !o.reconnecting {
        // The thread could not be started last time; try again.
        o.reconnecting = spawn(inner);
    }
    Some(error(inner, o))
}

/// A call found the token unreachable (`reason`): starts an outage (logging it and starting
/// the reconnection) or joins the current one. Returns the error for the caller.
pub(super) fn lost(inner: &Arc<Inner>, reason: String) -> HsmError {
    let mut st = status(inner);
    match &mut *st {
        Status::Unreachable(o) => error(inner, o),
        Status::Reachable => {
            if inner.pool.lost_in() < inner.pool.module().generation() {
                // Lost before a re-initialisation that has happened since (a call that was
                // under way while another manager of the module reconnected): the next call
                // runs on new sessions.
                return HsmError::Unreachable {
                    token: inner.token_label.clone(),
                    since: SystemTime::now(),
                    reason,
                };
            }
            tracing::error!(
                token = %inner.token_label,
                reason = %reason,
                "PKCS#11 token unreachable; signing fails until it is back. Reconnecting in the background (re-initialising the module)"
            );
            let mut o = Outage {
                since: SystemTime::now(),
                started: Instant::now(),
                reason,
                reconnecting: false,
                attempts: 0,
            };
            o.reconnecting = spawn(inner);
            let e = error(inner, &o);
            *st = Status::Unreachable(o);
            e
        }
    }
}

/// What a health check reports: the outage if there is one, else the answer of a cheap
/// probe of an idle session (which starts an outage when the token is gone).
pub(super) fn health(inner: &Arc<Inner>) -> KeyManagerHealth {
    if let Some(HsmError::Unreachable { since, reason, .. }) = outage_error(inner) {
        return KeyManagerHealth::Unreachable { since, reason };
    }
    match inner.pool.probe() {
        Some(Err(HsmError::Unreachable { reason, .. })) => match lost(inner, reason) {
            HsmError::Unreachable { since, reason, .. } => {
                KeyManagerHealth::Unreachable { since, reason }
            }
            _ => KeyManagerHealth::Available,
        },
        _ => KeyManagerHealth::Available,
    }
}

/// Starts the reconnection thread; false if the system refused a thread.
fn spawn(inner: &Arc<Inner>) -> bool {
    let weak = Arc::downgrade(inner);
    match std::thread::Builder::new()
        .name("pkcs11-reconnect".into())
        .spawn(move || reconnect_loop(weak))
    {
        Ok(_) => true,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the PKCS#11 reconnection thread; retrying on the next call");
            false
        }
    }
}

fn reconnect_loop(weak: Weak<Inner>) {
    let mut backoff = Backoff::new(RECONNECT_INITIAL, RECONNECT_MAX);
    loop {
        // Only a weak reference between attempts: dropping the manager ends the thread.
        let Some(inner) = weak.upgrade() else {
            return;
        };
        match reconnect(&inner) {
            Ok(()) => {
                let mut st = status(&inner);
                if let Status::Unreachable(o) = &*st {
                    tracing::info!(
                        token = %inner.token_label,
                        outage_secs = o.started.elapsed().as_secs_f64(),
                        attempts = o.attempts + 1,
                        "PKCS#11 token reachable again; signing resumes"
                    );
                }
                *st = Status::Reachable;
                return;
            }
            Err(e) => {
                let mut st = status(&inner);
                if let Status::Unreachable(o) = &mut *st {
                    o.attempts += 1;
                    o.reason = match e {
                        HsmError::Unreachable { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    tracing::warn!(
                        token = %inner.token_label,
                        attempt = o.attempts,
                        reason = %o.reason,
                        "PKCS#11 token still unreachable; retrying"
                    );
                }
            }
        }
        drop(inner);
        std::thread::sleep(backoff.next_delay());
    }
}

/// One attempt: re-initialise the module (unless that already happened since the loss), open
/// a logged-in session on the token found by label, and find the keys in use again.
fn reconnect(inner: &Inner) -> Result<(), HsmError> {
    inner.pool.module().reinitialize(inner.pool.lost_in())?;
    let labels = inner.cached_labels();
    inner.pool.with_logged_in_session(|session, generation| {
        for label in &labels {
            match inner.lookup(session, label, generation) {
                Ok(_) => {}
                Err(e) if e.lost().is_some() => return Err(e),
                // The token answered: whatever is wrong with this key is for its users to
                // find out (and report) on their next call, not a reason to stay offline.
                Err(e) => {
                    let e = match e {
                        OpError::Hsm(e) => e.to_string(),
                        OpError::Ck { op, err } => format!("{op}: {}", crate::error::ck_text(&err)),
                    };
                    tracing::warn!(token = %inner.token_label, label, error = %e, "key not usable after reconnecting");
                }
            }
        }
        Ok(())
    })
}
