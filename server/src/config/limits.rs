//! `[node_api.limits]`: what one source address, and all of them together, may ask of the
//! Node API. Every option, its default and why that default are in docs/configuration.md;
//! what a refusal means to an operator is in docs/operations.md.
//!
//! The defaults are sized for a fleet behind one NAT address, finite everywhere:
//! - attestation: 20/s per address, bursts of 200. Server-side verification costs about
//!   0.5 ms of CPU (docs/benchmarks.md), so one address gets at most ~1% of a core
//!   sustained; 10,000 TPM agents behind one address re-attesting at half of a 1 h agent
//!   SVID need 5.6/s, and 200 may boot at once (the rest retry with the agent's backoff).
//! - signing: 500 SVIDs/s per address (SPIRE's figure), bursts of 1,000 so that one full
//!   batch (`max_x509_svids_per_batch`) always fits.
//! - 20,000 connections and watch streams: 10,000 agents held ~165 MB of connection state
//!   in the fleet bench (~16 KB each), so the cap is ~330 MB.

use ironroot_api::AGENT_CSRS_PER_CALL;
use serde::Deserialize;

use super::{invalid, InvalidOption};

/// Attestations one address may start per second, sustained.
pub(crate) const DEFAULT_ATTESTATIONS_PER_IP_PER_SECOND: f64 = 20.0;
/// Attestations one address may start at once.
pub(crate) const DEFAULT_ATTESTATION_BURST: u32 = 200;
/// SVIDs one address may have signed per second, sustained.
pub(crate) const DEFAULT_SIGNINGS_PER_IP_PER_SECOND: f64 = 500.0;
/// SVIDs one address may have signed at once.
pub(crate) const DEFAULT_SIGNING_BURST: u32 = 1000;
/// Refused admin calls over TLS per second per source address.
pub(crate) const DEFAULT_ADMIN_REFUSALS_PER_IP_PER_SECOND: f64 = 1.0;
/// Refused admin calls over TLS one address may make at once.
pub(crate) const DEFAULT_ADMIN_REFUSAL_BURST: u32 = 20;
/// Source addresses each rate table remembers at once.
pub(crate) const DEFAULT_MAX_TRACKED_ADDRESSES: usize = 100_000;
/// Node API connections open at once (TLS handshakes in progress included).
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
/// HTTP/2 streams one connection may have open at once; RFC 9113 §6.5.2 asks for at
/// least 100.
pub(crate) const DEFAULT_MAX_STREAMS_PER_CONNECTION: u32 = 100;
/// WatchChanges streams open at once, server-wide (one per agent).
pub(crate) const DEFAULT_MAX_WATCH_STREAMS: usize = 20_000;
/// Attestation exchanges in progress at once, server-wide.
pub(crate) const DEFAULT_MAX_ATTESTATIONS_IN_FLIGHT: usize = 1_000;
/// Challenge nonces remembered at once (issued, and used ones until they expire).
pub(crate) const DEFAULT_MAX_PENDING_NONCES: usize = 100_000;
/// CSRs in one BatchNewX509Svid call (an agent sends at most
/// [`AGENT_CSRS_PER_CALL`] per call).
pub(crate) const DEFAULT_MAX_X509_SVIDS_PER_BATCH: usize = 1000;
/// Audiences of one JWT-SVID.
pub(crate) const DEFAULT_MAX_JWT_AUDIENCES: usize = 32;

/// Slowest rate accepted: slower would refill a bucket in more than 1,000 s.
const MIN_RATE: f64 = 0.001;

/// `[node_api.limits]`, checked by [`NodeLimitsConfig::check`].
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct NodeLimitsConfig {
    pub(crate) attestations_per_ip_per_second: f64,
    pub(crate) attestation_burst: u32,
    pub(crate) signings_per_ip_per_second: f64,
    pub(crate) signing_burst: u32,
    pub(crate) admin_refusals_per_ip_per_second: f64,
    pub(crate) admin_refusal_burst: u32,
    pub(crate) max_tracked_addresses: usize,
    pub(crate) max_connections: usize,
    pub(crate) max_streams_per_connection: u32,
    pub(crate) max_watch_streams: usize,
    pub(crate) max_attestations_in_flight: usize,
    pub(crate) max_pending_nonces: usize,
    pub(crate) max_x509_svids_per_batch: usize,
    pub(crate) max_jwt_audiences: usize,
}

