//! Exponential backoff with jitter, for retrying a server that is down.
//!
//! Jitter is the point: after a server outage every agent of a fleet fails at
//! the same moment, and a plain doubling backoff would have them all come back
//! in lockstep, each retry a thundering herd. Each delay is drawn from the upper
//! half of the current step ("equal jitter"): retries spread out, yet none comes
//! later than the un-jittered schedule would have, so recovery is no slower.

use std::time::Duration;

use rand::Rng;

/// The first delay, before jitter.
pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
/// The longest delay, before jitter.
pub const DEFAULT_MAX: Duration = Duration::from_secs(30);

/// Delays of `initial`, doubling per failure up to `max`, each drawn uniformly
/// from `[step / 2, step]`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    step: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_INITIAL, DEFAULT_MAX)
    }
}

impl Backoff {
    /// A backoff starting at `initial` and capped at `max` (`max` is raised to
    /// `initial` if smaller).
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            step: initial,
        }
    }

    /// The delay before the next attempt; the following one doubles, up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.max);
        jittered(step, rand::thread_rng().gen::<f64>())
    }

    /// Sleeps for [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// The attempt succeeded: the next failure starts from `initial` again.
    pub fn reset(&mut self) {
        self.step = self.initial;
    }
}

/// `step` scaled into `[step / 2, step]` by `unit` in `[0, 1)`.
fn jittered(step: Duration, unit: f64) -> Duration {
    step.mul_f64(0.5 + unit.clamp(0.0, 1.0) / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_never_exceeds_the_step() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let steps = [1, 2, 4, 8, 8, 8];
        for s in steps {
            let d = b.next_delay();
            let step = Duration::from_secs(s);
            assert!(
                d >= step / 2 && d <= step,
                "{d:?} outside [{step:?}/2, {step:?}]"
            );
        }
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        for _ in 0..6 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }

    #[test]
    fn jitter_spans_the_upper_half_of_the_step() {
        let step = Duration::from_secs(10);
        assert_eq!(jittered(step, 0.0), Duration::from_secs(5));
        assert_eq!(jittered(step, 1.0), step);
        assert_eq!(jittered(step, 0.5), Duration::from_millis(7500));
    }

    #[test]
    fn a_fleet_does_not_retry_in_lockstep() {
        let delays: std::collections::HashSet<Duration> =
            (0..32).map(|_| Backoff::default().next_delay()).collect();
        assert!(delays.len() > 1, "32 agents drew the same delay");
    }
}
