//! `ironroot-agent run`: attest, serve the Workload API (and Envoy SDS), keep the cache in
//! sync, re-attest (fresh quote) at half life of the agent SVID, and ride out
//! server outages: cached SVIDs keep being served until they expire, the
//! connection is retried with backoff, and an agent whose own SVID expired
//! while offline attests again without a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ironroot_api::agent::agent_client::AgentClient;
use tokio::net::UnixListener;
use tokio::sync::RwLock;
use tracing::{error, info, warn};

use crate::attest::{self, AttestOutcome, KeySource};
use crate::cache::Cache;
use crate::config::AgentConfig;
use crate::sds;
use crate::sync::{self, unix_now, AgentSvid};
use crate::workload::attestor::exe_hash::ExeHasher;
use crate::workload::attestor::podman::PodmanAttestor;
use crate::workload::attestor::process::ProcessAttestor;
use crate::workload::attestor::unix::UnixAttestor;
use crate::workload::attestor::WorkloadAttestor;
use crate::workload::encoded_streams::WorkloadApiService;
use crate::workload::limits::CallerLimits;
use crate::workload_api::{incoming, ServerClient, WorkloadApi};

const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The configured workload attestors (unix and process always; podman when configured).
pub fn attestors(cfg: &AgentConfig) -> anyhow::Result<Vec<Arc<dyn WorkloadAttestor>>> {
    let hasher = Arc::new(ExeHasher::new());
    let w = &cfg.workload_attestors;
    let mut v: Vec<Arc<dyn WorkloadAttestor>> = vec![
        Arc::new(UnixAttestor::new(w.unix.clone(), hasher.clone())),
        Arc::new(ProcessAttestor::new(w.process.clone(), hasher)),
    ];
    if let Some(p) = &w.podman {
        v.push(Arc::new(
            PodmanAttestor::new(p.clone()).context("podman workload attestor")?,
        ));
    }
    Ok(v)
}

/// Binds the unix socket of `what` (for messages: "the Workload API", "Envoy SDS").
fn bind(path: &Path, mode: u32, what: &str) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            anyhow::bail!("{} is in use by another agent", path.display());
        }
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("cannot bind {what} on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(l)
}

fn agent_svid(o: &AttestOutcome) -> anyhow::Result<AgentSvid> {
    Ok(AgentSvid {
        spiffe_id: o.spiffe_id.clone(),
        chain: o.svid_chain.clone(),
        key: o.key.clone(),
        issued_at: unix_now(),
        expires_at: o.expires_at,
        roots: o.root_cas.clone(),
    })
}

/// A renewed SVID in the shape `data_dir` keeps.
fn renewed_outcome(s: &AgentSvid) -> AttestOutcome {
    AttestOutcome {
        spiffe_id: s.spiffe_id.clone(),
        selectors: Vec::new(),
        boot_policy: String::new(),
        svid_chain: s.chain.clone(),
        root_cas: s.roots.clone(),
        expires_at: s.expires_at,
        key: s.key.clone(),
        devid_chain: Vec::new(),
    }
}

/// The agent key source, made once for the agent's lifetime (the TPM key is loaded, or
/// made, at the first attestation and reused by every re-attestation).
async fn key_source(cfg: &AgentConfig, keys: &mut Option<KeySource>) -> anyhow::Result<KeySource> {
    if let Some(k) = keys {
        return Ok(k.clone());
    }
    let c = cfg.clone();
    let made = tokio::task::spawn_blocking(move || KeySource::for_config(&c))
        .await
        .context("agent key worker")??;
    *keys = Some(made.clone());
    Ok(made)
}

