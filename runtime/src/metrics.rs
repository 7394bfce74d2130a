//! The Prometheus endpoint both binaries share (built with the `metrics` feature): a plain
//! HTTP/1.1 server answering `GET /metrics` with the text exposition of a registry (404 for
//! any other path, 405 for any other method), the process facts every scrape reads fresh
//! ([`ProcessCollector`], named as Prometheus' own process collector names them), and the
//! latency buckets the binaries' histograms use, and jemalloc's account of the memory
//! ([`AllocatorCollector`]).
//!
//! Each binary registers its own families. Label values are `&'static str` by construction
//! ([`Labels1`], [`Labels2`], [`Labels3`]): a SPIFFE ID, entry ID or peer address cannot
//! become a label, so a series count stays bounded by the code, never by the fleet.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
pub use prometheus_client;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};

mod allocator_stats;
pub use allocator_stats::{AllocatorCollector, AllocatorStats};

/// One label, its value fixed at compile time.
pub type Labels1 = [(&'static str, &'static str); 1];
/// Two labels, their values fixed at compile time.
pub type Labels2 = [(&'static str, &'static str); 2];
/// Three labels, their values fixed at compile time.
pub type Labels3 = [(&'static str, &'static str); 3];

/// The constructor of a latency histogram's series in a family.
pub type HistogramConstructor = fn() -> Histogram;

/// The `Content-Type` of the exposition (OpenMetrics text, which Prometheus scrapes natively).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A latency histogram: 16 buckets from 1 ms doubling to about 33 s (an HSM signature is
/// milliseconds; an attestation through a slow TPM or cloud key fetch is seconds).
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

/// A gRPC status code as a label value (`"ok"`, `"permission_denied"`, …, the names of
/// the gRPC specification in snake case), from its number (`tonic::Code as i32`).
pub fn grpc_code_label(code: i32) -> &'static str {
    const NAMES: [&str; 17] = [
        "ok",
        "cancelled",
        "unknown",
        "invalid_argument",
        "deadline_exceeded",
        "not_found",
        "already_exists",
        "permission_denied",
        "resource_exhausted",
        "failed_precondition",
        "aborted",
        "out_of_range",
        "unimplemented",
        "internal",
        "unavailable",
        "data_loss",
        "unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i).copied())
        .unwrap_or("unknown")
}

/// The registry as the endpoint serves it.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would be a bug in a collector,
    // and a partial page is still more useful to an operator than none.
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, registry) {
        tracing::error!(error = %e, "metrics encoding failed");
    }
    out
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The configured `[metrics] listen` address cannot be bound.
    #[error("metrics.listen {address}: cannot bind: {source}")]
    Bind {
        /// The address as configured.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The bound endpoint; [`serve`](Self::serve) answers scrapes until the task is dropped.
#[derive(Debug)]
pub struct MetricsListener {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
}

impl MetricsListener {
    /// Binds `address` (`host:port`); the registry is only read at each scrape.
    pub async fn bind(address: &str) -> Result<Self, MetricsError> {
        let err = |source| MetricsError::Bind {
            address: address.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(address).await.map_err(err)?;
        let address = listener.local_addr().map_err(err)?;
        Ok(MetricsListener { listener, address })
    }

    /// The address bound (with the port chosen when the configuration said `:0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Answers scrapes forever, one task per connection.
    pub async fn serve(self, registry: Arc<Registry>) {
        loop {
            let (stream, _) = match self.listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of fds, typically: wait instead of spinning on the error.
                    tracing::warn!(error = %e, "metrics endpoint: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &registry)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), svc);
                // A scraper that goes away mid-answer is its own business.
                let _ = conn.await;
            });
        }
    }
}

fn answer<B>(req: &http::Request<B>, registry: &Registry) -> http::Response<Full<Bytes>> {
    let plain = |status: http::StatusCode, body: &'static str| {
        let mut r = http::Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return plain(
            http::StatusCode::NOT_FOUND,
            "not found: metrics are served at /metrics\n",
        );
    }
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return plain(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served at /metrics\n",
        );
    }
    let mut r = http::Response::new(Full::new(Bytes::from(encode(registry))));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    r
}

