//! Server nonces for attestation challenges: random, single use, short-lived.
//! Used nonces are remembered until they would have expired, so an answer
//! replayed from an earlier exchange is named as a replay.
//!
//! Invariants (a random-sequence test against a plain model holds them, `tests.rs`):
//! - a nonce is accepted at most once;
//! - a nonce is never accepted after it expired;
//! - an issued, unused nonce is accepted up to its expiry (nothing forgets it sooner);
//! - at most `max_pending` nonces are remembered; past that `issue` refuses, naming
//!   `node_api.limits.max_pending_nonces`.
//!
//! Cost: every operation is O(log n) under one lock. Nonces are kept in a hash map and
//! in a set ordered by expiry, so forgetting the expired ones takes them from the front
//! of the set instead of scanning every nonce.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

use rand::RngCore;

use crate::config::NodeLimitsConfig;

pub(crate) const NONCE_LEN: usize = 32;

type Nonce = [u8; NONCE_LEN];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Issued,
    Used,
}

/// Why a nonce was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NonceError {
    #[error("the nonce was already used (a replayed answer)")]
    Replayed,
    #[error("the nonce expired {0}s ago; answer the challenge sooner")]
    Expired(i64),
    #[error("the nonce was never issued by this server")]
    Unknown,
}

/// No nonce could be issued: the registry holds as many as it may.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server holds {max} challenge nonces, the most it may \
     (node_api.limits.max_pending_nonces); retry in a few seconds"
)]
pub(crate) struct NoncesFull {
    pub(crate) max: usize,
}

#[derive(Default)]
struct Nonces {
    by_nonce: HashMap<Nonce, (State, i64)>,
    /// The same nonces ordered by expiry: the expired ones are at the front.
    by_expiry: BTreeSet<(i64, Nonce)>,
}

impl Nonces {
    /// Forgets every nonce that expired before `now`.
    fn forget_expired(&mut self, now: i64) {
        while let Some(&(exp, n)) = self.by_expiry.first() {
            if exp >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.by_nonce.remove(&n);
        }
    }
}

/// The nonces the server issued in challenges, each accepted once and only before it
/// expires: an answer cannot be replayed, nor made up for a nonce never sent.
pub struct NonceRegistry {
    nonces: Mutex<Nonces>,
    max_pending: usize,
}

impl Default for NonceRegistry {
    /// A registry holding at most the default `max_pending_nonces`.
    fn default() -> Self {
        NonceRegistry::new(NodeLimitsConfig::default().max_pending_nonces)
    }
}

impl NonceRegistry {
    /// A registry that remembers at most `max_pending` nonces (at least 1).
    pub fn new(max_pending: usize) -> Self {
        NonceRegistry {
            nonces: Mutex::new(Nonces::default()),
            max_pending: max_pending.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Nonces> {
        // Every update keeps the two indexes in step before it can panic (no panicking
        // call sits between them), so a poisoned lock is used as is.
        self.nonces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh nonce valid until `expires_at` (unix seconds), or [`NoncesFull`].
    pub(crate) fn issue(&self, now: i64, expires_at: i64) -> Result<Nonce, NoncesFull> {
        let mut n = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut n);
        self.insert(n, now, expires_at)?;
        Ok(n)
    }

    fn insert(&self, n: Nonce, now: i64, expires_at: i64) -> Result<(), NoncesFull> {
        let mut s = self.lock();
        // Forget what can no longer be presented in time.
        s.forget_expired(now);
        if s.by_nonce.len() >= self.max_pending {
            return Err(NoncesFull {
                max: self.max_pending,
            });
        }
        // 256 random bits: a collision is not expected, but must not leave an orphan in
        // either index.
        if let Some((_, old_exp)) = s.by_nonce.insert(n, (State::Issued, expires_at)) {
            s.by_expiry.remove(&(old_exp, n));
        }
        s.by_expiry.insert((expires_at, n));
        Ok(())
    }

    /// Marks `nonce` used; fails if it is unknown, used or expired.
    pub(crate) fn consume(&self, nonce: &[u8], now: i64) -> Result<(), NonceError> {
        let key: Nonce = nonce.try_into().map_err(|_| NonceError::Unknown)?;
        let mut s = self.lock();
        match s.by_nonce.get_mut(&key) {
            None => Err(NonceError::Unknown),
            Some((State::Used, _)) => Err(NonceError::Replayed),
            Some((state, exp)) => {
                let exp = *exp;
                *state = State::Used;
                if now > exp {
                    Err(NonceError::Expired(now - exp))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Whether `nonce` was issued and already used (to name replays).
    pub(crate) fn was_used(&self, nonce: &[u8]) -> bool {
        let Ok(key) = Nonce::try_from(nonce) else {
            return false;
        };
        matches!(self.lock().by_nonce.get(&key), Some((State::Used, _)))
    }

    /// How many nonces are remembered.
    #[cfg(test)]
    fn len(&self) -> usize {
        let s = self.lock();
        assert_eq!(s.by_nonce.len(), s.by_expiry.len(), "the indexes agree");
        s.by_nonce.len()
    }
}

#[cfg(test)]
mod tests;
