//! Workload API conformance with an independent client: the crates.io `spiffe`
//! crate talks to a real `ironroot-agent run` (attested with a swtpm against
//! the real server) over its unix socket, and two workloads build a rustls
//! mTLS connection with the X.509-SVIDs that client fetched.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use ironroot_api::tls::{svid_spiffe_id, SpiffeClientVerifier, SpiffeServerVerifier};
use ironroot_testkit::svid::{assert_svid_leaf, now, webpki_verify};
use ironroot_testkit::swtpm::Swtpm;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use spiffe::x509_source::SvidPicker;
use spiffe::{
    JwtBundle, JwtBundleSet, JwtSvid, SpiffeId, TrustDomain, WorkloadApiClient, WorkloadApiError,
    X509Context, X509Source, X509Svid,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const A: &str = "spiffe://example.org/conformance/a";
const B: &str = "spiffe://example.org/conformance/b";

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server, a booted swtpm and a running agent serving `entries` (SPIFFE ID,
/// hint) to this process's uid. Fields drop in order: agent, TPM, server.
struct Setup {
    _agent: AgentProcess,
    _tpm: Swtpm,
    env: Env,
    socket: std::path::PathBuf,
    endpoint: String,
}

fn setup(test: &str, entries: &[(&str, &str)]) -> Setup {
    let env = good_env(test);
    let (tpm, log, agent_id) = booted_node(&env);
    let uid = format!("unix:uid:{}", nix::unistd::getuid());
    for (id, hint) in entries {
        env.server.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &agent_id,
            "--selector",
            &uid,
            "--hint",
            hint,
        ]);
    }
    let agent = start_agent(&env, &tpm, &log, test);
    let endpoint = format!("unix:{}", agent.socket.display());
    Setup {
        socket: agent.socket.clone(),
        _agent: agent,
        _tpm: tpm,
        env,
        endpoint,
    }
}

/// Polls with the `spiffe` client until the agent serves every one of `ids`
/// (it attests and syncs first).
async fn wait_synced(endpoint: &str, ids: &[&str]) -> X509Context {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let last = match WorkloadApiClient::connect_to(endpoint).await {
            Ok(c) => match c.fetch_x509_context().await {
                Ok(ctx) => {
                    let got: Vec<String> = ctx
                        .svids()
                        .iter()
                        .map(|s| s.spiffe_id().to_string())
                        .collect();
                    if ids.iter().all(|i| got.iter().any(|g| g == i)) {
                        return ctx;
                    }
                    format!("got {got:?}")
                }
                Err(e) => format!("{e:#}"),
            },
            Err(e) => format!("connect: {e:#}"),
        };
        assert!(
            Instant::now() < deadline,
            "no SVIDs {ids:?} within 30s; last: {last}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ders<C: AsRef<[u8]>>(certs: &[C]) -> Vec<Vec<u8>> {
    certs.iter().map(|c| c.as_ref().to_vec()).collect()
}

/// rustls's view of an SVID: the chain plus its PKCS#8 key, checked to match the leaf.
fn certified(svid: &X509Svid) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let chain: Vec<CertificateDer<'static>> = svid
        .cert_chain()
        .iter()
        .map(|c| CertificateDer::from(c.as_bytes().to_vec()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        svid.private_key().as_bytes().to_vec(),
    ));
    let signer = provider()
        .key_provider
        .load_private_key(key.clone_key())
        .expect("the SVID key is a PKCS#8 key rustls/ring can sign with");
    rustls::sign::CertifiedKey::new(chain.clone(), signer)
        .keys_match()
        .expect("the SVID key is the leaf's key");
    (chain, key)
}

/// The SVID's chain verifies to `roots`, its leaf is a conforming X.509-SVID
/// for `id`, and its key belongs to the leaf.
fn check_svid(svid: &X509Svid, id: &str, roots: &[Vec<u8>]) {
    assert_eq!(svid.spiffe_id().to_string(), id);
    assert_eq!(svid.leaf().spiffe_id().unwrap().to_string(), id);
    let chain = ders(svid.cert_chain());
    assert_svid_leaf(&chain[0], id);
    webpki_verify(&chain, roots, now()).expect("the SVID chain verifies to the server's bundle");
    certified(svid);
}

/// The same token with one signature character changed.
fn tampered(token: &str) -> String {
    let at = token.rfind('.').unwrap() + 1 + (token.len() - token.rfind('.').unwrap()) / 2;
    let mut t = token.as_bytes().to_vec();
    t[at] = if t[at] == b'A' { b'B' } else { b'A' };
    String::from_utf8(t).unwrap()
}

/// The `keys` of a JWKS that carry a `kid` (the JWT authorities).
fn jwt_authorities_only(jwks: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(jwks).expect("JWKS is JSON");
    let keys = v["keys"].as_array_mut().expect("JWKS has keys");
    keys.retain(|k| k.get("kid").is_some());
    assert!(!keys.is_empty(), "no JWT authority in {v}");
    serde_json::to_vec(&v).unwrap()
}