/// Attests until it succeeds (with backoff) or shutdown.
async fn attest_with_backoff(
    cfg: &AgentConfig,
    keys: &mut Option<KeySource>,
    on_success: &(dyn Fn(&AttestOutcome) -> anyhow::Result<()> + Sync),
) -> AgentSvid {
    let mut backoff = Duration::from_secs(1);
    loop {
        let attempt = match key_source(cfg, keys).await {
            Ok(k) => attest::attest_with(cfg, &k, attest::Hooks::default()).await,
            Err(e) => Err(e),
        };
        match attempt {
            Ok(o) => {
                info!(agent = %o.spiffe_id, policy = %o.boot_policy, expires_at = o.expires_at, "attested");
                if let Err(e) = on_success(&o) {
                    warn!("cannot save the agent SVID: {e:#}");
                }
                match agent_svid(&o) {
                    Ok(s) => return s,
                    Err(e) => error!("attestation result unusable: {e:#}"),
                }
            }
            Err(e) => error!(
                "attestation failed, retrying in {}s: {e:#}",
                backoff.as_secs()
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Runs the agent until SIGINT/SIGTERM.
pub async fn run(
    cfg: AgentConfig,
    on_attested: &(dyn Fn(&AttestOutcome) -> anyhow::Result<()> + Sync),
) -> anyhow::Result<()> {
    let cache = Cache::new(&cfg.trust_domain);
    let server: ServerClient = Arc::new(RwLock::new(None));
    let limits = CallerLimits::new(cfg.workload_api.limits.clone());
    let workload_attestors = attestors(&cfg)?;
    let api = Arc::new(WorkloadApi::new(
        cache.clone(),
        workload_attestors.clone(),
        server.clone(),
        limits.clone(),
    ));
    let mode = cfg.workload_api.mode_bits()?;
    let sds = cfg
        .sds
        .enabled
        .then(|| sds::server(cache.clone(), workload_attestors, cfg.sds.clone()));
    // SDS on the Workload API socket unless it has a socket of its own.
    let (sds_here, sds_apart) = match &cfg.sds.socket_path {
        None => (sds, None),
        Some(path) => (None, sds.map(|s| (path.clone(), s))),
    };
    let listener = bind(&cfg.workload_api.socket_path, mode, "the Workload API")?;
    info!(
        socket = %cfg.workload_api.socket_path.display(),
        sds = sds_here.is_some(),
        "Workload API listening"
    );
    let api_limits = limits.clone();
    let serve = tokio::spawn(async move {
        if let Err(e) = tonic::transport::Server::builder()
            .add_service(WorkloadApiService::new(api))
            .add_optional_service(sds_here)
            .serve_with_incoming(incoming(listener, api_limits))
            .await
        {
            error!(error = %e, "Workload API server failed");
        }
    });
    let serve_sds = match sds_apart {
        None => None,
        Some((path, service)) => {
            let listener = bind(&path, mode, "Envoy SDS")?;
            info!(socket = %path.display(), "Envoy SDS listening");
            Some(tokio::spawn(async move {
                if let Err(e) = tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming(incoming(listener, limits))
                    .await
                {
                    error!(error = %e, "Envoy SDS server failed");
                }
            }))
        }
    };

    let work = async {
        let mut renewable: Option<AgentSvid> = None;
        let mut keys: Option<KeySource> = None;
        loop {
            let svid = match renewable.take() {
                Some(s) => s,
                None => attest_with_backoff(&cfg, &mut keys, on_attested).await,
            };
            let mut backoff = Duration::from_secs(1);
            let mut renewal_backoff = Duration::from_secs(1);
            // Sync with this SVID until half life (then re-attest), or until it
            // expired during an outage (then re-attest as well).
            while unix_now() < svid.expires_at {
                let mut synced = false;
                // One channel serves the sync loop and the JWT-SVID requests.
                let result = match sync::agent_channel(&cfg, &svid).await {
                    Ok(ch) => {
                        *server.write().await = Some(AgentClient::new(ch.clone()));
                        sync::run(ch, &svid, &cache, &mut synced).await
                    }
                    Err(e) => Err(e.context("server unreachable")),
                };
                if synced {
                    // The server was back: a later outage starts the backoff over.
                    backoff = Duration::from_secs(1);
                }
                match result {
                    Ok(()) => {
                        // Half life: TPM agents re-attest (fresh quote); a join_token
                        // agent renews over mTLS, its token being spent.
                        if cfg.node_attestor == "join_token" {
                            match sync::renew_agent_svid(&cfg, &svid).await {
                                Ok(s) => {
                                    if let Err(e) = on_attested(&renewed_outcome(&s)) {
                                        warn!("cannot save the renewed agent SVID: {e:#}");
                                    }
                                    renewable = Some(s);
                                }
                                Err(e) => {
                                    // Attesting again would present the spent token:
                                    // keep syncing with this SVID and retry the
                                    // renewal until it expires.
                                    warn!(
                                        "agent SVID renewal failed, retrying in {}s: {e:#}",
                                        renewal_backoff.as_secs()
                                    );
                                    tokio::time::sleep(renewal_backoff).await;
                                    renewal_backoff = (renewal_backoff * 2).min(MAX_BACKOFF);
                                    continue;
                                }
                            }
                        }
                        break;
                    }
                    Err(e)
                        if format!("{e:#}").contains("PermissionDenied")
                            && cfg.node_attestor != "join_token" =>
                    {
                        // Evicted, banned, or an SVID that is no longer current:
                        // retrying with it cannot help; attest again.
                        warn!("the server refused the agent SVID, attesting again: {e:#}");
                        break;
                    }
                    Err(e) => {
                        warn!(
                            "sync failed (serving cached SVIDs), retrying in {}s: {e:#}",
                            backoff.as_secs()
                        );
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = work => {}
        _ = shutdown() => info!("shutting down"),
    }
    serve.abort();
    let _ = std::fs::remove_file(&cfg.workload_api.socket_path);
    if let Some(s) = serve_sds {
        s.abort();
        if let Some(path) = &cfg.sds.socket_path {
            let _ = std::fs::remove_file(path);
        }
    }
    Ok(())
}

async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut t), Ok(mut i)) => {
            tokio::select! {
                _ = t.recv() => {}
                _ = i.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
