//! Stand-ins for the cloud instance metadata services (AWS IMDSv2, the GCE metadata server,
//! Azure IMDS: its managed-identity tokens and its attested data) for the cloud node attestors' tests: a small HTTP/1.1 server on a loopback
//! port (a thread, one request per connection) answering the paths the real services
//! answer, with evidence signed the real way in the real formats by
//! `ironroot_cloud_attest::test_support` (PKCS#7 SignedData from `openssl cms`, RS256 JWTs)
//! with keys the test generates standing in for the provider's. Every request is recorded
//! so a test can assert the headers the agent sent. Stopped on drop.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ironroot_cloud_attest::test_support::{
    base64_wrapped, google_certs_json, jwks_json, pkcs7_sign, Pkcs7Options, TestCert, TestKey,
    Validity,
};

/// An answer the stand-in gives.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: String,
    /// Headers the request must carry (name, value; names case-insensitive); a request
    /// without one gets 401, as IMDSv2 answers a GET without its token.
    pub require: Vec<(String, String)>,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: impl Into<String>) -> Self {
        Reply {
            status: 200,
            body: body.into(),
            require: Vec::new(),
        }
    }

    /// `self`, answered only to requests carrying header `name: value`.
    pub fn requiring(mut self, name: &str, value: &str) -> Self {
        self.require.push((name.into(), value.into()));
        self
    }
}

/// A request the stand-in received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    /// `GET`, `PUT`.
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The query string (after `?`), empty if none.
    pub query: String,
    /// Headers, names lower-cased.
    pub headers: BTreeMap<String, String>,
}

/// Makes the answer to one request (for answers that depend on it, such as attested data
/// over the request's nonce).
pub type Handler = Arc<dyn Fn(&SeenRequest) -> Reply + Send + Sync>;

#[derive(Clone)]
enum Route {
    Fixed(Reply),
    Dynamic(Handler),
}

#[derive(Default)]
struct Shared {
    routes: BTreeMap<(String, String), Route>,
    seen: Vec<SeenRequest>,
}

/// The HTTP server.
pub struct MetadataServer {
    addr: std::net::SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for MetadataServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MetadataServer({})", self.addr)
    }
}

