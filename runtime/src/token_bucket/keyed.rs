//! A bounded table of token buckets, one per key (a server's source address, an
//! agent's caller uid). A bucket is
//! forgotten the moment it is full again (it is then the same as a bucket never used),
//! and the table never holds more than `capacity` keys: a new key past that is refused
//! rather than pushing out a key that is still limited, which would hand that key a
//! fresh burst.
//!
//! Cost: O(log n) per call. Besides the map, the keys are ordered by the instant their
//! bucket is full again, so the ones to forget are taken from the front instead of
//! found by a scan.
//!
//! How full can a flood make it? A key stays only as long as its bucket takes to refill
//! what it spent: `tokens spent / per_second`. To hold `capacity` keys, callers must
//! keep spending `capacity × per_second` tokens per second from distinct addresses
//! (2,000,000 TLS handshakes a second at the attestation defaults).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::{Rate, TokenBucket};

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key's bucket lacks tokens: wait this long ([`Duration::MAX`]: never, more
    /// than the burst was asked).
    Rate(Duration),
    /// The key is new and the table holds `capacity` keys, all still limited.
    TableFull,
}

/// The table: see the module documentation.
#[derive(Debug)]
pub struct BoundedBuckets<K> {
    rate: Rate,
    capacity: usize,
    /// Each key's bucket, and the instant it is filed under in `by_full_at`.
    buckets: HashMap<K, (TokenBucket, Instant)>,
    by_full_at: BTreeSet<(Instant, K)>,
}

impl<K: Hash + Ord + Clone> BoundedBuckets<K> {
    /// An empty table holding at most `capacity` keys (at least 1).
    pub fn new(rate: Rate, capacity: usize) -> Self {
        BoundedBuckets {
            rate,
            capacity: capacity.max(1),
            buckets: HashMap::new(),
            by_full_at: BTreeSet::new(),
        }
    }

    /// Takes `n` tokens from `key`'s bucket, or none and says why.
    pub fn try_take(&mut self, key: &K, n: u32, now: Instant) -> Result<(), Refusal> {
        self.forget_full(now);
        let rate = self.rate;
        if let Some((bucket, filed)) = self.buckets.get_mut(key) {
            let taken = bucket.try_take_n(rate, n, now);
            // Taking moves the instant; so may a refused look, by rounding.
            let full_at = bucket.full_at(rate);
            if full_at != *filed {
                self.by_full_at.remove(&(*filed, key.clone()));
                self.by_full_at.insert((full_at, key.clone()));
                *filed = full_at;
            }
            return taken.map_err(Refusal::Rate);
        }
        if self.buckets.len() >= self.capacity {
            return Err(Refusal::TableFull);
        }
        let mut bucket = TokenBucket::full(rate, now);
        bucket.try_take_n(rate, n, now).map_err(Refusal::Rate)?;
        let full_at = bucket.full_at(rate);
        // Nothing taken (n = 0): the bucket is as if never used.
        if full_at > now {
            self.by_full_at.insert((full_at, key.clone()));
            self.buckets.insert(key.clone(), (bucket, full_at));
        }
        Ok(())
    }

    /// Whether `key`'s bucket holds `n` tokens, taking none (a key not in the table has a
    /// full bucket). Lets a caller refuse before doing work that a later
    /// [`try_take`](Self::try_take) would charge for.
    pub fn check(&mut self, key: &K, n: u32, now: Instant) -> Result<(), Refusal> {
        self.forget_full(now);
        let rate = self.rate;
        match self.buckets.get_mut(key) {
            Some((bucket, _)) => bucket.check_n(rate, n, now).map_err(Refusal::Rate),
            None if n > rate.burst => Err(Refusal::Rate(Duration::MAX)),
            None => Ok(()),
        }
    }

    /// Forgets every key whose bucket is full by `now`.
    fn forget_full(&mut self, now: Instant) {
        while let Some((at, _)) = self.by_full_at.first() {
            if *at > now {
                break;
            }
            if let Some((_, key)) = self.by_full_at.pop_first() {
                self.buckets.remove(&key);
            }
        }
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        debug_assert_eq!(
            self.buckets.len(),
            self.by_full_at.len(),
            "the indexes agree"
        );
        self.buckets.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

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
        let mut k = BoundedBuckets::new(RATE, 10);
        for _ in 0..3 {
            k.try_take(&1u8, 1, t0).unwrap();
        }
        assert_eq!(
            k.try_take(&1, 1, t0),
            Err(Refusal::Rate(Duration::from_millis(500)))
        );
        k.try_take(&2, 1, t0).expect("key 2 is not affected");
    }

