//! A stand-in for the HTTPS endpoints that publish token signing keys (Google's
//! `oauth2/v1/certs`, Entra ID's JWKS): a local HTTPS server with a test CA of its own
//! serving one document, in the real formats (`google_certs_json`, `jwks_json` from
//! cloud-attest's test support), with the `Cache-Control` header the test sets. The test
//! can rotate the document, take the endpoint down (an HTTP status of its choice) and count
//! the fetches. Stopped (its thread joined) on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::certs;

struct Doc {
    path: String,
    body: String,
    cache_control: Option<String>,
    status: u16,
    fetches: usize,
}

/// The running endpoint.
pub struct KeyEndpoint {
    /// `https://127.0.0.1:<port>`.
    pub base_url: String,
    /// The CA (PEM) its certificate chains to (the server's `keys_ca_file`).
    pub ca: PathBuf,
    doc: Arc<Mutex<Doc>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for KeyEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyEndpoint({})", self.base_url)
    }
}

impl KeyEndpoint {
    /// Serves `body` at `path` (404 elsewhere), with `Cache-Control: <cache_control>` if
    /// given.
    pub fn start(path: &str, body: String, cache_control: Option<&str>) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let ca = certs::ca(dir.path(), "keys-ca");
        let serving = certs::leaf(dir.path(), "keys-serving", "IP:127.0.0.1", &ca);
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&serving.cert)
            .and_then(|i| i.collect())
            .expect("serving certificate");
        let key = PrivateKeyDer::from_pem_file(&serving.key).expect("serving key");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .expect("TLS config"),
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("local address");
        listener.set_nonblocking(true).expect("non-blocking");
        let doc = Arc::new(Mutex::new(Doc {
            path: path.to_owned(),
            body,
            cache_control: cache_control.map(str::to_owned),
            status: 200,
            fetches: 0,
        }));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = doc.clone();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(serve(listener, tls, served, stopped));
        });
        KeyEndpoint {
            base_url: format!("https://127.0.0.1:{}", addr.port()),
            ca: ca.cert,
            doc,
            stop: Some(stop),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Doc) -> T) -> T {
        f(&mut self.doc.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The document's URL.
    pub fn url(&self) -> String {
        format!("{}{}", self.base_url, self.with(|d| d.path.clone()))
    }

    /// Serves `body` from now on (a key rotation), with `cache_control`.
    pub fn set(&self, body: String, cache_control: Option<&str>) {
        self.with(|d| {
            d.body = body;
            d.cache_control = cache_control.map(str::to_owned);
        });
    }

    /// Answers every request with `status` (503: down) until set back to 200.
    pub fn set_status(&self, status: u16) {
        self.with(|d| d.status = status);
    }

    /// Requests for the document so far.
    pub fn fetches(&self) -> usize {
        self.with(|d| d.fetches)
    }
}

impl Drop for KeyEndpoint {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn serve(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    doc: Arc<Mutex<Doc>>,
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
        let doc = doc.clone();
        tokio::spawn(async move {
            let Ok(stream) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let doc = doc.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &doc)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(req: &Request<B>, doc: &Mutex<Doc>) -> Response<Full<Bytes>> {
    let mut d = doc.lock().unwrap_or_else(|e| e.into_inner());
    let mut resp = Response::builder().header("content-type", "application/json");
    if req.uri().path() != d.path {
        return resp
            .status(404)
            .body(Full::new(Bytes::from_static(b"not found")))
            .expect("response");
    }
    d.fetches += 1;
    if d.status != 200 {
        return resp
            .status(d.status)
            .body(Full::new(Bytes::from_static(b"unavailable")))
            .expect("response");
    }
    if let Some(cc) = &d.cache_control {
        resp = resp.header("cache-control", cc.as_str());
    }
    resp.status(200)
        .body(Full::new(Bytes::from(d.body.clone())))
        .expect("response")
}
