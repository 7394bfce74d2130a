//! The agent API: entry sync, SVID signing and change notices for attested
//! agents. Every call must present an agent X.509-SVID (mTLS) that this
//! server issued to an attested, non-banned node, and an agent only ever gets
//! the entries it is authorized for.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironroot_api::agent::{self as pb, agent_server::Agent};
use ironroot_api::entry::RegistrationEntry;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_api::tls::svid_spiffe_id;
use ironroot_runtime::unix_now;
use tokio_stream::wrappers::WatchStream;
use tokio_stream::{Stream, StreamExt};
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::limits::NodeLimits;
use crate::authorized::AuthorizedCache;
use crate::ca::CertificateAuthority;
use crate::status;
use crate::store::{AttestedNode, DataStore, Revision};

/// How long a caller whose node record is newer than the cache waits for the
/// cache before the store is asked directly.
const CATCH_UP: Duration = Duration::from_millis(500);

/// What the agent API needs: the cache it answers from, the store behind it
/// (only for a node record the cache has not caught up with), and the CA.
pub(crate) struct AgentService {
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) cache: Arc<AuthorizedCache>,
    pub(crate) ca: Arc<CertificateAuthority>,
    /// Lifetime of renewed agent SVIDs.
    pub(crate) agent_svid_ttl: std::time::Duration,
    /// `[node_api.limits]`: batch sizes, and the signing rate per source address.
    pub(crate) limits: Arc<NodeLimits>,
    /// The enabled attestors that attest a node once (`NodeAttestor::can_reattest` false):
    /// their nodes renew over mTLS; the others attest again.
    pub(crate) renew_over_mtls: Vec<&'static str>,
}

/// The calling agent, once its SVID checked out.
struct Caller {
    id: SpiffeId,
    node: AttestedNode,
}

/// Refuses `node` unless it may use the agent API with the SVID whose serial is `serial`.
fn admit(id: &SpiffeId, node: Option<&AttestedNode>, serial: &str) -> Result<AttestedNode, Status> {
    let node =
        node.ok_or_else(|| Status::permission_denied(format!("{id} is not an attested agent")))?;
    if node.banned {
        return Err(Status::permission_denied(format!("{id} is banned")));
    }
    // Only the agent's current SVID: an older one (before re-attestation) is refused.
    if node.serial_number != serial {
        return Err(Status::permission_denied(format!(
            "{id} presented an SVID that is not its current one; re-attest"
        )));
    }
    Ok(node.clone())
}

impl AgentService {
    /// The agent behind this connection, or UNAUTHENTICATED / PERMISSION_DENIED
    /// with the reason. Answered from the cache; a node that attested a moment
    /// ago may not be there yet, so a refusal is checked once more after the
    /// cache caught up, then against the store.
    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
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
        let serial = crate::ca::x509::serial_hex(leaf).unwrap_or_default();
        if let Ok(node) = admit(&id, self.cache.read().node(&id), &serial) {
            return Ok(Caller { id, node });
        }
        if self.cache.catch_up(CATCH_UP).await {
            let node = admit(&id, self.cache.read().node(&id), &serial)?;
            return Ok(Caller { id, node });
        }
        let stored = self
            .store
            .get_attested_node(&id)
            .await
            .map_err(status::store)?;
        let node = admit(&id, stored.as_ref(), &serial)?;
        Ok(Caller { id, node })
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
        federates_with: e
            .spec
            .federates_with
            .iter()
            .map(|td| td.as_str().to_owned())
            .collect(),
    }
}

type NoticeStream = Pin<Box<dyn Stream<Item = Result<pb::ChangeNotice, Status>> + Send>>;

/// The gRPC face of a shared [`AgentService`].
pub(crate) struct AgentApi(pub Arc<AgentService>);

