//! The agent's Prometheus metrics (`[metrics] listen`; docs/operations.md, "Metrics").
//!
//! The families live in one process-wide value ([`metrics`]): the Workload API service and
//! the sync loop count into it with an atomic add each, and the endpoint, when configured,
//! only reads it. Labels are `&'static str` (see `ironroot_runtime::metrics`): the RPC is
//! one of the Workload API's own method names, never the request path as sent.

use std::sync::LazyLock;
use std::time::Duration;

use ironroot_runtime::metrics::prometheus_client::collector::Collector;
use ironroot_runtime::metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use ironroot_runtime::metrics::prometheus_client::metrics::counter::Counter;
use ironroot_runtime::metrics::prometheus_client::metrics::family::Family;
use ironroot_runtime::metrics::prometheus_client::metrics::gauge::ConstGauge;
use ironroot_runtime::metrics::prometheus_client::metrics::histogram::Histogram;
use ironroot_runtime::metrics::prometheus_client::registry::{Registry, Unit};
use ironroot_runtime::metrics::{
    grpc_code_label, latency_histogram, AllocatorCollector, HistogramConstructor, Labels1, Labels2,
    ProcessCollector,
};
use ironroot_runtime::unix_now;

use crate::cache::Cache;

/// Every family the agent counts into.
#[derive(Debug)]
pub(crate) struct AgentMetrics {
    workload_api_calls: Family<Labels2, Counter>,
    server_syncs: Family<Labels1, Counter>,
    server_sync_duration: Family<Labels1, Histogram, HistogramConstructor>,
}

static METRICS: LazyLock<AgentMetrics> = LazyLock::new(|| AgentMetrics {
    workload_api_calls: Family::default(),
    server_syncs: Family::default(),
    server_sync_duration: Family::new_with_constructor(latency_histogram),
});

/// The agent's families.
pub(crate) fn metrics() -> &'static AgentMetrics {
    &METRICS
}

/// The Workload API method a request path names, as a label (`"other"` for anything else:
/// a path is chosen by the caller, a label must not be).
pub(crate) fn workload_rpc(path: &str) -> &'static str {
    const RPCS: [&str; 5] = [
        "FetchX509SVID",
        "FetchX509Bundles",
        "FetchJWTSVID",
        "FetchJWTBundles",
        "ValidateJWTSVID",
    ];
    path.strip_prefix("/SpiffeWorkloadAPI/")
        .and_then(|m| RPCS.iter().find(|r| **r == m).copied())
        .unwrap_or("other")
}

impl AgentMetrics {
    /// One Workload API call answered: `result` is read from the response headers' gRPC
    /// status (a refusal is a trailers-only answer; a stream that opened, or a unary answer
    /// with a message, is `ok`).
    pub(crate) fn workload_call<B>(&self, rpc: &'static str, response: &http::Response<B>) {
        let code = response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<i32>().ok())
            .unwrap_or(0);
        self.workload_api_calls
            .get_or_create(&[("rpc", rpc), ("result", grpc_code_label(code))])
            .inc();
    }

    /// One sync round with the server ended.
    pub(crate) fn server_sync(&self, ok: bool, took: Duration) {
        let labels = [("outcome", if ok { "ok" } else { "error" })];
        self.server_syncs.get_or_create(&labels).inc();
        self.server_sync_duration
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

/// The page the endpoint serves: the families above, the SVID cache read at each scrape,
/// and the process facts.
pub(crate) fn registry(cache: Cache) -> Registry {
    let m = metrics();
    let mut root = Registry::default();
    // Unprefixed: the process collector's names are Prometheus' own.
    root.register_collector(Box::new(ProcessCollector::default()));
    // jemalloc's account of the same memory (the binary runs on jemalloc).
    root.register_collector(Box::new(AllocatorCollector));
    let r = root.sub_registry_with_prefix("ironroot_agent");
    r.register(
        "workload_api_calls",
        "Workload API calls answered, by RPC and result (gRPC code).",
        m.workload_api_calls.clone(),
    );
    r.register(
        "server_syncs",
        "Sync rounds with the server (entries, bundle, SVIDs), by outcome (ok, error).",
        m.server_syncs.clone(),
    );
    r.register_with_unit(
        "server_sync_duration",
        "Time of one sync round with the server, by outcome.",
        Unit::Seconds,
        m.server_sync_duration.clone(),
    );
    r.register_collector(Box::new(SvidCache(cache)));
    root
}

/// The cached SVIDs: how many, and how long until the first of them expires.
struct SvidCache(Cache);

impl std::fmt::Debug for SvidCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SvidCache")
    }
}

impl Collector for SvidCache {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snap = self.0.snapshot();
        let count = ConstGauge::new(i64::try_from(snap.svids.len()).unwrap_or(i64::MAX));
        count.encode(encoder.encode_descriptor(
            "cached_svids",
            "Workload X.509-SVIDs in the agent's cache.",
            None,
            count.metric_type(),
        )?)?;
        // No SVID, no horizon: an absent series, never a fake number an alert would read.
        if let Some(earliest) = snap.svids.values().map(|s| s.expires_at).min() {
            let horizon = ConstGauge::new(earliest - unix_now());
            horizon.encode(encoder.encode_descriptor(
                "svid_expiry_horizon",
                "Seconds until the earliest cached workload SVID expires (negative: expired).",
                Some(&Unit::Seconds),
                horizon.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
