//! Workload API figures against the real release binaries (`make bench`;
//! docs/benchmarks.md): the release server (SoftHSM CA) and `ironroot-agent
//! run` attesting with `tpm_ek` to a swtpm, this bench process as the workload
//! (uid 0, default attestors: unix + process, both with the executable's
//! SHA-256), entries created through the admin gRPC API.
//!
//! 1. FetchX509SVID latency from the cache, p50 / p99: new call on an open
//!    connection, and connect + call; with the in-process cost of the
//!    attestors for reference;
//! 2. 1,000 concurrent FetchX509SVID streams, one connection each: time to
//!    open them all (every one has its first message), agent RSS and fds;
//!    agent RSS after they close (at once, then 2, 5 and 11 s later) against
//!    its idle RSS, and after three more rounds;
//! 3. entry created -> update on a held stream, median of 10;
//! 4. agent RSS with 100 SVIDs cached (a fresh agent process), and the
//!    memory per held stream when every response carries the 100 SVIDs;
//! 5. stripped release agent binary size.
//!
//! Needs the release binaries:
//! `cargo build --release -p ironroot-server -p ironroot-agent`.

use std::os::fd::AsFd;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironroot_agent::api_client;
use ironroot_agent::workload::attestor::{
    attest_caller, ExeHasher, ProcessAttestor, UnixAttestor, WorkloadAttestor,
};
use ironroot_agent::workload::caller::Caller;
use ironroot_api::admin::{self as admin_pb, admin_client::AdminClient};
use ironroot_api::workload::{self as pb, spiffe_workload_api_client::SpiffeWorkloadApiClient};
use ironroot_server::cli::{ClientArgs, Output};
use ironroot_testkit::server::TD;
use ironroot_testkit::swtpm::{SwtpmOptions, SwtpmState};
use tokio::task::JoinSet;
use tonic::transport::Channel;
use tonic::Streaming;

mod support;
use ironroot_testkit::agent::agent_bin;
use support::agent::{agent_id, start_agent};
use support::{ms, percentile};

const WARMUP: usize = 50;
const LAT_CALLS: usize = 1000;
const FRESH_CALLS: usize = 500;
const ATTEST_CALLS: usize = 1000;
const STREAMS: usize = 1000;
const CHANGE_RUNS: usize = 10;
/// Further rounds of STREAMS streams (memory reuse).
const ROUNDS: usize = 3;
const CACHED_SVIDS: usize = 100;
/// Streams held while each carries all 100 SVIDs (extra figure).
const BIG_STREAMS: usize = 100;

type Client = SpiffeWorkloadApiClient<Channel>;
type Admin = AdminClient<Channel>;

fn mb(bytes: u64) -> String {
    format!(
        "{bytes} bytes = {:.2} MB ({:.2} MiB)",
        bytes as f64 / 1e6,
        bytes as f64 / (1024.0 * 1024.0)
    )
}

/// Soft RLIMIT_NOFILE up to the hard limit (inherited by the agent child).
fn raise_nofile() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return 0;
    };
    if soft >= hard {
        return soft;
    }
    // A refusal leaves the soft limit where it was; the re-read reports it.
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    getrlimit(Resource::RLIMIT_NOFILE).map_or(soft, |(soft, _)| soft)
}

/// A numeric field of /proc/PID/status (`kB` dropped).
fn status_field(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    s.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// A `kB` field of /proc/PID/status (VmRSS, RssAnon, RssFile), in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    status_field(pid, field) * 1024
}

/// VmRSS of `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS")
}

/// "VmRSS (anon A, file F)" in MB.
fn rss_parts(pid: u32) -> String {
    format!(
        "{:.1} MB (anonymous {:.1} MB, file-backed {:.1} MB)",
        rss(pid) as f64 / 1e6,
        status_bytes(pid, "RssAnon") as f64 / 1e6,
        status_bytes(pid, "RssFile") as f64 / 1e6
    )
}

