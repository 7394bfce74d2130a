//! Fleet scale (`make bench`; docs/benchmarks.md): one release server with
//! ENTRIES registration entries spread over AGENTS join_token agents, every
//! agent simulated in this process by the real agent API over its own mTLS
//! connection: a WatchChanges stream held open, and a SyncEntries (delta
//! after the first) on every change notice and every SYNC_INTERVAL, as the
//! agent does. Prints:
//! 1. batch entry creation rate (BatchCreateEntry, 1,000 per call, as
//!    `entry create --data` sends them);
//! 2. server CPU and RSS with one idle agent, then with every agent syncing
//!    (with jemalloc's allocated, active and resident bytes, from the server's
//!    metrics endpoint: what the program holds against what its pages hold);
//! 3. sync latency p50 / p99 under that load;
//! 4. entry change -> the owning agent has it (admin create returned ->
//!    a sync of that agent shows the entry), p50 / p99.
//!
//! The simulated agents ask for no SVIDs (signing is the CA's figure,
//! `svid_signing`); they share the 2 cores with the server, so the server's
//! figures here are an upper bound. Sizes: IRONROOT_BENCH_ENTRIES (100000),
//! IRONROOT_BENCH_AGENTS (10000), IRONROOT_BENCH_SECONDS (30);
//! IRONROOT_BENCH_BATCHES_IN_FLIGHT (3, as `entry create --data`) sets how many
//! BatchCreateEntry calls are in flight at once; IRONROOT_BENCH_RESTART=1 restarts
//! the server after creating the entries (RSS without the creation burst's leftovers).
//!
//! IRONROOT_BENCH_STORE=postgres puts the server on a private PostgreSQL (fsync
//! on) instead of sled; IRONROOT_BENCH_SERVERS=2 (PostgreSQL only) starts a
//! second server on the same database and token, attaches every other agent to
//! it, and creates entries through the first: propagation then crosses servers
//! through the database's change feed for half the probes.
//!
//! Needs the release server binary: `cargo build --release -p ironroot-server`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironroot_agent::config::{AgentConfig, NodeAttestorKind};
use ironroot_agent::sync::{agent_channel, AgentSvid};
use ironroot_api::admin as admin_pb;
use ironroot_api::agent::{self as pb, agent_client::AgentClient};
use ironroot_testkit::postgres::{Postgres, PostgresOptions};
use ironroot_testkit::server::{server_config, ServerProcess, TD};
use ironroot_testkit::softhsm::SoftHsm;
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tonic::transport::Channel;

mod support;
use support::{ms, percentile};

const SYNC_INTERVAL: Duration = ironroot_agent::sync::SYNC_INTERVAL;
const PROPAGATION_RUNS: usize = 40;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// utime + stime of `pid`, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    // Fields after the command (which may hold spaces): state is field 3.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_millis(ticks * 1000 / hz)
}

/// Resident memory of `pid` in MB: all of it, and its anonymous part (the heap; the rest
/// is mapped files: the binary, the PKCS#11 module, sled's files if mapped).
fn rss_mb(pid: u32) -> (f64, f64) {
    let rollup =
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).expect("smaps_rollup");
    let field = |name: &str| -> f64 {
        rollup
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .expect("smaps_rollup field")
            / 1024.0
    };
    (field("Rss:"), field("Anonymous:"))
}

/// jemalloc's account of a server's memory in MB, from its metrics endpoint:
/// (allocated, active, resident). `None` if a gauge is missing from the page.
fn allocator_mb(metrics_port: u16) -> Option<(f64, f64, f64)> {
    let page = ironroot_testkit::metrics_page(metrics_port);
    let gauge = |name: &str| -> Option<f64> {
        page.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map(|b| b / (1024.0 * 1024.0))
    };
    Some((
        gauge("ironroot_allocator_allocated_bytes ")?,
        gauge("ironroot_allocator_active_bytes ")?,
        gauge("ironroot_allocator_resident_bytes ")?,
    ))
}

