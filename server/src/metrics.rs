//! The server's Prometheus metrics (`[metrics] listen`; docs/operations.md, "Metrics").
//!
//! The families live in one process-wide value ([`metrics`]): the points that count (the
//! Node API, the CA, the agent sync) are reached from many places, and an increment is an
//! atomic add, so threading a handle through each of them would buy nothing. The endpoint
//! only reads them; when none is configured they are counted and never served.
//!
//! Labels are `&'static str` (see `ironroot_runtime::metrics`): attestor names come from
//! the registry of enabled attestors (a name an agent made up is `"unknown"`), never from
//! the request.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ironroot_runtime::metrics::prometheus_client::collector::Collector;
use ironroot_runtime::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use ironroot_runtime::metrics::prometheus_client::metrics::counter::Counter;
use ironroot_runtime::metrics::prometheus_client::metrics::family::Family;
use ironroot_runtime::metrics::prometheus_client::metrics::gauge::ConstGauge;
use ironroot_runtime::metrics::prometheus_client::metrics::histogram::Histogram;
use ironroot_runtime::metrics::prometheus_client::registry::{Registry, Unit};
use ironroot_runtime::metrics::{
    latency_histogram, AllocatorCollector, HistogramConstructor, Labels1, Labels2, Labels3,
    ProcessCollector,
};

use ironroot_hsm::{HsmError, KeyAlgorithm, KeyInfo, KeyManager, KeyManagerHealth};

use crate::authorized::AuthorizedCache;
use crate::ca::{CaError, SigningMode};

type Histograms<L> = Family<L, Histogram, HistogramConstructor>;

/// Every family the server counts into.
#[derive(Debug)]
pub(crate) struct ServerMetrics {
    attestations: Family<Labels2, Counter>,
    attestation_duration: Histograms<Labels2>,
    svids_signed: Family<Labels2, Counter>,
    svid_signing_failures: Family<Labels2, Counter>,
    svid_signing_duration: Histograms<Labels2>,
    hsm_errors: Family<Labels1, Counter>,
    agent_syncs: Family<Labels1, Counter>,
    agent_sync_duration: Histograms<Labels1>,
    federation_refreshes: Family<Labels1, Counter>,
    admin_calls: Family<Labels3, Counter>,
}

static METRICS: LazyLock<ServerMetrics> = LazyLock::new(|| ServerMetrics {
    attestations: Family::default(),
    attestation_duration: Family::new_with_constructor(latency_histogram),
    svids_signed: Family::default(),
    svid_signing_failures: Family::default(),
    svid_signing_duration: Family::new_with_constructor(latency_histogram),
    hsm_errors: Family::default(),
    agent_syncs: Family::default(),
    agent_sync_duration: Family::new_with_constructor(latency_histogram),
    federation_refreshes: Family::default(),
    admin_calls: Family::default(),
});

/// The server's families.
pub(crate) fn metrics() -> &'static ServerMetrics {
    &METRICS
}

/// Which SVID was signed.
#[derive(Debug, Clone, Copy)]
pub(crate) enum SvidKind {
    X509,
    Jwt,
}

impl SvidKind {
    fn label(self) -> &'static str {
        match self {
            SvidKind::X509 => "x509",
            SvidKind::Jwt => "jwt",
        }
    }
}

impl ServerMetrics {
    /// One Node API attestation ended: `outcome` is `"accepted"` or the refusal's gRPC code.
    pub(crate) fn attestation(
        &self,
        attestor: &'static str,
        outcome: &'static str,
        took: Duration,
    ) {
        let labels = [("attestor", attestor), ("outcome", outcome)];
        self.attestations.get_or_create(&labels).inc();
        self.attestation_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }

