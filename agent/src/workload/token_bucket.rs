//! Token buckets: the rate limits of the Workload API, kept per caller.
//!
//! Pure: time is an argument, so every case (a burst, a refill, a clock that
//! seems to go backwards, an idle key pruned) is unit tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A sustained rate with a burst on top. Validated by
/// [`super::limits::LimitsConfig::validate`]: `per_second` finite and > 0,
/// `burst` >= 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds (what a caller may spend at once).
    pub burst: u32,
}

/// One bucket. Starts full: a caller seen for the first time may spend its
/// whole burst.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub(crate) fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    /// Adds what accrued since the last look. A `now` earlier than the last
    /// one adds nothing (never a negative refill, never a panic).
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        if now > self.last {
            self.last = now;
        }
    }

    /// Takes one token, or says how long until one is there.
    pub(crate) fn try_take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        let missing = 1.0 - self.tokens;
        Err(Duration::try_from_secs_f64(missing / rate.per_second).unwrap_or(Duration::MAX))
    }

    /// Whether the bucket is back to its burst (then it is the same as a
    /// bucket never used, and can be forgotten).
    pub(crate) fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= f64::from(rate.burst)
    }
}

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
    fn a_burst_then_the_sustained_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        for _ in 0..3 {
            b.try_take(RATE, t0).expect("within the burst");
        }
        let wait = b.try_take(RATE, t0).expect_err("burst spent");
        assert_eq!(wait, Duration::from_millis(500), "one token per 500 ms");
        // Half a token later: still refused, and told the rest of the wait.
        let wait = b.try_take(RATE, at(t0, 250)).expect_err("half a token");
        assert_eq!(wait, Duration::from_millis(250));
        b.try_take(RATE, at(t0, 500)).expect("one token accrued");
        assert!(b.try_take(RATE, at(t0, 500)).is_err());
    }

    #[test]
    fn a_long_idle_refills_only_up_to_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::full(RATE, t0);
        for _ in 0..3 {
            b.try_take(RATE, t0).unwrap();
        }
        let later = t0 + Duration::from_secs(1_000_000);
        for _ in 0..3 {
            b.try_take(RATE, later).expect("refilled");
        }
        assert!(
            b.try_take(RATE, later).is_err(),
            "never more than the burst"
        );
    }

    #[test]
    fn a_time_before_the_last_look_adds_nothing() {
        let t0 = Instant::now() + Duration::from_secs(10);
        let mut b = TokenBucket::full(RATE, t0);
        for _ in 0..3 {
            b.try_take(RATE, t0).unwrap();
        }
        // An earlier instant (as if the clock went back): no refill, no panic,
        // and the bucket does not move its clock back either.
        let earlier = t0 - Duration::from_secs(5);
        assert!(b.try_take(RATE, earlier).is_err());
        assert!(
            b.try_take(RATE, at(t0, 400)).is_err(),
            "0.8 token at +400 ms"
        );
        b.try_take(RATE, at(t0, 500)).expect("1 token at +500 ms");
    }

    #[test]
    fn a_tiny_rate_gives_a_long_but_finite_wait() {
        let slow = Rate {
            per_second: 1e-300,
            burst: 1,
        };
        let t0 = Instant::now();
        let mut b = TokenBucket::full(slow, t0);
        b.try_take(slow, t0).unwrap();
        assert_eq!(b.try_take(slow, t0), Err(Duration::MAX));
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
