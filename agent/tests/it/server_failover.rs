//! Several servers of one trust domain (one PostgreSQL database, one shared token) serve an
//! agent interchangeably: configured with both (`server_addresses`), the real agent binary
//! (join_token) rides out the loss of the server it uses, killed with SIGKILL, and carries on
//! through the other with the identity the first one issued.

use std::path::Path;
use std::time::{Duration, Instant};

use ironroot_agent::api_client;
use ironroot_api::workload as pb;
use ironroot_testkit::cluster::ServerCluster;
use ironroot_testkit::server::pem_ders;
use ironroot_testkit::svid::{now, webpki_verify};

use crate::agent_resilience::create_entry;
use crate::common::*;

const FIRST: &str = "spiffe://example.org/failover/first";
const SECOND: &str = "spiffe://example.org/failover/second";

/// The leaf of the SVID for `id` in `r`, if served.
fn leaf_of(r: &pb::X509svidResponse, id: &str) -> Option<Vec<u8>> {
    let s = r.svids.iter().find(|s| s.spiffe_id == id)?;
    let pem = api_client::concat_der_to_pem(&s.x509_svid).ok()?;
    pem_ders(&pem).into_iter().next()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Polls until `f` holds; on the deadline, fails with the agent's and the servers' logs.
fn wait(
    what: &str,
    within: Duration,
    agent_log: &Path,
    cluster: &ServerCluster,
    mut f: impl FnMut() -> bool,
) -> Duration {
    let started = Instant::now();
    while !f() {
        assert!(
            started.elapsed() < within,
            "{what}: not within {within:?}\n--- agent ---\n{}\n{}",
            ironroot_testkit::tail(agent_log, 40),
            cluster.log_tails()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    started.elapsed()
}

#[test]
fn an_agent_carries_on_through_the_other_server_when_its_server_is_killed() {
    const T: &str = "server_failover";
    // Agent SVIDs of 10 s: the agent renews its own over mTLS every 5 s.
    let mut cluster = ServerCluster::start(T, &["", ""], "agent_svid_ttl = \"10s\"");
    let (a, b) = (cluster.addresses[0].clone(), cluster.addresses[1].clone());
    let token = cluster.servers[0].join_token();
    let log = ironroot_testkit::test_log_dir(T).join("agent.log");
    // Killed on drop, also when an assertion fails.
    let agent = AgentProcess::start_join_token(&JoinTokenAgentSpec {
        servers: &[a.as_str(), b.as_str()],
        bundle: &cluster.bundle,
        token: &token,
        dir: cluster.dir.path().join("agent"),
        log: log.clone(),
        extra: "",
    });
    let (socket, dir) = (agent.socket.clone(), agent.dir.clone());

    let svid_file = dir.join("data/agent_svid.pem");
    wait(
        "the agent attests",
        Duration::from_secs(20),
        &log,
        &cluster,
        || svid_file.exists(),
    );
    let agents: serde_json::Value =
        serde_json::from_str(&cluster.servers[0].cli_ok(&["agent", "list", "--output", "json"]))
            .unwrap();
    let agent_id = agents["agents"][0]["spiffe_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Renewed at half of 6 s: the workload's SVID keeps changing while the agent syncs.
    create_entry(&cluster.servers[0], FIRST, &agent_id, 6);
    wait_for_svid(&socket, FIRST, Duration::from_secs(20));
    // The agent is on the first server listed while it answers.
    wait(
        "the agent syncs with the first server",
        Duration::from_secs(5),
        &log,
        &cluster,
        || read(&log).contains(&format!("syncing with the server server={a}")),
    );
    let before = leaf_of(&fetch_x509(&socket).unwrap(), FIRST).unwrap();

    // The agent's server crashes; an entry is then created through the other one.
    cluster.servers[0].kill();
    let killed = Instant::now();
    let agent_svid_before = read(&svid_file);
    create_entry(&cluster.servers[1], SECOND, &agent_id, 0);
    wait(
        "the entry made through the other server reaches the workload",
        Duration::from_secs(5).saturating_sub(killed.elapsed()),
        &log,
        &cluster,
        || fetch_x509(&socket).is_ok_and(|r| r.svids.iter().any(|s| s.spiffe_id == SECOND)),
    );
    eprintln!(
        "failover: a new entry reached the workload {:?} after the server was killed",
        killed.elapsed()
    );
    let text = read(&log);
    assert!(
        text.contains(&format!("syncing with the server server={b}")),
        "the agent syncs with the other server:\n{text}"
    );

    // Through the other server, the workload's SVID keeps being renewed, under the same
    // trust bundle.
    let roots = pem_ders(&read(&cluster.bundle));
    let mut renewed = Vec::new();
    wait(
        "the workload's SVID to be renewed",
        Duration::from_secs(10),
        &log,
        &cluster,
        || {
            let Ok(r) = fetch_x509(&socket) else {
                return false;
            };
            match r.svids.iter().find(|s| s.spiffe_id == FIRST) {
                Some(s) if leaf_of(&r, FIRST).is_some_and(|l| l != before) => {
                    renewed = pem_ders(&api_client::concat_der_to_pem(&s.x509_svid).unwrap());
                    true
                }
                _ => false,
            }
        },
    );
    webpki_verify(&renewed, &roots, now()).expect("the renewed SVID chains to the bundle");
    // And the agent renews its own SVID there, over mTLS with the one the first server issued.
    wait(
        "the agent SVID to be renewed",
        Duration::from_secs(10),
        &log,
        &cluster,
        || {
            let now_svid = read(&svid_file);
            !now_svid.is_empty() && now_svid != agent_svid_before
        },
    );
    let text = read(&log);
    assert!(
        !text.contains("unknown or already used join token"),
        "it must not attest again:\n{text}"
    );
}