    /// One signing by the CA ended. The CA mode of a JWT-SVID is always `hsm`: only
    /// X.509-SVIDs are ever signed by a key in memory.
    pub(crate) fn signing(
        &self,
        kind: SvidKind,
        mode: SigningMode,
        took: Duration,
        result: Result<(), &CaError>,
    ) {
        let mode = match kind {
            SvidKind::Jwt => SigningMode::Hsm,
            SvidKind::X509 => mode,
        };
        let labels = [("kind", kind.label()), ("ca_mode", mode.as_str())];
        match result {
            Ok(()) => {
                self.svids_signed.get_or_create(&labels).inc();
                self.svid_signing_duration
                    .get_or_create(&labels)
                    .observe(took.as_secs_f64());
            }
            // A key-manager failure among them is also counted by `CountedKeyManager`.
            Err(_) => {
                self.svid_signing_failures.get_or_create(&labels).inc();
            }
        }
    }

    /// One key-manager call failed.
    fn hsm_error(&self, operation: &'static str) {
        self.hsm_errors
            .get_or_create(&[("operation", operation)])
            .inc();
    }

    /// One federation relationship's fetch ended: `outcome` is `changed`, `unchanged` or the
    /// rule that refused it.
    pub(crate) fn federation_refresh(&self, outcome: &'static str) {
        self.federation_refreshes
            .get_or_create(&[("outcome", outcome)])
            .inc();
    }

    /// One admin call was answered: `method` one of admin.proto's (or `unknown`),
    /// `transport` `socket` or `tls`, `code` the answer's gRPC code.
    pub(crate) fn admin_call(
        &self,
        method: &'static str,
        transport: &'static str,
        code: &'static str,
    ) {
        self.admin_calls
            .get_or_create(&[("method", method), ("transport", transport), ("code", code)])
            .inc();
    }

    /// One agent's SyncEntries ended: `outcome` is the answer's gRPC code.
    pub(crate) fn agent_sync(&self, outcome: &'static str, took: Duration) {
        let labels = [("outcome", outcome)];
        self.agent_syncs.get_or_create(&labels).inc();
        self.agent_sync_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// The page the endpoint serves: the families above, the entry and agent counts read from
/// the authorized-entry cache at each scrape, and the process facts.
pub(crate) fn registry(cache: Arc<AuthorizedCache>) -> Registry {
    let m = metrics();
    let mut root = Registry::default();
    // Unprefixed: the process collector's names are Prometheus' own.
    root.register_collector(Box::new(ProcessCollector::default()));
    // jemalloc's account of the same memory (the binary runs on jemalloc).
    root.register_collector(Box::new(AllocatorCollector));
    let r = root.sub_registry_with_prefix("ironroot_server");
    r.register(
        "node_attestations",
        "Node attestations ended, by attestor and outcome (accepted, or the refusal's gRPC code).",
        m.attestations.clone(),
    );
    r.register_with_unit(
        "node_attestation_duration",
        "Time from an attestation's first message to its answer, by attestor and outcome.",
        Unit::Seconds,
        m.attestation_duration.clone(),
    );
    r.register(
        "svids_signed",
        "SVIDs signed by the CA, by kind (x509, jwt) and CA mode (hsm, memory).",
        m.svids_signed.clone(),
    );
    r.register(
        "svid_signing_failures",
        "SVID signings that failed, by kind and CA mode.",
        m.svid_signing_failures.clone(),
    );
    r.register_with_unit(
        "svid_signing_duration",
        "Time to sign one SVID, by kind and CA mode.",
        Unit::Seconds,
        m.svid_signing_duration.clone(),
    );
    r.register(
        "hsm_errors",
        "Key-manager (HSM) calls that failed, by operation (generate, find, sign, list, destroy): \
         SVID signing, CA rotation and audit checkpoints alike.",
        m.hsm_errors.clone(),
    );
    r.register(
        "agent_syncs",
        "Agents' SyncEntries calls answered, by outcome (gRPC code).",
        m.agent_syncs.clone(),
    );
    r.register_with_unit(
        "agent_sync_duration",
        "Time to answer one agent's SyncEntries, by outcome.",
        Unit::Seconds,
        m.agent_sync_duration.clone(),
    );
    r.register(
        "federation_bundle_refreshes",
        "Fetches of federated trust domains' bundle endpoints, by outcome (changed, unchanged, \
         or the rule that refused the answer).",
        m.federation_refreshes.clone(),
    );
    r.register(
        "admin_calls",
        "Admin API calls answered, by method, transport (socket, tls) and gRPC code, refusals \
         before the admin service included.",
        m.admin_calls.clone(),
    );
    r.register_collector(Box::new(CacheCounts(cache)));
    root
}

/// Entries and attested agents as the authorized-entry cache holds them (what agents are
/// answered from), read at each scrape.
struct CacheCounts(Arc<AuthorizedCache>);

impl std::fmt::Debug for CacheCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CacheCounts")
    }
}

