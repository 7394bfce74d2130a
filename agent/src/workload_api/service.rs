//! The Workload API gRPC service: the security header, the caller's selectors,
//! and the unary calls (the streams are served by
//! [`crate::workload::encoded_streams`]).

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use ironroot_api::agent::agent_client::AgentClient;
use ironroot_api::selector::Selector;
use ironroot_api::workload::{self as pb, spiffe_workload_api_server::SpiffeWorkloadApi};
use tokio::sync::RwLock;
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::warn;

use crate::cache::{Cache, CachedEntry};
use crate::workload::attestor::{attest_caller, WorkloadAttestor};
use crate::workload::caller::Caller;
use crate::workload::jwt_cache::JwtSvidCache;
use crate::workload::limits::CallerLimits;
use crate::workload::shared_response::SharedResponses;

/// The server connection the JWT-SVIDs are minted through (set by the runtime).
pub(crate) type ServerClient = Arc<RwLock<Option<AgentClient<Channel>>>>;

pub(crate) struct WorkloadApi {
    pub cache: Cache,
    pub attestors: Vec<Arc<dyn WorkloadAttestor>>,
    pub server: ServerClient,
    pub limits: Arc<CallerLimits>,
    pub(super) jwt_cache: Mutex<JwtSvidCache>,
    /// Encoded stream responses, shared by the streams that send them.
    pub(crate) shared: Arc<SharedResponses>,
}

impl WorkloadApi {
    pub(crate) fn new(
        cache: Cache,
        attestors: Vec<Arc<dyn WorkloadAttestor>>,
        server: ServerClient,
        limits: Arc<CallerLimits>,
    ) -> Self {
        let cfg = limits.config();
        let jwt_cache = JwtSvidCache::new(cfg.jwt_cache_capacity, cfg.jwt_cache_per_identity);
        WorkloadApi {
            cache,
            attestors,
            server,
            limits,
            jwt_cache: Mutex::new(jwt_cache),
            shared: Arc::new(SharedResponses::new()),
        }
    }

    /// Checks the security header and attests the caller.
    pub(crate) async fn selectors<T>(&self, req: &Request<T>) -> Result<Vec<Selector>, Status> {
        let header = req
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok());
        if header != Some("true") {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        attest_request(&self.attestors, req).await
    }
}

/// The selectors of the caller of `req` (identified when it connected), from
/// the workload attestors. The Workload API and Envoy SDS both identify their
/// callers through this one function.
pub(crate) async fn attest_request<T>(
    attestors: &[Arc<dyn WorkloadAttestor>],
    req: &Request<T>,
) -> Result<Vec<Selector>, Status> {
    let caller = req
        .extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Status::internal("caller not identified"))?;
    let attestors = attestors.to_vec();
    let pid = caller.pid;
    tokio::task::spawn_blocking(move || attest_caller(&attestors, &caller))
        .await
        .map_err(|e| Status::internal(format!("attestor task failed: {e}")))?
        .map_err(|e| {
            if e.refuses_caller() {
                // Exited, exec'd or changed credentials since connect: what it is
                // now is not what connected.
                warn!(pid, reason = %e, "workload caller refused");
                Status::permission_denied(format!("caller refused: {e}"))
            } else {
                warn!(pid, error = %e, "workload attestation failed");
                Status::unavailable(format!("workload attestation failed: {e}"))
            }
        })
}

pub(crate) fn no_identity() -> Status {
    Status::permission_denied("no identity issued")
}

type Stream_<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The three streams are answered by [`WorkloadApiService`] with pre-encoded
/// shared messages before tonic's generated service sees them; reaching one
/// of these methods means the generated service was mounted alone.
///
/// [`WorkloadApiService`]: crate::workload::encoded_streams::WorkloadApiService
fn not_mounted<T>() -> Result<T, Status> {
    Err(Status::internal(
        "the Workload API streams are served by WorkloadApiService, not the generated service",
    ))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream_<pb::X509svidResponse>;
    type FetchX509BundlesStream = Stream_<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        not_mounted()
    }

    async fn fetch_x509_bundles(
        &self,
        _req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        not_mounted()
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let selectors = self.selectors(&req).await?;
        let uid = caller_of(&req)?.uid;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        let snap = self.cache.snapshot();
        let entries: Vec<CachedEntry> = snap
            .matching_entries(&selectors)
            .into_iter()
            .filter(|e| r.spiffe_id.is_empty() || e.spiffe_id == r.spiffe_id)
            .cloned()
            .collect();
        if entries.is_empty() {
            return Err(no_identity());
        }
        let mut svids = Vec::with_capacity(entries.len());
        for e in entries {
            let token = self.jwt_for(uid, &e, &r.audience).await?;
            svids.push(pb::Jwtsvid {
                spiffe_id: e.spiffe_id.clone(),
                svid: token,
                hint: e.hint.clone(),
            });
        }
        Ok(Response::new(pb::JwtsvidResponse { svids }))
    }

    async fn fetch_jwt_bundles(
        &self,
        _req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        not_mounted()
    }

    async fn validate_jwtsvid(
        &self,
        req: Request<pb::ValidateJwtsvidRequest>,
    ) -> Result<Response<pb::ValidateJwtsvidResponse>, Status> {
        let selectors = self.selectors(&req).await?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        let snap = self.cache.snapshot();
        // A federated domain's tokens are trusted only by callers whose
        // entries federate with it, as its bundle goes only to them.
        let federated = snap.federated_bundles_for(snap.matching_entries(&selectors));
        crate::jwt_validate::validate(&snap, &federated, &r.svid, &r.audience).map(Response::new)
    }
}

impl WorkloadApi {
    /// Bundles go only to a caller that has an identity here (as SPIRE does):
    /// its selectors, refused when they match no entry.
    pub(crate) async fn require_identity<T>(
        &self,
        req: &Request<T>,
    ) -> Result<Vec<Selector>, Status> {
        let selectors = self.selectors(req).await?;
        if self
            .cache
            .snapshot()
            .matching_entries(&selectors)
            .is_empty()
        {
            return Err(no_identity());
        }
        Ok(selectors)
    }
}

/// The caller of a request (put there by [`incoming`]).
fn caller_of<T>(req: &Request<T>) -> Result<Arc<Caller>, Status> {
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Status::internal("caller not identified"))
}
