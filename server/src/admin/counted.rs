//! Every admin call counted by method, transport and gRPC code
//! (`ironroot_server_admin_calls_total`), whichever transport brought it (the socket or
//! mTLS) and whether it was refused before the admin service saw it. Wraps the service the
//! transport serves, so no method and no refusal is left out.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tower::Service;

/// The admin service's methods (api/proto/ironroot/admin/v1/admin.proto), as metric labels:
/// a label is one of these or `unknown`, never a path a caller made up.
pub(crate) const METHODS: [&str; 18] = [
    "CreateEntry",
    "UpdateEntry",
    "DeleteEntry",
    "GetEntry",
    "ListEntries",
    "BatchCreateEntry",
    "BatchDeleteEntry",
    "GetBundle",
    "MintX509Svid",
    "MintJwtSvid",
    "Health",
    "CreateJoinToken",
    "ListAgents",
    "BanAgent",
    "EvictAgent",
    "SetFederatedBundle",
    "ListFederatedBundles",
    "DeleteFederatedBundle",
];

/// The method a request path (`/<package>.Admin/<Method>`) names, as a label.
pub(crate) fn method_label(path: &str) -> &'static str {
    let name = path.rsplit('/').next().unwrap_or_default();
    METHODS
        .iter()
        .find(|m| **m == name)
        .copied()
        .unwrap_or("unknown")
}

/// The gRPC code of a response, as a label: a refusal carries `grpc-status` in its headers
/// (a trailers-only answer); an answer with a body carries it in its trailers, and a unary
/// admin answer with a body succeeded.
fn code_label<B>(response: &http::Response<B>) -> &'static str {
    match response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(code) => ironroot_runtime::metrics::grpc_code_label(code),
        None => "ok",
    }
}

/// Counts the calls `inner` answers, under `transport` (`socket`, `tls`).
#[derive(Clone)]
pub(crate) struct Counted<S> {
    inner: S,
    transport: &'static str,
}

impl<S> Counted<S> {
    pub(crate) fn new(inner: S, transport: &'static str) -> Self {
        Counted { inner, transport }
    }
}

impl<S: NamedService> NamedService for Counted<S> {
    const NAME: &'static str = S::NAME;
}

type ResponseFuture<B> =
    Pin<Box<dyn Future<Output = Result<http::Response<B>, Infallible>> + Send + 'static>>;

impl<S, B> Service<http::Request<Body>> for Counted<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = method_label(req.uri().path());
        let transport = self.transport;
        // The clone is not ready; the one poll_ready readied goes into the future.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let response = inner.call(req).await?;
            crate::metrics::metrics().admin_call(method, transport, code_label(&response));
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_method_labels_are_the_protos_rpcs() {
        let proto = include_str!("../../../api/proto/ironroot/admin/v1/admin.proto");
        let mut rpcs: Vec<&str> = proto
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(str::trim)
            .collect();
        let mut labels = METHODS.to_vec();
        rpcs.sort_unstable();
        labels.sort_unstable();
        assert_eq!(labels, rpcs, "METHODS must list admin.proto's rpcs");
    }

    #[test]
    fn a_path_is_labelled_by_a_known_method_or_unknown() {
        assert_eq!(
            method_label("/ironroot.admin.v1.Admin/ListEntries"),
            "ListEntries"
        );
        assert_eq!(method_label("/ironroot.admin.v1.Admin/Made-Up"), "unknown");
        assert_eq!(method_label(""), "unknown");
    }
}
