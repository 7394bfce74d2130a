//! The agent's JWT-SVID cache: tokens the server minted, per identity
//! (registration entry) and audience list, served again while they have more
//! than half their life left.
//!
//! Audiences are chosen by the caller, and each miss costs the server an HSM
//! signature, so the cache is bounded and shared fairly:
//! - it holds at most `capacity` tokens, and at most `per_identity` for one
//!   identity: a caller asking for ever new audiences evicts the least
//!   recently used tokens **of its own identity** first;
//! - when the whole cache is full, the token evicted is the least recently
//!   used one of the identity holding the most tokens (the inserting one on a
//!   tie). So with k identities holding tokens, an identity holding fewer
//!   than `capacity / k` is never evicted to make room for another: a
//!   caller flooding the cache with audiences takes from its own share and
//!   from the largest, never from the small;
//! - a token past half its life is never served, and is dropped when seen,
//!   or by a sweep (at most once per [`SWEEP_EVERY`], on requests and
//!   before any eviction);
//! - the key of an audience list is its SHA-256 (over the sorted, length-
//!   prefixed audiences), so a key costs 32 bytes whatever the caller sent,
//!   and a token longer than [`MAX_CACHED_TOKEN_BYTES`] is served but not
//!   kept.
//!
//! Pure: time is an argument; unit tested below, including floods of
//! audiences.

use std::collections::{BTreeMap, HashMap};

use sha2::{Digest, Sha256};

/// Tokens longer than this are not cached (a JWT-SVID is ~0.5-1 KB; only a
/// huge audience list makes a longer one).
pub(crate) const MAX_CACHED_TOKEN_BYTES: usize = 4096;

/// The sweep of stale tokens runs at most this often (seconds): from
/// [`JwtSvidCache::sweep_if_due`] on each request, and before an eviction
/// (a full cache of fresh tokens does not pay for a scan each time).
pub(crate) const SWEEP_EVERY: i64 = 10;

/// The cache key of an audience list: order does not matter, but each
/// audience is length-prefixed so `["a,b"]`, `["a", "b"]` and `["ab"]` differ.
pub(crate) fn audience_key(audience: &[String]) -> [u8; 32] {
    let mut sorted: Vec<&str> = audience.iter().map(String::as_str).collect();
    sorted.sort_unstable();
    let mut h = Sha256::new();
    h.update((sorted.len() as u64).to_be_bytes());
    for a in sorted {
        h.update((a.len() as u64).to_be_bytes());
        h.update(a.as_bytes());
    }
    h.finalize().into()
}

#[derive(Debug)]
struct Cached {
    token: String,
    /// Served while now < refresh_at (half its life).
    refresh_at: i64,
    /// Position in its identity's LRU order.
    tick: u64,
}

#[derive(Debug, Default)]
struct Identity {
    tokens: HashMap<[u8; 32], Cached>,
    /// tick -> key, oldest first.
    order: BTreeMap<u64, [u8; 32]>,
}

impl Identity {
    fn remove(&mut self, key: &[u8; 32]) -> bool {
        match self.tokens.remove(key) {
            Some(c) => {
                self.order.remove(&c.tick);
                true
            }
            None => false,
        }
    }

    fn evict_lru(&mut self) -> bool {
        match self.order.pop_first() {
            Some((_, key)) => self.tokens.remove(&key).is_some(),
            None => false,
        }
    }

    /// The tick of its least recently used token.
    fn oldest(&self) -> u64 {
        self.order.keys().next().copied().unwrap_or(u64::MAX)
    }
}

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct JwtSvidCache {
    capacity: usize,
    per_identity: usize,
    identities: HashMap<String, Identity>,
    len: usize,
    tick: u64,
    last_sweep: i64,
}

impl JwtSvidCache {
    /// A cache of at most `capacity` tokens, `per_identity` of them for one
    /// identity (both at least 1; `per_identity` is clamped to `capacity`).
    pub(crate) fn new(capacity: usize, per_identity: usize) -> Self {
        let capacity = capacity.max(1);
        JwtSvidCache {
            capacity,
            per_identity: per_identity.clamp(1, capacity),
            identities: HashMap::new(),
            len: 0,
            tick: 0,
            last_sweep: i64::MIN,
        }
    }