fn threads(pid: u32) -> u64 {
    status_field(pid, "Threads")
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

async fn create_entry(admin: &mut Admin, spiffe_id: &str, parent_id: &str) {
    admin
        .create_entry(admin_pb::CreateEntryRequest {
            entry: Some(admin_pb::EntryFields {
                spiffe_id: spiffe_id.into(),
                parent_id: parent_id.into(),
                selectors: vec![admin_pb::Selector {
                    r#type: "unix".into(),
                    value: "uid:0".into(),
                }],
                ..Default::default()
            }),
        })
        .await
        .expect("create entry");
}

/// Polls FetchX509SVID until it returns `n` SVIDs (the agent attests and syncs first).
async fn wait_for_svids(socket: &Path, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(r) = api_client::fetch_x509(socket).await {
            if r.svids.len() == n {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no response with {n} SVIDs within 120 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One FetchX509SVID call on `c`; the stream and its first message.
async fn fetch_on(c: &mut Client) -> (Streaming<pb::X509svidResponse>, pb::X509svidResponse) {
    let mut s = c
        .fetch_x509svid(api_client::request(pb::X509svidRequest {}))
        .await
        .expect("FetchX509SVID")
        .into_inner();
    let m = s
        .message()
        .await
        .expect("first message")
        .expect("stream ended");
    (s, m)
}

/// Opens `n` connections with one FetchX509SVID stream each, all at once;
/// returns them (held) once every one has its first message.
async fn open_streams(
    socket: &Path,
    n: usize,
    svids: usize,
) -> Vec<(Client, Streaming<pb::X509svidResponse>)> {
    let mut set = JoinSet::new();
    for _ in 0..n {
        let p = socket.to_owned();
        set.spawn(async move {
            let mut c = api_client::connect(&p).await.expect("connect");
            let (s, m) = fetch_on(&mut c).await;
            assert_eq!(m.svids.len(), svids, "first message");
            (c, s)
        });
    }
    let mut held = Vec::with_capacity(n);
    while let Some(r) = set.join_next().await {
        held.push(r.expect("stream task"));
    }
    held
}

/// Agent RSS now (the streams were closed half a second ago) and 2, 5 and
/// 11 s later, each with its difference from `idle`: freed memory goes back
/// to the kernel only as the allocator decays or trims it.
fn rss_over_time(rt: &tokio::runtime::Runtime, pid: u32, idle: u64) -> String {
    let start = Instant::now();
    let mut out = Vec::new();
    for at in [0u64, 2, 5, 11] {
        let wait = Duration::from_secs(at).saturating_sub(start.elapsed());
        rt.block_on(async { tokio::time::sleep(wait).await });
        let now = rss(pid);
        out.push(format!(
            "+{at} s {:.1} MB ({:+.1})",
            now as f64 / 1e6,
            (now as f64 - idle as f64) / 1e6
        ));
    }
    format!(
        "{} (MB, change from idle {:.1} MB; target <= +10 MB)",
        out.join(", "),
        idle as f64 / 1e6
    )
}

/// Lets the agent settle for half a second while this process's connection
/// tasks keep running (a dropped client is only closed when they run).
fn settle(rt: &tokio::runtime::Runtime) {
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
}

fn main() {
    let nofile = raise_nofile();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    // --- 5. stripped release agent binary
    let bin = agent_bin();
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("ironroot-agent");
    std::fs::copy(&bin, &copy).expect("copy agent binary");
    let unstripped = std::fs::metadata(&copy).expect("size").len();
    match Command::new("strip").arg(&copy).status() {
        Ok(st) if st.success() => {
            let stripped = std::fs::metadata(&copy).expect("size").len();
            println!(
                "agent binary {}: {}; stripped {} (target <= 15 MB)",
                bin.display(),
                mb(unstripped),
                mb(stripped)
            );
        }
        other => println!("agent binary {}: strip failed: {other:?}", bin.display()),
    }

    // --- set-up: server, swtpm, agent, one entry for uid 0
    let state = SwtpmState::shared("bench-wl", &SwtpmOptions::default());
    let tpm = state.spawn();
    let env = support::start(state, "bench_workload_api");
    ironroot_agent::simulate::replay_into(&tpm.tcti(), &env.log).expect("simulated boot");
    let parent = agent_id(&tpm.tcti());
    let mut admin = rt
        .block_on(ironroot_server::client::connect(&ClientArgs {
            socket_path: Some(env.server.socket.clone()),
            config: None,
            tls: Default::default(),
            output: Output::Text,
        }))
        .expect("admin client");
    rt.block_on(create_entry(
        &mut admin,
        &format!("spiffe://{TD}/bench/w0"),
        &parent,
    ));
    let agent = start_agent(&env, &tpm.tcti(), "agent-a", "bench_workload_api", "");
    rt.block_on(wait_for_svids(&agent.socket, 1));
    let rss_idle = rss(agent.pid());
    println!("agent RSS idle, 1 SVID cached: {}", rss_parts(agent.pid()));

    // --- 1. FetchX509SVID latency from the cache
    let (reused, fresh) = rt.block_on(async {
        let mut c = api_client::connect(&agent.socket).await.expect("connect");
        let mut reused = Vec::with_capacity(LAT_CALLS);
        for i in 0..WARMUP + LAT_CALLS {
            let t = Instant::now();
            let (s, m) = fetch_on(&mut c).await;
            let d = t.elapsed();
            assert_eq!(m.svids.len(), 1);
            drop(s);
            if i >= WARMUP {
                reused.push(d);
            }
        }
        let mut fresh = Vec::with_capacity(FRESH_CALLS);
        for i in 0..WARMUP + FRESH_CALLS {
            let t = Instant::now();
            let mut c = api_client::connect(&agent.socket).await.expect("connect");
            let (s, m) = fetch_on(&mut c).await;
            let d = t.elapsed();
            assert_eq!(m.svids.len(), 1);
            drop((s, c));
            if i >= WARMUP {
                fresh.push(d);
            }
        }
        (reused, fresh)
    });
    for (what, mut v) in [
        ("new call on an open connection", reused),
        ("connect + call", fresh),
    ] {
        v.sort();
        println!(
            "FetchX509SVID to first message, 1 SVID, {what} ({} calls): p50 {}, p99 {}, max {} (targets p50 <= 1 ms, p99 <= 5 ms)",
            v.len(),
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99)),
            ms(*v.last().expect("samples"))
        );
    }

    // The attestors' share, in process, on this same executable (a socketpair:
    // the peer is this process).
    let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let caller = Caller::from_socket(a.as_fd()).expect("caller");
    let hasher = Arc::new(ExeHasher::new());
    let unix: Arc<dyn WorkloadAttestor> =
        Arc::new(UnixAttestor::new(Default::default(), hasher.clone()));
    let process: Arc<dyn WorkloadAttestor> =
        Arc::new(ProcessAttestor::new(Default::default(), hasher));
    let both = vec![unix.clone(), process];
    let exe_size = std::fs::metadata("/proc/self/exe")
        .map(|m| m.len())
        .unwrap_or(0);
    let t = Instant::now();
    let sel = attest_caller(&both, &caller).expect("attest self");
    let cold = t.elapsed();
    assert!(
        sel.iter()
            .any(|s| s.to_string().starts_with("unix:sha256:")),
        "no unix:sha256 selector for this executable: {sel:?}"
    );
    for (what, attestors) in [
        ("unix + process (the defaults)", both.clone()),
        ("unix alone", vec![unix]),
    ] {
        let mut v = Vec::with_capacity(ATTEST_CALLS);
        for _ in 0..ATTEST_CALLS {
            let t = Instant::now();
            attest_caller(&attestors, &caller).expect("attest");
            v.push(t.elapsed());
        }
        v.sort();
        println!(
            "  in process: attest_caller, {what}, SHA-256 cached ({ATTEST_CALLS} calls): p50 {}, p99 {}",
            ms(percentile(&v, 0.5)),
            ms(percentile(&v, 0.99))
        );
    }
    println!(
        "  in process: first attestation of this executable ({:.1} MB hashed, {} selectors): {}",
        exe_size as f64 / 1e6,
        sel.len(),
        ms(cold)
    );

    // --- 2. 1,000 concurrent streams, one connection each
    let fds_before = open_fds(agent.pid());
    let threads_before = threads(agent.pid());
    let (held, open_time) = rt.block_on(async {
        let t = Instant::now();
        let held = open_streams(&agent.socket, STREAMS, 1).await;
        (held, t.elapsed())
    });
    // Let the agent settle (accept queue drained, tasks parked).
    settle(&rt);
    let rss_streams = rss(agent.pid());
    let fds_streams = open_fds(agent.pid());
    let threads_streams = threads(agent.pid());
    println!(
        "{STREAMS} concurrent FetchX509SVID streams (one connection each, opened at once): all first messages in {}; agent RSS {:.1} MB (idle {:.1} MB, +{:.1} KB per stream); agent fds {} (idle {}), threads {} (idle {}); bench RLIMIT_NOFILE {nofile}",
        ms(open_time),
        rss_streams as f64 / 1e6,
        rss_idle as f64 / 1e6,
        (rss_streams.saturating_sub(rss_idle)) as f64 / 1e3 / STREAMS as f64,
        fds_streams,
        fds_before,
        threads_streams,
        threads_before
    );

    // The streams are still held: an entry change reaches all of them.
    let (held, fanout) = rt.block_on(async {
        let mut held = held;
        let id = format!("spiffe://{TD}/bench/fanout");
        let t = Instant::now();
        create_entry(&mut admin, &id, &parent).await;
        for (_, s) in held.iter_mut() {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(30), s.message())
                    .await
                    .expect("update within 30 s")
                    .expect("stream")
                    .expect("stream ended");
                if m.svids.iter().any(|x| x.spiffe_id == id) {
                    break;
                }
            }
        }
        (held, t.elapsed())
    });
    println!(
        "  entry created -> all {STREAMS} held streams updated: {}",
        ms(fanout)
    );
    drop(held);
    settle(&rt);
    println!(
        "  after closing them: agent RSS {}, fds {}",
        rss_over_time(&rt, agent.pid(), rss_idle),
        open_fds(agent.pid())
    );
    // More rounds: is the memory of the first reused (no leak)?
    let mut rounds = Vec::new();
    for _ in 0..ROUNDS {
        let held = rt.block_on(open_streams(&agent.socket, STREAMS, 2));
        settle(&rt);
        let open = rss(agent.pid());
        drop(held);
        settle(&rt);
        rounds.push(format!(
            "{:.1} / {:.1} ({} threads)",
            open as f64 / 1e6,
            rss(agent.pid()) as f64 / 1e6,
            threads(agent.pid())
        ));
    }
    println!(
        "  {ROUNDS} more rounds of {STREAMS} streams, agent RSS MB with them open / after closing: {}; fds {}",
        rounds.join(", "),
        open_fds(agent.pid())
    );

    // Tokio's idle blocking threads exit after 10 s.
    rt.block_on(async { tokio::time::sleep(Duration::from_secs(11)).await });
    let after = rss(agent.pid());
    println!(
        "  11 s later: agent RSS {:.1} MB ({:+.1} MB from idle; target <= +10 MB), {} threads",
        after as f64 / 1e6,
        (after as f64 - rss_idle as f64) / 1e6,
        threads(agent.pid())
    );

    // --- 3. entry change -> update on a held stream
    let mut entries = 2; // w0 and fanout
    let (lat, rpc) = rt.block_on(async {
        let mut c = api_client::connect(&agent.socket).await.expect("connect");
        let (mut s, m) = fetch_on(&mut c).await;
        assert_eq!(m.svids.len(), entries);
        let mut lat = Vec::with_capacity(CHANGE_RUNS);
        let mut rpc = Vec::with_capacity(CHANGE_RUNS);
        for i in 0..CHANGE_RUNS {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let id = format!("spiffe://{TD}/bench/change{i}");
            let t = Instant::now();
            create_entry(&mut admin, &id, &parent).await;
            rpc.push(t.elapsed());
            loop {
                let m = tokio::time::timeout(Duration::from_secs(30), s.message())
                    .await
                    .expect("update within 30 s")
                    .expect("stream")
                    .expect("stream ended");
                if m.svids.iter().any(|x| x.spiffe_id == id) {
                    break;
                }
            }
            lat.push(t.elapsed());
            entries += 1;
        }
        (lat, rpc)
    });
    let mut lat = lat;
    let mut rpc = rpc;
    lat.sort();
    rpc.sort();
    println!(
        "entry created (admin gRPC) -> update on a held stream ({CHANGE_RUNS} runs): median {}, max {} (of which CreateEntry RPC median {}) (target <= 1 s)",
        ms(percentile(&lat, 0.5)),
        ms(*lat.last().expect("samples")),
        ms(percentile(&rpc, 0.5))
    );

    // --- 4. agent RSS with 100 SVIDs cached: a fresh agent process
    rt.block_on(async {
        while entries < CACHED_SVIDS {
            create_entry(
                &mut admin,
                &format!("spiffe://{TD}/bench/e{entries}"),
                &parent,
            )
            .await;
            entries += 1;
        }
    });
    rt.block_on(wait_for_svids(&agent.socket, CACHED_SVIDS));
    let rss_a = rss(agent.pid());
    drop(agent);
    let agent = start_agent(&env, &tpm.tcti(), "agent-b", "bench_workload_api", "");
    let t = Instant::now();
    rt.block_on(wait_for_svids(&agent.socket, CACHED_SVIDS));
    let boot = t.elapsed();
    settle(&rt);
    println!(
        "agent RSS with {CACHED_SVIDS} SVIDs cached: {} fresh agent (start -> 100 SVIDs served in {:.2} s); {:.1} MB in the agent that ran figures 1-3 (target <= 20 MB)",
        rss_parts(agent.pid()),
        boot.as_secs_f64(),
        rss_a as f64 / 1e6
    );

    // Extra: the latency and memory when a response carries 100 SVIDs.
    let (mut big, resp_bytes) = rt.block_on(async {
        let mut c = api_client::connect(&agent.socket).await.expect("connect");
        let mut v = Vec::with_capacity(LAT_CALLS);
        let mut bytes = 0;
        for i in 0..WARMUP + LAT_CALLS {
            let t = Instant::now();
            let (s, m) = fetch_on(&mut c).await;
            let d = t.elapsed();
            assert_eq!(m.svids.len(), CACHED_SVIDS);
            bytes = m
                .svids
                .iter()
                .map(|x| x.x509_svid.len() + x.x509_svid_key.len() + x.bundle.len())
                .sum::<usize>();
            drop(s);
            if i >= WARMUP {
                v.push(d);
            }
        }
        (v, bytes)
    });
    big.sort();
    println!(
        "  FetchX509SVID, {CACHED_SVIDS} SVIDs in the response ({} KB of certificates and keys), open connection ({LAT_CALLS} calls): p50 {}, p99 {}",
        resp_bytes / 1000,
        ms(percentile(&big, 0.5)),
        ms(percentile(&big, 0.99))
    );
    let before = rss(agent.pid());
    let held = rt.block_on(open_streams(&agent.socket, BIG_STREAMS, CACHED_SVIDS));
    settle(&rt);
    let with = rss(agent.pid());
    println!(
        "  {BIG_STREAMS} streams held, each with {CACHED_SVIDS} SVIDs: agent RSS {:.1} MB (+{:.1} KB per stream)",
        with as f64 / 1e6,
        with.saturating_sub(before) as f64 / 1e3 / BIG_STREAMS as f64
    );
    drop(held);
    drop(agent);
}
