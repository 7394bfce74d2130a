//! Envoy SDS end to end: the real server (SoftHSM CA), the `ironroot-agent
//! run` binary attesting with a swtpm, and an SDS client built from Envoy's
//! published protos (the `envoy-types` crate) over the unix socket, as this
//! test process (uid 0). SPIRE's resource names, a caller asking for what is
//! not its own, a federated bundle, a rotation pushed on a held stream, and
//! ACK / NACK / stale-nonce handling.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use envoy_types::pb::envoy::config::core::v3::{
    data_source::Specifier, node::UserAgentVersionType, BuildVersion, DataSource, Node,
};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    secret, Secret, SpiffeCertValidatorConfig,
};
use envoy_types::pb::envoy::r#type::v3::SemanticVersion;
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::rpc::Status as RpcStatus;
use hyper_util::rt::TokioIo;
use ironroot_testkit::server::pem_ders;
use ironroot_testkit::svid::{assert_svid_leaf, now, serial, webpki_verify};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Streaming;

const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";
const WEB: &str = "spiffe://example.org/workload/web";
const API: &str = "spiffe://example.org/workload/api";
const NOT_MINE: &str = "spiffe://example.org/workload/nobody-only";
const PARTNER: &str = "spiffe://partner.org";

type Sds = SecretDiscoveryServiceClient<Channel>;

/// A client on `socket` (Unavailable while the agent has not bound it yet).
async fn connect(socket: &Path) -> Result<Sds, tonic::Status> {
    let path = socket.to_owned();
    // Envoy's gRPC client names the cluster as :authority; any host will do.
    let channel = Endpoint::try_from("http://sds_server")
        .unwrap()
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await
        .map_err(|e| tonic::Status::unavailable(format!("cannot connect: {e}")))?;
    Ok(SecretDiscoveryServiceClient::new(channel))
}

/// A request as Envoy sends it (a node, the Secret type, no security header).
fn request(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "envoy-test".into(),
            cluster: "test".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SECRET.into(),
        ..Default::default()
    }
}

fn fetch(socket: &Path, req: DiscoveryRequest) -> Result<DiscoveryResponse, tonic::Status> {
    rt().block_on(async {
        connect(socket)
            .await?
            .fetch_secrets(req)
            .await
            .map(|r| r.into_inner())
    })
}

fn secrets(resp: &DiscoveryResponse) -> Vec<Secret> {
    resp.resources
        .iter()
        .map(|a| {
            assert_eq!(a.type_url, SECRET);
            Secret::decode(&a.value[..]).expect("a Secret")
        })
        .collect()
}

fn names(s: &[Secret]) -> Vec<&str> {
    s.iter().map(|s| s.name.as_str()).collect()
}

fn inline(d: &Option<DataSource>) -> Vec<u8> {
    match d.as_ref().and_then(|d| d.specifier.clone()) {
        Some(Specifier::InlineBytes(b)) => b,
        other => panic!("inline bytes expected, got {other:?}"),
    }
}

fn ders(pem_bytes: &[u8]) -> Vec<Vec<u8>> {
    pem_ders(std::str::from_utf8(pem_bytes).expect("PEM text"))
}

/// The chain and key of a TLS certificate secret, checked: the leaf is an
/// X.509-SVID for `id`, the key is the leaf's.
fn tls_certificate(s: &Secret, id: &str) -> (Vec<Vec<u8>>, Vec<u8>) {
    let Some(secret::Type::TlsCertificate(t)) = &s.r#type else {
        panic!("{}: a TLS certificate expected, got {:?}", s.name, s.r#type)
    };
    let chain = ders(&inline(&t.certificate_chain));
    assert_svid_leaf(&chain[0], id);
    let key_pem = String::from_utf8(inline(&t.private_key)).unwrap();
    let key = rcgen::KeyPair::from_pem(&key_pem).expect("a PKCS#8 key");
    let leaf = ironroot_testkit::svid::parse(&chain[0]);
    let spki = der::Encode::to_der(&leaf.tbs_certificate.subject_public_key_info).unwrap();
    assert_eq!(
        rcgen::PublicKeyData::subject_public_key_info(&key),
        spki,
        "the key is the leaf's"
    );
    (chain, key.serialize_der())
}

/// (trust domain, roots) of a validation context using the SPIFFE validator.
fn spiffe_domains(s: &Secret) -> Vec<(String, Vec<Vec<u8>>)> {
    let Some(secret::Type::ValidationContext(v)) = &s.r#type else {
        panic!(
            "{}: a validation context expected, got {:?}",
            s.name, s.r#type
        )
    };
    let c = v
        .custom_validator_config
        .as_ref()
        .expect("SPIFFE validator");
    assert_eq!(c.name, "envoy.tls.cert_validator.spiffe");
    let cfg =
        SpiffeCertValidatorConfig::decode(&c.typed_config.as_ref().unwrap().value[..]).unwrap();
    cfg.trust_domains
        .iter()
        .map(|t| (t.name.clone(), ders(&inline(&t.trust_bundle))))
        .collect()
}

