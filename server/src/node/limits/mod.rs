//! Limits at the Node API's door (`[node_api.limits]`, docs/configuration.md): what one
//! source address may ask, and what all of them together may hold.
//!
//! Invariants (unit tests below and in `buckets`; the real server in
//! `agent/tests/it/node_api_limits.rs`):
//! - one source address starts at most `attestation_burst` attestations at once and
//!   `attestations_per_ip_per_second` sustained; it has at most `signing_burst` SVIDs
//!   signed at once and `signings_per_ip_per_second` sustained (a batch of N CSRs costs
//!   N); the two budgets are separate, and one address reaching a limit never changes
//!   what another may do;
//! - each rate table remembers at most `max_tracked_addresses` addresses; an address
//!   is forgotten once its bucket is full again;
//! - at most `max_connections` connections are open (handshakes included; the next is
//!   closed at accept), `max_attestations_in_flight` attestation exchanges and
//!   `max_watch_streams` WatchChanges streams run, server-wide; one connection has at
//!   most `max_streams_per_connection` HTTP/2 streams (h2's SETTINGS);
//! - a BatchNewX509Svid call carries at most `max_x509_svids_per_batch` CSRs, a JWT-SVID
//!   at most `max_jwt_audiences` audiences;
//! - every refusal names its option: a gRPC status (RESOURCE_EXHAUSTED, or
//!   INVALID_ARGUMENT for a request too large to ever pass) and a log line (at most one
//!   per limit every [`LOG_EVERY`], with a count of the refusals not logged).
//!
//! An address is the peer's IP address as the server sees it (IPv4-mapped IPv6 taken as
//! IPv4): agents behind one NAT share one budget, which the defaults are sized for.

mod connection;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ironroot_runtime::log_throttle::LogThrottle;
use ironroot_runtime::token_bucket::Rate;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::config::NodeLimitsConfig;
pub(crate) use connection::LimitedConnection;
use ironroot_runtime::token_bucket::keyed::{BoundedBuckets, Refusal};

/// At most one log line per limit this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);

/// How long until a retry can pass, as a refusal says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryIn(pub(crate) Duration);

impl fmt::Display for RetryIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == Duration::MAX {
            return f.write_str("never: more than the burst was asked at once");
        }
        // Rounded up: retrying at the time said must pass.
        let ms = self.0.as_nanos().div_ceil(1_000_000);
        write!(f, "retry in {ms} ms")
    }
}

/// A request over one of the Node API's limits. The text names the limit and its option.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub(crate) enum LimitExceeded {
    /// Attestations started too fast from one address.
    #[error(
        "{ip} starts attestations faster than its limit of {per_second}/s with bursts of \
         {burst} (node_api.limits.attestations_per_ip_per_second, \
         node_api.limits.attestation_burst); {retry}"
    )]
    AttestationRate {
        ip: IpAddr,
        per_second: f64,
        burst: u32,
        retry: RetryIn,
    },
    /// SVIDs asked for too fast from one address.
    #[error(
        "{ip} asks for SVIDs ({count} in this call) faster than its limit of {per_second}/s \
         with bursts of {burst} (node_api.limits.signings_per_ip_per_second, \
         node_api.limits.signing_burst); {retry}"
    )]
    SigningRate {
        ip: IpAddr,
        count: usize,
        per_second: f64,
        burst: u32,
        retry: RetryIn,
    },
    /// Admin calls over TLS refused too often from one address: further calls are refused
    /// before their SVID is checked or the store read.
    #[error(
        "{ip} has had admin calls over TLS with this client certificate refused faster than \
         {per_second}/s with bursts of {burst} (node_api.limits.admin_refusals_per_ip_per_second, \
         node_api.limits.admin_refusal_burst): its calls are not checked until then; {retry}"
    )]
    AdminRefusalRate {
        ip: IpAddr,
        per_second: f64,
        burst: u32,
        retry: RetryIn,
    },
    /// A new address while a rate table holds as many limited addresses as it may.
    #[error(
        "{ip} cannot be tracked for {what}: {max} source addresses are being rate limited, \
         the most the server tracks (node_api.limits.max_tracked_addresses); retry in a few \
         seconds"
    )]
    TooManyAddresses {
        ip: IpAddr,
        what: &'static str,
        max: usize,
    },
    /// Too many connections open.
    #[error(
        "connection from {peer} closed: {max} Node API connections are open, the most the \
         server holds (node_api.limits.max_connections)"
    )]
    Connections { peer: SocketAddr, max: usize },
    /// Too many attestations in progress.
    #[error(
        "{max} attestations are in progress, the most the server runs at once \
         (node_api.limits.max_attestations_in_flight); retry in a few seconds"
    )]
    AttestationsInFlight { max: usize },
    /// Too many change streams open.
    #[error(
        "{max} WatchChanges streams are open, the most the server holds \
         (node_api.limits.max_watch_streams); poll SyncEntries instead"
    )]
    WatchStreams { max: usize },
    /// A batch larger than any call may carry.
    #[error(
        "{count} CSRs in one batch; the limit is {max} \
         (node_api.limits.max_x509_svids_per_batch)"
    )]
    X509Batch { count: usize, max: usize },
    /// More audiences than a JWT-SVID may carry.
    #[error(
        "{count} audiences for one JWT-SVID; the limit is {max} \
         (node_api.limits.max_jwt_audiences)"
    )]
    JwtAudiences { count: usize, max: usize },
}

