//! The Workload API's three streams (FetchX509SVID, FetchX509Bundles,
//! FetchJWTBundles) served as pre-encoded gRPC messages shared between
//! streams ([`super::shared_response`]); the unary calls go to the
//! generated tonic service.
//!
//! tonic's generated server encodes each message of each stream into that
//! stream's own buffer, which keeps the capacity of the largest message for
//! the life of the stream. Answering these three paths at the HTTP level
//! lets every held stream point at the same bytes instead. The gRPC wire
//! format is the same: response headers (`content-type: application/grpc`),
//! one DATA frame per message, trailers with `grpc-status` when the stream
//! ends; a refusal before the first message is a trailers-only response, as
//! tonic makes it.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::StreamBody;
use ironroot_api::workload::spiffe_workload_api_server::SpiffeWorkloadApiServer;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::metadata::MetadataMap;
use tonic::server::NamedService;
use tonic::Status;
use tower::Service;

use super::shared_response::{EncodedMessage, SharedResponses};
use crate::cache::{Cache, Snapshot};
use crate::workload_api::WorkloadApi;
use ironroot_runtime::unix_now;

const FETCH_X509_SVID: &str = "/SpiffeWorkloadAPI/FetchX509SVID";
const FETCH_X509_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchX509Bundles";
const FETCH_JWT_BUNDLES: &str = "/SpiffeWorkloadAPI/FetchJWTBundles";

/// A stream waits this long at most between looks at the cache when no SVID
/// expires sooner.
const IDLE_RECHECK: Duration = Duration::from_secs(3600);

/// The Workload API as one tonic service (add it with `add_service`).
#[derive(Clone)]
pub(crate) struct WorkloadApiService {
    api: Arc<WorkloadApi>,
    generated: SpiffeWorkloadApiServer<WorkloadApi>,
}

impl WorkloadApiService {
    pub(crate) fn new(api: Arc<WorkloadApi>) -> Self {
        WorkloadApiService {
            generated: SpiffeWorkloadApiServer::from_arc(api.clone()),
            api,
        }
    }
}

impl NamedService for WorkloadApiService {
    const NAME: &'static str = <SpiffeWorkloadApiServer<WorkloadApi> as NamedService>::NAME;
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

impl Service<http::Request<Body>> for WorkloadApiService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let rpc = crate::metrics::workload_rpc(req.uri().path());
        let answer = self.dispatch(req);
        Box::pin(async move {
            let response = answer.await?;
            crate::metrics::metrics().workload_call(rpc, &response);
            Ok(response)
        })
    }
}

impl WorkloadApiService {
    /// The three streams here, the unary calls to the generated service.
    fn dispatch(&mut self, req: http::Request<Body>) -> BoxFuture {
        let kind = match req.uri().path() {
            FETCH_X509_SVID => StreamKind::X509Svid,
            FETCH_X509_BUNDLES => StreamKind::X509Bundles,
            FETCH_JWT_BUNDLES => StreamKind::JwtBundles,
            _ => return Box::pin(self.generated.call(req)),
        };
        let api = self.api.clone();
        Box::pin(async move { Ok(open_stream(api, kind, req).await) })
    }
}

#[derive(Debug, Clone, Copy)]
enum StreamKind {
    X509Svid,
    X509Bundles,
    JwtBundles,
}

/// Builds (or finds) a stream's response from a snapshot.
type MakeResponse = Box<dyn Fn(&Arc<Snapshot>) -> Result<Arc<EncodedMessage>, Status> + Send>;

/// Checks the caller, then streams. The request message (empty for these
/// three calls) is not read: the body is dropped, which leaves the response
/// stream open.
async fn open_stream(
    api: Arc<WorkloadApi>,
    kind: StreamKind,
    req: http::Request<Body>,
) -> http::Response<Body> {
    let (parts, _body) = req.into_parts();
    let treq = tonic::Request::from_parts(
        MetadataMap::from_headers(parts.headers),
        parts.extensions,
        (),
    );
    let make: MakeResponse = match kind {
        StreamKind::X509Svid => match api.selectors(&treq).await {
            Ok(selectors) => {
                let shared = api.shared.clone();
                Box::new(move |s| x509_svids(&shared, s, &selectors))
            }
            Err(status) => return status.into_http(),
        },
        StreamKind::X509Bundles | StreamKind::JwtBundles => {
            let selectors = match api.require_identity(&treq).await {
                Ok(selectors) => selectors,
                Err(status) => return status.into_http(),
            };
            let shared = api.shared.clone();
            Box::new(move |s| bundles(&shared, s, kind, &selectors))
        }
    };
    // The first message is ready before the response starts, so a caller
    // with no identity gets a trailers-only error, as from tonic.
    let first = match make(&api.cache.snapshot()) {
        Ok(m) => m,
        Err(status) => return status.into_http(),
    };
    let body = watch(&api.cache, first, make);
    let mut resp = http::Response::new(body);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    resp
}

