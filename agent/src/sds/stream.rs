//! StreamSecrets: the xDS state-of-the-world exchange on one stream, with
//! SPIRE's rules.
//!
//! - `version_info` counts changes of what the caller may be served: "1" for
//!   the first, and one more each time its SVIDs or the bundles change (a
//!   rotation). Every response carries a fresh nonce.
//! - A request answers the last response when its `response_nonce` is that
//!   response's nonce; one with another nonce is stale and ignored.
//! - An answer with the current version is an ACK; any other version is a
//!   NACK: Envoy could not apply the secrets. The error detail is logged, the
//!   stream stays open, and Envoy gets the next change as usual.
//! - A response goes out when the requested names change (or on the first
//!   request), and on every change of the caller's secrets once a request
//!   named what it wants.
//! - A request that names a resource the caller may not have ends the stream
//!   with InvalidArgument (nothing is silently left out).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use ironroot_api::selector::Selector;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Status, Streaming};
use tracing::{debug, error, warn};

use super::config::SdsConfig;
use super::resources::CallerSecrets;
use super::response;
use crate::cache::{Cache, Snapshot};
use ironroot_runtime::unix_now;

/// The bookkeeping of one stream.
#[derive(Debug, Default)]
pub(super) struct StreamState {
    /// Changes seen of the caller's secrets; 0 until the first view.
    version: u64,
    /// What the caller may be served (digest), once the agent has synced.
    view: Option<[u8; 32]>,
    /// Responses sent: the nonce of the last one is its count.
    sent: u64,
    /// The last request accepted (its names are what the stream serves; its
    /// node, carried over from earlier requests when absent).
    request: Option<DiscoveryRequest>,
}

impl StreamState {
    pub(super) fn version_info(&self) -> String {
        self.version.to_string()
    }

    fn last_nonce(&self) -> Option<String> {
        (self.sent > 0).then(|| self.sent.to_string())
    }

    /// The last accepted request.
    pub(super) fn request(&self) -> Option<&DiscoveryRequest> {
        self.request.as_ref()
    }

    /// The caller's secrets now digest to `digest` (`None`: nothing to serve
    /// yet). Returns whether a response must go out.
    pub(super) fn on_secrets(&mut self, digest: Option<[u8; 32]>) -> bool {
        if digest.is_none() || digest == self.view {
            return false;
        }
        self.view = digest;
        self.version += 1;
        self.request.is_some()
    }

    /// A request from Envoy. Returns whether a response must go out.
    pub(super) fn on_request(&mut self, mut req: DiscoveryRequest, pid: i32) -> bool {
        debug!(
            pid,
            resource_names = ?req.resource_names,
            version_info = %req.version_info,
            nonce = %req.response_nonce,
            "StreamSecrets request"
        );
        if let Some(detail) = &req.error_detail {
            error!(
                pid,
                resource_names = ?req.resource_names,
                error = %detail.message,
                "Envoy reported errors applying secrets (NACK); the stream stays open"
            );
        }
        if let Some(expected) = self.last_nonce() {
            if req.response_nonce != expected {
                warn!(
                    pid,
                    nonce = %req.response_nonce,
                    expected = %expected,
                    "StreamSecrets request with a stale nonce ignored"
                );
                return false;
            }
            if req.version_info != self.version_info() {
                warn!(
                    pid,
                    version_info = %req.version_info,
                    expected = %self.version_info(),
                    "Envoy rejected version {} and kept its previous secrets",
                    self.version_info()
                );
            }
        }
        if req.node.is_none() {
            req.node = self.request.as_ref().and_then(|r| r.node.clone());
        }
        let names_changed = match &self.request {
            None => true,
            Some(last) => names_differ(&last.resource_names, &req.resource_names),
        };
        self.request = Some(req);
        names_changed && self.view.is_some()
    }

    /// Stamps `resp` with the current version and the next nonce.
    pub(super) fn stamp(&mut self, mut resp: DiscoveryResponse) -> DiscoveryResponse {
        self.sent += 1;
        resp.version_info = self.version_info();
        resp.nonce = self.sent.to_string();
        resp
    }
}

/// The same set of names (order and repeats aside).
fn names_differ(a: &[String], b: &[String]) -> bool {
    a.iter().any(|n| !b.contains(n)) || b.iter().any(|n| !a.contains(n))
}

pub(super) type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;

/// The caller's secrets in `snap`, as a digest (`None` before the first sync).
fn view(snap: &Snapshot, selectors: &[Selector]) -> Option<[u8; 32]> {
    CallerSecrets::new(snap, selectors, unix_now())
        .ok()
        .map(|s| s.digest())
}

/// How long until the next cached SVID expires (the view changes then, as an
/// expired SVID is no longer served).
fn until_next_expiry(snap: &Snapshot) -> Duration {
    let now = unix_now();
    snap.svids
        .values()
        .map(|s| s.expires_at)
        .filter(|e| *e > now)
        .min()
        .map(|e| Duration::from_secs((e - now) as u64))
        .unwrap_or(Duration::from_secs(3600))
}

