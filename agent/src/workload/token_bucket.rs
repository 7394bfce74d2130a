//! Token buckets per caller: the rate limits of the Workload API. The bucket
//! arithmetic is `ironroot_runtime::token_bucket` (tested there); this is the
//! table of buckets, keyed by uid.
//!
//! Pure: time is an argument, so every case (an idle key pruned, a limited key
//! kept) is unit tested without sleeping. Every `Rate` here comes from values
//! [`super::limits::LimitsConfig::validate`] checked.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

pub(crate) use ironroot_runtime::token_bucket::Rate;
use ironroot_runtime::token_bucket::TokenBucket;

/// Buckets per key (a caller's uid). A key whose bucket is full again is
/// dropped, so the map holds only the callers active within the last
/// `burst / per_second` seconds, however many distinct keys come and go.
#[derive(Debug)]
pub(crate) struct KeyedBuckets<K> {
    rate: Rate,
    buckets: HashMap<K, TokenBucket>,
    /// Size after the last prune: the next prune runs when the map doubles,
    /// so pruning costs O(1) per call amortised.
    pruned_len: usize,
}

/// Prune no earlier than this many keys (a handful of callers never pays
/// for a scan).
const PRUNE_FLOOR: usize = 64;

impl<K: Hash + Eq + Clone> KeyedBuckets<K> {
    pub(crate) fn new(rate: Rate) -> Self {
        KeyedBuckets {
            rate,
            buckets: HashMap::new(),
            pruned_len: 0,
        }
    }

    /// Takes a token from `key`'s bucket, or says how long until one is there.
    pub(crate) fn try_take(&mut self, key: &K, now: Instant) -> Result<(), Duration> {
        if self.buckets.len() >= (self.pruned_len * 2).max(PRUNE_FLOOR) {
            self.prune(now);
        }
        let rate = self.rate;
        self.buckets
            .entry(key.clone())
            .or_insert_with(|| TokenBucket::full(rate, now))
            .try_take(rate, now)
    }

    /// Forgets the keys whose buckets are full again.
    pub(crate) fn prune(&mut self, now: Instant) {
        let rate = self.rate;
        self.buckets.retain(|_, b| !b.is_full(rate, now));
        self.pruned_len = self.buckets.len();
    }

    #[cfg(test)]
    /// How many keys are remembered.
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    #[cfg(test)]
    /// Whether no key is remembered.
    pub(crate) fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: Rate = Rate {
        per_second: 2.0,
        burst: 3,
    };

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let t0 = Instant::now();
        let mut k = KeyedBuckets::new(RATE);
        for _ in 0..3 {
            k.try_take(&1000u32, t0).unwrap();
        }
        assert!(k.try_take(&1000, t0).is_err(), "uid 1000 spent its burst");
        k.try_take(&0, t0).expect("uid 0 is not affected");
    }

    #[test]
    fn idle_keys_are_forgotten_and_the_map_stays_small() {
        let t0 = Instant::now();
        let mut k = KeyedBuckets::new(RATE);
        // 100,000 distinct keys, each seen once, 10 ms apart: a full bucket
        // takes 500 ms to refill one token, so at most ~50-100 are remembered.
        let mut most = 0;
        for i in 0..100_000u32 {
            k.try_take(&i, at(t0, u64::from(i) * 10)).unwrap();
            most = most.max(k.len());
        }
        assert!(most <= 2 * PRUNE_FLOOR + 100, "map grew to {most}");
        k.prune(at(t0, 100_000 * 10 + 2_000));
        assert!(
            k.is_empty(),
            "{} keys left after they all refilled",
            k.len()
        );
    }

    #[test]
    fn pruning_never_forgets_a_key_that_is_limited() {
        let t0 = Instant::now();
        let mut k = KeyedBuckets::new(RATE);
        for _ in 0..3 {
            k.try_take(&7u32, t0).unwrap();
        }
        // Many other keys force prunes while key 7 is still empty.
        for i in 100..1_000u32 {
            k.try_take(&i, t0).unwrap();
        }
        k.prune(t0);
        assert!(k.try_take(&7, t0).is_err(), "key 7 must still be limited");
    }
}
