//! The agent's sockets: the Workload API, and Envoy SDS on it or on a socket of
//! its own. They serve from the cache whatever the state of the server connection.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironroot_runtime::socket::{bind_unix, BindError};
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tracing::{error, info};

use super::RuntimeError;
use crate::cache::Cache;
use crate::config::AgentConfig;
use crate::sds;
use crate::workload::attestor::exe_hash::ExeHasher;
use crate::workload::attestor::podman::PodmanAttestor;
use crate::workload::attestor::process::ProcessAttestor;
use crate::workload::attestor::unix::UnixAttestor;
use crate::workload::attestor::WorkloadAttestor;
use crate::workload::encoded_streams::WorkloadApiService;
use crate::workload::limits::CallerLimits;
use crate::workload_api::{incoming, ServerClient, WorkloadApi};

/// The configured workload attestors (unix and process always; podman and k8s when
/// configured).
pub(crate) fn attestors(cfg: &AgentConfig) -> Result<Vec<Arc<dyn WorkloadAttestor>>, RuntimeError> {
    let hasher = Arc::new(ExeHasher::new());
    let w = &cfg.workload_attestors;
    let mut v: Vec<Arc<dyn WorkloadAttestor>> = vec![
        Arc::new(UnixAttestor::new(w.unix.clone(), hasher.clone())),
        Arc::new(ProcessAttestor::new(w.process.clone(), hasher)),
    ];
    if let Some(p) = &w.podman {
        v.push(Arc::new(
            PodmanAttestor::new(p.clone()).map_err(RuntimeError::Podman)?,
        ));
    }
    if let Some(k) = &w.k8s {
        #[cfg(feature = "k8s")]
        v.push(Arc::new(
            crate::workload::attestor::k8s::K8sAttestor::new(k).map_err(RuntimeError::K8s)?,
        ));
        #[cfg(not(feature = "k8s"))]
        {
            let _ = k;
            return Err(RuntimeError::K8s(
                crate::workload::attestor::k8s::K8sError::NotBuilt,
            ));
        }
    }
    Ok(v)
}

/// Binds the unix socket of `what` (for messages: "the Workload API", "Envoy SDS").
fn bind(path: &Path, mode: u32, what: &'static str) -> Result<UnixListener, RuntimeError> {
    // The agent's own variants keep its messages ("in use by another agent").
    bind_unix(path, mode).map_err(|e| match e {
        BindError::CreateDir { dir, source } => RuntimeError::CreateDir { path: dir, source },
        BindError::InUse { path } => RuntimeError::InUse { path },
        BindError::RemoveStale { path, source } => RuntimeError::RemoveStale { path, source },
        BindError::Bind { path, source } => RuntimeError::Bind { what, path, source },
        BindError::Mode { path, source, .. } => RuntimeError::Mode { path, source },
    })
}

/// The running socket servers; [`Serving::stop`] ends them and removes their sockets.
pub(super) struct Serving {
    tasks: Vec<(JoinHandle<()>, PathBuf)>,
}

impl Serving {
    pub(super) fn start(
        cfg: &AgentConfig,
        cache: &Cache,
        server: &ServerClient,
    ) -> Result<Serving, RuntimeError> {
        let limits = CallerLimits::new(cfg.workload_api.limits.clone());
        let workload_attestors = attestors(cfg)?;
        let api = Arc::new(WorkloadApi::new(
            cache.clone(),
            workload_attestors.clone(),
            server.clone(),
            limits.clone(),
        ));
        let mode = cfg.workload_api.socket_mode.bits();
        let sds = cfg
            .sds
            .enabled
            .then(|| sds::server(cache.clone(), workload_attestors, cfg.sds.clone()));
        // SDS on the Workload API socket unless it has a socket of its own.
        let (sds_here, sds_apart) = match &cfg.sds.socket_path {
            None => (sds, None),
            Some(path) => (None, sds.map(|s| (path.clone(), s))),
        };
        let api_path = cfg.workload_api.socket_path.clone();
        let listener = bind(&api_path, mode, "the Workload API")?;
        info!(
            socket = %api_path.display(),
            sds = sds_here.is_some(),
            "Workload API listening"
        );
        let api_limits = limits.clone();
        let mut tasks = vec![(
            tokio::spawn(async move {
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(WorkloadApiService::new(api))
                    .add_optional_service(sds_here)
                    .serve_with_incoming(incoming(listener, api_limits))
                    .await
                {
                    error!(error = %e, "Workload API server failed");
                }
            }),
            api_path,
        )];
        if let Some((path, service)) = sds_apart {
            let listener = bind(&path, mode, "Envoy SDS")?;
            info!(socket = %path.display(), "Envoy SDS listening");
            tasks.push((
                tokio::spawn(async move {
                    if let Err(e) = tonic::transport::Server::builder()
                        .add_service(service)
                        .serve_with_incoming(incoming(listener, limits))
                        .await
                    {
                        error!(error = %e, "Envoy SDS server failed");
                    }
                }),
                path,
            ));
        }
        Ok(Serving { tasks })
    }

    pub(super) fn stop(self) {
        for (task, socket) in self.tasks {
            task.abort();
            let _ = std::fs::remove_file(socket);
        }
    }
}