/// SyncEntries' answer, timed by the trait method.
impl AgentApi {
    async fn answer_sync(
        &self,
        req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        let svc = &self.0;
        let caller = svc.caller(&req).await?;
        let known = Revision(req.get_ref().known_revision);
        let bundle = svc.ca.bundle().map_err(status::ca)?;
        let jwks_json = bundle
            .to_jwks_json()
            .map_err(|e| Status::internal(e.to_string()))?;
        let ix = svc.cache.read();
        let authorized = ix.authorized(&caller.id, &caller.node.selectors, unix_now());
        // A delta needs the agent's revision to be one this cache has passed:
        // an agent that synced with a server further ahead gets everything.
        let delta = known.0 != 0 && known <= ix.revision();
        let entries = authorized
            .iter()
            .filter(|e| !delta || e.changed_at > known)
            .map(|e| entry_pb(&e.entry))
            .collect();
        let entry_ids = if delta {
            authorized.iter().map(|e| e.entry.id.clone()).collect()
        } else {
            Vec::new()
        };
        // Only the bundles the agent's entries federate with (as SPIRE): an agent has no use
        // for the others, and every sync carries the whole set, so an entry that starts or
        // stops federating with a trust domain changes it at the next sync.
        let wanted: std::collections::BTreeSet<&TrustDomain> = authorized
            .iter()
            .flat_map(|e| e.entry.spec.federates_with.iter())
            .collect();
        let mut federated_jwks = std::collections::HashMap::new();
        for b in wanted.into_iter().filter_map(|td| ix.bundle(td)) {
            if let Ok(j) = b.to_jwks_json() {
                federated_jwks.insert(b.trust_domain.to_string(), j);
            }
        }
        let revision = ix.revision().0;
        drop(ix);
        Ok(Response::new(pb::SyncEntriesResponse {
            entries,
            x509_authorities: bundle.x509_authorities,
            jwks_json,
            federated_jwks,
            bundle_sequence: bundle.sequence_number as i64,
            revision,
            delta,
            entry_ids,
        }))
    }
}

#[tonic::async_trait]
impl Agent for AgentApi {
    type WatchChangesStream = NoticeStream;

    async fn sync_entries(
        &self,
        req: Request<pb::SyncEntriesRequest>,
    ) -> Result<Response<pb::SyncEntriesResponse>, Status> {
        let started = std::time::Instant::now();
        let answer = self.answer_sync(req).await;
        let outcome = match &answer {
            Ok(_) => "ok",
            Err(s) => ironroot_runtime::metrics::grpc_code_label(s.code() as i32),
        };
        crate::metrics::metrics().agent_sync(outcome, started.elapsed());
        answer
    }

