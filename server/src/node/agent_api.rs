//! The agent API: entry sync, SVID signing and change notices for attested
//! agents. Every call must present an agent X.509-SVID (mTLS) that this
//! server issued to an attested, non-banned node, and an agent only ever gets
//! the entries it is authorized for.

use std::pin::Pin;
use std::sync::Arc;

use ironroot_api::agent::{self as pb, agent_server::Agent};
use ironroot_api::entry::RegistrationEntry;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_api::tls::svid_spiffe_id;
use ironroot_runtime::unix_now;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::ca::CertificateAuthority;
use crate::changes::Changes;
use crate::status;
use crate::store::{AttestedNode, DataStore, EntryFilter};

/// Most CSRs in one batch.
pub const MAX_BATCH: usize = 1000;

pub struct AgentService {
    pub store: Arc<dyn DataStore>,
    pub ca: Arc<CertificateAuthority>,
    pub changes: Changes,
    /// Lifetime of renewed agent SVIDs.
    pub agent_svid_ttl: std::time::Duration,
}

/// The calling agent, once its SVID checked out.
struct Caller {
    id: SpiffeId,
    node: AttestedNode,
}

/// Entries `node` may serve: those whose parent is the agent, and those whose
/// parent is a node alias (an entry under `spiffe://<td>/spire/server`) whose
/// selectors the node has.
pub fn authorized_entries(
    all: &[RegistrationEntry],
    agent: &SpiffeId,
    node_selectors: &[Selector],
    server_id: &SpiffeId,
    now: i64,
) -> Vec<RegistrationEntry> {
    let aliases: Vec<&SpiffeId> = all
        .iter()
        .filter(|e| {
            &e.spec.parent_id == server_id && Selector::all_in(&e.spec.selectors, node_selectors)
        })
        .map(|e| &e.spec.spiffe_id)
        .collect();
    all.iter()
        .filter(|e| e.spec.expires_at == 0 || e.spec.expires_at > now)
        .filter(|e| &e.spec.parent_id == agent || aliases.contains(&&e.spec.parent_id))
        .cloned()
        .collect()
}

impl AgentService {
    /// The agent behind this connection, or UNAUTHENTICATED with the reason.
    fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        let certs = req
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|i| i.peer_certs())
            .ok_or_else(|| {
                Status::unauthenticated("the agent API needs an agent X.509-SVID (mTLS)")
            })?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
        let id = svid_spiffe_id(leaf).map_err(Status::unauthenticated)?;
        let node = self
            .store
            .get_attested_node(&id)
            .map_err(status::store)?
            .ok_or_else(|| Status::permission_denied(format!("{id} is not an attested agent")))?;
        if node.banned {
            return Err(Status::permission_denied(format!("{id} is banned")));
        }
        // Only the agent's current SVID: an older one (before re-attestation) is refused.
        if crate::ca::x509::serial_hex(leaf).as_deref() != Some(node.serial_number.as_str()) {
            return Err(Status::permission_denied(format!(
                "{id} presented an SVID that is not its current one; re-attest"
            )));
        }
        Ok(Caller { id, node })
    }

    fn entries_for(&self, c: &Caller) -> Result<Vec<RegistrationEntry>, Status> {
        let all = self
            .store
            .list_entries(&EntryFilter::default())
            .map_err(status::store)?;
        let server_id = SpiffeId::server(self.ca.trust_domain());
        Ok(authorized_entries(
            &all,
            &c.id,
            &c.node.selectors,
            &server_id,
            unix_now(),
        ))
    }
}

fn entry_pb(e: &RegistrationEntry) -> pb::Entry {
    pb::Entry {
        id: e.id.clone(),
        spiffe_id: e.spec.spiffe_id.to_string(),
        parent_id: e.spec.parent_id.to_string(),
        selectors: e
            .spec
            .selectors
            .iter()
            .map(|s| pb::Selector {
                r#type: s.kind.clone(),
                value: s.value.clone(),
            })
            .collect(),
        x509_svid_ttl: i32::try_from(e.spec.x509_svid_ttl).unwrap_or(i32::MAX),
        jwt_svid_ttl: i32::try_from(e.spec.jwt_svid_ttl).unwrap_or(i32::MAX),
        dns_names: e.spec.dns_names.clone(),
        hint: e.spec.hint.clone(),
        revision_number: e.revision,
        expires_at: e.spec.expires_at,
    }
}

type NoticeStream = Pin<Box<dyn Stream<Item = Result<pb::ChangeNotice, Status>> + Send>>;

/// The gRPC face of a shared [`AgentService`].
pub struct AgentApi(pub Arc<AgentService>);

#[tonic::async_trait]
impl Agent for AgentApi {
    type WatchChangesStream = NoticeStream;