fn create_entry(env: &Env, id: &str, parent: &str, uid: u32, ttl: u32) -> String {
    create_entry_federating(env, id, parent, uid, ttl, &[])
}

/// [`create_entry`] for an entry that federates with `federates_with`.
fn create_entry_federating(
    env: &Env,
    id: &str,
    parent: &str,
    uid: u32,
    ttl: u32,
    federates_with: &[&str],
) -> String {
    let (uid, ttl) = (format!("unix:uid:{uid}"), ttl.to_string());
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        parent,
        "--selector",
        &uid,
        "--x509-svid-ttl",
        &ttl,
        "--output",
        "json",
    ];
    for td in federates_with {
        args.extend(["--federates-with", td]);
    }
    let out = env.server.cli_ok(&args);
    let v: serde_json::Value = serde_json::from_str(&out).expect("entry json");
    v["entries"][0]["id"]
        .as_str()
        .expect("entry id")
        .to_string()
}

/// A CA certificate (DER) standing for another trust domain's root.
fn partner_root() -> Vec<u8> {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "partner.org root");
    p.self_signed(&rcgen::KeyPair::generate().unwrap())
        .unwrap()
        .der()
        .to_vec()
}

fn set_partner_bundle(env: &Env, root: &[u8]) {
    let path = env.dir.path().join("partner.pem");
    std::fs::write(
        &path,
        pem::encode(&pem::Pem::new("CERTIFICATE", root.to_vec())),
    )
    .unwrap();
    env.server.cli_ok(&[
        "bundle",
        "set",
        "--id",
        PARTNER,
        "--path",
        path.to_str().unwrap(),
        "--format",
        "pem",
    ]);
}

/// Polls FetchSecrets until `pred` holds for the answer to `req`.
fn wait_fetch(
    socket: &Path,
    req: &DiscoveryRequest,
    what: &str,
    pred: impl Fn(&Result<DiscoveryResponse, tonic::Status>) -> bool,
) -> Result<DiscoveryResponse, tonic::Status> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = fetch(socket, req.clone());
        if pred(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within 30s; last: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The server, a swtpm booted as the policy wants, the agent's SPIFFE ID.
fn setup(test: &str) -> (Env, ironroot_testkit::swtpm::Swtpm, Vec<u8>, String) {
    let env = good_env(test);
    let (tpm, log, agent_id) = booted_node(&env);
    (env, tpm, log, agent_id)
}

/// Prints the agent's log tail if the test fails.
struct Tail(&'static str);

impl Drop for Tail {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let p = ironroot_testkit::test_log_dir(self.0).join("agent.log");
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!(
                "--- tail of {} ---\n{}",
                p.display(),
                lines[lines.len().saturating_sub(60)..].join("\n")
            );
        }
    }
}

