//! The wall clock in the unit certificates, tokens and the datastore use.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. A clock set before 1970 reads 0 rather than
/// failing: every caller compares it with expiry times, and "long expired" is the
/// safe reading of a broken clock.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_time_after_the_code_was_written() {
        // 2024-01-01T00:00:00Z
        assert!(super::unix_now() > 1_704_067_200);
    }
}
