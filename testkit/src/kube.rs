//! A stand-in for the Kubernetes API server and the kubelet (no cluster runs here): a local
//! HTTPS server (its own test CA, made with openssl by [`crate::certs`]) that answers, in the
//! real formats, what the Kubernetes attestors ask:
//!
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`: judges `spec.token` and
//!   `spec.audiences` as the API server's token authenticator does: an unknown token, or one
//!   whose audiences do not meet the requested ones, is answered `authenticated: false` with
//!   the API server's error text; a known one with its user info and the audiences that
//!   matched ([`TokenReviewFixture`] from cloud-attest's test support);
//! - `GET /api/v1/namespaces/<ns>/pods/<name>`, `GET /api/v1/nodes/<name>`: the objects the
//!   test installed, else a `404` `Status` as the API returns it;
//! - `GET /pods` (the kubelet): the `PodList` the test installed ([`pod_list_json`]), a queue
//!   of them served in turn (the last repeats), else an empty list.
//!
//! Every request must authenticate as configured ([`Auth`]), else `401` with the API's
//! `Status`. Requests are recorded ([`KubeStandIn::requests`]). Killed (its thread joined) on
//! drop.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
pub use ironroot_cloud_attest::test_support::{node_json, pod_json, TokenReviewFixture};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{json, Value};

use crate::certs::{self, CertFiles};

/// The audience the API server gives tokens when a TokenReview requests none.
pub const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// How a client must authenticate.
#[derive(Debug, Clone)]
pub enum Auth {
    /// `Authorization: Bearer <token>`, exactly.
    Bearer(String),
    /// A client certificate issued by the stand-in's CA ([`KubeStandIn::client_cert`]).
    ClientCert,
}

#[derive(Default)]
struct State {
    reviews: HashMap<String, TokenReviewFixture>,
    pods: HashMap<(String, String), String>,
    nodes: HashMap<String, String>,
    pod_lists: VecDeque<String>,
    requests: Vec<String>,
}

/// The running stand-in.
pub struct KubeStandIn {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA (PEM) its serving certificate chains to; clients verify against it.
    pub ca: PathBuf,
    /// A client certificate (and key) its CA issued, for [`Auth::ClientCert`].
    pub client_cert: CertFiles,
    /// A CA that did not issue its certificate (a client trusting this must refuse it).
    pub other_ca: PathBuf,
    state: Arc<Mutex<State>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for KubeStandIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStandIn")
            .field("url", &self.url)
            .finish()
    }
}

fn status_json(code: u16, reason: &str, message: &str) -> String {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
    .to_string()
}

impl KubeStandIn {
    /// Starts serving on a free loopback port, with certificates of its own (SAN
    /// `localhost`, `127.0.0.1`), requiring `auth`.
    pub fn start(auth: Auth) -> KubeStandIn {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let ca = certs::ca(dir.path(), "kube-ca");
        let serving = certs::leaf(
            dir.path(),
            "kube-serving",
            "DNS:localhost,IP:127.0.0.1",
            &ca,
        );
        let client_cert = certs::leaf(dir.path(), "kube-client", "DNS:ironroot-client", &ca);
        let other_ca = certs::ca(dir.path(), "other-ca");
        let tls = server_config(&serving, &ca);
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("bind a loopback port: {e}"));
        let addr: SocketAddr = listener.local_addr().expect("local address");
        listener
            .set_nonblocking(true)
            .expect("non-blocking listener");
        let state = Arc::new(Mutex::new(State::default()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("stand-in runtime");
            rt.block_on(serve(listener, tls, auth, served, stopped));
        });
        KubeStandIn {
            url: format!("https://127.0.0.1:{}", addr.port()),
            ca: ca.cert,
            client_cert,
            other_ca: other_ca.cert,
            state,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// TokenReview answers for `token` from `review` (its `audiences` are the token's own).
    pub fn add_token(&self, token: &str, review: TokenReviewFixture) {
        self.with_state(|s| s.reviews.insert(token.to_owned(), review));
    }

    /// `GET /api/v1/namespaces/<ns>/pods/<name>` answers `json`.
    pub fn add_pod(&self, ns: &str, name: &str, json: String) {
        self.with_state(|s| s.pods.insert((ns.to_owned(), name.to_owned()), json));
    }

    /// `GET /api/v1/nodes/<name>` answers `json`.
    pub fn add_node(&self, name: &str, json: String) {
        self.with_state(|s| s.nodes.insert(name.to_owned(), json));
    }

    /// The kubelet's `GET /pods` answers each of `lists` in turn; the last one repeats.
    pub fn set_pod_lists(&self, lists: Vec<String>) {
        self.with_state(|s| s.pod_lists = lists.into());
    }

    /// Every request so far, as `METHOD path`.
    pub fn requests(&self) -> Vec<String> {
        self.with_state(|s| s.requests.clone())
    }

    /// How many requests so far were `METHOD path`.
    pub fn count(&self, request: &str) -> usize {
        self.with_state(|s| s.requests.iter().filter(|r| *r == request).count())
    }
}

impl Drop for KubeStandIn {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server_config(serving: &CertFiles, ca: &CertFiles) -> Arc<rustls::ServerConfig> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&serving.cert)
        .and_then(|i| i.collect())
        .expect("stand-in serving certificate");
    let key = PrivateKeyDer::from_pem_file(&serving.key).expect("stand-in serving key");
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca.cert).expect("stand-in CA") {
        roots.add(c.expect("stand-in CA")).expect("stand-in CA");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Client certificates are verified when offered and required per request by `Auth`.
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .allow_unauthenticated()
    .build()
    .expect("client verifier");
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .expect("stand-in TLS config");
    Arc::new(config)
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    auth: Auth,
    state: Arc<Mutex<State>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let tcp = tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(_) => continue,
            },
        };
        let acceptor = acceptor.clone();
        let auth = auth.clone();
        let state = state.clone();
        tokio::spawn(async move {
            // A client that refuses our certificate ends here (what the CA-mismatch tests
            // want to see).
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let has_client_cert = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let service = hyper::service::service_fn(move |req| {
                let auth = auth.clone();
                let state = state.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(
                        handle(req, &auth, has_client_cert, &state).await,
                    )
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn reply(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("response")
}

async fn handle(
    req: Request<Incoming>,
    auth: &Auth,
    has_client_cert: bool,
    state: &Mutex<State>,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let authorized = match auth {
        Auth::Bearer(token) => {
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {token}"))
        }
        Auth::ClientCert => has_client_cert,
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    s.requests.push(format!("{method} {path}"));
    if !authorized {
        return reply(
            StatusCode::UNAUTHORIZED,
            status_json(401, "Unauthorized", "Unauthorized"),
        );
    }
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let not_found = |what: &str, name: &str| {
        reply(
            StatusCode::NOT_FOUND,
            status_json(404, "NotFound", &format!("{what} \"{name}\" not found")),
        )
    };
    match (method.as_str(), segments.as_slice()) {
        ("POST", ["apis", "authentication.k8s.io", "v1", "tokenreviews"]) => {
            match token_review(&s, &body) {
                Some(json) => reply(StatusCode::CREATED, json),
                None => reply(
                    StatusCode::BAD_REQUEST,
                    status_json(400, "BadRequest", "not a TokenReview"),
                ),
            }
        }
        ("GET", ["api", "v1", "namespaces", ns, "pods", name]) => {
            match s.pods.get(&((*ns).to_owned(), (*name).to_owned())) {
                Some(json) => reply(StatusCode::OK, json.clone()),
                None => not_found("pods", name),
            }
        }
        ("GET", ["api", "v1", "nodes", name]) => match s.nodes.get(*name) {
            Some(json) => reply(StatusCode::OK, json.clone()),
            None => not_found("nodes", name),
        },
        ("GET", ["pods"]) => {
            let list = if s.pod_lists.len() > 1 {
                s.pod_lists.pop_front()
            } else {
                s.pod_lists.front().cloned()
            };
            reply(StatusCode::OK, list.unwrap_or_else(|| pod_list_json(&[])))
        }
        _ => reply(
            StatusCode::NOT_FOUND,
            status_json(
                404,
                "NotFound",
                "the server could not find the requested resource",
            ),
        ),
    }
}

/// The API server's TokenReview answer for the request `body`, or `None` when it is not a
/// TokenReview.
fn token_review(s: &State, body: &[u8]) -> Option<String> {
    let req: Value = serde_json::from_slice(body).ok()?;
    if req["kind"] != "TokenReview" {
        return None;
    }
    let token = req["spec"]["token"].as_str()?;
    let requested: Vec<String> = req["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let requested = if requested.is_empty() {
        vec![API_SERVER_AUDIENCE.to_owned()]
    } else {
        requested
    };
    let refused = |error: String| {
        let mut r = TokenReviewFixture::bound("", "", "", "", "", "");
        r.authenticated = false;
        r.error = error;
        r.audiences = Vec::new();
        r.to_json()
    };
    let Some(fixture) = s.reviews.get(token) else {
        return Some(refused(
            "[invalid bearer token, square/go-jose: error in cryptographic primitive]".into(),
        ));
    };
    if !fixture.authenticated {
        return Some(fixture.to_json());
    }
    let matched: Vec<String> = fixture
        .audiences
        .iter()
        .filter(|a| requested.contains(a))
        .cloned()
        .collect();
    if matched.is_empty() {
        return Some(refused(format!(
            "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
            fixture.audiences, requested
        )));
    }
    let mut answer = fixture.clone();
    answer.audiences = matched;
    Some(answer.to_json())
}

/// A container of a pod in a kubelet pod list.
#[derive(Debug, Clone)]
pub struct ContainerFixture {
    /// `name`.
    pub name: String,
    /// `image` (the reference the pod spec names).
    pub image: String,
    /// `imageID` (the digest the runtime resolved).
    pub image_id: String,
    /// `containerID`, with its runtime scheme (`containerd://<64 hex>`).
    pub container_id: String,
}