    /// Tokens held.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[cfg(test)]
    /// Whether no token is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tokens held for `entry_id`.
    pub(crate) fn len_of(&self, entry_id: &str) -> usize {
        self.identities.get(entry_id).map_or(0, |i| i.tokens.len())
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The cached token for `entry_id` and `audience` if it has more than
    /// half its life left (it becomes the most recently used); a stale one is
    /// dropped.
    pub(crate) fn get(&mut self, entry_id: &str, audience: &[String], now: i64) -> Option<String> {
        let key = audience_key(audience);
        let tick = self.next_tick();
        let ident = self.identities.get_mut(entry_id)?;
        let c = ident.tokens.get_mut(&key)?;
        if now >= c.refresh_at {
            ident.remove(&key);
            self.len -= 1;
            if ident.tokens.is_empty() {
                self.identities.remove(entry_id);
            }
            return None;
        }
        ident.order.remove(&c.tick);
        c.tick = tick;
        ident.order.insert(tick, key);
        Some(c.token.clone())
    }

    /// Caches `token` (issued at `issued_at`, expiring at `expires_at`) for
    /// `entry_id` and `audience`, evicting as the module documentation says.
    /// A token already past half its life, or longer than
    /// [`MAX_CACHED_TOKEN_BYTES`], is not kept.
    pub(crate) fn insert(
        &mut self,
        entry_id: &str,
        audience: &[String],
        token: String,
        issued_at: i64,
        expires_at: i64,
        now: i64,
    ) {
        let refresh_at = issued_at.saturating_add(expires_at.saturating_sub(issued_at) / 2);
        if now >= refresh_at || token.len() > MAX_CACHED_TOKEN_BYTES {
            return;
        }
        let key = audience_key(audience);
        // A replaced token frees its own place first.
        if let Some(ident) = self.identities.get_mut(entry_id) {
            if ident.remove(&key) {
                self.len -= 1;
            }
        }
        let own = self.len_of(entry_id);
        if own >= self.per_identity {
            if let Some(ident) = self.identities.get_mut(entry_id) {
                if ident.evict_lru() {
                    self.len -= 1;
                }
            }
        } else if self.len >= self.capacity {
            if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY {
                self.sweep(now);
            }
            if self.len >= self.capacity {
                self.evict_from_largest(entry_id);
            }
        }
        let tick = self.next_tick();
        let ident = self.identities.entry(entry_id.to_string()).or_default();
        ident.tokens.insert(
            key,
            Cached {
                token,
                refresh_at,
                tick,
            },
        );
        ident.order.insert(tick, key);
        self.len += 1;
    }

    /// Evicts the least recently used token of the identity holding the most
    /// tokens; `inserting` wins ties (it pays for its own insert), then the
    /// identity whose oldest token is oldest.
    fn evict_from_largest(&mut self, inserting: &str) {
        let victim = self
            .identities
            .iter()
            .filter(|(_, i)| !i.tokens.is_empty())
            .max_by(|(a_id, a), (b_id, b)| {
                a.tokens
                    .len()
                    .cmp(&b.tokens.len())
                    .then_with(|| (a_id.as_str() == inserting).cmp(&(b_id.as_str() == inserting)))
                    .then_with(|| b.oldest().cmp(&a.oldest()))
            })
            .map(|(id, _)| id.clone());
        let Some(victim) = victim else {
            return;
        };
        if let Some(ident) = self.identities.get_mut(&victim) {
            if ident.evict_lru() {
                self.len -= 1;
            }
            if ident.tokens.is_empty() {
                self.identities.remove(&victim);
            }
        }
    }

    /// [`Self::sweep`] if the last one was [`SWEEP_EVERY`] seconds ago or
    /// more: tokens past half their life leave the cache even if nobody asks
    /// for them again.
    pub(crate) fn sweep_if_due(&mut self, now: i64) {
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY {
            self.sweep(now);
        }
    }

    /// Drops every token past half its life, and identities left empty.
    pub(crate) fn sweep(&mut self, now: i64) {
        self.last_sweep = now;
        let mut dropped = 0;
        self.identities.retain(|_, ident| {
            let stale: Vec<[u8; 32]> = ident
                .tokens
                .iter()
                .filter(|(_, c)| now >= c.refresh_at)
                .map(|(k, _)| *k)
                .collect();
            for k in &stale {
                ident.remove(k);
            }
            dropped += stale.len();
            !ident.tokens.is_empty()
        });
        self.len -= dropped;
    }
}

#[cfg(test)]
mod tests;
