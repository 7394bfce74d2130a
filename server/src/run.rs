//! `ironroot-server run`: opens the key manager, store and CA, then serves
//! the admin API and keeps the CA rotation schedule until told to stop.

use std::path::PathBuf;
use std::sync::Arc;

use ironroot_hsm::{KeyManager, OpenBaoClient, Pkcs11KeyManager, SoftwareKeyManager};
use tracing::{error, info, warn};

use crate::admin::{
    bind_admin_socket, serve_admin, AdminAuthorizer, AdminOverTls, AdminService, Counted,
};
use crate::audit::Audit;
use crate::authorized::AuthorizedCache;
use crate::ca::upstream::{OpenBaoPki, Upstream};
use crate::ca::{CaSettings, CertificateAuthority};
use crate::changes::Changes;
use crate::config::{KeyManagerConfig, ListenAddress, ServerConfig, StoreConfig, UpstreamConfig};
use crate::node::agent_api::{AgentApi, AgentService};
use crate::node::limits::NodeLimits;
use crate::node::registry::{self, BuildContext};
use crate::node::tls::{tls_incoming, ServerIdentity};
use crate::node::NodeService;
use crate::store::{DataStore, PostgresStore, SledStore};
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_runtime::unix_now;

mod error;

pub use error::StartError;

/// Everything a running server holds.
pub struct Server {
    pub(crate) config: ServerConfig,
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) node: Arc<NodeService>,
    /// Entries, nodes and bundles as agents are answered from them.
    pub(crate) cache: Arc<AuthorizedCache>,
    /// Wakes every agent's WatchChanges stream (CA rotation, bundle and alias changes).
    pub(crate) changes: Changes,
    /// The tamper-evident record of changes, attestations and CA steps.
    pub(crate) audit: Audit,
}

fn node_service(
    cfg: &ServerConfig,
    store: Arc<dyn DataStore>,
    ca: Arc<CertificateAuthority>,
    km: Arc<dyn KeyManager>,
    audit: Audit,
) -> Result<NodeService, StartError> {
    let attestors = registry::build(
        &cfg.node_attestors,
        &BuildContext {
            trust_domain: ca.trust_domain().clone(),
            store: store.clone(),
            key_manager: km,
            key_label_prefix: &cfg.ca.key_label_prefix,
            data_dir: &cfg.data_dir,
            challenge_ttl: cfg.node_api.challenge_ttl,
            max_pending_nonces: cfg.node_api.limits.max_pending_nonces,
        },
    )?;
    info!(enabled = %attestors.enabled(), "node attestors");
    Ok(NodeService {
        attestors,
        ca,
        store,
        agent_svid_ttl: cfg.node_api.agent_svid_ttl,
        challenge_ttl: cfg.node_api.challenge_ttl,
        limits: NodeLimits::new(cfg.node_api.limits.clone()),
        audit,
    })
}

/// The configured key manager, its failed calls counted (`hsm_errors`).
pub(crate) fn open_key_manager(cfg: &ServerConfig) -> Result<Arc<dyn KeyManager>, StartError> {
    Ok(Arc::new(crate::metrics::CountedKeyManager(
        open_configured_key_manager(cfg)?,
    )))
}

fn open_configured_key_manager(cfg: &ServerConfig) -> Result<Arc<dyn KeyManager>, StartError> {
    match &cfg.key_manager {
        KeyManagerConfig::Pkcs11(token) => {
            let km = Pkcs11KeyManager::open(token).map_err(StartError::KeyManager)?;
            return Ok(Arc::new(km));
        }
        KeyManagerConfig::Transit(transit) => {
            let km = ironroot_hsm::TransitKeyManager::open((**transit).clone())
                .map_err(StartError::KeyManager)?;
            return Ok(Arc::new(km));
        }
        KeyManagerConfig::InsecureSoftware => {}
    }
    let dir = cfg.data_dir.join("insecure-keys");
    let banner = format!(
        "INSECURE: insecure_software_keys = true: the CA private keys are plain files in {}. \
         Anyone who reads that directory can issue identities for the whole trust domain. \
         Development only: configure [key_manager.pkcs11] for any real use.",
        dir.display()
    );
    warn!("{banner}");
    eprintln!("WARNING: {banner}");
    let km = SoftwareKeyManager::open(&dir).map_err(StartError::SoftwareKeys)?;
    Ok(Arc::new(km))
}