/// `jwt` (audience "db", SPIFFE ID A) verifies offline against `bundles`;
/// another audience or a changed signature does not.
fn check_jwt_offline(jwt: &JwtSvid, bundles: &JwtBundleSet) {
    let jb = bundles.get(&td()).expect("JWT bundle for example.org");
    assert!(
        jb.find_jwt_authority(jwt.key_id()).is_some(),
        "kid {} not in the JWT bundle",
        jwt.key_id()
    );
    let offline = JwtSvid::parse_and_validate(jwt.token(), bundles, &["db"])
        .expect("the JWT-SVID verifies offline against the JWT bundle");
    assert_eq!(offline.spiffe_id().to_string(), A);
    JwtSvid::parse_and_validate(jwt.token(), bundles, &["cache"])
        .expect_err("wrong audience verifies offline");
    JwtSvid::parse_and_validate(&tampered(jwt.token()), bundles, &["db"])
        .expect_err("a tampered JWT-SVID verifies offline");
}

fn is_no_identity(e: &WorkloadApiError) -> bool {
    matches!(e, WorkloadApiError::NoIdentityIssued)
}

#[test]
fn spiffe_client_fetches_and_validates_svids_and_bundles() {
    let s = setup("conformance_spiffe_client", &[(A, "a")]);
    let roots = server_roots(&s.env);
    let a = SpiffeId::new(A).unwrap();
    rt().block_on(async {
        // X.509 context: the one SVID, usable, with the server's bundle.
        let ctx = wait_synced(&s.endpoint, &[A]).await;
        assert_eq!(ctx.svids().len(), 1);
        let svid = ctx.default_svid().expect("a default SVID");
        check_svid(svid, A, &roots);
        assert_eq!(svid.hint(), Some("a"));
        let bundle = ctx.bundle_set().get(&td()).expect("bundle for example.org");
        assert_eq!(ders(bundle.authorities()), roots);

        let client = WorkloadApiClient::connect_to(&s.endpoint)
            .await
            .expect("connect");
        let one = client.fetch_x509_svid().await.expect("FetchX509SVID");
        check_svid(&one, A, &roots);
        assert_eq!(one.leaf().as_bytes(), svid.leaf().as_bytes());
        let all = client.fetch_all_x509_svids().await.unwrap();
        let ids: Vec<String> = all.iter().map(|s| s.spiffe_id().to_string()).collect();
        assert_eq!(ids, vec![A]);

        // X.509 bundles.
        let bundles = client.fetch_x509_bundles().await.expect("FetchX509Bundles");
        assert_eq!(bundles.len(), 1, "no federation configured");
        let b = bundles.get(&td()).expect("bundle for example.org");
        assert_eq!(ders(b.authorities()), roots);

        // JWT-SVID for an audience, and its claims.
        let jwt = client
            .fetch_jwt_svid(["db"], None)
            .await
            .expect("FetchJWTSVID");
        assert_eq!(jwt.spiffe_id(), &a);
        assert_eq!(jwt.audience(), ["db".to_string()]);
        assert_eq!(jwt.claims().sub(), A);
        assert_eq!(jwt.claims().aud(), ["db".to_string()]);
        let (exp, t) = (jwt.claims().exp(), now() as i64);
        assert!(exp > t && exp <= t + 24 * 3600, "exp {exp} vs now {t}");
        assert_eq!(jwt.expiry().unix_timestamp(), exp);
        assert!(!jwt.key_id().is_empty());
        assert_eq!(jwt.hint(), Some("a"));
        let two = client
            .fetch_jwt_svid(["db", "cache"], Some(&a))
            .await
            .expect("FetchJWTSVID for an explicit SPIFFE ID");
        assert_eq!(two.spiffe_id(), &a);
        assert_eq!(two.audience(), ["db".to_string(), "cache".to_string()]);
        let other = SpiffeId::new("spiffe://example.org/conformance/not-mine").unwrap();
        let e = client
            .fetch_jwt_svid(["db"], Some(&other))
            .await
            .unwrap_err();
        assert!(is_no_identity(&e), "{e:?}");

        // The token verifies offline (the spiffe crate's own verifier) with
        // the JWT authorities the agent's FetchJWTBundles serves. The spiffe
        // client refuses that response whole (see
        // `spiffe_client_fetches_jwt_bundles`), so its kid-bearing keys are
        // taken from the raw response here.
        let raw = ironroot_agent::api_client::fetch_jwt_bundles(&s.socket)
            .await
            .expect("FetchJWTBundles");
        let jwks = raw
            .bundles
            .get("spiffe://example.org")
            .expect("JWT bundle for example.org");
        let mut jwt_bundles = JwtBundleSet::new();
        jwt_bundles.add_bundle(
            JwtBundle::from_jwt_authorities(td(), &jwt_authorities_only(jwks))
                .expect("the JWT authorities parse"),
        );
        check_jwt_offline(&jwt, &jwt_bundles);

        // ValidateJWTSVID through the Workload API.
        let v = client
            .validate_jwt_token("db", jwt.token())
            .await
            .expect("ValidateJWTSVID");
        assert_eq!(v.spiffe_id(), &a);
        assert_eq!(v.token(), jwt.token());
        let v2 = client
            .validate_jwt_token("cache", two.token())
            .await
            .expect("ValidateJWTSVID, second audience");
        assert_eq!(v2.spiffe_id(), &a);
        client
            .validate_jwt_token("other", jwt.token())
            .await
            .expect_err("ValidateJWTSVID accepted a wrong audience");
        client
            .validate_jwt_token("db", &tampered(jwt.token()))
            .await
            .expect_err("ValidateJWTSVID accepted a tampered token");
    });
}