impl MetadataServer {
    /// Listens on a free loopback port; 404 for every path until routes are set.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the metadata stand-in");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (shared.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(c) = conn {
                    serve(c, &s);
                }
            }
        });
        MetadataServer {
            addr,
            shared,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Answers `method path` (path without query) with `reply` from now on.
    pub fn route(&self, method: &str, path: &str, reply: Reply) {
        self.lock()
            .routes
            .insert((method.to_owned(), path.to_owned()), Route::Fixed(reply));
    }

    /// Answers `method path` with what `handler` makes of each request from now on.
    pub fn route_with(&self, method: &str, path: &str, handler: Handler) {
        self.lock().routes.insert(
            (method.to_owned(), path.to_owned()),
            Route::Dynamic(handler),
        );
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.lock().seen.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for MetadataServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(conn: TcpStream, shared: &Mutex<Shared>) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (
        parts.next().unwrap_or_default().to_owned(),
        parts.next().unwrap_or_default().to_owned(),
    );
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (target.clone(), String::new()),
    };
    let seen = SeenRequest {
        method: method.clone(),
        path: path.clone(),
        query,
        headers: headers.clone(),
    };
    let route = {
        let mut s = shared.lock().unwrap_or_else(|p| p.into_inner());
        s.seen.push(seen.clone());
        s.routes.get(&(method, path)).cloned()
    };
    // A handler runs outside the lock (it may sign, which takes a while).
    let reply = route.map(|r| match r {
        Route::Fixed(reply) => reply,
        Route::Dynamic(h) => h(&seen),
    });
    let (status, body) = match reply {
        None => (404, "not found".to_owned()),
        Some(r) => {
            let missing = r.require.iter().find(|(k, v)| {
                headers.get(&k.to_ascii_lowercase()).map(String::as_str) != Some(v.as_str())
            });
            match missing {
                Some((k, _)) => (401, format!("missing or wrong header {k}")),
                None => (r.status, r.body),
            }
        }
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// AWS IMDSv2: `PUT /latest/api/token` gives a session token; the instance identity
/// paths answer only with it.
#[derive(Debug)]
pub struct AwsImds {
    /// The HTTP server (the agent's `ec2_metadata_endpoint` is its `base_url`).
    pub server: MetadataServer,
    token: String,
}

/// The IMDSv2 session token the stand-in issues.
pub const AWS_IMDS_TOKEN: &str = "AQAEAFakeImdsV2SessionToken==";

impl AwsImds {
    /// A stand-in with no document yet.
    pub fn start() -> Self {
        let server = MetadataServer::start();
        server.route(
            "PUT",
            "/latest/api/token",
            Reply::ok(AWS_IMDS_TOKEN).requiring("x-aws-ec2-metadata-token-ttl-seconds", "300"),
        );
        AwsImds {
            server,
            token: AWS_IMDS_TOKEN.into(),
        }
    }

    /// A region certificate standing in for AWS's (self-signed, as AWS's are).
    pub fn region_certificate() -> TestCert {
        TestCert::self_signed("ec2.amazonaws.com test", 1, Validity::around_now(365))
    }

    /// Serves `document` with `rsa2048` = a PKCS#7 SignedData over `signed_content` by
    /// `signer` (BER, attached, as AWS), base64 wrapped at 64 columns.
    pub fn serve(&self, document: &str, signed_content: &str, signer: &TestCert) {
        let p7 = pkcs7_sign(signer, signed_content.as_bytes(), &Pkcs7Options::default());
        self.serve_raw(document, &base64_wrapped(&p7));
    }

    /// Serves a document and an rsa2048 body as given.
    pub fn serve_raw(&self, document: &str, rsa2048: &str) {
        let r = |body: &str| Reply::ok(body).requiring("x-aws-ec2-metadata-token", &self.token);
        let p = "/latest/dynamic/instance-identity";
        self.server
            .route("GET", &format!("{p}/document"), r(document));
        // The legacy RSA-1024 signature: served (the agent fetches it as SPIRE's does), never
        // trusted by the server.
        self.server
            .route("GET", &format!("{p}/signature"), r("bGVnYWN5LXJzYTEwMjQ="));
        self.server
            .route("GET", &format!("{p}/rsa2048"), r(rsa2048));
    }
}

/// The GCE metadata server's identity endpoint, and Google's signing certificate.
#[derive(Debug)]
pub struct GceMetadata {
    /// The HTTP server (the agent's `identity_token_host` is its `host`).
    pub server: MetadataServer,
    /// Google's stand-in signing certificate.
    pub google: TestCert,
    /// Its key ID.
    pub kid: String,
}

/// The path the agent requests for the default service account.
pub const GCE_IDENTITY_PATH: &str =
    "/computeMetadata/v1/instance/service-accounts/default/identity";

impl GceMetadata {
    /// A stand-in with no token yet.
    pub fn start() -> Self {
        GceMetadata {
            server: MetadataServer::start(),
            google: TestCert::self_signed("accounts.google.com test", 7, Validity::around_now(30)),
            kid: "test-google-kid-1".into(),
        }
    }

    /// Google's certificate map (`oauth2/v1/certs`) holding the stand-in's certificate.
    pub fn certs_json(&self) -> String {
        google_certs_json(&[(&self.kid, &self.google)])
    }

    /// Serves a token over `claims` signed by `key` under `kid` (Google's key and kid
    /// for the honest case).
    pub fn serve_claims(&self, key: &TestKey, kid: &str, claims: &serde_json::Value) {
        self.serve_token(&key.sign_jwt(kid, claims));
    }

    /// Serves `token` as the identity token.
    pub fn serve_token(&self, token: &str) {
        self.server.route(
            "GET",
            GCE_IDENTITY_PATH,
            Reply::ok(token).requiring("metadata-flavor", "Google"),
        );
    }
}

/// Azure IMDS's managed-identity token endpoint, and Entra ID's signing key.
#[derive(Debug)]
pub struct AzureImds {
    /// The HTTP server (the agent's `metadata_endpoint` is its `base_url`).
    pub server: MetadataServer,
    /// Entra ID's stand-in signing key.
    pub entra: TestKey,
    /// Its key ID.
    pub kid: String,
}

/// The path of the token endpoint.
pub const AZURE_TOKEN_PATH: &str = "/metadata/identity/oauth2/token";

impl AzureImds {
    /// A stand-in with no token yet.
    pub fn start() -> Self {
        AzureImds {
            server: MetadataServer::start(),
            entra: TestKey::rsa2048(),
            kid: "test-entra-kid-1".into(),
        }
    }

    /// Entra ID's JWKS holding the stand-in's key.
    pub fn jwks_json(&self) -> String {
        jwks_json(&[(&self.kid, &self.entra)])
    }

    /// Serves an access token over `claims` signed by `key` under `kid`, in IMDS's JSON.
    pub fn serve_claims(&self, key: &TestKey, kid: &str, claims: &serde_json::Value) {
        let token = key.sign_jwt(kid, claims);
        let body = serde_json::json!({
            "access_token": token,
            "client_id": "8ed2c3b4-1c39-4a5c-8a1f-1d0b0b1b0b1b",
            "expires_in": "86399",
            "expires_on": "1900000000",
            "ext_expires_in": "86399",
            "not_before": "1700000000",
            "resource": claims["aud"],
            "token_type": "Bearer"
        });
        self.server.route(
            "GET",
            AZURE_TOKEN_PATH,
            Reply::ok(body.to_string()).requiring("metadata", "true"),
        );
    }
}

/// Azure's stand-in PKI for attested data: a root (standing in for DigiCert Global Root
/// G2), an issuing CA (for "Microsoft Azure RSA TLS Issuing CA 03") and the IMDS signing
/// certificate (`eastus.metadata.azure.com`, serverAuth, AIA naming the issuing CA on
/// `www.microsoft.com`, as Azure's).
#[derive(Debug)]
pub struct AzurePki {
    /// The root CA.
    pub root: TestCert,
    /// The issuing CA.
    pub intermediate: TestCert,
    /// IMDS's signing certificate.
    pub signer: TestCert,
}

/// The AIA caIssuers URL of the stand-in signer.
pub const AZURE_ISSUER_URL: &str =
    "http://www.microsoft.com/pkiops/certs/Microsoft%20Azure%20RSA%20TLS%20Issuing%20CA%2003%20-%20xsign.crt";

impl AzurePki {
    /// A new root, issuing CA and signer.
    pub fn new() -> Self {
        let root = TestCert::ca(
            "DigiCert Global Root G2 (test)",
            None,
            Validity::around_now(3650),
        );
        let intermediate = TestCert::ca(
            "Microsoft Azure RSA TLS Issuing CA 03 (test)",
            Some(&root),
            Validity::around_now(365),
        );
        let signer = TestCert::tls_leaf(
            0x0033_0000_0001,
            "metadata.azure.com",
            &["metadata.azure.com", "eastus.metadata.azure.com"],
            Some(AZURE_ISSUER_URL),
            &intermediate,
            Validity::around_now(90),
        );
        AzurePki {
            root,
            intermediate,
            signer,
        }
    }
}

impl Default for AzurePki {
    fn default() -> Self {
        Self::new()
    }
}

/// The path of IMDS's attested data.
pub const AZURE_ATTESTED_PATH: &str = "/metadata/attested/document";
/// The path of IMDS's instance metadata.
pub const AZURE_INSTANCE_PATH: &str = "/metadata/instance";

/// Azure IMDS's attested data (over the nonce each request carries) and instance metadata.
pub struct AzureAttestedData {
    /// The HTTP server (the agent's `[azure_imds] metadata_endpoint` is its `base_url`).
    pub server: MetadataServer,
    /// Azure's stand-in PKI.
    pub pki: Arc<AzurePki>,
}

impl std::fmt::Debug for AzureAttestedData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureAttestedData({:?})", self.server)
    }
}