fn too_large(e: super::shared_response::TooLarge) -> Status {
    Status::internal(e.to_string())
}

fn x509_svids(
    shared: &SharedResponses,
    snap: &Arc<Snapshot>,
    selectors: &[ironroot_api::selector::Selector],
) -> Result<Arc<EncodedMessage>, Status> {
    let matching = snap.matching(selectors, unix_now());
    if matching.is_empty() {
        return Err(crate::workload_api::no_identity());
    }
    let key = super::shared_response::ResponseKey::X509Svids(
        matching.iter().map(|(e, _)| e.id.clone()).collect(),
    );
    shared
        .get_or_build(snap, key, || {
            crate::workload_api::x509_response_for(snap, &matching)
        })
        .map_err(too_large)
}

/// The bundles a caller with `selectors` is sent from `snap`: ours and the
/// federated ones its entries (in this snapshot) name, so an entry updated
/// to drop a trust domain withdraws that bundle from the held stream.
fn bundles(
    shared: &SharedResponses,
    snap: &Arc<Snapshot>,
    kind: StreamKind,
    selectors: &[ironroot_api::selector::Selector],
) -> Result<Arc<EncodedMessage>, Status> {
    use super::shared_response::ResponseKey;
    let federated = snap.federated_bundles_for(snap.matching_entries(selectors));
    let names: Vec<String> = federated.keys().map(|td| (*td).to_owned()).collect();
    match kind {
        StreamKind::JwtBundles => shared.get_or_build(snap, ResponseKey::JwtBundles(names), || {
            crate::workload_api::jwt_bundles(snap, &federated)
        }),
        _ => shared.get_or_build(snap, ResponseKey::X509Bundles(names), || {
            crate::workload_api::x509_bundles(snap, &federated)
        }),
    }
    .map_err(too_large)
}

/// The trailers that end a stream with `status`.
fn trailers(status: &Status) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    if status.add_header(&mut h).is_err() {
        // A message that cannot be a header value: the code alone.
        h.clear();
        let _ = Status::new(status.code(), "").add_header(&mut h);
    }
    h
}

type Frames = ReceiverStream<Result<Frame<Bytes>, Infallible>>;

/// Sends `first`, then the response again on every cache change (or SVID
/// expiry) in which it differs, until the caller goes away or `make` fails
/// (then the stream ends with that status).
fn watch<F>(cache: &Cache, first: Arc<EncodedMessage>, make: F) -> Body
where
    F: Fn(&Arc<Snapshot>) -> Result<Arc<EncodedMessage>, Status> + Send + 'static,
{
    let mut rx = cache.subscribe();
    // Two frames in flight at most: each is a reference, not a copy.
    let (tx, out) = tokio::sync::mpsc::channel(2);
    tokio::spawn(async move {
        if tx.send(Ok(Frame::data(first.frame()))).await.is_err() {
            return;
        }
        let mut last = first;
        loop {
            let snap = rx.borrow_and_update().clone();
            match make(&snap) {
                Ok(m) => {
                    if !Arc::ptr_eq(&m, &last) && *m != *last {
                        if tx.send(Ok(Frame::data(m.frame()))).await.is_err() {
                            return;
                        }
                        last = m;
                    }
                }
                Err(status) => {
                    let _ = tx.send(Ok(Frame::trailers(trailers(&status)))).await;
                    return;
                }
            }
            // Also wake when a cached SVID expires (say during a server
            // outage), so the stream stops offering it.
            let now = unix_now();
            let next_expiry = snap
                .svids
                .values()
                .map(|s| s.expires_at)
                .filter(|e| *e > now)
                .min()
                .map(|e| Duration::from_secs((e - now) as u64))
                .unwrap_or(IDLE_RECHECK);
            drop(snap);
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(next_expiry) => {}
                _ = tx.closed() => return,
            }
        }
    });
    Body::new(StreamBody::new(Frames::new(out)))
}

#[cfg(test)]
mod tests;