/// FetchJWTBundles through the spiffe client. Ignored until the agent serves
/// only JWT authorities there: it sends the whole SPIFFE bundle JWKS, whose
/// `x509-svid` keys have no `kid`, and the client refuses the response
/// (`JwtBundle(MissingKeyId)`); SPIRE omits the X.509 keys in this RPC.
#[test]
fn spiffe_client_fetches_jwt_bundles() {
    let s = setup("conformance_jwt_bundles", &[(A, "a")]);
    rt().block_on(async {
        wait_synced(&s.endpoint, &[A]).await;
        let client = WorkloadApiClient::connect_to(&s.endpoint)
            .await
            .expect("connect");
        let jwt = client.fetch_jwt_svid(["db"], None).await.unwrap();
        let bundles = client.fetch_jwt_bundles().await.expect("FetchJWTBundles");
        assert_eq!(bundles.len(), 1, "no federation configured");
        check_jwt_offline(&jwt, &bundles);
    });
}

/// Picks the SVID with one SPIFFE ID (two workloads of one uid).
#[derive(Debug)]
struct ById(&'static str);

impl SvidPicker for ById {
    fn pick_svid(&self, svids: &[Arc<X509Svid>]) -> Option<usize> {
        svids
            .iter()
            .position(|s| s.spiffe_id().to_string() == self.0)
    }
}

async fn source(endpoint: &str, id: &'static str) -> X509Source {
    X509Source::builder()
        .endpoint(endpoint)
        .picker(ById(id))
        .initial_sync_timeout(Duration::from_secs(10))
        .build()
        .await
        .expect("X509Source")
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Vec<Vec<u8>>,
) -> Arc<rustls::ServerConfig> {
    let verifier = SpiffeClientVerifier::new(Arc::new(move || roots.clone()));
    Arc::new(
        rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)
            .expect("server config"),
    )
}

fn client_config(
    roots: Vec<Vec<u8>>,
    expected_server: &str,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
) -> Arc<rustls::ClientConfig> {
    let expected = ironroot_api::spiffe_id::SpiffeId::parse(expected_server).unwrap();
    let b = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(roots, expected));
    Arc::new(match cert {
        Some((chain, key)) => b.with_client_auth_cert(chain, key).expect("client cert"),
        None => b.with_no_client_auth(),
    })
}

