//! The admin API over mTLS on the Node API's port, against the real server on SoftHSM:
//! an SVID whose SPIFFE ID is an entry's with `admin = true` (signed by the server's CA) or
//! listed in `[admin] admin_ids` may list and create entries, audited by its SPIFFE ID;
//! an SVID whose admin entry has expired,
//! an ordinary workload SVID, an agent SVID, an expired SVID, an SVID of another CA (of
//! another trust domain, or forging ours) and a caller without a certificate are refused;
//! an entry whose `admin` flag is removed stops authorizing at the next call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use ironroot_api::admin::{self as pb, admin_client::AdminClient};
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_api::tls::SpiffeServerVerifier;
use ironroot_audit::Event;
use ironroot_server::cli::{AdminTlsArgs, ClientArgs, Output};
use ironroot_testkit::server::{server_bin, server_config, td, ServerProcess};
use ironroot_testkit::softhsm::SoftHsm;
use tonic::transport::{Channel, Endpoint, Uri};

const PARENT: &str = "spiffe://example.org/spire/agent/join_token/node";

/// The refusal of a caller that is not an admin, as the operator reads it.
const NOT_ADMIN: &str =
    "no entry with admin = true has this SPIFFE ID and it is not in [admin] admin_ids";

/// A server with the Node API (and so the admin API over TLS) on a free port.
struct Fixture {
    server: ServerProcess,
    /// The Node API's `host:port`.
    address: String,
    dir: tempfile::TempDir,
    _hsm: SoftHsm,
}