/// What one server was seen doing over a window.
struct Figures {
    /// Cores busy.
    cores: f64,
    /// RSS and its anonymous part, MB.
    rss: (f64, f64),
    /// jemalloc's allocated, active and resident MB at the window's end.
    allocator: Option<(f64, f64, f64)>,
}

/// Each server's CPU (cores busy) and RSS over `window`, and its allocator's figures.
async fn measure(servers: &[(u32, u16)], window: Duration) -> Vec<Figures> {
    let c0: Vec<Duration> = servers.iter().map(|&(p, _)| cpu_time(p)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let secs = t0.elapsed().as_secs_f64();
    servers
        .iter()
        .zip(c0)
        .map(|(&(p, port), c)| Figures {
            cores: (cpu_time(p) - c).as_secs_f64() / secs,
            rss: rss_mb(p),
            allocator: allocator_mb(port),
        })
        .collect()
}

/// "CPU 0.05 cores, RSS 430 MB (400 MB anonymous; allocated 350, active 380)", per server
/// when there are several.
fn servers_line(figures: &[Figures]) -> String {
    let one = |f: &Figures| {
        let (rss, anon) = f.rss;
        let alloc = match f.allocator {
            Some((allocated, active, resident)) => format!(
                "; jemalloc: allocated {allocated:.0}, active {active:.0}, resident {resident:.0}"
            ),
            None => String::new(),
        };
        format!(
            "CPU {:.3} cores, RSS {rss:.0} MB ({anon:.0} MB anonymous{alloc})",
            f.cores
        )
    };
    match figures {
        [only] => one(only),
        _ => figures
            .iter()
            .enumerate()
            .map(|(i, f)| format!("server {}: {}", i + 1, one(f)))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// One server of the bench: its process and Node API port.
struct BenchServer {
    process: ServerProcess,
    port: u16,
    /// Its metrics endpoint's port (the allocator's figures).
    metrics_port: u16,
    /// Its config and directory, to start it again.
    conf: std::path::PathBuf,
    dir: std::path::PathBuf,
}

/// The servers the bench runs against (and the database they share, if any), all in `dir`
/// on one token.
fn start_servers(
    dir: &std::path::Path,
    hsm: &SoftHsm,
    agents: usize,
) -> (Vec<BenchServer>, Option<Postgres>) {
    let store_kind = std::env::var("IRONROOT_BENCH_STORE").unwrap_or_else(|_| "sled".into());
    let count = env_usize("IRONROOT_BENCH_SERVERS", 1).max(1);
    let (store, pg) = match store_kind.as_str() {
        "sled" => {
            assert_eq!(
                count, 1,
                "IRONROOT_BENCH_SERVERS > 1 needs IRONROOT_BENCH_STORE=postgres"
            );
            (String::new(), None)
        }
        "postgres" => {
            let pg = Postgres::start_with(PostgresOptions {
                fsync: true,
                ..Default::default()
            });
            pg.create_database("ironroot");
            let store = format!(
                "[store]\nkind = \"postgres\"\nurl = \"{}\"\n",
                pg.url("ironroot")
            );
            (store, Some(pg))
        }
        other => panic!("IRONROOT_BENCH_STORE={other}: sled or postgres"),
    };
    println!("store: {store_kind}, {count} server(s)");
    let servers = (0..count)
        .map(|i| {
            let sdir = dir.join(format!("server-{i}"));
            std::fs::create_dir_all(&sdir).expect("server dir");
            let (port, metrics_port) =
                (ironroot_testkit::free_port(), ironroot_testkit::free_port());
            let conf = server_config(
                &sdir,
                hsm,
                "ca",
                // Every simulated agent attests and connects from 127.0.0.1: one source
                // address with a whole fleet behind it, far past the per-address defaults.
                // The limits are set for the fleet, so that what is measured is the
                // server, not its door.
                &format!(
                    "[node_api]\nlisten = \"127.0.0.1:{port}\"\n\n[node_api.limits]\n\
                     attestations_per_ip_per_second = 1000000.0\nattestation_burst = {burst}\n\
                     max_connections = {conns}\nmax_watch_streams = {conns}\n\n\
                     [metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n\n{store}",
                    burst = agents.max(1000),
                    conns = agents * 2 + 1000,
                ),
            );
            let process = ServerProcess::start(
                &format!("bench_fleet_{i}"),
                &conf,
                hsm,
                &sdir.join("admin.sock"),
            );
            BenchServer {
                process,
                port,
                metrics_port,
                conf,
                dir: sdir,
            }
        })
        .collect();
    (servers, pg)
}

/// The agent ID a join token attests to (the server names the token's hash).
fn agent_id(token: &str) -> String {
    let h = Sha256::digest(token.as_bytes());
    format!(
        "spiffe://{TD}/spire/agent/join_token/{}",
        hex::encode(&h[..16])
    )
}

struct Shared {
    latencies: Mutex<Vec<Duration>>,
    /// The entry (agent index, SPIFFE ID) the propagation probe waits for.
    probe: Mutex<Option<(usize, String, tokio::sync::oneshot::Sender<Instant>)>>,
    recording: std::sync::atomic::AtomicBool,
}

/// One simulated agent: hold the change stream, sync on notices and on the interval.
async fn run_agent(index: usize, mut client: AgentClient<Channel>, shared: Arc<Shared>) {
    let mut known = 0u64;
    let mut notices = match client.watch_changes(pb::WatchChangesRequest {}).await {
        Ok(s) => s.into_inner(),
        Err(e) => panic!("agent {index}: watch refused: {e}"),
    };
    // Spread the agents over the interval, as a fleet started at different times is.
    let offset = SYNC_INTERVAL.mul_f64((index % 1000) as f64 / 1000.0);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, SYNC_INTERVAL);
    loop {
        tokio::select! {
            n = notices.message() => match n {
                Ok(Some(_)) => {}
                _ => return,
            },
            _ = tick.tick() => {}
        }
        let t = Instant::now();
        let r = match client
            .sync_entries(pb::SyncEntriesRequest {
                known_revision: known,
            })
            .await
        {
            Ok(r) => r.into_inner(),
            Err(e) => panic!("agent {index}: sync refused: {e}"),
        };
        let took = t.elapsed();
        if shared.recording.load(std::sync::atomic::Ordering::Relaxed) {
            shared.latencies.lock().expect("latencies").push(took);
        }
        known = r.revision;
        let mut probe = shared.probe.lock().expect("probe");
        if let Some((i, id, _)) = probe.as_ref() {
            if *i == index && r.entries.iter().any(|e| &e.spiffe_id == id) {
                if let Some((_, _, tx)) = probe.take() {
                    let _ = tx.send(Instant::now());
                }
            }
        }
    }
}

fn main() {
    let entries = env_usize("IRONROOT_BENCH_ENTRIES", 100_000);
    let agents = env_usize("IRONROOT_BENCH_AGENTS", 10_000).max(1);
    let seconds = env_usize("IRONROOT_BENCH_SECONDS", 30) as u64;
    let in_flight = env_usize(
        "IRONROOT_BENCH_BATCHES_IN_FLIGHT",
        ironroot_server::client::BATCHES_IN_FLIGHT,
    );
    let restart = env_usize("IRONROOT_BENCH_RESTART", 0) != 0;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    let dir = tempfile::tempdir().expect("tempdir");
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let (mut servers, _pg) = start_servers(dir.path(), &hsm, agents);
    // Each server's pid and metrics port: what `measure` reads.
    let mut pids: Vec<(u32, u16)> = servers
        .iter()
        .map(|s| (s.process.pid().expect("server pid"), s.metrics_port))
        .collect();
    let ports: Vec<u16> = servers.iter().map(|s| s.port).collect();
    let bundle = dir.path().join("bundle.pem");
    std::fs::write(&bundle, servers[0].process.cli_ok(&["bundle", "show"])).expect("bundle");
    let client_args = ironroot_server::cli::ClientArgs {
        socket_path: Some(servers[0].process.socket.clone()),
        config: None,
        tls: Default::default(),
        output: ironroot_server::cli::Output::Text,
    };

    rt.block_on(async {
        let mut admin = ironroot_server::client::connect(&client_args)
            .await
            .expect("admin socket");
        // Join tokens, then entries under the agents they will attest as.
        let t = Instant::now();
        // 16 calls at a time: each waits for the store's flush.
        let mut tokens = Vec::with_capacity(agents);
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..agents {
            if n >= 16 {
                tokens.push(calls.join_next().await.expect("a call").expect("join token task"));
            }
            let mut admin = admin.clone();
            calls.spawn(async move {
                admin
                    .create_join_token(admin_pb::CreateJoinTokenRequest { ttl: 3600 })
                    .await
                    .expect("join token")
                    .into_inner()
                    .token
            });
        }
        while let Some(tok) = calls.join_next().await {
            tokens.push(tok.expect("join token task"));
        }
        eprintln!("{agents} join tokens in {:.1} s", t.elapsed().as_secs_f64());
        let ids: Vec<String> = tokens.iter().map(|t| agent_id(t)).collect();
        let t = Instant::now();
        let all: Vec<admin_pb::EntryFields> = (0..entries)
            .map(|i| admin_pb::EntryFields {
                spiffe_id: format!("spiffe://{TD}/w/{i}"),
                parent_id: ids[i % agents].clone(),
                selectors: vec![admin_pb::Selector {
                    r#type: "unix".into(),
                    value: format!("uid:{}", 1000 + i % 50),
                }],
                ..Default::default()
            })
            .collect();
        // As `entry create --data` sends them: 1,000 per call (a 10,000-entry
        // request is over the admin API's default 1 MiB request limit), a few
        // calls in flight.
        let created = ironroot_server::client::batch_create_entries(&admin, all, in_flight)
            .await
            .expect("batch create")
            .iter()
            .filter(|r| r.status.as_ref().is_none_or(|s| s.code == 0))
            .count();
        let took = t.elapsed();
        assert_eq!(created, entries, "every entry created");
        // Before any agent connects: what the entries cost (the store and the
        // authorized-entry index), apart from the connections.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "{entries} entries, no agent connected: {}",
            servers_line(&measure(&pids, Duration::from_secs(3)).await)
        );
        println!(
            "batch entry creation ({in_flight} calls in flight): {entries} entries in {:.2} s = {:.0} entries/s",
            took.as_secs_f64(),
            entries as f64 / took.as_secs_f64()
        );
        // IRONROOT_BENCH_RESTART=1: the same entries read back from the store by a
        // fresh server, what the entries cost without what the burst of creation
        // left behind; the agents below then connect to that server. By default
        // they connect to the server that created the entries.
        if restart {
        let first = &mut servers[0];
        first.process.stop();
        first.process = ServerProcess::start(
            "bench_fleet_0_restarted",
            &first.conf,
            &hsm,
            &first.dir.join("admin.sock"),
        );
        pids[0].0 = first.process.pid().expect("server pid");
        admin = ironroot_server::client::connect(&client_args)
            .await
            .expect("admin socket");
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "{entries} entries, no agent connected, after a restart: {}",
            servers_line(&measure(&pids, Duration::from_secs(3)).await)
        );
        }

        // Attest every agent (join_token), 64 at a time.
        let t = Instant::now();
        let gate = Arc::new(Semaphore::new(64));
        let mut attesting = Vec::with_capacity(agents);
        for (i, tok) in tokens.into_iter().enumerate() {
            let cfg = AgentConfig {
                trust_domain: TD.parse().expect("trust domain"),
                server_address: Some(
                    format!("127.0.0.1:{}", ports[i % ports.len()])
                        .parse()
                        .expect("address"),
                ),
                server_addresses: None,
                trust_bundle_path: bundle.clone(),
                data_dir: dir.path().join(format!("agent-{i}")),
                node_attestor: NodeAttestorKind::JoinToken,
                join_token: Some(tok),
                aws_iid: Default::default(),
                gcp_iit: Default::default(),
                azure_msi: Default::default(),
                azure_imds: Default::default(),
                k8s_psat: None,
                tpm: Default::default(),
                log_level: "warn".into(),
                workload_api: Default::default(),
                workload_attestors: Default::default(),
                sds: Default::default(),
                metrics: Default::default(),
            };
            let gate = gate.clone();
            attesting.push(tokio::spawn(async move {
                let _p = gate.acquire().await.expect("gate");
                let o = ironroot_agent::attest::attest(&cfg)
                    .await
                    .expect("attestation");
                let svid = AgentSvid::from(o);
                let ch = agent_channel(&cfg, &svid).await.expect("mTLS channel");
                AgentClient::new(ch).max_decoding_message_size(64 * 1024 * 1024)
            }));
        }
        let mut clients = Vec::with_capacity(agents);
        for a in attesting {
            clients.push(a.await.expect("attest task"));
        }
        eprintln!(
            "{agents} agents attested and connected in {:.1} s",
            t.elapsed().as_secs_f64()
        );

        let shared = Arc::new(Shared {
            latencies: Mutex::new(Vec::new()),
            probe: Mutex::new(None),
            recording: false.into(),
        });
        // One agent syncing first, the others connected and idle: what the server
        // spends with nothing to do.
        let mut clients = clients.into_iter();
        let first = tokio::spawn(run_agent(
            0,
            clients.next().expect("one agent"),
            shared.clone(),
        ));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = measure(&pids, Duration::from_secs(10)).await;
        println!(
            "{entries} entries, {agents} agents connected, 1 syncing: {}",
            servers_line(&idle)
        );
        let mut tasks = vec![first];
        for (i, c) in clients.enumerate() {
            tasks.push(tokio::spawn(run_agent(i + 1, c, shared.clone())));
        }
        // Let every agent make its first (full) sync before measuring.
        tokio::time::sleep(SYNC_INTERVAL + Duration::from_secs(2)).await;
        shared
            .recording
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let busy = measure(&pids, Duration::from_secs(seconds)).await;
        shared
            .recording
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut lat = std::mem::take(&mut *shared.latencies.lock().expect("latencies"));
        lat.sort();
        println!(
            "{entries} entries, {agents} agents syncing every {}s: {}",
            SYNC_INTERVAL.as_secs(),
            servers_line(&busy)
        );
        println!(
            "sync (delta) latency, {} syncs in {seconds} s: p50 {} p99 {}",
            lat.len(),
            ms(percentile(&lat, 0.5)),
            ms(percentile(&lat, 0.99))
        );

        // Entry change -> the owning agent has it.
        let mut props = Vec::with_capacity(PROPAGATION_RUNS);
        for run in 0..PROPAGATION_RUNS {
            let index = (run * 7919) % agents;
            let spiffe_id = format!("spiffe://{TD}/probe/{run}");
            let (tx, rx) = tokio::sync::oneshot::channel();
            *shared.probe.lock().expect("probe") = Some((index, spiffe_id.clone(), tx));
            admin
                .create_entry(admin_pb::CreateEntryRequest {
                    entry: Some(admin_pb::EntryFields {
                        spiffe_id,
                        parent_id: ids[index].clone(),
                        selectors: vec![admin_pb::Selector {
                            r#type: "unix".into(),
                            value: "uid:0".into(),
                        }],
                        ..Default::default()
                    }),
                })
                .await
                .expect("probe entry");
            let created = Instant::now();
            let seen = tokio::time::timeout(SYNC_INTERVAL * 3, rx)
                .await
                .expect("the agent got the entry")
                .expect("probe");
            props.push(seen.saturating_duration_since(created));
        }
        props.sort();
        println!(
            "entry change -> owning agent has it ({PROPAGATION_RUNS} runs): p50 {} p99 {}",
            ms(percentile(&props, 0.5)),
            ms(percentile(&props, 0.99))
        );
        for t in tasks {
            t.abort();
        }
    });
    for s in &mut servers {
        s.process.stop();
    }
}