/// A TLS server on 127.0.0.1 that requires a verified client SVID, reads one
/// line and answers with one line naming the client's SPIFFE ID. Reports per
/// connection the client's SPIFFE ID or why it was refused.
async fn spawn_server(
    config: Arc<rustls::ServerConfig>,
) -> (SocketAddr, mpsc::UnboundedReceiver<Result<String, String>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let outcome = async {
                let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
                let peer = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .ok_or("no client certificate")?;
                let id = svid_spiffe_id(peer)?.to_string();
                let mut tls = BufReader::new(tls);
                let mut line = String::new();
                tls.read_line(&mut line).await.map_err(|e| e.to_string())?;
                let reply = format!("A got {:?} from {id}\n", line.trim_end());
                tls.write_all(reply.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                tls.shutdown().await.map_err(|e| e.to_string())?;
                Ok::<_, String>(id)
            }
            .await;
            if tx.send(outcome).is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

/// Connects, sends one line, reads the answer; returns it with the server's SPIFFE ID.
async fn exchange(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    msg: &str,
) -> Result<(String, String), String> {
    let run = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let mut tls = tokio_rustls::TlsConnector::from(config)
            .connect(ServerName::try_from("workload-a").unwrap(), tcp)
            .await
            .map_err(|e| e.to_string())?;
        let server_id = {
            let peer = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .ok_or("no server certificate")?;
            svid_spiffe_id(peer)?.to_string()
        };
        tls.write_all(format!("{msg}\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let mut reply = String::new();
        tls.read_to_string(&mut reply)
            .await
            .map_err(|e| e.to_string())?;
        if reply.is_empty() {
            return Err("the server closed without answering".to_string());
        }
        Ok((reply, server_id))
    };
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .map_err(|_| "timed out".to_string())?
}

/// A certificate for `spiffe_id` from a CA of its own (not in any bundle the
/// workloads trust); `ca_name` names that CA.
fn rogue_svid(
    ca_name: &str,
    spiffe_id: &str,
) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
        IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::URI(spiffe_id.try_into().unwrap())];
    leaf.is_ca = IsCa::ExplicitNoCa;
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    (
        vec![cert.der().clone(), ca.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

/// A self-signed certificate naming `spiffe_id`.
fn self_signed(spiffe_id: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![rcgen::SanType::URI(spiffe_id.try_into().unwrap())];
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

#[test]
fn two_workloads_talk_mtls_with_their_fetched_svids() {
    let s = setup("conformance_mtls", &[(A, "a"), (B, "b")]);
    let roots = server_roots(&s.env);
    rt().block_on(async {
        // Two entries for the same uid: the one fetch returns both.
        let ctx = wait_synced(&s.endpoint, &[A, B]).await;
        assert_eq!(ctx.svids().len(), 2);

        // Each workload keeps an X509Source with its own SVID.
        let src_a = source(&s.endpoint, A).await;
        let src_b = source(&s.endpoint, B).await;
        let svid_a = src_a.svid().unwrap();
        let svid_b = src_b.svid().unwrap();
        check_svid(&svid_a, A, &roots);
        check_svid(&svid_b, B, &roots);
        assert_eq!(svid_b.hint(), Some("b"));
        let bundle_of = |src: &X509Source| {
            ders(
                src.bundle_set()
                    .unwrap()
                    .get(&td())
                    .expect("bundle for example.org")
                    .authorities(),
            )
        };
        let (roots_a, roots_b) = (bundle_of(&src_a), bundle_of(&src_b));
        assert_eq!(roots_a, roots);
        assert_eq!(roots_b, roots);

        // A serves with its SVID, requiring client SVIDs from its bundle.
        let (chain_a, key_a) = certified(&svid_a);
        let (addr, mut seen) = spawn_server(server_config(chain_a, key_a, roots_a)).await;

        // B presents its SVID and accepts only A: messages both ways.
        let (reply, server_id) = exchange(
            addr,
            client_config(roots_b.clone(), A, Some(certified(&svid_b))),
            "hello from B",
        )
        .await
        .expect("mTLS between A and B");
        assert_eq!(server_id, A);
        assert_eq!(reply, format!("A got \"hello from B\" from {B}\n"));
        assert_eq!(seen.recv().await.unwrap(), Ok(B.to_string()));

        // B expecting some other ID refuses A's valid SVID.
        let e = exchange(
            addr,
            client_config(
                roots_b.clone(),
                "spiffe://example.org/conformance/c",
                Some(certified(&svid_b)),
            ),
            "hi",
        )
        .await
        .expect_err("the client accepted a server with another SPIFFE ID");
        assert!(
            e.contains(&format!("server presented {A}, expected")),
            "{e}"
        );
        seen.recv()
            .await
            .unwrap()
            .expect_err("the handshake failed");

        // A self-signed client certificate (claiming B's ID) is refused.
        let e = exchange(
            addr,
            client_config(roots_b.clone(), A, Some(self_signed(B))),
            "hi",
        )
        .await
        .expect_err("a self-signed client got an answer");
        let refused = seen
            .recv()
            .await
            .unwrap()
            .expect_err("self-signed accepted");
        assert!(
            refused.contains("client certificate does not verify to the trust bundle"),
            "server: {refused}; client: {e}"
        );

        // No client certificate at all: no answer either.
        exchange(addr, client_config(roots_b.clone(), A, None), "hi")
            .await
            .expect_err("a client without a certificate got an answer");
        assert_eq!(
            seen.recv().await.unwrap(),
            Err("no client certificate".to_string())
        );

        // A server whose certificate (claiming A's ID) chains to another trust
        // domain's CA is refused by B.
        let (rogue_chain, rogue_key) = rogue_svid("other.org CA", A);
        let (rogue_addr, _rogue_seen) =
            spawn_server(server_config(rogue_chain, rogue_key, roots.clone())).await;
        let e = exchange(
            rogue_addr,
            client_config(roots_b.clone(), A, Some(certified(&svid_b))),
            "hi",
        )
        .await
        .expect_err("the client accepted a server from another trust domain");
        assert!(
            e.contains("server certificate does not verify to the trust bundle"),
            "{e}"
        );

        src_a.shutdown().await;
        src_b.shutdown().await;
    });
}