    #[test]
    fn the_bucket_refills_at_the_rate() {
        let t0 = Instant::now();
        let mut k = BoundedBuckets::new(RATE, 10);
        k.try_take(&1u8, 3, t0).unwrap();
        assert!(k.try_take(&1, 1, at(t0, 499)).is_err());
        k.try_take(&1, 1, at(t0, 500))
            .expect("one token after 500 ms");
        assert!(
            k.try_take(&1, 2, at(t0, 1000)).is_err(),
            "one token, not two"
        );
        k.try_take(&1, 2, at(t0, 1500))
            .expect("two tokens by 1.5 s");
    }

    #[test]
    fn a_batch_over_the_burst_is_refused_and_nothing_is_kept() {
        let t0 = Instant::now();
        let mut k = BoundedBuckets::new(RATE, 10);
        assert_eq!(k.try_take(&1u8, 4, t0), Err(Refusal::Rate(Duration::MAX)));
        assert_eq!(k.len(), 0, "a refused new key is not remembered");
        k.try_take(&1, 0, t0).unwrap();
        assert_eq!(k.len(), 0, "nothing taken, nothing remembered");
    }

    #[test]
    fn a_full_table_refuses_new_keys_but_never_forgets_a_limited_one() {
        let t0 = Instant::now();
        let mut k = BoundedBuckets::new(RATE, 2);
        k.try_take(&1u8, 3, t0).unwrap();
        k.try_take(&2, 1, t0).unwrap();
        assert_eq!(k.try_take(&3, 1, t0), Err(Refusal::TableFull));
        // Key 1 is still limited: neither the refusal nor a flood of new keys resets it.
        for key in 4..100 {
            assert_eq!(k.try_take(&key, 1, t0), Err(Refusal::TableFull));
        }
        assert!(matches!(k.try_take(&1, 1, t0), Err(Refusal::Rate(_))));
        // Key 2 spent one token: full again after 500 ms, and forgotten then.
        k.try_take(&3, 1, at(t0, 500))
            .expect("key 2's slot is free");
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn a_flood_of_distinct_keys_keeps_the_table_small() {
        let t0 = Instant::now();
        let mut k = BoundedBuckets::new(RATE, 1_000_000);
        // 100,000 keys, one token each, 10 ms apart: each refills in 500 ms, so at most
        // 51 are remembered at any time.
        let mut most = 0;
        for i in 0..100_000u32 {
            k.try_take(&i, 1, at(t0, u64::from(i) * 10)).unwrap();
            most = most.max(k.len());
        }
        assert!(most <= 51, "table grew to {most}");
        k.try_take(&0, 0, at(t0, 100_000 * 10 + 500)).unwrap();
        assert_eq!(k.len(), 0, "every bucket refilled and was forgotten");
    }

    /// Random takes by a few keys against buckets that are never forgotten: forgetting a
    /// full bucket and a capacity never change an answer, except a refusal of a new key
    /// while the table is full of limited ones.
    #[test]
    fn random_takes_match_buckets_that_are_never_forgotten() {
        for seed in 0..200u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let rate = Rate {
                per_second: f64::from(rng.gen_range(1..20u32)),
                burst: rng.gen_range(1..6),
            };
            let capacity = rng.gen_range(1..5);
            let mut table = BoundedBuckets::new(rate, capacity);
            let mut plain: HashMap<u8, TokenBucket> = HashMap::new();
            let t0 = Instant::now();
            let mut ms = 0u64;
            for step in 0..500 {
                ms += rng.gen_range(0..150);
                let now = at(t0, ms);
                let key = rng.gen_range(0..6u8);
                let n = rng.gen_range(0..=rate.burst + 1);
                let got = table.try_take(&key, n, now);
                let ctx = format!("seed {seed} step {step} key {key} n {n} at {ms} ms");
                if got == Err(Refusal::TableFull) {
                    assert_eq!(table.len(), capacity, "{ctx}");
                    continue;
                }
                let want = plain
                    .entry(key)
                    .or_insert_with(|| TokenBucket::full(rate, now))
                    .try_take_n(rate, n, now);
                match (got, want) {
                    (Ok(()), Ok(())) => {}
                    (Err(Refusal::Rate(a)), Err(b)) => {
                        let diff = a.abs_diff(b);
                        assert!(diff <= Duration::from_micros(1), "{ctx}: {a:?} vs {b:?}");
                    }
                    (got, want) => panic!("{ctx}: table {got:?}, plain bucket {want:?}"),
                }
                assert!(table.len() <= capacity, "{ctx}");
            }
        }
    }
}
