//! The SPIFFE Workload API on a unix socket. Each connection's caller is
//! recorded from the socket (SO_PEERCRED + pidfd, its executable and
//! credentials) when it connects, within its uid's connection limits
//! ([`crate::workload::limits`]); each call checks the process is still what
//! it was then (refused with PermissionDenied if it exited, exec'd or changed
//! credentials), runs the workload attestors, and serves the SVIDs of every
//! entry whose selectors are all the caller's. The three streams are served
//! pre-encoded by [`crate::workload::encoded_streams`].

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::Instant;

use ironroot_api::agent::{self as agent_pb, agent_client::AgentClient};
use ironroot_api::bundle::TrustBundle;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_api::workload::{self as pb, spiffe_workload_api_server::SpiffeWorkloadApi};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::RwLock;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::cache::{Cache, CachedSvid, Snapshot};
use ironroot_runtime::unix_now;
use crate::workload::attestor::{attest_caller, WorkloadAttestor};
use crate::workload::caller::Caller;
use crate::workload::h2_authority::AuthorityShim;
use crate::workload::jwt_cache::JwtSvidCache;
use crate::workload::limits::{CallerLimits, ConnectionPermit};
use crate::workload::refuse::Refuser;
use crate::workload::shared_response::SharedResponses;

/// A workload's connection, with the caller identified at accept time. The
/// [`AuthorityShim`] lets the server take any `:authority` a client sends over
/// the unix socket and logs its protocol-level refusals.
pub struct CallerConn {
    stream: AuthorityShim<UnixStream>,
    caller: Arc<Caller>,
    /// Counts the connection against its uid's limit until it closes.
    _permit: ConnectionPermit,
}

impl Connected for CallerConn {
    type ConnectInfo = Arc<Caller>;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.caller.clone()
    }
}

impl AsyncRead for CallerConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CallerConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The uid of the peer (SO_PEERCRED), read before anything else costs work.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use nix::sys::socket::{getsockopt, sockopt};
    getsockopt(&stream.as_fd(), sockopt::PeerCredentials)
        .ok()
        .map(|c| c.uid())
}

/// Accepts workload connections and identifies each caller; a connection
/// whose caller cannot be identified is dropped, one over its uid's limits
/// is refused (`ResourceExhausted`, see [`Refuser`]) before it is attested.
pub fn incoming(
    listener: UnixListener,
    limits: Arc<CallerLimits>,
) -> impl Stream<Item = std::io::Result<CallerConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let refuser = Refuser::default();
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    warn!(error = %e, "workload API accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let Some(uid) = peer_uid(&stream) else {
                warn!("workload caller has no peer credentials; connection dropped");
                continue;
            };
            let permit = match limits.admit_connection(uid, Instant::now()) {
                Ok(p) => p,
                Err(e) => {
                    // Logged (throttled) by admit_connection.
                    refuser.refuse(stream, &e);
                    continue;
                }
            };
            match Caller::from_socket(stream.as_fd()) {
                Ok(caller) => {
                    let conn = CallerConn {
                        stream: AuthorityShim::new(stream, caller.pid),
                        caller: Arc::new(caller),
                        _permit: permit,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "workload caller could not be identified; connection dropped")
                }
            }
        }
    });
    ReceiverStream::new(rx)
}

/// The server connection the JWT-SVIDs are minted through (set by the runtime).
pub type ServerClient = Arc<RwLock<Option<AgentClient<Channel>>>>;

pub struct WorkloadApi {
    pub cache: Cache,
    pub attestors: Vec<Arc<dyn WorkloadAttestor>>,
    pub server: ServerClient,
    pub limits: Arc<CallerLimits>,
    jwt_cache: Mutex<JwtSvidCache>,
    /// Encoded stream responses, shared by the streams that send them.
    pub(crate) shared: Arc<SharedResponses>,
}