impl Collector for CacheCounts {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (entries, agents) = {
            let ix = self.0.read();
            (ix.entry_count(), ix.node_count())
        };
        for (name, help, value) in [
            ("registration_entries", "Registration entries.", entries),
            (
                "attested_agents",
                "Attested agents the server knows (banned ones included).",
                agents,
            ),
        ] {
            let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// The server's key manager with every failed call counted in `hsm_errors` by operation, so
/// an HSM in trouble shows the same way whichever part of the server met it (SVID signing,
/// CA rotation, audit checkpoints). Every method is forwarded, `health` included (the
/// trait's default would report a broken HSM as available).
pub(crate) struct CountedKeyManager(pub(crate) Arc<dyn KeyManager>);

impl CountedKeyManager {
    fn count<T>(operation: &'static str, r: Result<T, HsmError>) -> Result<T, HsmError> {
        if r.is_err() {
            metrics().hsm_error(operation);
        }
        r
    }
}

impl KeyManager for CountedKeyManager {
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
        Self::count("generate", self.0.generate(label, algorithm))
    }

    fn find(&self, label: &str) -> Result<Option<KeyInfo>, HsmError> {
        Self::count("find", self.0.find(label))
    }

    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        Self::count("sign", self.0.sign_digest(label, digest))
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        Self::count("list", self.0.list())
    }

    fn destroy(&self, label: &str) -> Result<(), HsmError> {
        Self::count("destroy", self.0.destroy(label))
    }

    fn describe(&self) -> String {
        self.0.describe()
    }

    fn health(&self) -> KeyManagerHealth {
        self.0.health()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A key manager whose every call fails, as an HSM that went away.
    struct Gone;

    impl KeyManager for Gone {
        fn generate(&self, _: &str, _: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
            Err(HsmError::KeyNotFound { label: "k".into() })
        }
        fn find(&self, _: &str) -> Result<Option<KeyInfo>, HsmError> {
            Ok(None)
        }
        fn sign_digest(&self, _: &str, _: &[u8]) -> Result<Vec<u8>, HsmError> {
            Err(HsmError::KeyNotFound { label: "k".into() })
        }
        fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
            Ok(Vec::new())
        }
        fn destroy(&self, _: &str) -> Result<(), HsmError> {
            Err(HsmError::KeyNotFound { label: "k".into() })
        }
        fn describe(&self) -> String {
            "gone".into()
        }
        fn health(&self) -> KeyManagerHealth {
            KeyManagerHealth::Unreachable {
                since: std::time::SystemTime::UNIX_EPOCH,
                reason: "cut".into(),
            }
        }
    }

    fn errors(operation: &'static str) -> u64 {
        metrics()
            .hsm_errors
            .get_or_create(&[("operation", operation)])
            .get()
    }

    #[test]
    fn failed_calls_are_counted_by_operation_and_health_is_the_inner_ones() {
        let km = CountedKeyManager(Arc::new(Gone));
        let (sign, destroy, find) = (errors("sign"), errors("destroy"), errors("find"));
        assert!(km.sign_digest("k", &[0; 32]).is_err());
        assert!(km.sign_digest("k", &[0; 32]).is_err());
        assert!(km.destroy("k").is_err());
        assert_eq!(km.find("k").unwrap(), None, "an answer, not a failure");
        // Other tests in this process may count too: at least ours, and never a success.
        assert!(errors("sign") >= sign + 2);
        assert!(errors("destroy") > destroy);
        assert_eq!(errors("find"), find);
        assert!(matches!(km.health(), KeyManagerHealth::Unreachable { .. }));
        assert_eq!(km.describe(), "gone");
    }
}
