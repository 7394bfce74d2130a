//! What the health check says about the CA: whether its key manager answers, and whether its
//! rotation checks succeed. Both are known at once: the key manager reports an outage from
//! the first failed call (or its own probe), and every rotation check records its outcome.

use std::sync::MutexGuard;
use std::time::SystemTime;

use ironroot_hsm::KeyManagerHealth;
use tracing::{info, warn};

use super::{CaError, CertificateAuthority};

/// The health check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HealthState {
    /// Everything works.
    Healthy,
    /// SVIDs are signed, but an operator has work (e.g. CA rotation checks fail).
    Degraded,
    /// SVIDs cannot be signed (e.g. the HSM is unreachable).
    Unhealthy,
}

impl HealthState {
    /// The wire spelling: `"healthy"`, `"degraded"`, `"unhealthy"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Unhealthy => "unhealthy",
        }
    }
}

/// The CA's health: the verdict and, for anything but healthy, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaHealth {
    /// The worst of the problems found.
    pub state: HealthState,
    /// One line per problem, naming what to check.
    pub problems: Vec<String>,
}

impl CaHealth {
    /// Adds a problem; the verdict becomes the worse of the two.
    pub(crate) fn report(&mut self, state: HealthState, problem: String) {
        self.state = self.state.max(state);
        self.problems.push(problem);
    }
}

/// Rotation checks failing since `since`; the latest error.
#[derive(Debug, Clone)]
pub(super) struct RotationTrouble {
    since: SystemTime,
    error: String,
    failures: u64,
}

fn rfc3339(t: SystemTime) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_seconds(t)
}

impl CertificateAuthority {
    fn trouble(&self) -> MutexGuard<'_, Option<RotationTrouble>> {
        // Replaced whole on each update: a poisoned lock still holds a consistent value.
        self.rotation_trouble
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Records a rotation check's outcome for the health check (and logs a recovery).
    pub(super) fn note_rotation(&self, result: &Result<bool, CaError>) {
        let mut trouble = self.trouble();
        match result {
            Ok(_) => {
                if let Some(t) = trouble.take() {
                    info!(
                        failed_checks = t.failures,
                        since = %rfc3339(t.since),
                        "CA rotation checks succeed again"
                    );
                }
            }
            Err(e) => {
                let t = trouble.get_or_insert_with(|| RotationTrouble {
                    since: SystemTime::now(),
                    error: String::new(),
                    failures: 0,
                });
                t.error = e.to_string();
                t.failures += 1;
                if e.condemns_active_key() {
                    warn!(error = %e, "the CA stopped signing with a key the key manager no longer vouches for");
                }
            }
        }
    }

    /// The CA's health: its key manager's (one cheap call to it at most, so run it off the
    /// async workers) and its rotation checks'.
    pub fn health(&self) -> CaHealth {
        let mut h = CaHealth {
            state: HealthState::Healthy,
            problems: Vec::new(),
        };
        if let KeyManagerHealth::Unreachable { since, reason } = self.km.health() {
            let hsm = format!(
                "HSM unreachable since {}: {reason} ({}); the server reconnects by itself",
                rfc3339(since),
                self.km.describe()
            );
            let now = ironroot_runtime::unix_now();
            match self.memory_key_not_after() {
                // Memory mode: X.509-SVIDs go on until the in-memory key's certificate ends.
                Some(until) if until > now => h.report(
                    HealthState::Degraded,
                    format!(
                        "{hsm}; X.509-SVIDs are still signed by the in-memory signing key until \
                         {} (no new key can be certified meanwhile); JWT-SVIDs cannot be signed",
                        rfc3339(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(until as u64)
                        )
                    ),
                ),
                _ => h.report(
                    HealthState::Unhealthy,
                    format!("{hsm}; SVIDs cannot be signed until it answers again"),
                ),
            }
        }
        if self.settings.signing == super::SigningMode::Memory {
            let now = ironroot_runtime::unix_now();
            match self.memory_key_not_after() {
                Some(until) if until > now => {}
                Some(until) => h.report(
                    HealthState::Unhealthy,
                    format!(
                        "the in-memory X.509 signing key expired at {} and no new one could be \
                         certified: X.509-SVIDs cannot be signed",
                        rfc3339(
                            std::time::UNIX_EPOCH + std::time::Duration::from_secs(until as u64)
                        )
                    ),
                ),
                None => h.report(
                    HealthState::Unhealthy,
                    "no in-memory X.509 signing key has been certified yet: X.509-SVIDs cannot \
                     be signed"
                        .to_owned(),
                ),
            }
        }
        if let Some(t) = self.trouble().clone() {
            h.report(
                HealthState::Degraded,
                format!(
                    "CA rotation check failing since {} ({} checks): {}; the current CA keys \
                     stay active and the check is retried",
                    rfc3339(t.since),
                    t.failures,
                    t.error
                ),
            );
        }
        h
    }
}