impl LimitExceeded {
    /// The option that sets the limit (the key of its log throttle).
    pub(crate) fn option(&self) -> &'static str {
        match self {
            LimitExceeded::AttestationRate { .. } => {
                "node_api.limits.attestations_per_ip_per_second"
            }
            LimitExceeded::SigningRate { .. } => "node_api.limits.signings_per_ip_per_second",
            LimitExceeded::AdminRefusalRate { .. } => {
                "node_api.limits.admin_refusals_per_ip_per_second"
            }
            LimitExceeded::TooManyAddresses { .. } => "node_api.limits.max_tracked_addresses",
            LimitExceeded::Connections { .. } => "node_api.limits.max_connections",
            LimitExceeded::AttestationsInFlight { .. } => {
                "node_api.limits.max_attestations_in_flight"
            }
            LimitExceeded::WatchStreams { .. } => "node_api.limits.max_watch_streams",
            LimitExceeded::X509Batch { .. } => "node_api.limits.max_x509_svids_per_batch",
            LimitExceeded::JwtAudiences { .. } => "node_api.limits.max_jwt_audiences",
        }
    }

    /// As the gRPC status the caller gets: a request that can never pass as it is
    /// INVALID_ARGUMENT, anything that passes later RESOURCE_EXHAUSTED.
    pub(crate) fn to_status(&self) -> tonic::Status {
        match self {
            LimitExceeded::X509Batch { .. } | LimitExceeded::JwtAudiences { .. } => {
                tonic::Status::invalid_argument(self.to_string())
            }
            _ => tonic::Status::resource_exhausted(self.to_string()),
        }
    }
}

/// The budget of one source address (IPv4-mapped IPv6 as IPv4). A request without a
/// peer address (none over TCP) shares the unspecified address's budget.
fn source(peer: Option<SocketAddr>) -> IpAddr {
    peer.map(|p| p.ip().to_canonical())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// A caller of the admin API over TLS as a rate-table key: the SHA-256 of the SPIFFE ID in
/// its client certificate, not of the certificate. A compromised agent can have new SVIDs
/// signed for its workloads' IDs at the signing rate, each a new certificate; keyed by
/// certificate, each would bring a fresh budget of refusals. Keyed by ID, its budgets are as
/// many as the IDs registered to it. All zeros without a certificate; a certificate without
/// a readable SPIFFE ID (the handshake's verifier refuses those) shares one key per address.
type CallerKey = [u8; 32];

/// A caller of the admin API over TLS as its refusal budget knows it: its source address
/// and [`CallerKey`], worked out once per call (the certificate is parsed here) for both
/// [`NodeLimits::admit_admin_call`] and [`NodeLimits::note_admin_refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AdminPeer {
    ip: IpAddr,
    id: CallerKey,
}

impl AdminPeer {
    /// The caller at `peer` with client certificate `leaf` (DER), if any.
    pub(crate) fn of(peer: Option<SocketAddr>, leaf: Option<&[u8]>) -> Self {
        use sha2::Digest;
        let id = match leaf.map(ironroot_api::tls::svid_spiffe_id) {
            None => CallerKey::default(),
            Some(Ok(id)) => sha2::Sha256::digest(id.to_string().as_bytes()).into(),
            Some(Err(_)) => sha2::Sha256::digest(b"no readable SPIFFE ID").into(),
        };
        AdminPeer {
            ip: source(peer),
            id,
        }
    }

    fn key(&self) -> (IpAddr, CallerKey) {
        (self.ip, self.id)
    }
}

