//! Per-caller limits of the Workload API (`[workload_api.limits]`,
//! docs/agent-configuration.md).
//!
//! A caller is its **uid** (SO_PEERCRED at connect). Not the PID: a process
//! forks a new PID for free, so a per-PID budget is no budget; a uid is the
//! unit of privilege on the node, and a local user cannot get another one
//! without privilege. The price is that the workloads of one uid (say many
//! rootful containers as root) share one budget, so the defaults are sized
//! for a busy node, far above what honest workloads do.
//!
//! Invariants (tested in `agent/tests/it/workload_limits.rs` and below):
//! - a uid holds at most `max_connections_per_uid` Workload API connections
//!   at once, and opens new ones at most at `connections_per_second` (with
//!   `connection_burst` at once); a connection over either limit is refused
//!   at accept, before the caller is attested;
//! - a uid gets at most `jwt_mints_per_second` JWT-SVIDs minted by the
//!   server (`jwt_mint_burst` at once); JWT-SVIDs served from the agent's
//!   cache cost nothing;
//! - one uid reaching a limit never changes what another uid may do;
//! - every refusal names the limit and its option, as a gRPC
//!   `ResourceExhausted` status and in the log (at most one line per limit
//!   every [`LOG_EVERY`], with a count of the refusals not logged).
//!
//! Not covered: uids of a user's subordinate range (rootless containers
//! map 65,536 of them) each count as their own caller.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ironroot_runtime::log_throttle::LogThrottle;
use serde::Deserialize;
use tracing::warn;

use ironroot_runtime::token_bucket::keyed::{BoundedBuckets, Refusal};
use ironroot_runtime::token_bucket::Rate;

/// Callers (uids) whose rate buckets are remembered at once. A bucket is
/// forgotten when it is full again, so this is reached only by this many uids
/// all limited at the same moment; the next new uid is then refused too.
const UIDS_TRACKED: usize = 65_536;

/// One token from `uid`'s bucket, or how long to wait.
fn take(buckets: &mut BoundedBuckets<u32>, uid: u32, now: Instant) -> Result<(), Duration> {
    buckets
        .try_take(&uid, 1, now)
        .map_err(|refusal| match refusal {
            Refusal::Rate(wait) => wait,
            Refusal::TableFull => Duration::from_secs(1),
        })
}

/// At most one log line per limit this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// `[workload_api.limits]`. Every option is documented with its default in
/// docs/agent-configuration.md.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most Workload API connections one uid holds open at once.
    pub max_connections_per_uid: u32,
    /// New connections per second one uid may open, sustained.
    pub connections_per_second: f64,
    /// New connections one uid may open at once (the bucket size).
    pub connection_burst: u32,
    /// JWT-SVIDs per second one uid may have minted by the server (cache
    /// misses), sustained.
    pub jwt_mints_per_second: f64,
    /// JWT-SVIDs one uid may have minted at once.
    pub jwt_mint_burst: u32,
    /// JWT-SVIDs the agent caches in all.
    pub jwt_cache_capacity: usize,
    /// JWT-SVIDs the agent caches for one identity (registration entry),
    /// whatever the audiences asked for.
    pub jwt_cache_per_identity: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections_per_uid: 2048,
            connections_per_second: 1000.0,
            connection_burst: 2000,
            jwt_mints_per_second: 20.0,
            jwt_mint_burst: 200,
            jwt_cache_capacity: 2048,
            jwt_cache_per_identity: 64,
        }
    }
}

/// A `[workload_api.limits]` value that cannot work.
#[derive(Debug, thiserror::Error, PartialEq)]
#[non_exhaustive]
pub enum LimitsConfigError {
    /// A rate that is zero, negative, infinite or NaN.
    #[error("workload_api.limits.{option} = {value} must be a number above 0")]
    Rate {
        /// The option.
        option: &'static str,
        /// Its value.
        value: f64,
    },
    /// A count that is zero.
    #[error("workload_api.limits.{option} must be at least 1")]
    Zero {
        /// The option.
        option: &'static str,
    },
    /// The per-identity share is larger than the whole cache.
    #[error(
        "workload_api.limits.jwt_cache_per_identity ({per_identity}) must not exceed \
         jwt_cache_capacity ({capacity})"
    )]
    PerIdentityOverCapacity {
        /// `jwt_cache_per_identity`.
        per_identity: usize,
        /// `jwt_cache_capacity`.
        capacity: usize,
    },
}