impl Fixture {
    /// `admin_ids` goes into `[admin] admin_ids`.
    fn start(test: &str, admin_ids: &[&str]) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let hsm = SoftHsm::new(&dir.path().join("hsm"));
        hsm.init_token("ca");
        let port = ironroot_testkit::free_port();
        let address = format!("127.0.0.1:{port}");
        let conf = server_config(
            dir.path(),
            &hsm,
            "ca",
            &format!("[node_api]\nlisten = \"{address}\"\n"),
        );
        let ids: Vec<String> = admin_ids.iter().map(|i| format!("{i:?}")).collect();
        let text = std::fs::read_to_string(&conf).unwrap().replacen(
            "[admin]\n",
            &format!("[admin]\nadmin_ids = [{}]\n", ids.join(", ")),
            1,
        );
        std::fs::write(&conf, text).unwrap();
        let server = ServerProcess::start(test, &conf, &hsm, &dir.path().join("admin.sock"));
        Fixture {
            server,
            address,
            dir,
            _hsm: hsm,
        }
    }

    /// An X.509-SVID for `id` minted by the server's CA (through the admin socket), its
    /// `svid.pem`, `svid.key` and `bundle.pem` in a directory of its own.
    fn mint(&self, id: &str, ttl_secs: u32) -> PathBuf {
        let out = self
            .dir
            .path()
            .join(format!("svid-{}", id.replace('/', "_")));
        let ttl = ttl_secs.to_string();
        self.server.cli_ok(&[
            "x509",
            "mint",
            "--spiffe-id",
            id,
            "--ttl",
            &ttl,
            "--write",
            out.to_str().unwrap(),
        ]);
        out
    }

    /// Client arguments presenting the SVID in `svid_dir` to the admin API over TLS.
    fn tls_args(&self, svid_dir: &Path) -> ClientArgs {
        ClientArgs {
            socket_path: None,
            config: None,
            tls: AdminTlsArgs {
                tls_address: Some(self.address.clone()),
                svid_cert: Some(svid_dir.join("svid.pem")),
                svid_key: Some(svid_dir.join("svid.key")),
                bundle: Some(self.bundle()),
            },
            output: Output::Text,
        }
    }

    /// The server's bundle (PEM), as `bundle show` prints it.
    fn bundle(&self) -> PathBuf {
        let p = self.dir.path().join("bundle.pem");
        if !p.exists() {
            std::fs::write(&p, self.server.cli_ok(&["bundle", "show"])).unwrap();
        }
        p
    }

    /// The admin client on the socket (root), to set things up.
    async fn socket_client(&self) -> AdminClient<Channel> {
        ironroot_server::client::connect(&ClientArgs {
            socket_path: Some(self.server.socket.clone()),
            config: None,
            tls: AdminTlsArgs::default(),
            output: Output::Text,
        })
        .await
        .expect("admin socket")
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn fields(spiffe_id: &str, admin: bool) -> pb::EntryFields {
    pb::EntryFields {
        spiffe_id: spiffe_id.into(),
        parent_id: PARENT.into(),
        selectors: vec![pb::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        admin,
        ..Default::default()
    }
}

/// Creates an entry over the socket; returns it.
async fn create_over_socket(f: &Fixture, spiffe_id: &str, admin: bool) -> pb::Entry {
    f.socket_client()
        .await
        .create_entry(pb::CreateEntryRequest {
            entry: Some(fields(spiffe_id, admin)),
        })
        .await
        .expect("create over the socket")
        .into_inner()
}

/// How a call over TLS ended: the listing, or the refusal as (code, message). A refusal
/// at the TLS handshake (the server's alert ends the connection) is `Unavailable` or
/// `Unknown` with the transport's words.
async fn list_over_tls(
    args: &ClientArgs,
) -> Result<pb::ListEntriesResponse, (tonic::Code, String)> {
    let mut c = ironroot_server::client::connect(args)
        .await
        .map_err(|e| (tonic::Code::Unavailable, format!("{e:#}")))?;
    c.list_entries(pb::ListEntriesRequest::default())
        .await
        .map(|r| r.into_inner())
        .map_err(|s| (s.code(), s.message().to_owned()))
}

async fn create_over_tls(
    args: &ClientArgs,
    spiffe_id: &str,
) -> Result<pb::Entry, (tonic::Code, String)> {
    let mut c = ironroot_server::client::connect(args)
        .await
        .map_err(|e| (tonic::Code::Unavailable, format!("{e:#}")))?;
    c.create_entry(pb::CreateEntryRequest {
        entry: Some(fields(spiffe_id, false)),
    })
    .await
    .map(|r| r.into_inner())
    .map_err(|s| (s.code(), s.message().to_owned()))
}

/// How many entries have `spiffe_id` (read over the socket).
async fn count(f: &Fixture, spiffe_id: &str) -> usize {
    f.socket_client()
        .await
        .list_entries(pb::ListEntriesRequest {
            by_spiffe_id: spiffe_id.into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entries
        .len()
}

#[test]
fn an_admin_entry_svid_may_list_and_create_entries_until_its_admin_flag_is_removed() {
    let f = Fixture::start("admin_tls_admin_entry", &[]);
    let rt = rt();
    rt.block_on(async {
        let ops = create_over_socket(&f, "spiffe://example.org/ops", true).await;
        let args = f.tls_args(&f.mint("spiffe://example.org/ops", 0));

        let listed = list_over_tls(&args).await.expect("an admin SVID may list");
        assert!(listed.entries.iter().any(|e| e.id == ops.id));
        let made = create_over_tls(&args, "spiffe://example.org/made-by-ops")
            .await
            .expect("an admin SVID may create");
        assert_eq!(count(&f, "spiffe://example.org/made-by-ops").await, 1);

        // The change is audited with the caller's SPIFFE ID as the actor.
        let records = ironroot_audit::read_records(&f.dir.path().join("data/audit")).unwrap();
        let audited = records.iter().any(|r| {
            matches!(&r.event, Event::Admin { actor, action, target, outcome }
                if actor == "spiffe://example.org/ops"
                    && action == "entry.create"
                    && target.contains(&made.id)
                    && outcome == "ok")
        });
        assert!(
            audited,
            "no entry.create record by spiffe://example.org/ops"
        );

        // The flag removed: the very next call is refused, naming the rule.
        let mut socket = f.socket_client().await;
        socket
            .update_entry(pb::UpdateEntryRequest {
                id: ops.id.clone(),
                entry: Some(fields("spiffe://example.org/ops", false)),
                ..Default::default()
            })
            .await
            .expect("update over the socket");
        let (code, msg) = list_over_tls(&args).await.expect_err("no longer an admin");
        assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
        assert_eq!(
            msg,
            format!("spiffe://example.org/ops is not an admin: {NOT_ADMIN}")
        );
        let (code, _) = create_over_tls(&args, "spiffe://example.org/after")
            .await
            .expect_err("no longer an admin");
        assert_eq!(code, tonic::Code::PermissionDenied);
        assert_eq!(count(&f, "spiffe://example.org/after").await, 0);
    });
}

#[test]
fn ordinary_and_agent_svids_are_refused() {
    let f = Fixture::start("admin_tls_ordinary", &[]);
    let rt = rt();
    rt.block_on(async {
        create_over_socket(&f, "spiffe://example.org/web", false).await;
        // An entry without the admin flag, and no entry at all.
        for id in ["spiffe://example.org/web", "spiffe://example.org/no-entry"] {
            let args = f.tls_args(&f.mint(id, 0));
            let (code, msg) = list_over_tls(&args).await.expect_err("not an admin");
            assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
            assert_eq!(msg, format!("{id} is not an admin: {NOT_ADMIN}"));
            let (code, _) = create_over_tls(&args, "spiffe://example.org/sneaky")
                .await
                .expect_err("not an admin");
            assert_eq!(code, tonic::Code::PermissionDenied);
        }
        // An admin entry past its `expires_at` is no longer served, nor an admin.
        let mut expired = fields("spiffe://example.org/retired", true);
        expired.expires_at = 1_000_000_000;
        f.socket_client()
            .await
            .create_entry(pb::CreateEntryRequest {
                entry: Some(expired),
            })
            .await
            .expect("an entry that has expired");
        let args = f.tls_args(&f.mint("spiffe://example.org/retired", 0));
        let (code, msg) = list_over_tls(&args).await.expect_err("expired entry");
        assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
        assert!(msg.contains(NOT_ADMIN), "{msg}");

        // (No entry can have an ID under /spire/: the store refuses the reserved path.)
        let agent = "spiffe://example.org/spire/agent/join_token/abc";
        let args = f.tls_args(&f.mint(agent, 0));
        let (code, msg) = list_over_tls(&args)
            .await
            .expect_err("agents are not admins");
        assert_eq!(code, tonic::Code::PermissionDenied, "{msg}");
        assert_eq!(
            msg,
            format!(
                "{agent} is not an admin: agent and server SVIDs (under /spire/) are never \
                 admins by entry and it is not in [admin] admin_ids"
            )
        );
        assert_eq!(count(&f, "spiffe://example.org/sneaky").await, 0);
    });
}

#[test]
fn admin_ids_authorize_without_an_entry_agents_included() {
    let agent = "spiffe://example.org/spire/agent/join_token/ops-node";
    let f = Fixture::start(
        "admin_tls_admin_ids",
        &["spiffe://example.org/break-glass", agent],
    );
    let rt = rt();
    rt.block_on(async {
        for id in ["spiffe://example.org/break-glass", agent] {
            let args = f.tls_args(&f.mint(id, 0));
            list_over_tls(&args).await.expect("listed in admin_ids");
        }
        let args = f.tls_args(&f.mint("spiffe://example.org/not-listed", 0));
        let (code, _) = list_over_tls(&args).await.expect_err("not listed");
        assert_eq!(code, tonic::Code::PermissionDenied);
    });
}

#[test]
fn an_expired_admin_svid_is_refused_on_an_open_connection_and_at_the_handshake() {
    let f = Fixture::start("admin_tls_expired", &[]);
    let rt = rt();
    rt.block_on(async {
        create_over_socket(&f, "spiffe://example.org/ops", true).await;
        let args = f.tls_args(&f.mint("spiffe://example.org/ops", 2));
        let mut open = ironroot_server::client::connect(&args).await.unwrap();
        open.list_entries(pb::ListEntriesRequest::default())
            .await
            .expect("valid while unexpired");
        tokio::time::sleep(Duration::from_secs(3)).await;
        // The connection verified the SVID at its handshake; every call checks it again.
        let s = open
            .list_entries(pb::ListEntriesRequest::default())
            .await
            .expect_err("expired since the handshake");
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{}", s.message());
        assert!(
            s.message().contains("unexpired") && s.message().contains("Expired"),
            "{}",
            s.message()
        );
        // A new connection is refused at the handshake; the server's log names why.
        let (code, msg) = create_over_tls(&args, "spiffe://example.org/late")
            .await
            .expect_err("expired");
        assert_ne!(code, tonic::Code::Ok, "{msg}");
        assert_eq!(count(&f, "spiffe://example.org/late").await, 0);
        let log = std::fs::read_to_string(&f.server.log).unwrap();
        assert!(
            log.contains("node API TLS handshake failed") && log.contains("Expired"),
            "the server's log does not say the SVID expired:\n{log}"
        );
    });
}

#[test]
fn svids_of_another_ca_are_refused_whatever_trust_domain_they_name() {
    let f = Fixture::start("admin_tls_foreign", &["spiffe://example.org/ops"]);
    let certs = f.dir.path().join("foreign");
    std::fs::create_dir_all(&certs).unwrap();
    let ca = ironroot_testkit::certs::ca(&certs, "foreign-ca");
    let rt = rt();
    rt.block_on(async {
        // Our own trust domain's name (and an ID in admin_ids), or another's: the CA is not ours.
        for (name, id) in [
            ("forged", "spiffe://example.org/ops"),
            ("other", "spiffe://other.org/ops"),
        ] {
            let leaf = ironroot_testkit::certs::leaf(&certs, name, &format!("URI:{id}"), &ca);
            let mut args = f.tls_args(&certs);
            args.tls.svid_cert = Some(leaf.cert);
            args.tls.svid_key = Some(leaf.key);
            let (code, msg) = create_over_tls(&args, "spiffe://example.org/foreign")
                .await
                .expect_err("another CA");
            assert_ne!(code, tonic::Code::Ok, "{msg}");
        }
        assert_eq!(count(&f, "spiffe://example.org/foreign").await, 0);
        let log = std::fs::read_to_string(&f.server.log).unwrap();
        assert!(
            log.contains("does not verify to the trust bundle"),
            "the server's log does not say why:\n{log}"
        );
        // The admin ID itself, from our CA, is accepted on the same port.
        let args = f.tls_args(&f.mint("spiffe://example.org/ops", 0));
        list_over_tls(&args).await.expect("admin_ids, our CA");
    });
}

#[test]
fn a_caller_without_a_client_certificate_is_unauthenticated() {
    let f = Fixture::start("admin_tls_no_cert", &[]);
    let roots = ironroot_testkit::server::pem_ders(&std::fs::read_to_string(f.bundle()).unwrap());
    let rt = rt();
    rt.block_on(async {
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(SpiffeServerVerifier::new(roots, SpiffeId::server(&td())))
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
        let address = f.address.clone();
        let channel = Endpoint::try_from(format!("http://{address}"))
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let (connector, address) = (connector.clone(), address.clone());
                async move {
                    let tcp = tokio::net::TcpStream::connect(address).await?;
                    let name = rustls::pki_types::ServerName::try_from("ironroot-server")
                        .map_err(std::io::Error::other)?;
                    Ok::<_, std::io::Error>(TokioIo::new(connector.connect(name, tcp).await?))
                }
            }))
            .await
            .expect("TLS without a client certificate (as a node attesting for the first time)");
        let s = AdminClient::new(channel)
            .list_entries(pb::ListEntriesRequest::default())
            .await
            .expect_err("no client certificate");
        assert_eq!(s.code(), tonic::Code::Unauthenticated, "{}", s.message());
        assert!(
            s.message().contains("none was presented"),
            "{}",
            s.message()
        );
    });
}

#[test]
fn the_cli_reaches_the_admin_api_over_tls() {
    let f = Fixture::start("admin_tls_cli", &[]);
    f.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/ops",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:0",
        "--admin",
    ]);
    let cli = |svid: &Path| {
        std::process::Command::new(server_bin())
            .args(["entry", "show", "--tls-address", &f.address, "--svid-cert"])
            .arg(svid.join("svid.pem"))
            .arg("--svid-key")
            .arg(svid.join("svid.key"))
            .arg("--bundle")
            .arg(f.bundle())
            .args(["--output", "json"])
            .output()
            .unwrap()
    };
    let out = cli(&f.mint("spiffe://example.org/ops", 0));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spiffe://example.org/ops"));
    let out = cli(&f.mint("spiffe://example.org/web", 0));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("spiffe://example.org/web is not an admin")
            && err.contains("PermissionDenied"),
        "{err}"
    );
}

