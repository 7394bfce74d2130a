//! At most one log line per limit in a period: a flood of refusals must not become a flood
//! of log lines (the log is a resource too), yet the operator learns how many were refused.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Which refusals to log: the first of each limit, then at most one per `every`, each
/// line carrying the count of the refusals not logged since the one before.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    last: HashMap<&'static str, (Instant, u64)>,
}

impl LogThrottle {
    /// One line per limit per `every`.
    pub fn new(every: Duration) -> Self {
        LogThrottle {
            every,
            last: HashMap::new(),
        }
    }

    /// Whether to log a refusal by `limit` now: `Some(n)` with the `n` refusals not logged
    /// since the last line, or `None` (counted for the next line). The keys are the
    /// limits' names, a fixed set: the map never grows past it.
    pub fn admit(&mut self, limit: &'static str, now: Instant) -> Option<u64> {
        match self.last.get_mut(limit) {
            Some((at, suppressed)) if now.saturating_duration_since(*at) < self.every => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.last.insert(limit, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_throttled_per_limit_and_counts_what_it_skipped() {
        let every = Duration::from_secs(10);
        let mut t = LogThrottle::new(every);
        let t0 = Instant::now();
        assert_eq!(t.admit("a", t0), Some(0));
        for _ in 0..1000 {
            assert_eq!(t.admit("a", t0 + Duration::from_secs(1)), None);
        }
        assert_eq!(t.admit("b", t0), Some(0), "another limit has its own line");
        assert_eq!(t.admit("a", t0 + every), Some(1000));
        assert_eq!(t.admit("a", t0 + every), None);
    }
}