impl WorkloadApi {
    pub fn new(
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

fn td_id(td: &str) -> String {
    format!("spiffe://{td}")
}

/// Federated X.509 bundles, keyed by trust domain SPIFFE ID (DER certificates concatenated).
fn federated_x509(s: &Snapshot) -> HashMap<String, Vec<u8>> {
    s.federated_jwks
        .iter()
        .filter_map(|(td, jwks)| {
            let t = TrustDomain::parse(td).ok()?;
            let b = TrustBundle::from_jwks_json(t, jwks).ok()?;
            Some((td_id(td), b.x509_authorities.concat()))
        })
        .collect()
}

/// The X.509-SVID response with the SVIDs of `matching` (entries of `s`
/// that matched a caller).
pub(crate) fn x509_response_for(
    s: &Snapshot,
    matching: &[(&agent_pb::Entry, &CachedSvid)],
) -> pb::X509svidResponse {
    let bundle = s.roots_concat();
    pb::X509svidResponse {
        svids: matching
            .iter()
            .map(|(e, svid)| pb::X509svid {
                spiffe_id: svid.spiffe_id.clone(),
                x509_svid: svid.chain.concat(),
                x509_svid_key: svid.key_pkcs8.clone(),
                bundle: bundle.clone(),
                hint: e.hint.clone(),
            })
            .collect(),
        crl: vec![],
        federated_bundles: federated_x509(s),
    }
}

pub(crate) fn x509_bundles(s: &Snapshot) -> pb::X509BundlesResponse {
    let mut bundles = federated_x509(s);
    bundles.insert(td_id(&s.trust_domain), s.roots_concat());
    pb::X509BundlesResponse {
        crl: vec![],
        bundles,
    }
}

/// A JWKS with only the JWT-SVID keys (every key with a `kid`): clients of
/// FetchJWTBundles reject X.509 keys, which carry none.
fn jwt_only(td: &str, jwks: &str) -> Option<Vec<u8>> {
    let t = TrustDomain::parse(td).ok()?;
    let mut b = TrustBundle::from_jwks_json(t, jwks).ok()?;
    b.x509_authorities.clear();
    b.to_jwks_json().ok().map(String::into_bytes)
}

pub(crate) fn jwt_bundles(s: &Snapshot) -> pb::JwtBundlesResponse {
    let mut bundles: HashMap<String, Vec<u8>> = s
        .federated_jwks
        .iter()
        .filter_map(|(td, j)| Some((td_id(td), jwt_only(td, j)?)))
        .collect();
    if let Some(own) = jwt_only(&s.trust_domain, &s.jwks_json) {
        bundles.insert(td_id(&s.trust_domain), own);
    }
    pb::JwtBundlesResponse { bundles }
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
        let entries: Vec<agent_pb::Entry> = snap
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
        self.selectors(&req).await?;
        let r = req.into_inner();
        if r.audience.is_empty() {
            return Err(Status::invalid_argument("audience must be specified"));
        }
        if r.svid.is_empty() {
            return Err(Status::invalid_argument("svid must be specified"));
        }
        crate::jwt_validate::validate(&self.cache.snapshot(), &r.svid, &r.audience)
            .map(Response::new)
    }
}

impl WorkloadApi {
    /// Bundles go only to a caller that has an identity here (as SPIRE does).
    pub(crate) async fn require_identity<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let selectors = self.selectors(req).await?;
        if self
            .cache
            .snapshot()
            .matching_entries(&selectors)
            .is_empty()
        {
            return Err(no_identity());
        }
        Ok(())
    }

    /// A JWT-SVID for `entry` and `audience`, from the cache while it has more
    /// than half its life left, else minted by the server within `uid`'s
    /// mint rate.
    async fn jwt_for(
        &self,
        uid: u32,
        entry: &agent_pb::Entry,
        audience: &[String],
    ) -> Result<String, Status> {
        let now = unix_now();
        if let Ok(mut c) = self.jwt_cache.lock() {
            c.sweep_if_due(now);
            if let Some(t) = c.get(&entry.id, audience, now) {
                return Ok(t);
            }
        }
        self.limits
            .admit_jwt_mint(uid, Instant::now())
            .map_err(|e| e.to_status())?;
        let mut client =
            self.server.read().await.clone().ok_or_else(|| {
                Status::unavailable("the agent is not connected to its server yet")
            })?;
        let resp = client
            .new_jwt_svid(agent_pb::NewJwtSvidRequest {
                entry_id: entry.id.clone(),
                audience: audience.to_vec(),
            })
            .await
            .map_err(|s| Status::unavailable(format!("JWT-SVID not available: {}", s.message())))?
            .into_inner();
        if let Ok(mut c) = self.jwt_cache.lock() {
            c.insert(
                &entry.id,
                audience,
                resp.token.clone(),
                now,
                resp.expires_at,
                unix_now(),
            );
            debug!(
                entry = %entry.id,
                cached_for_identity = c.len_of(&entry.id),
                cached_total = c.len(),
                "JWT-SVID minted"
            );
        }
        Ok(resp.token)
    }
}

/// The caller of a request (put there by [`incoming`]).
fn caller_of<T>(req: &Request<T>) -> Result<Arc<Caller>, Status> {
    req.extensions()
        .get::<Arc<Caller>>()
        .cloned()
        .ok_or_else(|| Status::internal("caller not identified"))
}