/// The Node API's limits, shared by the accept loop, the Node service and the agent API.
pub(crate) struct NodeLimits {
    cfg: NodeLimitsConfig,
    attestations: Mutex<BoundedBuckets<IpAddr>>,
    signings: Mutex<BoundedBuckets<IpAddr>>,
    /// Keyed by address and the SPIFFE ID of the client certificate ([`CallerKey`]): an
    /// admin's own calls are never held up by another caller on the same host, and a caller
    /// does not escape its budget with new certificates for the same ID.
    admin_refusals: Mutex<BoundedBuckets<(IpAddr, CallerKey)>>,
    connections: Arc<Semaphore>,
    attesting: Arc<Semaphore>,
    watching: Arc<Semaphore>,
    log: Mutex<LogThrottle>,
}

impl fmt::Debug for NodeLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeLimits")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// Locks a table whose every update is one call that leaves it consistent: a poisoned
/// lock is used as is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl NodeLimits {
    /// Limits as configured (`cfg` checked by [`NodeLimitsConfig::check`]).
    pub(crate) fn new(cfg: NodeLimitsConfig) -> Arc<Self> {
        let attest = Rate {
            per_second: cfg.attestations_per_ip_per_second,
            burst: cfg.attestation_burst,
        };
        let sign = Rate {
            per_second: cfg.signings_per_ip_per_second,
            burst: cfg.signing_burst,
        };
        let admin_refusal = Rate {
            per_second: cfg.admin_refusals_per_ip_per_second,
            burst: cfg.admin_refusal_burst,
        };
        Arc::new(NodeLimits {
            attestations: Mutex::new(BoundedBuckets::new(attest, cfg.max_tracked_addresses)),
            signings: Mutex::new(BoundedBuckets::new(sign, cfg.max_tracked_addresses)),
            admin_refusals: Mutex::new(BoundedBuckets::new(
                admin_refusal,
                cfg.max_tracked_addresses,
            )),
            connections: Arc::new(Semaphore::new(cfg.max_connections)),
            attesting: Arc::new(Semaphore::new(cfg.max_attestations_in_flight)),
            watching: Arc::new(Semaphore::new(cfg.max_watch_streams)),
            log: Mutex::new(LogThrottle::new(LOG_EVERY)),
            cfg,
        })
    }

    /// The configuration in force.
    pub(crate) fn config(&self) -> &NodeLimitsConfig {
        &self.cfg
    }

    /// Logs a refusal (throttled per limit) and returns it.
    fn refused(&self, e: LimitExceeded) -> LimitExceeded {
        let suppressed = lock(&self.log).admit(e.option(), Instant::now());
        if let Some(suppressed) = suppressed {
            warn!(
                limit = e.option(),
                suppressed_since_last_line = suppressed,
                "node API refused: {e}"
            );
        }
        e
    }

    /// Admits a new connection from `peer`; the permit counts it until dropped.
    pub(crate) fn admit_connection(
        &self,
        peer: SocketAddr,
    ) -> Result<OwnedSemaphorePermit, LimitExceeded> {
        self.connections.clone().try_acquire_owned().map_err(|_| {
            self.refused(LimitExceeded::Connections {
                peer,
                max: self.cfg.max_connections,
            })
        })
    }

    /// Admits an attestation from `peer`: its address's rate, then the server-wide cap.
    /// The permit counts the exchange until dropped.
    pub(crate) fn admit_attestation(
        &self,
        peer: Option<SocketAddr>,
        now: Instant,
    ) -> Result<OwnedSemaphorePermit, LimitExceeded> {
        let ip = source(peer);
        let taken = lock(&self.attestations).try_take(&ip, 1, now);
        taken.map_err(|r| {
            self.refused(match r {
                Refusal::Rate(wait) => LimitExceeded::AttestationRate {
                    ip,
                    per_second: self.cfg.attestations_per_ip_per_second,
                    burst: self.cfg.attestation_burst,
                    retry: RetryIn(wait),
                },
                Refusal::TableFull => LimitExceeded::TooManyAddresses {
                    ip,
                    what: "attestation",
                    max: self.cfg.max_tracked_addresses,
                },
            })
        })?;
        self.attesting.clone().try_acquire_owned().map_err(|_| {
            self.refused(LimitExceeded::AttestationsInFlight {
                max: self.cfg.max_attestations_in_flight,
            })
        })
    }

    /// Admits an admin call over TLS from `caller` to be checked, unless its address and
    /// SPIFFE ID have spent their budget of refused calls
    /// ([`note_admin_refusal`](Self::note_admin_refusal)): an authorized caller spends
    /// nothing, so only a caller being refused is slowed.
    pub(crate) fn admit_admin_call(
        &self,
        caller: &AdminPeer,
        now: Instant,
    ) -> Result<(), LimitExceeded> {
        let checked = lock(&self.admin_refusals).check(&caller.key(), 1, now);
        checked.map_err(|r| {
            let wait = match r {
                Refusal::Rate(wait) => wait,
                Refusal::TableFull => Duration::from_secs(1),
            };
            self.refused(LimitExceeded::AdminRefusalRate {
                ip: caller.ip,
                per_second: self.cfg.admin_refusals_per_ip_per_second,
                burst: self.cfg.admin_refusal_burst,
                retry: RetryIn(wait),
            })
        })
    }

    /// Charges `caller`'s address and SPIFFE ID one refused admin call. A full table
    /// charges nothing: the call was refused anyway, and a table full of limited addresses
    /// is logged by the other limits.
    pub(crate) fn note_admin_refusal(&self, caller: &AdminPeer, now: Instant) {
        let _ = lock(&self.admin_refusals).try_take(&caller.key(), 1, now);
    }

    /// Whether a line about `what` may be logged now (at most one per [`LOG_EVERY`]), and
    /// how many were left out since the last one.
    pub(crate) fn log_admitted(&self, what: &'static str) -> Option<u64> {
        lock(&self.log).admit(what, Instant::now())
    }

    /// Admits `count` SVIDs to be signed for `peer` (a batch costs one token per CSR).
    pub(crate) fn admit_signing(
        &self,
        peer: Option<SocketAddr>,
        count: usize,
        now: Instant,
    ) -> Result<(), LimitExceeded> {
        let ip = source(peer);
        let n = u32::try_from(count).unwrap_or(u32::MAX);
        let taken = lock(&self.signings).try_take(&ip, n, now);
        taken.map_err(|r| {
            self.refused(match r {
                Refusal::Rate(wait) => LimitExceeded::SigningRate {
                    ip,
                    count,
                    per_second: self.cfg.signings_per_ip_per_second,
                    burst: self.cfg.signing_burst,
                    retry: RetryIn(wait),
                },
                Refusal::TableFull => LimitExceeded::TooManyAddresses {
                    ip,
                    what: "signing",
                    max: self.cfg.max_tracked_addresses,
                },
            })
        })
    }

    /// Admits a WatchChanges stream; the permit counts it until dropped.
    pub(crate) fn admit_watch(&self) -> Result<OwnedSemaphorePermit, LimitExceeded> {
        self.watching.clone().try_acquire_owned().map_err(|_| {
            self.refused(LimitExceeded::WatchStreams {
                max: self.cfg.max_watch_streams,
            })
        })
    }

    /// Refuses a BatchNewX509Svid call with more CSRs than one call may carry.
    pub(crate) fn check_x509_batch(&self, count: usize) -> Result<(), LimitExceeded> {
        let max = self.cfg.max_x509_svids_per_batch;
        if count > max {
            return Err(self.refused(LimitExceeded::X509Batch { count, max }));
        }
        Ok(())
    }

    /// Refuses a JWT-SVID with more audiences than one may carry.
    pub(crate) fn check_jwt_audiences(&self, count: usize) -> Result<(), LimitExceeded> {
        let max = self.cfg.max_jwt_audiences;
        if count > max {
            return Err(self.refused(LimitExceeded::JwtAudiences { count, max }));
        }
        Ok(())
    }
}

/// File descriptors kept for everything but Node API connections (store, HSM sessions,
/// admin socket, logs).
const OTHER_DESCRIPTORS: u64 = 256;

/// Each connection holds a socket: raises the soft open-file limit to the hard one, and
/// warns, naming both, when `max_connections` would still run out of descriptors (the
/// accept loop would then fail before the limit refuses anything).
pub(crate) fn make_room_for_connections(max_connections: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let soft = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let needed = (max_connections as u64).saturating_add(OTHER_DESCRIPTORS);
    if soft < needed {
        warn!(
            open_file_limit = soft,
            max_connections,
            "the open-file limit (RLIMIT_NOFILE, LimitNOFILE= under systemd) is below \
             node_api.limits.max_connections + {OTHER_DESCRIPTORS}: connections will fail at \
             accept before the limit refuses them; raise the limit or lower the option"
        );
    }
}

#[cfg(test)]
mod tests;