impl LimitsConfig {
    /// Checks every option (the agent refuses to start otherwise).
    pub fn validate(&self) -> Result<(), LimitsConfigError> {
        for (option, value) in [
            ("connections_per_second", self.connections_per_second),
            ("jwt_mints_per_second", self.jwt_mints_per_second),
        ] {
            if !(value.is_finite() && value > 0.0) {
                return Err(LimitsConfigError::Rate { option, value });
            }
        }
        for (option, value) in [
            (
                "max_connections_per_uid",
                self.max_connections_per_uid as usize,
            ),
            ("connection_burst", self.connection_burst as usize),
            ("jwt_mint_burst", self.jwt_mint_burst as usize),
            ("jwt_cache_capacity", self.jwt_cache_capacity),
            ("jwt_cache_per_identity", self.jwt_cache_per_identity),
        ] {
            if value == 0 {
                return Err(LimitsConfigError::Zero { option });
            }
        }
        if self.jwt_cache_per_identity > self.jwt_cache_capacity {
            return Err(LimitsConfigError::PerIdentityOverCapacity {
                per_identity: self.jwt_cache_per_identity,
                capacity: self.jwt_cache_capacity,
            });
        }
        Ok(())
    }

    fn connection_rate(&self) -> Rate {
        Rate {
            per_second: self.connections_per_second,
            burst: self.connection_burst,
        }
    }

    fn mint_rate(&self) -> Rate {
        Rate {
            per_second: self.jwt_mints_per_second,
            burst: self.jwt_mint_burst,
        }
    }
}

/// A caller over one of its limits. The text names the limit and the
/// option that sets it; the caller sees it as `ResourceExhausted`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum LimitExceeded {
    /// Too many connections held at once.
    #[error(
        "uid {uid} already holds {open} Workload API connections, the most one uid may hold \
         (workload_api.limits.max_connections_per_uid = {max})"
    )]
    OpenConnections {
        /// The caller's uid.
        uid: u32,
        /// Connections it holds.
        open: u32,
        /// The limit.
        max: u32,
    },
    /// New connections too fast.
    #[error(
        "uid {uid} opens Workload API connections faster than its limit of {per_second}/s with \
         bursts of {burst} (workload_api.limits.connections_per_second, connection_burst); \
         retry in {retry_after:?}"
    )]
    ConnectionRate {
        /// The caller's uid.
        uid: u32,
        /// The sustained rate.
        per_second: f64,
        /// The burst.
        burst: u32,
        /// When a new connection would be accepted.
        retry_after: Duration,
    },
    /// JWT-SVID cache misses too fast.
    #[error(
        "uid {uid} asks for new JWT-SVIDs (not in the agent's cache) faster than its limit of \
         {per_second}/s with bursts of {burst} (workload_api.limits.jwt_mints_per_second, \
         jwt_mint_burst); retry in {retry_after:?}"
    )]
    JwtMintRate {
        /// The caller's uid.
        uid: u32,
        /// The sustained rate.
        per_second: f64,
        /// The burst.
        burst: u32,
        /// When a mint would be allowed.
        retry_after: Duration,
    },
}

impl LimitExceeded {
    /// The limit's short name (the key of its log throttle).
    pub(crate) fn limit(&self) -> &'static str {
        match self {
            LimitExceeded::OpenConnections { .. } => "max_connections_per_uid",
            LimitExceeded::ConnectionRate { .. } => "connections_per_second",
            LimitExceeded::JwtMintRate { .. } => "jwt_mints_per_second",
        }
    }

    /// As the gRPC status a caller gets.
    pub(crate) fn to_status(&self) -> tonic::Status {
        tonic::Status::resource_exhausted(self.to_string())
    }
}

struct State {
    open: HashMap<u32, u32>,
    connections: BoundedBuckets<u32>,
    mints: BoundedBuckets<u32>,
    log: LogThrottle,
}

/// The limits of every caller of one agent. Shared (`Arc`) by the accept
/// loop and the Workload API.
pub(crate) struct CallerLimits {
    cfg: LimitsConfig,
    state: Mutex<State>,
}

