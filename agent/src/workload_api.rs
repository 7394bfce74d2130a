//! The SPIFFE Workload API on a unix socket. Each connection's caller is
//! recorded from the socket (SO_PEERCRED + pidfd, its executable and
//! credentials) when it connects; each call checks the process is still what
//! it was then (refused with PermissionDenied if it exited, exec'd or changed
//! credentials), runs the workload attestors, and serves the SVIDs of every
//! entry whose selectors are all the caller's.

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};

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

use crate::cache::{Cache, Snapshot};
use crate::sync::unix_now;
use crate::workload::attestor::{attest_caller, WorkloadAttestor};
use crate::workload::caller::Caller;

/// A workload's connection, with the caller identified at accept time.
pub struct CallerConn {
    stream: UnixStream,
    caller: Arc<Caller>,
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

/// Accepts workload connections and identifies each caller; a connection
/// whose caller cannot be identified is dropped.
pub fn incoming(listener: UnixListener) -> impl Stream<Item = std::io::Result<CallerConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
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
            match Caller::from_socket(stream.as_fd()) {
                Ok(caller) => {
                    let conn = CallerConn {
                        stream,
                        caller: Arc::new(caller),
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

/// (entry id, sorted audiences).
type JwtKey = (String, Vec<String>);
/// (token, issued_at, expires_at).
type CachedJwt = (String, i64, i64);

/// The server connection the JWT-SVIDs are minted through (set by the runtime).
pub type ServerClient = Arc<RwLock<Option<AgentClient<Channel>>>>;

pub struct WorkloadApi {
    pub cache: Cache,
    pub attestors: Vec<Arc<dyn WorkloadAttestor>>,
    pub server: ServerClient,
    jwt_cache: Mutex<HashMap<JwtKey, CachedJwt>>,
}

impl WorkloadApi {
    pub fn new(
        cache: Cache,
        attestors: Vec<Arc<dyn WorkloadAttestor>>,
        server: ServerClient,
    ) -> Self {
        WorkloadApi {
            cache,
            attestors,
            server,
            jwt_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Checks the security header and attests the caller.
    async fn selectors<T>(&self, req: &Request<T>) -> Result<Vec<Selector>, Status> {
        let header = req
            .metadata()
            .get("workload.spiffe.io")
            .and_then(|v| v.to_str().ok());
        if header != Some("true") {
            return Err(Status::invalid_argument(
                "security header missing from request",
            ));
        }
        let caller = req
            .extensions()
            .get::<Arc<Caller>>()
            .cloned()
            .ok_or_else(|| Status::internal("caller not identified"))?;
        let attestors = self.attestors.clone();
        let pid = caller.pid;
        tokio::task::spawn_blocking(move || attest_caller(&attestors, &caller))
            .await
            .map_err(|e| Status::internal(format!("attestor task failed: {e}")))?
            .map_err(|e| {
                if e.refuses_caller() {
                    // Exited, exec'd or changed credentials since connect:
                    // what it is now is not what connected.
                    warn!(pid, reason = %e, "workload caller refused");
                    Status::permission_denied(format!("caller refused: {e}"))
                } else {
                    warn!(pid, error = %e, "workload attestation failed");
                    Status::unavailable(format!("workload attestation failed: {e}"))
                }
            })
    }
}

fn no_identity() -> Status {
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

fn x509_response(s: &Snapshot, selectors: &[Selector]) -> Option<pb::X509svidResponse> {
    let matching = s.matching(selectors, unix_now());
    if matching.is_empty() {
        return None;
    }
    let bundle = s.roots_concat();
    Some(pb::X509svidResponse {
        svids: matching
            .into_iter()
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
    })
}

fn x509_bundles(s: &Snapshot) -> pb::X509BundlesResponse {
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

fn jwt_bundles(s: &Snapshot) -> pb::JwtBundlesResponse {
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

/// Streams `make(snapshot)` now and on every cache change in which it differs.
fn watch_stream<T, F>(cache: &Cache, make: F) -> Stream_<T>
where
    T: PartialEq + Clone + Send + 'static,
    F: Fn(&Snapshot) -> Result<T, Status> + Send + 'static,
{
    let mut rx = cache.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut last: Option<T> = None;
        loop {
            let snap = rx.borrow_and_update().clone();
            match make(&snap) {
                Ok(v) => {
                    if last.as_ref() != Some(&v) {
                        if tx.send(Ok(v.clone())).await.is_err() {
                            return;
                        }
                        last = Some(v);
                    }
                }
                Err(status) => {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
            }
            // Also wake when a cached SVID expires (say during a server outage),
            // so the stream stops offering it.
            let now = unix_now();
            let next_expiry = snap
                .svids
                .values()
                .map(|s| s.expires_at)
                .filter(|e| *e > now)
                .min()
                .map(|e| std::time::Duration::from_secs((e - now) as u64))
                .unwrap_or(std::time::Duration::from_secs(3600));
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(next_expiry) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for WorkloadApi {
    type FetchX509SVIDStream = Stream_<pb::X509svidResponse>;
    type FetchX509BundlesStream = Stream_<pb::X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream_<pb::JwtBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        req: Request<pb::X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        let selectors = self.selectors(&req).await?;
        if x509_response(&self.cache.snapshot(), &selectors).is_none() {
            return Err(no_identity());
        }
        Ok(Response::new(watch_stream(&self.cache, move |s| {
            x509_response(s, &selectors).ok_or_else(no_identity)
        })))
    }

    async fn fetch_x509_bundles(
        &self,
        req: Request<pb::X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.require_identity(&req).await?;
        Ok(Response::new(watch_stream(&self.cache, |s| {
            Ok(x509_bundles(s))
        })))
    }

    async fn fetch_jwtsvid(
        &self,
        req: Request<pb::JwtsvidRequest>,
    ) -> Result<Response<pb::JwtsvidResponse>, Status> {
        let selectors = self.selectors(&req).await?;
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
            let token = self.jwt_for(&e, &r.audience).await?;
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
        req: Request<pb::JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.require_identity(&req).await?;
        Ok(Response::new(watch_stream(&self.cache, |s| {
            Ok(jwt_bundles(s))
        })))
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
    async fn require_identity<T>(&self, req: &Request<T>) -> Result<(), Status> {
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
    /// than half its life left, else minted by the server.
    async fn jwt_for(
        &self,
        entry: &agent_pb::Entry,
        audience: &[String],
    ) -> Result<String, Status> {
        let mut aud = audience.to_vec();
        aud.sort();
        let key = (entry.id.clone(), aud);
        let now = unix_now();
        if let Ok(c) = self.jwt_cache.lock() {
            if let Some((t, iat, exp)) = c.get(&key) {
                if now < iat + (exp - iat) / 2 {
                    return Ok(t.clone());
                }
            }
        }
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
        debug!(entry = %entry.id, "JWT-SVID minted");
        if let Ok(mut c) = self.jwt_cache.lock() {
            c.insert(key, (resp.token.clone(), now, resp.expires_at));
        }
        Ok(resp.token)
    }
}
