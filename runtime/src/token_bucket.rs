//! Token buckets: the rate limits of the Workload API (per uid, in the agent) and of the
//! Node API (per source address, in the server).
//!
//! Pure: time is an argument, so every case (a burst, a refill, a clock that seems to go
//! backwards, a batch that costs several tokens) is unit tested without sleeping. Each
//! side keeps its own table of buckets; what they share is the arithmetic.

use std::time::{Duration, Instant};

/// The longest "full again" horizon [`TokenBucket::full_at`] reports: a rate so small that
/// refilling would take longer is treated as taking this long (a table keeps the bucket).
const FULL_AT_HORIZON: Duration = Duration::from_secs(365 * 24 * 3600);

/// A sustained rate with a burst on top. Whoever reads it from configuration checks it:
/// `per_second` finite and > 0, `burst` >= 1.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens added per second.
    pub per_second: f64,
    /// Most tokens a bucket holds (what a caller may spend at once).
    pub burst: u32,
}

/// One bucket. Starts full: a caller seen for the first time may spend its whole burst.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn full(rate: Rate, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    /// Adds what accrued since the last look. A `now` earlier than the last one adds
    /// nothing (never a negative refill, never a panic).
    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(f64::from(rate.burst));
        if now > self.last {
            self.last = now;
        }
    }

    /// Takes one token, or says how long until one is there.
    pub fn try_take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        self.try_take_n(rate, 1, now)
    }

    /// Takes `n` tokens at once (a batch), or takes none and says how long until `n` are
    /// there. More than the burst can never be taken: the wait is then [`Duration::MAX`].
    pub fn try_take_n(&mut self, rate: Rate, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if n > rate.burst {
            return Err(Duration::MAX);
        }
        let n = f64::from(n);
        if self.tokens >= n {
            self.tokens -= n;
            return Ok(());
        }
        let missing = n - self.tokens;
        Err(Duration::try_from_secs_f64(missing / rate.per_second).unwrap_or(Duration::MAX))
    }

    /// Whether `n` tokens are there, taking none; if not, how long until they are.
    pub fn check_n(&mut self, rate: Rate, n: u32, now: Instant) -> Result<(), Duration> {
        self.refill(rate, now);
        if n > rate.burst {
            return Err(Duration::MAX);
        }
        let missing = f64::from(n) - self.tokens;
        if missing <= 0.0 {
            return Ok(());
        }
        Err(Duration::try_from_secs_f64(missing / rate.per_second).unwrap_or(Duration::MAX))
    }

    /// Whether the bucket is back to its burst (then it is the same as a bucket never
    /// used, and can be forgotten).
    pub fn is_full(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        self.tokens >= f64::from(rate.burst)
    }

    /// When the bucket, left alone, is full again (at most a year ahead): from then on
    /// forgetting it changes nothing, so a table may drop it at that instant.
    pub fn full_at(&self, rate: Rate) -> Instant {
        let missing = (f64::from(rate.burst) - self.tokens).max(0.0);
        let wait = Duration::try_from_secs_f64(missing / rate.per_second)
            .unwrap_or(FULL_AT_HORIZON)
            .min(FULL_AT_HORIZON);
        self.last + wait
    }
}

pub mod keyed;

#[cfg(test)]
mod tests;