impl ContainerFixture {
    /// A running container `name` of `image`, with runtime ID `containerd://<id>`.
    pub fn new(name: &str, image: &str, id: &str) -> Self {
        ContainerFixture {
            name: name.into(),
            image: image.into(),
            image_id: format!(
                "{}@sha256:{}",
                image.split(':').next().unwrap_or(image),
                "0cfdaced91cb46dd7af48309799a3c351e4ca2d5e1ee9737ca0cbd932cb79898"
            ),
            container_id: format!("containerd://{id}"),
        }
    }
}

/// A pod as the kubelet's `/pods` lists it.
#[derive(Debug, Clone)]
pub struct PodFixture {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// `spec.serviceAccountName`.
    pub service_account: String,
    /// `spec.nodeName`.
    pub node_name: String,
    /// `metadata.labels`.
    pub labels: Vec<(String, String)>,
    /// `metadata.ownerReferences` as (kind, name, uid).
    pub owners: Vec<(String, String, String)>,
    /// `status.containerStatuses`.
    pub containers: Vec<ContainerFixture>,
    /// `status.initContainerStatuses`.
    pub init_containers: Vec<ContainerFixture>,
}

impl PodFixture {
    /// The pod's JSON as the kubelet writes it (a `v1` Pod, status included).
    pub fn to_value(&self) -> Value {
        let labels: serde_json::Map<String, Value> = self
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        let owners: Vec<Value> = self
            .owners
            .iter()
            .map(|(kind, name, uid)| {
                json!({"apiVersion": "apps/v1", "kind": kind, "name": name, "uid": uid,
                       "controller": true, "blockOwnerDeletion": true})
            })
            .collect();
        let spec_containers = |cs: &[ContainerFixture]| -> Vec<Value> {
            cs.iter()
                .map(|c| {
                    json!({"name": c.name, "image": c.image, "imagePullPolicy": "IfNotPresent",
                                "resources": {}, "terminationMessagePath": "/dev/termination-log"})
                })
                .collect()
        };
        let statuses = |cs: &[ContainerFixture], running: bool| -> Vec<Value> {
            cs.iter()
                .map(|c| {
                    let state = if running {
                        json!({"running": {"startedAt": "2026-01-01T00:00:05Z"}})
                    } else {
                        json!({"terminated": {"exitCode": 0, "reason": "Completed",
                               "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:02Z",
                               "containerID": c.container_id}})
                    };
                    json!({"name": c.name, "state": state, "lastState": {}, "ready": running,
                           "restartCount": 0, "image": c.image, "imageID": c.image_id,
                           "containerID": c.container_id, "started": running})
                })
                .collect()
        };
        json!({
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {
                "name": self.name, "generateName": format!("{}-", self.name),
                "namespace": self.namespace, "uid": self.uid, "resourceVersion": "4711",
                "creationTimestamp": "2026-01-01T00:00:00Z", "labels": labels,
                "annotations": {"kubernetes.io/config.seen": "2026-01-01T00:00:00.000000000Z"},
                "ownerReferences": owners
            },
            "spec": {
                "volumes": [], "containers": spec_containers(&self.containers),
                "initContainers": spec_containers(&self.init_containers),
                "restartPolicy": "Always", "serviceAccountName": self.service_account,
                "serviceAccount": self.service_account, "nodeName": self.node_name,
                "schedulerName": "default-scheduler"
            },
            "status": {
                "phase": "Running", "hostIP": "172.18.0.2", "podIP": "10.244.0.7",
                "startTime": "2026-01-01T00:00:00Z",
                "initContainerStatuses": statuses(&self.init_containers, false),
                "containerStatuses": statuses(&self.containers, true),
                "qosClass": "BestEffort"
            }
        })
    }
}

/// The kubelet's `GET /pods` answer: a `PodList` of `pods`.
pub fn pod_list_json(pods: &[PodFixture]) -> String {
    json!({
        "kind": "PodList", "apiVersion": "v1", "metadata": {},
        "items": pods.iter().map(PodFixture::to_value).collect::<Vec<_>>()
    })
    .to_string()
}