/// Serves one StreamSecrets stream for a caller attested as `selectors`.
pub(super) fn serve(
    mut inbound: Streaming<DiscoveryRequest>,
    cache: &Cache,
    selectors: Vec<Selector>,
    cfg: Arc<SdsConfig>,
    pid: i32,
) -> ResponseStream {
    let mut updates = cache.subscribe();
    let (tx, out) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        let mut st = StreamState::default();
        let mut snap = updates.borrow_and_update().clone();
        st.on_secrets(view(&snap, &selectors));
        loop {
            let send = tokio::select! {
                m = inbound.message() => match m {
                    Ok(Some(req)) => st.on_request(req, pid),
                    // Envoy closed its side: the stream is over (as in SPIRE).
                    Ok(None) => return,
                    Err(status) => {
                        debug!(pid, %status, "StreamSecrets stream ended by the client");
                        return;
                    }
                },
                changed = updates.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    snap = updates.borrow_and_update().clone();
                    st.on_secrets(view(&snap, &selectors))
                }
                _ = tokio::time::sleep(until_next_expiry(&snap)) => {
                    st.on_secrets(view(&snap, &selectors))
                }
                _ = tx.closed() => return,
            };
            if !send {
                continue;
            }
            let Some(req) = st.request() else { continue };
            let built =
                response::build(&snap, &selectors, unix_now(), req, req.node.as_ref(), &cfg);
            match built {
                Ok(resp) => {
                    let resp = st.stamp(resp);
                    debug!(
                        pid,
                        version_info = %resp.version_info,
                        nonce = %resp.nonce,
                        count = resp.resources.len(),
                        "StreamSecrets response"
                    );
                    if tx.send(Ok(resp)).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(pid, error = %e, "StreamSecrets request refused");
                    let _ = tx.send(Err(e.into())).await;
                    return;
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::core::v3::Node;
    use envoy_types::pb::google::rpc::Status as RpcStatus;

    fn req(names: &[&str], version: &str, nonce: &str) -> DiscoveryRequest {
        DiscoveryRequest {
            resource_names: names.iter().map(|s| s.to_string()).collect(),
            version_info: version.into(),
            response_nonce: nonce.into(),
            ..Default::default()
        }
    }

    /// Sends a response and returns its (version, nonce).
    fn send(st: &mut StreamState) -> (String, String) {
        let r = st.stamp(DiscoveryResponse::default());
        (r.version_info, r.nonce)
    }

    #[test]
    fn first_request_is_answered_once_secrets_exist() {
        let mut st = StreamState::default();
        // Before the first sync: the request waits.
        assert!(!st.on_secrets(None));
        assert!(!st.on_request(req(&["default"], "", ""), 1));
        // Synced: the waiting request is answered with version 1.
        assert!(st.on_secrets(Some([1; 32])));
        assert_eq!(send(&mut st), ("1".into(), "1".into()));
    }

    #[test]
    fn ack_sends_nothing_and_rotation_pushes_a_new_version() {
        let mut st = StreamState::default();
        st.on_secrets(Some([1; 32]));
        assert!(st.on_request(req(&["default"], "", ""), 1));
        let (v, n) = send(&mut st);
        // ACK: same names, nothing to send.
        assert!(!st.on_request(req(&["default"], &v, &n), 1));
        // The same secrets again (another caller's change): nothing.
        assert!(!st.on_secrets(Some([1; 32])));
        // Rotation: version 2.
        assert!(st.on_secrets(Some([2; 32])));
        assert_eq!(send(&mut st), ("2".into(), "2".into()));
    }

    #[test]
    fn nack_keeps_the_stream_and_the_next_change_is_sent() {
        let mut st = StreamState::default();
        st.on_secrets(Some([1; 32]));
        st.on_request(req(&["default"], "", ""), 1);
        let (_, n) = send(&mut st);
        let mut nack = req(&["default"], "", &n);
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "bad key".into(),
            details: vec![],
        });
        assert!(!st.on_request(nack, 1), "a NACK alone sends nothing");
        assert!(
            st.request().unwrap().error_detail.is_some(),
            "but is accepted"
        );
        assert!(st.on_secrets(Some([2; 32])));
        assert_eq!(send(&mut st).0, "2");
    }

    #[test]
    fn stale_nonce_is_ignored_even_with_new_names() {
        let mut st = StreamState::default();
        st.on_secrets(Some([1; 32]));
        st.on_request(req(&["default"], "", ""), 1);
        let (v, _) = send(&mut st);
        assert!(!st.on_request(req(&["ROOTCA"], &v, "not-the-nonce"), 1));
        assert_eq!(st.request().unwrap().resource_names, ["default"]);
    }

    #[test]
    fn new_names_are_answered_at_the_current_version() {
        let mut st = StreamState::default();
        st.on_secrets(Some([1; 32]));
        st.on_request(req(&["default"], "", ""), 1);
        let (v, n) = send(&mut st);
        assert!(st.on_request(req(&["ROOTCA", "default"], &v, &n), 1));
        assert_eq!(send(&mut st), ("1".into(), "2".into()));
        // Same set in another order: no change.
        assert!(!st.on_request(req(&["default", "ROOTCA"], "1", "2"), 1));
    }

    #[test]
    fn the_node_carries_over_requests_without_one() {
        let mut st = StreamState::default();
        st.on_secrets(Some([1; 32]));
        let mut first = req(&["ROOTCA"], "", "");
        first.node = Some(Node {
            id: "envoy-1".into(),
            ..Default::default()
        });
        st.on_request(first, 1);
        let (v, n) = send(&mut st);
        st.on_request(req(&["ROOTCA"], &v, &n), 1);
        assert_eq!(st.request().unwrap().node.as_ref().unwrap().id, "envoy-1");
    }
}