/// The configured store. PostgreSQL's feed listener runs on the runtime this is called
/// from (the server's: `open` runs on its blocking pool).
fn open_store(cfg: &ServerConfig) -> Result<Arc<dyn DataStore>, StartError> {
    let td = cfg.trust_domain.clone();
    let store: Arc<dyn DataStore> = match &cfg.store {
        StoreConfig::Sled(sled) => Arc::new(
            SledStore::open_with_cache(&cfg.data_dir.join("store"), td, sled.cache_bytes)
                .map_err(StartError::Store)?,
        ),
        StoreConfig::Postgres(pg) => Arc::new(
            crate::store::bridge::wait(PostgresStore::open(pg, td)).map_err(StartError::Store)?,
        ),
    };
    info!(backend = store.backend(), "store ready");
    Ok(store)
}

fn open_upstream(cfg: &ServerConfig) -> Result<Option<Upstream>, StartError> {
    let Some(up) = &cfg.upstream else {
        return Ok(None);
    };
    let upstream = match up {
        UpstreamConfig::Disk {
            cert_file,
            key_file,
            bundle_file,
        } => Upstream::from_files(cert_file, key_file, bundle_file.as_deref())
            .map_err(|e| StartError::Upstream(Box::new(e)))?,
        UpstreamConfig::Pkcs11 {
            token,
            key_label,
            cert_file,
            bundle_file,
        } => {
            let km: Arc<dyn KeyManager> =
                Arc::new(Pkcs11KeyManager::open(token).map_err(StartError::UpstreamToken)?);
            Upstream::from_token(km, key_label, cert_file, bundle_file.as_deref())
                .map_err(|e| StartError::Upstream(Box::new(e)))?
        }
        UpstreamConfig::OpenBao(pki) => {
            let pinned_roots = match &pki.root_file {
                None => Vec::new(),
                Some(path) => crate::ca::upstream::read_pem_certs(path)
                    .map_err(|e| StartError::Upstream(Box::new(e)))?,
            };
            let client =
                OpenBaoClient::open(pki.connection.clone()).map_err(StartError::UpstreamOpenBao)?;
            Upstream::openbao(OpenBaoPki::new(
                client,
                pki.connection.mount.clone(),
                pki.issuer.clone(),
                pinned_roots,
            ))
        }
    };
    Ok(Some(upstream))
}

