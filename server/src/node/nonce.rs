//! Server nonces for attestation challenges: random, single use, short-lived.
//! Used nonces are remembered until they would have expired, so an answer
//! replayed from an earlier exchange is named as a replay.

use std::collections::HashMap;
use std::sync::Mutex;

use rand::RngCore;

pub(crate) const NONCE_LEN: usize = 32;

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

/// The nonces the server issued in challenges, each accepted once and only before it
/// expires: an answer cannot be replayed, nor made up for a nonce never sent.
#[derive(Default)]
pub struct NonceRegistry {
    nonces: Mutex<HashMap<[u8; NONCE_LEN], (State, i64)>>,
}

impl NonceRegistry {
    /// A fresh nonce valid until `expires_at` (unix seconds).
    pub(crate) fn issue(&self, now: i64, expires_at: i64) -> [u8; NONCE_LEN] {
        let mut n = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut n);
        let mut map = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        // Forget what can no longer be presented in time.
        map.retain(|_, (_, exp)| *exp >= now);
        map.insert(n, (State::Issued, expires_at));
        n
    }

    /// Marks `nonce` used; fails if it is unknown, used or expired.
    pub(crate) fn consume(&self, nonce: &[u8], now: i64) -> Result<(), NonceError> {
        let key: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| NonceError::Unknown)?;
        let mut map = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(&key) {
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
        let Ok(key) = <[u8; NONCE_LEN]>::try_from(nonce) else {
            return false;
        };
        let map = self.nonces.lock().unwrap_or_else(|p| p.into_inner());
        matches!(map.get(&key), Some((State::Used, _)))
    }
}

#[cfg(test)]
mod tests;
