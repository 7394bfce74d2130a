//! `ironroot-agent run`: attest, serve the Workload API (and Envoy SDS), keep the
//! cache in sync, renew the agent SVID at half life, and ride out server outages:
//! cached SVIDs keep being served until they expire, the connection is retried with
//! a jittered backoff, and an agent whose own SVID expired while offline attests
//! again without a restart.
//!
//! Two parts: `serve` binds the sockets and serves from the cache whatever the
//! server connection does; `state` is the agent's life with its server, an
//! explicit state machine (`State`, every transition in `Agent::step`).

mod serve;
mod state;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::RwLock;
use tracing::info;

use crate::cache::Cache;
use crate::config::AgentConfig;
use crate::workload::attestor::podman::PodmanError;
use crate::workload_api::ServerClient;

pub(crate) use state::Agent;

/// Why the agent could not start serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The podman workload attestor could not start (its socket is unsafe or unusable).
    #[error("podman workload attestor")]
    Podman(#[source] PodmanError),
    /// The k8s workload attestor could not start (an option, or a build without it).
    #[error("k8s workload attestor")]
    K8s(#[source] crate::workload::attestor::k8s::K8sError),
    /// A socket's directory could not be created.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Another process (another agent) answers on the socket: it is left alone.
    #[error("{} is in use by another agent", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// A socket file nobody answers on (left by a previous run) could not be removed.
    #[error("cannot remove stale socket {}", path.display())]
    RemoveStale {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A socket could not be bound.
    #[error("cannot bind {what} on {}", path.display())]
    Bind {
        /// Which socket (`"the Workload API"`, `"Envoy SDS"`).
        what: &'static str,
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The `[metrics] listen` address cannot be bound.
    #[error("{0}")]
    Metrics(#[source] ironroot_runtime::metrics::MetricsError),
    /// The socket's file mode could not be set.
    #[error("cannot set the mode of {}", path.display())]
    Mode {
        /// The socket.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(cfg: AgentConfig) -> Result<(), RuntimeError> {
    let cache = Cache::new(cfg.trust_domain.as_str());
    let server: ServerClient = Arc::new(RwLock::new(None));
    let metrics = match cfg.metrics.address() {
        None => None,
        Some(address) => {
            let endpoint = ironroot_runtime::metrics::MetricsListener::bind(address)
                .await
                .map_err(RuntimeError::Metrics)?;
            info!(address = %endpoint.local_addr(), "metrics endpoint listening (GET /metrics)");
            let registry = Arc::new(crate::metrics::registry(cache.clone()));
            Some(tokio::spawn(endpoint.serve(registry)))
        }
    };
    let serving = serve::Serving::start(&cfg, &cache, &server)?;
    let mut agent = Agent::new(cfg, cache, server);
    tokio::select! {
        _ = agent.run() => {}
        _ = ironroot_runtime::shutdown::signal() => info!("shutting down"),
    }
    serving.stop();
    if let Some(t) = metrics {
        t.abort();
    }
    Ok(())
}
