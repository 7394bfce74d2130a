//! Envoy SDS figures against the real release binaries (`make bench`;
//! docs/benchmarks.md): the release server (SoftHSM CA) and `ironroot-agent
//! run` attesting with `tpm_ek` to a swtpm, this bench process as the Envoy
//! (uid 0, default attestors: unix + process), an SDS client built from
//! Envoy's protos (envoy-types), entries changed through the admin gRPC API.
//!
//! 1. First response latency, p50 / p99, for `default` + `ROOTCA`:
//!    connect + StreamSecrets (what an Envoy does when it starts), a new
//!    StreamSecrets on an open connection, FetchSecrets on an open connection;
//! 2. rotation push: the entry is updated (a new revision: the agent gets a
//!    new SVID signed) -> the new certificate on a held stream, 10 runs; end
//!    to end: the admin RPC, the server's change notice, the agent's sync and
//!    new SVID (signed in SoftHSM), the push;
//! 3. the same rotation pushed to 100 held streams (one connection each).
//!
//! Needs the release binaries:
//! `cargo build --release -p ironroot-server -p ironroot-agent`.

use std::path::Path;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{data_source::Specifier, Node};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{secret, Secret};
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use hyper_util::rt::TokioIo;
use ironroot_api::admin::{self as admin_pb, admin_client::AdminClient};
use ironroot_server::cli::{ClientArgs, Output};
use ironroot_testkit::server::TD;
use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Streaming;

mod support;
use support::{ms, percentile};

const WARMUP: usize = 50;
const CALLS: usize = 1000;
const FRESH_CALLS: usize = 500;
const ROTATIONS: usize = 10;
const FANOUT_STREAMS: usize = 100;
const SECRET: &str = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret";

type Sds = SecretDiscoveryServiceClient<Channel>;
type Admin = AdminClient<Channel>;

fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    format!(
        "p50 {}, p99 {}, max {} ({} samples)",
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.99)),
        ms(*v.last().expect("samples")),
        v.len()
    )
}

async fn connect(socket: &Path) -> Result<Sds, tonic::transport::Error> {
    let path = socket.to_owned();
    let channel = Endpoint::try_from("http://sds_server")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let p = path.clone();
            async move {
                Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
            }
        }))
        .await?;
    Ok(SecretDiscoveryServiceClient::new(channel))
}

fn request(names: &[&str]) -> DiscoveryRequest {
    DiscoveryRequest {
        node: Some(Node {
            id: "bench-envoy".into(),
            ..Default::default()
        }),
        resource_names: names.iter().map(|s| s.to_string()).collect(),
        type_url: SECRET.into(),
        ..Default::default()
    }
}

/// The leaf certificate PEM of the TLS certificate secret in `resp`.
fn leaf(resp: &DiscoveryResponse) -> Vec<u8> {
    resp.resources
        .iter()
        .map(|a| Secret::decode(&a.value[..]).expect("secret"))
        .find_map(|s| match s.r#type {
            Some(secret::Type::TlsCertificate(t)) => {
                match t.certificate_chain.and_then(|d| d.specifier) {
                    Some(Specifier::InlineBytes(b)) => Some(b),
                    _ => None,
                }
            }
            _ => None,
        })
        .expect("a TLS certificate in the response")
}

/// A held StreamSecrets stream: its request sender (for ACKs) and responses.
struct Held {
    tx: mpsc::Sender<DiscoveryRequest>,
    rx: Streaming<DiscoveryResponse>,
    _client: Sds,
}

/// Opens StreamSecrets for `default` + `ROOTCA` on `c`; returns it with its first response.
async fn open_stream(mut c: Sds) -> (Held, DiscoveryResponse) {
    let (tx, reqs) = mpsc::channel(4);
    tx.send(request(&["default", "ROOTCA"]))
        .await
        .expect("queue request");
    let mut rx = c
        .stream_secrets(ReceiverStream::new(reqs))
        .await
        .expect("StreamSecrets")
        .into_inner();
    let first = rx
        .message()
        .await
        .expect("first response")
        .expect("stream ended");
    assert_eq!(first.resources.len(), 2);
    (Held { tx, rx, _client: c }, first)
}

impl Held {
    async fn ack(&self, resp: &DiscoveryResponse) {
        let mut r = request(&["default", "ROOTCA"]);
        r.node = None;
        r.version_info = resp.version_info.clone();
        r.response_nonce = resp.nonce.clone();
        self.tx.send(r).await.expect("ack");
    }

    /// Waits for a response whose leaf differs from `old`, ACKing what comes.
    async fn wait_new_leaf(&mut self, old: &[u8]) -> Vec<u8> {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(30), self.rx.message())
                .await
                .expect("push within 30 s")
                .expect("stream")
                .expect("stream ended");
            self.ack(&m).await;
            let l = leaf(&m);
            if l != old {
                return l;
            }
        }
    }
}

async fn create_entry(admin: &mut Admin, spiffe_id: &str, parent_id: &str) -> String {
    admin
        .create_entry(admin_pb::CreateEntryRequest {
            entry: Some(entry_fields(spiffe_id, parent_id, "")),
        })
        .await
        .expect("create entry")
        .into_inner()
        .id
}

fn entry_fields(spiffe_id: &str, parent_id: &str, hint: &str) -> admin_pb::EntryFields {
    admin_pb::EntryFields {
        spiffe_id: spiffe_id.into(),
        parent_id: parent_id.into(),
        selectors: vec![admin_pb::Selector {
            r#type: "unix".into(),
            value: "uid:0".into(),
        }],
        hint: hint.into(),
        ..Default::default()
    }
}