#[test]
fn sds_serves_spires_resource_names_to_their_owner_only() {
    const T: &str = "sds_resource_names";
    let _tail = Tail(T);
    let (env, tpm, log, agent_id) = setup(T);
    // The bundle first: an entry may federate only with a trust domain whose
    // bundle the server holds. One of the caller's entries federates with it.
    let partner = partner_root();
    set_partner_bundle(&env, &partner);
    let web_entry = create_entry(&env, WEB, &agent_id, 0, 0);
    let api_entry = create_entry_federating(&env, API, &agent_id, 0, 0, &["partner.org"]);
    create_entry(&env, NOT_MINE, &agent_id, 4242, 0);
    // SDS on the Workload API socket (the default).
    let agent = start_agent(&env, &tpm, &log, T);
    let own_roots = pem_ders(&env.server.cli_ok(&["bundle", "show"]));

    // By SPIFFE ID: the SVID and its key, verifiable to the trust domain's roots.
    let r = wait_fetch(&agent.socket, &request(&[WEB]), "the web SVID", |r| {
        r.is_ok()
    })
    .unwrap();
    assert_eq!(r.type_url, SECRET);
    assert_eq!(r.version_info, "", "FetchSecrets carries no version");
    let s = secrets(&r);
    assert_eq!(names(&s), [WEB]);
    let (chain, _) = tls_certificate(&s[0], WEB);
    webpki_verify(&chain, &own_roots, now()).expect("the SVID verifies to the bundle");

    // `default`: the caller's first SVID by entry ID, under the alias.
    let (first_id, first_entry) = if web_entry < api_entry {
        (WEB, &web_entry)
    } else {
        (API, &api_entry)
    };
    let s = secrets(&fetch(&agent.socket, request(&["default"])).unwrap());
    assert_eq!(names(&s), ["default"], "first entry is {first_entry}");
    tls_certificate(&s[0], first_id);

    // ROOTCA and the trust domain ID: the own bundle, as a SPIFFE validator.
    for name in ["ROOTCA", "spiffe://example.org"] {
        let s = secrets(&fetch(&agent.socket, request(&[name])).unwrap());
        assert_eq!(names(&s), [name]);
        assert_eq!(
            spiffe_domains(&s[0]),
            [("example.org".to_string(), own_roots.clone())]
        );
    }

    // ALL: the own and the federated trust domain in one validator config.
    let s = secrets(&fetch(&agent.socket, request(&["ALL"])).unwrap());
    assert_eq!(
        spiffe_domains(&s[0]),
        [
            ("example.org".to_string(), own_roots.clone()),
            ("partner.org".to_string(), vec![partner.clone()]),
        ]
    );
    // A federated trust domain by its ID.
    let s = secrets(&fetch(&agent.socket, request(&[PARTNER])).unwrap());
    assert_eq!(names(&s), [PARTNER]);
    assert_eq!(
        spiffe_domains(&s[0]),
        [("partner.org".to_string(), vec![partner.clone()])]
    );

    // No names: every bundle by trust domain ID and every own SVID by SPIFFE ID.
    let s = secrets(&fetch(&agent.socket, request(&[])).unwrap());
    let mut got = names(&s);
    got.sort();
    let mut want = vec![API, WEB, "spiffe://example.org", PARTNER];
    want.sort();
    assert_eq!(got, want, "never another caller's SVID");

    // Another workload's SPIFFE ID (and a trust domain the agent does not
    // know), alone or among names it may have: refused whole, naming them.
    for req in [
        &[NOT_MINE][..],
        &[WEB, NOT_MINE, "ROOTCA"],
        &["spiffe://unknown.org"],
    ] {
        let e = fetch(&agent.socket, request(req)).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains("not authorized"), "{e:?}");
        let refused = req.iter().find(|n| !matches!(**n, WEB | "ROOTCA")).unwrap();
        assert!(e.message().contains(refused), "{e:?}");
        assert!(
            !e.message().contains(&format!("\"{WEB}\"")),
            "only the refused names: {e:?}"
        );
    }

    // An Envoy older than 1.18 gets `trusted_ca`, and no ALL.
    let mut old = request(&["ROOTCA"]);
    old.node.as_mut().unwrap().user_agent_version_type =
        Some(UserAgentVersionType::UserAgentBuildVersion(BuildVersion {
            version: Some(SemanticVersion {
                major_number: 1,
                minor_number: 17,
                patch: 4,
            }),
            metadata: None,
        }));
    let s = secrets(&fetch(&agent.socket, old.clone()).unwrap());
    let Some(secret::Type::ValidationContext(v)) = &s[0].r#type else {
        panic!("validation context expected")
    };
    assert_eq!(ders(&inline(&v.trusted_ca)), own_roots);
    assert!(v.custom_validator_config.is_none());
    old.resource_names = vec!["ALL".into()];
    let e = fetch(&agent.socket, old).unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("SPIFFE certificate validator"),
        "{e:?}"
    );

    // Another resource type, and the delta protocol: refused with the reason.
    let mut other = request(&["ROOTCA"]);
    other.type_url = "type.googleapis.com/envoy.config.cluster.v3.Cluster".into();
    let e = fetch(&agent.socket, other).unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("is not served here"), "{e:?}");
    let e = rt()
        .block_on(async {
            connect(&agent.socket)
                .await
                .unwrap()
                .delta_secrets(tokio_stream::iter(vec![DeltaDiscoveryRequest::default()]))
                .await
        })
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");
    assert!(e.message().contains("StreamSecrets"), "{e:?}");
}

/// The next message on the stream, within `within`.
async fn next(stream: &mut Streaming<DiscoveryResponse>, within: Duration) -> DiscoveryResponse {
    tokio::time::timeout(within, stream.message())
        .await
        .expect("a response in time")
        .expect("the stream stays healthy")
        .expect("the stream stays open")
}

/// An answer to `resp` (an ACK with its version, or a NACK with another).
fn answer(resp: &DiscoveryResponse, names: &[&str], version: &str) -> DiscoveryRequest {
    let mut r = request(names);
    r.node = None; // Envoy sends the node on the first request only.
    r.version_info = version.into();
    r.response_nonce = resp.nonce.clone();
    r
}

fn leaf_serial(s: &[Secret], id: &str) -> Vec<u8> {
    let svid = s.iter().find(|s| s.name == id).expect("the SVID");
    serial(&tls_certificate(svid, id).0[0])
}