impl std::fmt::Debug for CallerLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallerLimits")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// One accepted connection, counted against its uid until dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    limits: Arc<CallerLimits>,
    uid: u32,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut s = self.limits.lock();
        if let Some(n) = s.open.get_mut(&self.uid) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.open.remove(&self.uid);
            }
        }
    }
}

impl CallerLimits {
    /// Limits as configured (`cfg` validated by [`LimitsConfig::validate`]).
    pub(crate) fn new(cfg: LimitsConfig) -> Arc<Self> {
        Arc::new(CallerLimits {
            state: Mutex::new(State {
                open: HashMap::new(),
                connections: BoundedBuckets::new(cfg.connection_rate(), UIDS_TRACKED),
                mints: BoundedBuckets::new(cfg.mint_rate(), UIDS_TRACKED),
                log: LogThrottle::new(LOG_EVERY),
            }),
            cfg,
        })
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &LimitsConfig {
        &self.cfg
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it
        // (every update is one map operation), so a poisoned lock is used as is.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits a new connection from `uid`, or says which limit it is over
    /// (and logs that, throttled). The permit counts it until dropped.
    pub(crate) fn admit_connection(
        self: &Arc<Self>,
        uid: u32,
        now: Instant,
    ) -> Result<ConnectionPermit, LimitExceeded> {
        let mut s = self.lock();
        let open = s.open.get(&uid).copied().unwrap_or(0);
        let refusal = if open >= self.cfg.max_connections_per_uid {
            Some(LimitExceeded::OpenConnections {
                uid,
                open,
                max: self.cfg.max_connections_per_uid,
            })
        } else {
            take(&mut s.connections, uid, now).err().map(|retry_after| {
                LimitExceeded::ConnectionRate {
                    uid,
                    per_second: self.cfg.connections_per_second,
                    burst: self.cfg.connection_burst,
                    retry_after,
                }
            })
        };
        if let Some(e) = refusal {
            log_refusal(&mut s.log, &e, "connection refused", now);
            return Err(e);
        }
        *s.open.entry(uid).or_insert(0) += 1;
        Ok(ConnectionPermit {
            limits: self.clone(),
            uid,
        })
    }

    /// Admits one JWT-SVID mint (a cache miss that goes to the server) for
    /// `uid`, or says it is over its rate (and logs that, throttled).
    pub(crate) fn admit_jwt_mint(&self, uid: u32, now: Instant) -> Result<(), LimitExceeded> {
        let mut s = self.lock();
        match take(&mut s.mints, uid, now) {
            Ok(()) => Ok(()),
            Err(retry_after) => {
                let e = LimitExceeded::JwtMintRate {
                    uid,
                    per_second: self.cfg.jwt_mints_per_second,
                    burst: self.cfg.jwt_mint_burst,
                    retry_after,
                };
                log_refusal(&mut s.log, &e, "JWT-SVID refused", now);
                Err(e)
            }
        }
    }

    /// Connections `uid` holds now.
    #[cfg(test)]
    pub(crate) fn open_connections(&self, uid: u32) -> u32 {
        self.lock().open.get(&uid).copied().unwrap_or(0)
    }
}

fn log_refusal(log: &mut LogThrottle, e: &LimitExceeded, what: &str, now: Instant) {
    if let Some(suppressed) = log.admit(e.limit(), now) {
        warn!(
            limit = e.limit(),
            suppressed_since_last_line = suppressed,
            "Workload API {what}: {e}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> LimitsConfig {
        LimitsConfig {
            max_connections_per_uid: 3,
            connections_per_second: 1.0,
            connection_burst: 5,
            jwt_mints_per_second: 1.0,
            jwt_mint_burst: 2,
            ..LimitsConfig::default()
        }
    }

    #[test]
    fn the_defaults_are_valid() {
        LimitsConfig::default().validate().unwrap();
    }

    #[test]
    fn unusable_values_are_rejected_by_name() {
        let nan = LimitsConfig {
            jwt_mints_per_second: f64::NAN,
            ..LimitsConfig::default()
        };
        let e = nan.validate().unwrap_err();
        assert!(matches!(
            e,
            LimitsConfigError::Rate {
                option: "jwt_mints_per_second",
                ..
            }
        ));
        for bad in [0.0, -1.0, f64::INFINITY] {
            let c = LimitsConfig {
                connections_per_second: bad,
                ..LimitsConfig::default()
            };
            assert!(
                matches!(
                    c.validate(),
                    Err(LimitsConfigError::Rate {
                        option: "connections_per_second",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        let zero = LimitsConfig {
            max_connections_per_uid: 0,
            ..LimitsConfig::default()
        };
        assert_eq!(
            zero.validate(),
            Err(LimitsConfigError::Zero {
                option: "max_connections_per_uid"
            })
        );
        let over = LimitsConfig {
            jwt_cache_capacity: 10,
            jwt_cache_per_identity: 11,
            ..LimitsConfig::default()
        };
        let e = over.validate().unwrap_err();
        assert!(e.to_string().contains("jwt_cache_per_identity (11)"), "{e}");
    }

    #[test]
    fn unknown_options_are_errors() {
        let e = toml::from_str::<LimitsConfig>("max_connections = 5").unwrap_err();
        assert!(e.to_string().contains("unknown field"), "{e}");
        let c: LimitsConfig = toml::from_str("jwt_mint_burst = 7").unwrap();
        assert_eq!(c.jwt_mint_burst, 7);
        assert_eq!(
            c.jwt_cache_capacity,
            LimitsConfig::default().jwt_cache_capacity
        );
    }

    #[test]
    fn open_connections_are_capped_per_uid_and_released_on_drop() {
        let l = CallerLimits::new(small());
        let t0 = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|_| l.admit_connection(1000, t0).unwrap())
            .collect();
        let e = l.admit_connection(1000, t0).unwrap_err();
        assert_eq!(
            e,
            LimitExceeded::OpenConnections {
                uid: 1000,
                open: 3,
                max: 3
            }
        );
        assert!(e.to_string().contains("max_connections_per_uid = 3"), "{e}");
        assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
        // Another uid is not affected.
        let other = l.admit_connection(0, t0).expect("uid 0 unaffected");
        drop(held);
        assert_eq!(l.open_connections(1000), 0);
        l.admit_connection(1000, t0).expect("a slot is free again");
        drop(other);
        assert_eq!(l.open_connections(0), 0);
    }

    #[test]
    fn new_connections_are_rate_limited_per_uid() {
        let l = CallerLimits::new(small());
        let t0 = Instant::now();
        // Five at once (the burst), each closed at once: the open cap is not
        // what stops the sixth.
        for _ in 0..5 {
            drop(l.admit_connection(1000, t0).unwrap());
        }
        let e = l.admit_connection(1000, t0).unwrap_err();
        assert!(
            matches!(e, LimitExceeded::ConnectionRate { uid: 1000, retry_after, .. }
                if retry_after == Duration::from_secs(1)),
            "{e:?}"
        );
        assert!(e.to_string().contains("connections_per_second"), "{e}");
        drop(l.admit_connection(0, t0).expect("uid 0 unaffected"));
        drop(
            l.admit_connection(1000, t0 + Duration::from_secs(1))
                .expect("one more a second later"),
        );
    }

    #[test]
    fn a_refused_connection_is_not_counted_as_open() {
        let l = CallerLimits::new(small());
        let t0 = Instant::now();
        let _held: Vec<_> = (0..3)
            .map(|_| l.admit_connection(1000, t0).unwrap())
            .collect();
        for _ in 0..100 {
            assert!(l.admit_connection(1000, t0).is_err());
        }
        assert_eq!(l.open_connections(1000), 3);
    }

    #[test]
    fn jwt_mints_are_rate_limited_per_uid() {
        let l = CallerLimits::new(small());
        let t0 = Instant::now();
        l.admit_jwt_mint(1000, t0).unwrap();
        l.admit_jwt_mint(1000, t0).unwrap();
        let e = l.admit_jwt_mint(1000, t0).unwrap_err();
        assert!(matches!(e, LimitExceeded::JwtMintRate { uid: 1000, .. }));
        assert!(e.to_string().contains("jwt_mints_per_second"), "{e}");
        l.admit_jwt_mint(65534, t0)
            .expect("another uid is unaffected");
    }
}