/// A new revision of the entry: the agent signs a new SVID for it.
async fn rotate(admin: &mut Admin, id: &str, spiffe_id: &str, parent_id: &str, n: usize) {
    admin
        .update_entry(admin_pb::UpdateEntryRequest {
            id: id.into(),
            entry: Some(entry_fields(spiffe_id, parent_id, &format!("rotation {n}"))),
            expected_revision: 0,
        })
        .await
        .expect("update entry");
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // --- set-up: server, swtpm, agent, one entry for uid 0
    let state = SwtpmState::shared("bench-sds", &SwtpmOptions::default());
    let tpm = state.spawn();
    let env = support::start(state, "bench_sds");
    ironroot_agent::simulate::replay_into(&tpm.tcti(), &env.log).expect("simulated boot");
    let parent = support::agent::agent_id(&tpm.tcti());
    let mut admin = rt
        .block_on(ironroot_server::client::connect(&ClientArgs {
            socket_path: Some(env.server.socket.clone()),
            config: None,
            tls: Default::default(),
            output: Output::Text,
        }))
        .expect("admin client");
    let spiffe_id = format!("spiffe://{TD}/bench/envoy");
    let entry = rt.block_on(create_entry(&mut admin, &spiffe_id, &parent));
    let agent = support::agent::start_agent(&env, &tpm.tcti(), "agent", "bench_sds", "");
    let socket = agent.socket.clone();
    rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(mut c) = connect(&socket).await {
                if c.fetch_secrets(request(&["default"])).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "no SVID over SDS within 120 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    // --- 1. first response latency
    let fresh = rt.block_on(async {
        let mut v = Vec::with_capacity(FRESH_CALLS);
        for i in 0..WARMUP + FRESH_CALLS {
            let t = Instant::now();
            let c = connect(&socket).await.expect("connect");
            let (held, _) = open_stream(c).await;
            let d = t.elapsed();
            drop(held);
            if i >= WARMUP {
                v.push(d);
            }
        }
        v
    });
    println!(
        "SDS StreamSecrets first response (default + ROOTCA), connect + stream: {}",
        summary(fresh)
    );
    let (stream_open, fetch) = rt.block_on(async {
        let c = connect(&socket).await.expect("connect");
        let mut streams = Vec::with_capacity(CALLS);
        for i in 0..WARMUP + CALLS {
            let t = Instant::now();
            let (held, _) = open_stream(c.clone()).await;
            let d = t.elapsed();
            drop(held);
            if i >= WARMUP {
                streams.push(d);
            }
        }
        let mut c = c;
        let mut fetches = Vec::with_capacity(CALLS);
        for i in 0..WARMUP + CALLS {
            let t = Instant::now();
            let r = c
                .fetch_secrets(request(&["default", "ROOTCA"]))
                .await
                .expect("FetchSecrets")
                .into_inner();
            let d = t.elapsed();
            assert_eq!(r.resources.len(), 2);
            if i >= WARMUP {
                fetches.push(d);
            }
        }
        (streams, fetches)
    });
    println!(
        "  new StreamSecrets on an open connection: {}",
        summary(stream_open)
    );
    println!("  FetchSecrets on an open connection: {}", summary(fetch));

    // --- 2. rotation -> push on a held stream
    let (lat, rpc) = rt.block_on(async {
        let c = connect(&socket).await.expect("connect");
        let (mut held, first) = open_stream(c).await;
        held.ack(&first).await;
        let mut current = leaf(&first);
        let mut lat = Vec::with_capacity(ROTATIONS);
        let mut rpc = Vec::with_capacity(ROTATIONS);
        for n in 0..ROTATIONS {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let t = Instant::now();
            rotate(&mut admin, &entry, &spiffe_id, &parent, n).await;
            rpc.push(t.elapsed());
            current = held.wait_new_leaf(&current).await;
            lat.push(t.elapsed());
        }
        (lat, rpc)
    });
    println!(
        "SDS rotation push: entry updated (admin gRPC) -> new certificate on a held stream: {} (of which UpdateEntry RPC {})",
        summary(lat),
        summary(rpc)
    );

    // --- 3. the same rotation pushed to 100 held streams
    let fanout = rt.block_on(async {
        let mut set = JoinSet::new();
        for _ in 0..FANOUT_STREAMS {
            let p = socket.clone();
            set.spawn(async move {
                let c = connect(&p).await.expect("connect");
                let (held, first) = open_stream(c).await;
                held.ack(&first).await;
                (held, leaf(&first))
            });
        }
        let mut held = Vec::with_capacity(FANOUT_STREAMS);
        while let Some(r) = set.join_next().await {
            held.push(r.expect("stream task"));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let t = Instant::now();
        rotate(&mut admin, &entry, &spiffe_id, &parent, ROTATIONS).await;
        let mut set = JoinSet::new();
        for (mut h, old) in held {
            set.spawn(async move {
                h.wait_new_leaf(&old).await;
                (h, t.elapsed())
            });
        }
        let mut arrivals = Vec::with_capacity(FANOUT_STREAMS);
        let mut keep = Vec::with_capacity(FANOUT_STREAMS);
        while let Some(r) = set.join_next().await {
            let (h, d) = r.expect("push task");
            arrivals.push(d);
            keep.push(h);
        }
        arrivals
    });
    let mut fanout = fanout;
    fanout.sort();
    println!(
        "  the rotation pushed to {FANOUT_STREAMS} held streams (one connection each): first {}, median {}, last {}",
        ms(fanout[0]),
        ms(percentile(&fanout, 0.5)),
        ms(*fanout.last().expect("samples"))
    );
    drop(agent);
}
