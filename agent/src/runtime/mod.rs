//! `ironroot-agent run`: attest, serve the Workload API (and Envoy SDS), keep the
//! cache in sync, renew the agent SVID at half life, and ride out server outages:
//! cached SVIDs keep being served until they expire, the connection is retried with
//! a jittered backoff, and an agent whose own SVID expired while offline attests
//! again without a restart.
//!
//! Two parts: `serve` binds the sockets and serves from the cache whatever the
//! server connection does; `state` is the agent's life with its server, an
//! explicit state machine ([`State`], every transition in [`Agent::step`]).

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

pub use serve::attestors;
pub use state::{Agent, State};

/// Why the agent could not start serving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    #[error("podman workload attestor")]
    Podman(#[source] PodmanError),
    #[error("cannot create {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is in use by another agent", path.display())]
    InUse { path: PathBuf },
    #[error("cannot remove stale socket {}", path.display())]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot bind {what} on {}", path.display())]
    Bind {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set the mode of {}", path.display())]
    Mode {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(cfg: AgentConfig) -> Result<(), RuntimeError> {
    let cache = Cache::new(cfg.trust_domain.as_str());
    let server: ServerClient = Arc::new(RwLock::new(None));
    let serving = serve::Serving::start(&cfg, &cache, &server)?;
    let mut agent = Agent::new(cfg, cache, server);
    tokio::select! {
        _ = agent.run() => {}
        _ = ironroot_runtime::shutdown::signal() => info!("shutting down"),
    }
    serving.stop();
    Ok(())
}
