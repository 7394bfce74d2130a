//! The small runtime pieces the server and the agent share, so each exists once:
//! the wall clock in Unix seconds ([`clock`]), a jittered exponential backoff
//! ([`backoff`]), the wait for a shutdown signal ([`shutdown`]), an error
//! chain as one log line ([`report`]), binding a unix socket ([`socket`]), and the
//! arithmetic of rate limits ([`token_bucket`], [`log_throttle`]), the
//! binaries' allocator ([`use_jemalloc!`]), times as the CLIs print them ([`human`]), and the Prometheus endpoint (`metrics`,
//! with the `metrics` feature).

#![warn(missing_docs)]

pub mod allocator;
pub mod backoff;
pub mod clock;
#[cfg(feature = "https")]
pub mod https;
pub mod human;
pub mod log_throttle;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod report;
pub mod shutdown;
pub mod socket;
pub mod token_bucket;

pub use backoff::Backoff;
pub use clock::unix_now;