    async fn batch_new_x509_svid(
        &self,
        req: Request<pb::BatchNewX509SvidRequest>,
    ) -> Result<Response<pb::BatchNewX509SvidResponse>, Status> {
        let svc = self.0.clone();
        let count = req.get_ref().requests.len();
        svc.limits
            .check_x509_batch(count)
            .map_err(|e| e.to_status())?;
        svc.limits
            .admit_signing(req.remote_addr(), count, Instant::now())
            .map_err(|e| e.to_status())?;
        let caller = svc.caller(&req).await?;
        let requests = req.into_inner().requests;
        // Each request paired with its entry, if the agent may have it.
        let work: Vec<(pb::X509SvidRequest, Option<Arc<RegistrationEntry>>)> = {
            let ix = svc.cache.read();
            let now = unix_now();
            requests
                .into_iter()
                .map(|r| {
                    let e = ix
                        .authorized_entry(&caller.id, &caller.node.selectors, &r.entry_id, now)
                        .map(|e| e.entry.clone());
                    (r, e)
                })
                .collect()
        };
        tokio::task::spawn_blocking(move || {
            let mut results = Vec::with_capacity(work.len());
            for (r, e) in work {
                let Some(e) = e else {
                    warn!(agent = %caller.id, entry = %r.entry_id, "SVID refused: entry not authorized for this agent");
                    results.push(pb::X509SvidResult {
                        error: format!("entry '{}' is not authorized for {}", r.entry_id, caller.id),
                        entry_id: r.entry_id,
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
        svc.limits
            .check_jwt_audiences(req.get_ref().audience.len())
            .map_err(|e| e.to_status())?;
        svc.limits
            .admit_signing(req.remote_addr(), 1, Instant::now())
            .map_err(|e| e.to_status())?;
        let caller = svc.caller(&req).await?;
        let r = req.into_inner();
        let entry = svc
            .cache
            .read()
            .authorized_entry(&caller.id, &caller.node.selectors, &r.entry_id, unix_now())
            .map(|e| e.entry.clone())
            .ok_or_else(|| {
                Status::permission_denied(format!(
                    "entry '{}' is not authorized for {}",
                    r.entry_id, caller.id
                ))
            })?;
        tokio::task::spawn_blocking(move || {
            let (token, expires_at) = svc
                .ca
                .mint_jwt_svid(&entry.spec.spiffe_id, &r.audience, entry.spec.jwt_svid_ttl)
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
        svc.limits
            .admit_signing(req.remote_addr(), 1, Instant::now())
            .map_err(|e| e.to_status())?;
        let caller = svc.caller(&req).await?;
        // join_token also when it is no longer enabled: its nodes have no other way.
        let attestor = caller.node.attestor.as_str();
        if attestor != crate::node::join_token::NAME && !svc.renew_over_mtls.contains(&attestor) {
            return Err(Status::permission_denied(format!(
                "{} attested with {}: it renews by attesting again with fresh evidence",
                caller.id, caller.node.attestor
            )));
        }
        let ttl = u32::try_from(svc.agent_svid_ttl.as_secs()).unwrap_or(u32::MAX);
        let csr = req.into_inner().csr;
        let (ca, id) = (svc.ca.clone(), caller.id.clone());
        let svid = tokio::task::spawn_blocking(move || {
            ca.sign_x509_svid_csr(&csr, &id, ttl, &[])
                .map_err(status::ca)
        })
        .await
        .map_err(status::worker)??;
        let mut node = caller.node.clone();
        node.serial_number = svid
            .chain
            .first()
            .and_then(|d| crate::ca::x509::serial_hex(d))
            .unwrap_or_default();
        node.expires_at = svid.expires_at;
        node.last_attested_at = unix_now();
        svc.store
            .record_attestation(&node)
            .await
            .map_err(status::store)?;
        let roots = svc.ca.bundle().map_err(status::ca)?.x509_authorities;
        info!(agent = %caller.id, "agent SVID renewed (join_token)");
        Ok(Response::new(pb::RenewAgentSvidResponse {
            svid_chain: svid.chain,
            expires_at: svid.expires_at,
            root_cas: roots,
        }))
    }

    async fn watch_changes(
        &self,
        req: Request<pb::WatchChangesRequest>,
    ) -> Result<Response<Self::WatchChangesStream>, Status> {
        let svc = self.0.clone();
        let caller = svc.caller(&req).await?;
        let permit = svc.limits.admit_watch().map_err(|e| e.to_status())?;
        info!(agent = %caller.id, "agent watching for changes");
        // A notice at once, then when anything every agent sees changes or
        // anything of this agent's own; the stream ends (PERMISSION_DENIED)
        // when the agent is banned, evicted or has re-attested (its SVID is
        // no longer the current one).
        // No task and no channel per stream (10,000 agents hold one each): the
        // notice is worked out when the connection asks for the next message.
        let wakes = WatchStream::from_changes(svc.cache.watch_all())
            .merge(WatchStream::from_changes(svc.cache.watch_agent(&caller.id)));
        let (serial, id, cache) = (caller.node.serial_number, caller.id, svc.cache.clone());
        let mut ended = false;
        let stream = tokio_stream::once(0).chain(wakes).map_while(move |_| {
            // Counted against max_watch_streams until the stream is dropped.
            let _held = &permit;
            if ended {
                return None;
            }
            let ix = cache.read();
            let notice = admit(&id, ix.node(&id), &serial).map(|_| pb::ChangeNotice {
                generation: ix.revision().0,
            });
            ended = notice.is_err();
            Some(notice)
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