impl AzureAttestedData {
    /// A stand-in with instance metadata for a VM outside any scale set, and no attested
    /// data yet.
    pub fn start() -> Self {
        let server = MetadataServer::start();
        let instance = serde_json::json!({
            "compute": {
                "location": "eastus",
                "name": "vm-1",
                "resourceGroupName": "rg-1",
                "subscriptionId": "11111111-2222-3333-4444-555555555555",
                "vmId": "02aab8a4-74ef-476e-8182-f6d2ba4166a6",
                "vmScaleSetName": ""
            },
            "network": {"interface": []}
        });
        server.route(
            "GET",
            AZURE_INSTANCE_PATH,
            Reply::ok(instance.to_string()).requiring("metadata", "true"),
        );
        AzureAttestedData {
            server,
            pki: Arc::new(AzurePki::new()),
        }
    }

    /// Serves attested data: `document(pki, nonce)` gives the response body for the
    /// request's `nonce` query parameter (see [`Self::attested_body`]).
    pub fn serve(&self, document: impl Fn(&AzurePki, &str) -> String + Send + Sync + 'static) {
        let pki = self.pki.clone();
        self.server.route_with(
            "GET",
            AZURE_ATTESTED_PATH,
            Arc::new(move |req: &SeenRequest| {
                if req.headers.get("metadata").map(String::as_str) != Some("true") {
                    return Reply {
                        status: 400,
                        body: "Required metadata header not specified".into(),
                        require: Vec::new(),
                    };
                }
                let nonce = req
                    .query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("nonce="))
                    .unwrap_or_default();
                Reply::ok(document(&pki, nonce))
            }),
        );
    }

    /// IMDS's JSON: `{"encoding": "pkcs7", "signature": <base64 DER SignedData over
    /// content by signer, attached, signer's certificate in the bag>}`.
    pub fn attested_body(signer: &TestCert, content: &str) -> String {
        Self::attested_body_der(&Self::sign(signer, content))
    }

    /// The SignedData (DER) over `content` by `signer`, as IMDS makes it.
    pub fn sign(signer: &TestCert, content: &str) -> Vec<u8> {
        let opts = Pkcs7Options {
            ber_stream: false,
            ..Default::default()
        };
        pkcs7_sign(signer, content.as_bytes(), &opts)
    }

    /// IMDS's JSON around a SignedData given as DER.
    pub fn attested_body_der(der: &[u8]) -> String {
        serde_json::json!({
            "encoding": "pkcs7",
            "signature": base64_wrapped(der).replace('\n', ""),
        })
        .to_string()
    }
}