/// A caller that keeps being refused is answered RESOURCE_EXHAUSTED without being checked
/// once its budget (`admin_refusal_burst`, 20 by default) is spent; an admin on the same
/// host, with its own SVID, is not held up by it; refusals are not logged one line each.
#[test]
fn a_caller_refused_again_and_again_is_cut_off_and_an_admin_beside_it_is_not() {
    let admin = "spiffe://example.org/break-glass";
    let f = Fixture::start("admin_tls_refusal_budget", &[admin]);
    let rt = rt();
    rt.block_on(async {
        let probe = f.tls_args(&f.mint("spiffe://example.org/prober", 0));
        let admin = f.tls_args(&f.mint(admin, 0));
        let mut codes = Vec::new();
        for _ in 0..30 {
            codes.push(list_over_tls(&probe).await.expect_err("never an admin"));
        }
        let denied = codes
            .iter()
            .take_while(|(c, _)| *c == tonic::Code::PermissionDenied)
            .count();
        // The refill (1/s) may add a token or two while the calls run.
        assert!(
            (20..=23).contains(&denied),
            "{denied} refusals before the cut: {codes:?}"
        );
        let (code, message) = codes.last().unwrap();
        assert_eq!(*code, tonic::Code::ResourceExhausted, "{message}");
        assert!(
            message.contains("node_api.limits.admin_refusals_per_ip_per_second"),
            "{message}"
        );
        list_over_tls(&admin)
            .await
            .expect("the admin on the same host is not held up");
    });
    let log = std::fs::read_to_string(&f.server.log).unwrap_or_default();
    let lines = log.matches("admin call over TLS refused").count();
    assert!(
        (1..=3).contains(&lines),
        "refusals are logged once per 10 s, not per call: {lines} lines"
    );
}