impl Default for NodeLimitsConfig {
    fn default() -> Self {
        NodeLimitsConfig {
            attestations_per_ip_per_second: DEFAULT_ATTESTATIONS_PER_IP_PER_SECOND,
            attestation_burst: DEFAULT_ATTESTATION_BURST,
            signings_per_ip_per_second: DEFAULT_SIGNINGS_PER_IP_PER_SECOND,
            signing_burst: DEFAULT_SIGNING_BURST,
            admin_refusals_per_ip_per_second: DEFAULT_ADMIN_REFUSALS_PER_IP_PER_SECOND,
            admin_refusal_burst: DEFAULT_ADMIN_REFUSAL_BURST,
            max_tracked_addresses: DEFAULT_MAX_TRACKED_ADDRESSES,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_streams_per_connection: DEFAULT_MAX_STREAMS_PER_CONNECTION,
            max_watch_streams: DEFAULT_MAX_WATCH_STREAMS,
            max_attestations_in_flight: DEFAULT_MAX_ATTESTATIONS_IN_FLIGHT,
            max_pending_nonces: DEFAULT_MAX_PENDING_NONCES,
            max_x509_svids_per_batch: DEFAULT_MAX_X509_SVIDS_PER_BATCH,
            max_jwt_audiences: DEFAULT_MAX_JWT_AUDIENCES,
        }
    }
}

impl NodeLimitsConfig {
    /// Refuses values that cannot work, naming the option.
    pub(crate) fn check(&self) -> Result<(), InvalidOption> {
        for (key, value) in [
            (
                "node_api.limits.attestations_per_ip_per_second",
                self.attestations_per_ip_per_second,
            ),
            (
                "node_api.limits.signings_per_ip_per_second",
                self.signings_per_ip_per_second,
            ),
            (
                "node_api.limits.admin_refusals_per_ip_per_second",
                self.admin_refusals_per_ip_per_second,
            ),
        ] {
            if !(value.is_finite() && value >= MIN_RATE) {
                return Err(invalid(
                    key,
                    format!("{value} must be a number of at least {MIN_RATE}"),
                ));
            }
        }
        for (key, value) in [
            (
                "node_api.limits.attestation_burst",
                self.attestation_burst as usize,
            ),
            ("node_api.limits.signing_burst", self.signing_burst as usize),
            (
                "node_api.limits.admin_refusal_burst",
                self.admin_refusal_burst as usize,
            ),
            (
                "node_api.limits.max_tracked_addresses",
                self.max_tracked_addresses,
            ),
            ("node_api.limits.max_connections", self.max_connections),
            (
                "node_api.limits.max_streams_per_connection",
                self.max_streams_per_connection as usize,
            ),
            ("node_api.limits.max_watch_streams", self.max_watch_streams),
            (
                "node_api.limits.max_attestations_in_flight",
                self.max_attestations_in_flight,
            ),
            (
                "node_api.limits.max_pending_nonces",
                self.max_pending_nonces,
            ),
            ("node_api.limits.max_jwt_audiences", self.max_jwt_audiences),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1"));
            }
        }
        if self.max_x509_svids_per_batch < AGENT_CSRS_PER_CALL {
            return Err(invalid(
                "node_api.limits.max_x509_svids_per_batch",
                format!(
                    "must be at least {AGENT_CSRS_PER_CALL}: agents send up to \
                     {AGENT_CSRS_PER_CALL} CSRs per call"
                ),
            ));
        }
        if (self.signing_burst as usize) < self.max_x509_svids_per_batch {
            return Err(invalid(
                "node_api.limits.signing_burst",
                format!(
                    "{} is below max_x509_svids_per_batch ({}): a full batch could never \
                     be signed",
                    self.signing_burst, self.max_x509_svids_per_batch
                ),
            ));
        }
        Ok(())
    }
}