    async fn sync_entries(
        &self,
        req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        let svc = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let caller = svc.caller(&req)?;
            let entries = svc.entries_for(&caller)?;
            let bundle = svc.ca.bundle().map_err(status::ca)?;
            let jwks_json = bundle
                .to_jwks_json()
                .map_err(|e| Status::internal(e.to_string()))?;
            let mut federated_jwks = std::collections::HashMap::new();
            for b in svc.store.list_federated_bundles().map_err(status::store)? {
                if let Ok(j) = b.to_jwks_json() {
                    federated_jwks.insert(b.trust_domain.to_string(), j);
                }
            }
            Ok(Response::new(pb::SyncEntriesResponse {
                entries: entries.iter().map(entry_pb).collect(),
                x509_authorities: bundle.x509_authorities,
                jwks_json,
                federated_jwks,
                bundle_sequence: bundle.sequence_number as i64,
            }))
        })
        .await
        .map_err(status::worker)?
    }

    async fn batch_new_x509_svid(
        &self,
        req: Request<pb::BatchNewX509SvidRequest>,
    ) -> Result<Response<pb::BatchNewX509SvidResponse>, Status> {
        let svc = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let caller = svc.caller(&req)?;
            let requests = &req.get_ref().requests;
            if requests.len() > MAX_BATCH {
                return Err(Status::invalid_argument(format!(
                    "{} CSRs in one batch; the limit is {MAX_BATCH}",
                    requests.len()
                )));
            }
            let entries = svc.entries_for(&caller)?;
            let mut results = Vec::with_capacity(requests.len());
            for r in requests {
                let Some(e) = entries.iter().find(|e| e.id == r.entry_id) else {
                    warn!(agent = %caller.id, entry = %r.entry_id, "SVID refused: entry not authorized for this agent");
                    results.push(pb::X509SvidResult {
                        entry_id: r.entry_id.clone(),
                        error: format!("entry '{}' is not authorized for {}", r.entry_id, caller.id),
                        ..Default::default()
                    });
                    continue;
                };
                match svc.ca.sign_x509_svid_csr(&r.csr, &e.spec.spiffe_id, e.spec.x509_svid_ttl, &e.spec.dns_names) {
                    Ok(s) => results.push(pb::X509SvidResult {
                        entry_id: e.id.clone(),
                        svid_chain: s.chain,
                        expires_at: s.expires_at,
                        error: String::new(),
                    }),
                    Err(err) => results.push(pb::X509SvidResult {
                        entry_id: e.id.clone(),
                        error: err.to_string(),
                        ..Default::default()
                    }),
                }
            }
            info!(agent = %caller.id, count = results.len(), "X.509-SVID batch signed");
            Ok(Response::new(pb::BatchNewX509SvidResponse { results }))
        })
        .await
        .map_err(status::worker)?
    }

    async fn new_jwt_svid(
        &self,
        req: Request<pb::NewJwtSvidRequest>,
    ) -> Result<Response<pb::NewJwtSvidResponse>, Status> {
        let svc = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let caller = svc.caller(&req)?;
            let r = req.get_ref();
            let entries = svc.entries_for(&caller)?;
            let e = entries.iter().find(|e| e.id == r.entry_id).ok_or_else(|| {
                Status::permission_denied(format!(
                    "entry '{}' is not authorized for {}",
                    r.entry_id, caller.id
                ))
            })?;
            let (token, expires_at) = svc
                .ca
                .mint_jwt_svid(&e.spec.spiffe_id, &r.audience, e.spec.jwt_svid_ttl)
                .map_err(status::ca)?;
            Ok(Response::new(pb::NewJwtSvidResponse { token, expires_at }))
        })
        .await
        .map_err(status::worker)?
    }

    async fn renew_agent_svid(
        &self,
        req: Request<pb::RenewAgentSvidRequest>,
    ) -> Result<Response<pb::RenewAgentSvidResponse>, Status> {
        let svc = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let caller = svc.caller(&req)?;
            if caller.node.attestor != crate::node::join_token::NAME {
                return Err(Status::permission_denied(format!(
                    "{} attested with {}: it renews by attesting again with a fresh quote",
                    caller.id, caller.node.attestor
                )));
            }
            let ttl = u32::try_from(svc.agent_svid_ttl.as_secs()).unwrap_or(u32::MAX);
            let svid = svc
                .ca
                .sign_x509_svid_csr(&req.get_ref().csr, &caller.id, ttl, &[])
                .map_err(status::ca)?;
            let now = unix_now();
            let mut node = caller.node.clone();
            node.serial_number = svid
                .chain
                .first()
                .and_then(|d| crate::ca::x509::serial_hex(d))
                .unwrap_or_default();
            node.expires_at = svid.expires_at;
            node.last_attested_at = now;
            svc.store.record_attestation(&node).map_err(status::store)?;
            let roots = svc.ca.bundle().map_err(status::ca)?.x509_authorities;
            info!(agent = %caller.id, "agent SVID renewed (join_token)");
            Ok(Response::new(pb::RenewAgentSvidResponse {
                svid_chain: svid.chain,
                expires_at: svid.expires_at,
                root_cas: roots,
            }))
        })
        .await
        .map_err(status::worker)?
    }

    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let svc = self.0.clone();
        let caller = tokio::task::spawn_blocking(move || svc.caller(&req).map(|c| c.id))
            .await
            .map_err(status::worker)??;
        info!(agent = %caller, "agent watching for changes");
        let stream = WatchStream::new(self.0.changes.subscribe())
            .map(|generation| Ok(pb::ChangeNotice { generation }));
        Ok(Response::new(Box::pin(stream)))
    }
}