/// Writes one gauge read at scrape time (a collector's figure) to `encoder`.
fn const_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    g.encode(encoder.encode_descriptor(name, help, unit, g.metric_type())?)
}

/// The process facts, read at each scrape: `process_resident_memory_bytes`,
/// `process_cpu_seconds_total`, `process_open_fds`, `process_start_time_seconds` (the
/// names of Prometheus' process collector, so existing dashboards and alerts apply). A
/// fact the platform does not give is left out of the page, never reported as 0.
#[derive(Debug)]
pub struct ProcessCollector {
    pid: Option<sysinfo::Pid>,
    system: Mutex<sysinfo::System>,
}

impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            pid: sysinfo::get_current_pid().ok(),
            system: Mutex::new(sysinfo::System::new()),
        }
    }
}

/// What one scrape read about the process.
struct ProcessFacts {
    resident_bytes: u64,
    cpu_seconds: f64,
    start_time: u64,
    open_fds: Option<usize>,
}

impl ProcessCollector {
    fn read(&self) -> Option<ProcessFacts> {
        let pid = self.pid?;
        // A panic elsewhere while holding the lock leaves a System that is still usable.
        let mut sys = self.system.lock().unwrap_or_else(|p| p.into_inner());
        sys.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[pid]),
            true,
            sysinfo::ProcessRefreshKind::nothing()
                .with_memory()
                .with_cpu(),
        );
        let p = sys.process(pid)?;
        Some(ProcessFacts {
            resident_bytes: p.memory(),
            cpu_seconds: p.accumulated_cpu_time() as f64 / 1000.0,
            start_time: p.start_time(),
            open_fds: p.open_files(),
        })
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(f) = self.read() else {
            return Ok(());
        };
        const_gauge(
            &mut encoder,
            "process_resident_memory",
            "Resident memory size in bytes.",
            Some(&Unit::Bytes),
            i64::try_from(f.resident_bytes).unwrap_or(i64::MAX),
        )?;
        let cpu = ConstCounter::new(f.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu",
            "Total user and system CPU time spent in seconds.",
            Some(&Unit::Seconds),
            cpu.metric_type(),
        )?)?;
        const_gauge(
            &mut encoder,
            "process_start_time",
            "Start time of the process since unix epoch in seconds.",
            Some(&Unit::Seconds),
            i64::try_from(f.start_time).unwrap_or(i64::MAX),
        )?;
        if let Some(fds) = f.open_fds {
            const_gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                None,
                i64::try_from(fds).unwrap_or(i64::MAX),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;

    fn registry() -> Registry {
        let mut r = Registry::default();
        r.register_collector(Box::new(ProcessCollector::default()));
        let f = Family::<Labels1, Counter>::default();
        f.get_or_create(&[("rpc", "fetch")]).inc();
        r.register("ironroot_test_calls", "Calls.", f);
        r
    }

    #[test]
    fn the_process_facts_and_a_family_are_on_the_page_under_their_conventional_names() {
        let page = encode(&registry());
        for name in [
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_start_time_seconds ",
            "process_open_fds ",
            "ironroot_test_calls_total{rpc=\"fetch\"} 1",
        ] {
            assert!(page.contains(name), "{name:?} missing from:\n{page}");
        }
        let rss: f64 = page
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse().ok())
            .expect("an RSS sample");
        assert!(rss > 0.0, "a running process has resident memory");
    }

    #[test]
    fn only_get_metrics_is_answered() {
        let r = registry();
        let req = |method: &str, path: &str| {
            http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .unwrap()
        };
        assert_eq!(answer(&req("GET", "/metrics"), &r).status(), 200);
        assert_eq!(answer(&req("GET", "/"), &r).status(), 404);
        assert_eq!(answer(&req("GET", "/metrics/x"), &r).status(), 404);
        assert_eq!(answer(&req("POST", "/metrics"), &r).status(), 405);
    }
}