impl Server {
    /// Opens every component; any failure (HSM, store, journal) stops start-up.
    pub fn open(config: ServerConfig) -> Result<Self, StartError> {
        let td = config.trust_domain.clone();
        std::fs::create_dir_all(&config.data_dir).map_err(|source| StartError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let km = open_key_manager(&config)?;
        info!(key_manager = %km.describe(), "key manager ready");
        let store = open_store(&config)?;
        let upstream = open_upstream(&config)?;
        let settings = CaSettings {
            trust_domain: td,
            key_algorithm: config.ca.key_algorithm,
            ca_ttl: config.ca.ca_ttl,
            default_x509_svid_ttl: config.ca.default_x509_svid_ttl,
            default_jwt_svid_ttl: config.ca.default_jwt_svid_ttl,
            key_label_prefix: config.ca.key_label_prefix.clone(),
            organization: config.ca.subject_organization.clone(),
            country: config.ca.subject_country.clone(),
            jwt_issuer: config.ca.jwt_issuer.clone(),
            signing: config.ca.signing,
            memory_key_ttl: config.ca.memory_key_ttl,
        };
        let ca = Arc::new(
            CertificateAuthority::open(settings, km.clone(), store.clone(), upstream)
                .map_err(|e| StartError::Ca(Box::new(e)))?,
        );
        let st = ca.status().map_err(|e| StartError::CaStatus(Box::new(e)))?;
        info!(
            x509_key = %st.x509_key_label,
            x509_not_after = st.x509_not_after,
            jwt_kid = %st.jwt_key_id,
            upstream = st.upstream.as_deref().unwrap_or("none (root CA)"),
            signing = ca.signing_mode().as_str(),
            "CA ready"
        );
        // The log opens with the CA's state: its first records say which keys were active.
        let audit = Audit::open(&config, km.clone()).map_err(StartError::Audit)?;
        ca.set_audit(audit.clone());
        let node = Arc::new(node_service(
            &config,
            store.clone(),
            ca.clone(),
            km,
            audit.clone(),
        )?);
        let changes = Changes::default();
        let cache = crate::store::bridge::wait(AuthorizedCache::load(
            store.clone(),
            SpiffeId::server(ca.trust_domain()),
            changes.clone(),
        ))
        .map_err(StartError::Store)?;
        Ok(Server {
            config,
            store,
            ca,
            node,
            cache,
            changes,
            audit,
        })
    }

    /// Serves until SIGINT/SIGTERM.
    pub async fn run(self) -> Result<(), StartError> {
        // Bound before the admin socket: once that answers, discovery does too.
        let oidc_task = match &self.config.oidc {
            None => None,
            Some(cfg) => Some(
                crate::oidc::spawn(cfg, self.ca.clone())
                    .await
                    .map_err(StartError::Oidc)?,
            ),
        };
        let mut federation_tasks = match &self.config.federation.bundle_endpoint {
            None => Vec::new(),
            Some(cfg) => crate::federation::endpoint::spawn(cfg, self.ca.clone())
                .await
                .map_err(StartError::BundleEndpoint)?,
        };
        federation_tasks.extend(crate::federation::poller::spawn(
            &self.config.federation,
            self.store.clone(),
            self.audit.clone(),
            self.cache.watch_federated_bundles(),
        ));
        let socket_path: PathBuf = self.config.admin.socket_path.clone();
        let listener = bind_admin_socket(&socket_path, self.config.admin.socket_mode.bits())
            .map_err(StartError::AdminSocket)?;
        info!(socket = %socket_path.display(), "admin API listening");

        let follower = self.cache.spawn_follower();
        let rotation = self.spawn_rotation();

        let node_task = match &self.config.node_api.listen {
            None => None,
            Some(listen) => Some(self.spawn_node_api(listen).await?),
        };

        let metrics_task = match &self.config.metrics_listen {
            None => None,
            Some(listen) => {
                let endpoint = ironroot_runtime::metrics::MetricsListener::bind(listen.as_str())
                    .await
                    .map_err(StartError::Metrics)?;
                info!(address = %endpoint.local_addr(), "metrics endpoint listening (GET /metrics)");
                let registry = Arc::new(crate::metrics::registry(self.cache.clone()));
                Some(tokio::spawn(endpoint.serve(registry)))
            }
        };

        self.audit.ca("active_at_start", ca_keys(&self.ca)).await;
        let service = AdminService {
            store: self.store.clone(),
            ca: self.ca.clone(),
            cache: self.cache.clone(),
            audit: self.audit.clone(),
        };
        let result = serve_admin(
            listener,
            service,
            self.config.admin.allowed_uids.clone(),
            self.config.admin.max_request_bytes,
            shutdown_signal(),
        )
        .await;
        rotation.abort();
        follower.abort();
        for t in federation_tasks {
            t.abort();
        }
        for t in [node_task, metrics_task].into_iter().flatten() {
            t.abort();
        }
        for t in oidc_task.into_iter().flatten() {
            t.abort();
        }
        let _ = std::fs::remove_file(&socket_path);
        // The last SVID counts and a checkpoint over everything written.
        self.audit.close().await;
        info!("server stopped");
        result.map_err(StartError::AdminSocket)
    }
}

/// The CA's active keys as the audit log names them.
fn ca_keys(ca: &CertificateAuthority) -> String {
    match ca.status() {
        Ok(st) => format!("x509={} jwt={}", st.x509_key_label, st.jwt_key_id),
        Err(e) => format!("status unavailable: {e}"),
    }
}

impl Server {
    /// Runs the CA's rotation checks every `ca.rotation_check_interval`, and follows the
    /// journal whenever the store's feed says another server of the trust domain changed it;
    /// wakes every agent when the bundle changed.
    fn spawn_rotation(&self) -> tokio::task::JoinHandle<()> {
        let ca = self.ca.clone();
        let changes = self.changes.clone();
        let mut journal = self.cache.watch_ca_journal();
        let interval = self.config.ca.rotation_check_interval;
        let audit = self.audit.clone();
        tokio::spawn(async move {
            // Recorded once per distinct failure, not at every check that repeats it.
            let mut condemned: Option<String> = None;
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let schedule = tokio::select! {
                    _ = tick.tick() => true,
                    r = journal.changed() => {
                        if r.is_err() {
                            return;
                        }
                        false
                    }
                };
                let ca_pass = ca.clone();
                let pass = tokio::task::spawn_blocking(move || {
                    let ca = ca_pass;
                    if schedule {
                        ca.rotate(unix_now())
                    } else {
                        ca.follow_journal(unix_now())
                    }
                });
                match pass.await {
                    Ok(Ok(true)) if schedule => {
                        info!("CA keys rotated; bundle updated");
                        changes.bump();
                        audit.ca("rotated", ca_keys(&ca)).await;
                    }
                    Ok(Ok(true)) => {
                        info!("CA journal changed by another server; following it, bundle updated");
                        changes.bump();
                        audit.ca("followed_another_server", ca_keys(&ca)).await;
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) if e.condemns_active_key() => {
                        error!(
                            error = %e,
                            "CA rotation check failed: a CA key is gone or unsafe, and the CA stopped signing with it"
                        );
                        let why = e.to_string();
                        if condemned.as_deref() != Some(why.as_str()) {
                            audit.ca("active_key_condemned", why.clone()).await;
                            condemned = Some(why);
                        }
                    }
                    Ok(Err(e)) => warn!(
                        error = %e,
                        retry_in = ?interval,
                        "CA rotation check failed; the current CA keys stay active and the check is retried"
                    ),
                    Err(e) => error!(error = %e, "CA rotation task failed"),
                }
            }
        })
    }