#[test]
fn sds_stream_pushes_rotations_and_keeps_going_after_a_nack() {
    const T: &str = "sds_stream";
    let _tail = Tail(T);
    let (env, tpm, log, agent_id) = setup(T);
    // A 12 s SVID: renewed at half life, so rotations come every 6-11 s.
    let web_entry = create_entry(&env, WEB, &agent_id, 0, 12);
    // SDS on a socket of its own.
    let sds_socket = env.dir.path().join("agent-run/sock/sds.sock");
    let agent = start_agent_with(
        &env,
        &tpm,
        &log,
        T,
        &format!("[sds]\nsocket_path = \"{}\"\n", sds_socket.display()),
    );
    wait_fetch(
        &sds_socket,
        &request(&[WEB]),
        "the web SVID over SDS",
        |r| r.is_ok(),
    )
    .unwrap();
    // The Workload API socket does not serve SDS then.
    let e = fetch(&agent.socket, request(&[WEB])).unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unimplemented, "{e:?}");

    rt().block_on(async {
        let (tx, rx) = mpsc::channel(8);
        let mut sds = connect(&sds_socket).await.unwrap();
        tx.send(request(&[WEB, "ROOTCA"])).await.unwrap();
        let mut stream = sds
            .stream_secrets(ReceiverStream::new(rx))
            .await
            .expect("StreamSecrets")
            .into_inner();
        let first = next(&mut stream, Duration::from_secs(10)).await;
        assert_eq!(first.version_info, "1");
        assert!(!first.nonce.is_empty());
        let s = secrets(&first);
        assert_eq!(names(&s), [WEB, "ROOTCA"]);
        let first_serial = leaf_serial(&s, WEB);

        // NACK: Envoy could not apply it. The stream stays; nothing is resent.
        let mut nack = answer(&first, &[WEB, "ROOTCA"], "");
        nack.error_detail = Some(RpcStatus {
            code: 3,
            message: "sds-test: cannot load the certificate".into(),
            details: vec![],
        });
        tx.send(nack).await.unwrap();
        // A request with a stale nonce is ignored, new names and all.
        let mut stale = answer(&first, &["ALL"], "1");
        stale.response_nonce = "not-a-nonce-we-sent".into();
        tx.send(stale).await.unwrap();

        // The rotation is pushed: a new version with a new certificate, for
        // the names of the last valid request.
        let t0 = Instant::now();
        let rotated = next(&mut stream, Duration::from_secs(20)).await;
        assert_eq!(rotated.version_info, "2", "pushed after {:?}", t0.elapsed());
        assert_ne!(rotated.nonce, first.nonce);
        let s = secrets(&rotated);
        assert_eq!(names(&s), [WEB, "ROOTCA"], "the stale request was ignored");
        assert_ne!(leaf_serial(&s, WEB), first_serial, "a new certificate");

        // ACK, then ask for ALL: answered at once at the current version.
        tx.send(answer(&rotated, &[WEB, "ROOTCA"], "2"))
            .await
            .unwrap();
        tx.send(answer(&rotated, &["ALL"], "2")).await.unwrap();
        let all = next(&mut stream, Duration::from_secs(5)).await;
        assert_eq!(all.version_info, "2");
        let s = secrets(&all);
        assert_eq!(names(&s), ["ALL"]);
        assert_eq!(spiffe_domains(&s[0]).len(), 1, "no federated bundle yet");
        tx.send(answer(&all, &["ALL"], "2")).await.unwrap();

        // A federated bundle set on the server, and the entry updated to
        // federate with it: pushed too.
        let partner = partner_root();
        set_partner_bundle(&env, &partner);
        env.server.cli_ok(&[
            "entry",
            "update",
            "--entry-id",
            &web_entry,
            "--spiffe-id",
            WEB,
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:0",
            "--x509-svid-ttl",
            "12",
            "--federates-with",
            "partner.org",
        ]);
        let fed = loop {
            let m = next(&mut stream, Duration::from_secs(20)).await;
            tx.send(answer(&m, &["ALL"], &m.version_info))
                .await
                .unwrap();
            let s = secrets(&m);
            let domains = spiffe_domains(&s[0]);
            if domains.len() == 2 {
                break (m.version_info.clone(), domains);
            }
        };
        assert!(
            fed.0.parse::<u64>().unwrap() >= 3,
            "a new version: {}",
            fed.0
        );
        assert_eq!(fed.1[1], ("partner.org".to_string(), vec![partner]));
    });

    // The NACK's error detail is in the agent's log.
    let log = std::fs::read_to_string(ironroot_testkit::test_log_dir(T).join("agent.log")).unwrap();
    assert!(
        log.contains("sds-test: cannot load the certificate"),
        "NACK not logged"
    );
    assert!(log.contains("stale nonce"), "stale nonce not logged");
}