    /// Binds the Node API (TLS with the server SVID) and serves it in the background.
    async fn spawn_node_api(
        &self,
        listen: &ListenAddress,
    ) -> Result<tokio::task::JoinHandle<()>, StartError> {
        let bind_error = |source| StartError::NodeApiBind {
            address: listen.to_string(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(listen.as_str())
            .await
            .map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let ttl = 3600u32;
        let ca = self.ca.clone();
        let identity = {
            let ca = ca.clone();
            tokio::task::spawn_blocking(move || ServerIdentity::new(&ca, ttl))
                .await
                .map_err(StartError::Task)?
                .map_err(StartError::Identity)?
        };
        let renew_identity = identity.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            loop {
                tick.tick().await;
                let (ca, id) = (ca.clone(), renew_identity.clone());
                match tokio::task::spawn_blocking(move || id.renew_if_due(&ca, ttl)).await {
                    Ok(Ok(true)) => info!("server SVID renewed"),
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => error!(error = %e, "server SVID renewal failed"),
                    Err(e) => error!(error = %e, "server SVID renewal task failed"),
                }
            }
        });
        let svc = ironroot_api::node::node_server::NodeServer::new(crate::node::NodeApi(
            self.node.clone(),
        ))
        .max_decoding_message_size(self.config.node_api.max_message_bytes);
        let agent_svc =
            ironroot_api::agent::agent_server::AgentServer::new(AgentApi(Arc::new(AgentService {
                store: self.store.clone(),
                cache: self.cache.clone(),
                ca: self.ca.clone(),
                agent_svid_ttl: self.config.node_api.agent_svid_ttl,
                limits: self.node.limits.clone(),
                renew_over_mtls: self.node.attestors.attest_once(),
            })))
            .max_decoding_message_size(self.config.node_api.max_message_bytes);
        // The admin API for admin SVIDs, authorized per call before the service sees it, and
        // counted with its refusals.
        let admin_svc = Counted::new(
            AdminOverTls::new(
                ironroot_api::admin::admin_server::AdminServer::new(AdminService {
                    store: self.store.clone(),
                    ca: self.ca.clone(),
                    cache: self.cache.clone(),
                    audit: self.audit.clone(),
                })
                .max_decoding_message_size(self.config.admin.max_request_bytes)
                .max_encoding_message_size(64 * 1024 * 1024),
                AdminAuthorizer {
                    trust_domain: self.ca.trust_domain().clone(),
                    ca: self.ca.clone(),
                    store: self.store.clone(),
                    admin_ids: self.config.admin.admin_ids.iter().cloned().collect(),
                },
                self.node.limits.clone(),
            ),
            "tls",
        );
        let roots_ca = self.ca.clone();
        let roots: ironroot_api::tls::RootsSource = Arc::new(move || {
            roots_ca
                .bundle()
                .map(|b| b.x509_authorities)
                .unwrap_or_default()
        });
        let limits = self.node.limits.clone();
        crate::node::limits::make_room_for_connections(limits.config().max_connections);
        let streams = limits.config().max_streams_per_connection;
        let incoming = tls_incoming(listener, identity, roots, limits);
        info!(address = %addr, "node API listening (TLS; also the admin API for admin SVIDs)");
        Ok(tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .max_concurrent_streams(streams)
                .add_service(svc)
                .add_service(agent_svc)
                .add_service(admin_svc)
                .serve_with_incoming(incoming)
                .await
            {
                error!(error = %e, "node API server failed");
            }
        }))
    }
}

async fn shutdown_signal() {
    ironroot_runtime::shutdown::signal().await;
    info!("shutting down");
}
