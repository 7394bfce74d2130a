//! The agent runtime over time, end to end (the real server, a swtpm per
//! test, the `ironroot-agent run` binary): renewal of the agent SVID by
//! attesting again with a fresh quote (and losing the identity when the boot
//! changed), a server outage ridden out on cached SVIDs, and recovery when the
//! agent's own SVID expired while the server was away.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::*;
use ironroot_agent::api_client;
use ironroot_api::workload as pb;
use ironroot_testkit::server::{pem_ders, ServerProcess};
use ironroot_testkit::svid::{not_after, now, parse, webpki_verify};

pub(crate) const WEB: &str = "spiffe://example.org/workload/web";
pub(crate) const API: &str = "spiffe://example.org/workload/api";

/// The leaf certificate of the SVID for `id` in `r`.
pub(crate) fn leaf_of(r: &pb::X509svidResponse, id: &str) -> Vec<u8> {
    let s = r.svids.iter().find(|s| s.spiffe_id == id).expect("svid");
    let pem = api_client::concat_der_to_pem(&s.x509_svid).unwrap();
    pem_ders(&pem).remove(0)
}

/// What the server records for the (only) attested agent.
#[derive(Debug, Clone, PartialEq)]
struct Node {
    spiffe_id: String,
    serial: String,
    expires_at: i64,
    last_attested_at: i64,
}

fn node(env: &Env) -> Node {
    let out = env.server.cli_ok(&["agent", "list", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("agent list json");
    let agents = v["agents"].as_array().expect("agents");
    assert_eq!(agents.len(), 1, "{out}");
    let a = &agents[0];
    Node {
        spiffe_id: a["spiffe_id"].as_str().unwrap().to_string(),
        serial: a["serial_number"].as_str().unwrap().to_string(),
        expires_at: a["expires_at"].as_i64().unwrap(),
        last_attested_at: a["last_attested_at"].as_i64().unwrap(),
    }
}

/// Polls `agent list` until `pred` holds.
fn wait_node(env: &Env, within: Duration, what: &str, pred: impl Fn(&Node) -> bool) -> Node {
    let deadline = Instant::now() + within;
    loop {
        let n = node(env);
        if pred(&n) {
            return n;
        }
        assert!(
            Instant::now() < deadline,
            "{what} not seen within {within:?}; node: {n:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub(crate) fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Polls a log file until it contains `needle`.
pub(crate) fn wait_log(p: &Path, needle: &str, within: Duration) {
    let deadline = Instant::now() + within;
    while !read(p).contains(needle) {
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {} within {within:?}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Prints the tails of the test's child logs if the test fails. Declared
/// first in a test, so it runs after the children were stopped.
pub(crate) struct Tails(pub(crate) &'static str);

impl Drop for Tails {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = ironroot_testkit::test_log_dir(self.0);
        for f in [
            "server-before-restart.log",
            "server-before-restart-2.log",
            "server.log",
            "swtpm.log",
            "agent.log",
        ] {
            let p = dir.join(f);
            if p.exists() {
                let text = read(&p);
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "--- tail of {} ---\n{}",
                    p.display(),
                    lines[lines.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }
}

/// A server (with `node_api_extra`), a swtpm booted as the good policy
/// wants, an entry for `WEB` (uid 0, X.509-SVID TTL `svid_ttl` s, 0 for the
/// default) and the agent running; returns once the workload has its SVID.
pub(crate) fn setup(
    test: &'static str,
    node_api_extra: &str,
    svid_ttl: u32,
) -> (
    Env,
    ironroot_testkit::swtpm::Swtpm,
    AgentProcess,
    pb::X509svidResponse,
) {
    let env = good_env_with_node_api(test, node_api_extra);
    let (tpm, log, agent_id) = booted_node(&env);
    create_entry(&env.server, WEB, &agent_id, svid_ttl);
    let agent = start_agent(&env, &tpm, &log, test);
    let first = wait_for_svid(&agent.socket, WEB, Duration::from_secs(30));
    (env, tpm, agent, first)
}

/// An entry for `id` under `parent`, selector `unix:uid:0`, X.509-SVID TTL `svid_ttl` s (0:
/// the server's default), made through `server`'s admin CLI.
pub(crate) fn create_entry(server: &ServerProcess, id: &str, parent: &str, svid_ttl: u32) {
    server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        id,
        "--parent-id",
        parent,
        "--selector",
        "unix:uid:0",
        "--x509-svid-ttl",
        &svid_ttl.to_string(),
    ]);
}

fn agent_svid_pem(agent: &AgentProcess) -> Vec<u8> {
    let pem = read(&agent.dir.join("data/agent_svid.pem"));
    pem_ders(&pem).remove(0)
}

fn assert_running(agent: &mut AgentProcess) {
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
}

#[test]
fn renewal_with_changed_boot_loses_identity() {
    const T: &str = "renewal_with_changed_boot_loses_identity";
    let _tails = Tails(T);
    let (env, tpm, mut agent, first) = setup(T, "agent_svid_ttl = \"8s\"", 12);
    let leaf = leaf_of(&first, WEB);
    let svid_expiry = not_after(&parse(&leaf));

    // Something the event log does not account for is measured: the next
    // quote no longer replays. (The agent opens the TPM only to attest.)
    let mut t = ironroot_tpm::device::Tpm::open(&tpm.tcti()).expect("open swtpm");
    t.pcr_extend(4, b"an unexpected boot component")
        .expect("extend PCR 4");
    drop(t);
    let before = node(&env);

    // At half life (4 s) the agent attests again with a fresh quote and is refused.
    let agent_log = ironroot_testkit::test_log_dir(T).join("agent.log");
    wait_log(&agent_log, "event log replay", Duration::from_secs(12));
    wait_log(&env.server.log, "event log replay", Duration::from_secs(2));
    let after = node(&env);
    assert_eq!(
        after.last_attested_at, before.last_attested_at,
        "a refused attestation must not count"
    );
    assert_eq!(after.serial, before.serial);
    assert_running(&mut agent);

    // The workload keeps the SVID it had (never renewed: the agent has no
    // identity to sync with), and only until it expires.
    let deadline = Instant::now() + Duration::from_secs(svid_expiry.saturating_sub(now()) + 8);
    let gone_at = loop {
        match fetch_x509(&agent.socket) {
            Ok(r) => {
                assert_eq!(leaf_of(&r, WEB), leaf, "the SVID must not be renewed");
                assert!(now() <= svid_expiry, "served past its expiry");
            }
            Err(e) => {
                let e = format!("{e:#}");
                assert!(e.contains("no identity issued"), "{e}");
                break now();
            }
        }
        assert!(
            Instant::now() < deadline,
            "the expired SVID is still served"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert!(
        gone_at + 1 >= svid_expiry,
        "dropped at {gone_at}, before its expiry {svid_expiry}"
    );
    // Still refused: the node has not attested since.
    assert_eq!(node(&env).last_attested_at, before.last_attested_at);
    assert_running(&mut agent);
}

#[test]
fn renewal_with_unchanged_boot_attests_again() {
    const T: &str = "renewal_with_unchanged_boot_attests_again";
    let _tails = Tails(T);
    let (env, _tpm, mut agent, _first) = setup(T, "agent_svid_ttl = \"8s\"", 0);
    let before = node(&env);
    let saved = agent_svid_pem(&agent);

    // At half life (4 s) the agent attests again: a new SVID, a new attestation time.
    let after = wait_node(&env, Duration::from_secs(15), "re-attestation", |n| {
        n.serial != before.serial
    });
    assert!(
        after.last_attested_at > before.last_attested_at,
        "{before:?} -> {after:?}"
    );
    assert!(after.expires_at > before.expires_at);
    assert_eq!(after.spiffe_id, before.spiffe_id);
    assert_running(&mut agent);

    // The new SVID is the one the agent now syncs with: a new entry reaches the workload.
    create_entry(&env.server, API, &after.spiffe_id, 0);
    let r = wait_for_svid(&agent.socket, API, Duration::from_secs(10));
    assert!(r.svids.iter().any(|s| s.spiffe_id == WEB));
    let saved_now = agent_svid_pem(&agent);
    assert_ne!(saved_now, saved, "the renewed agent SVID is saved");
}

/// Restarts the (stopped) server with its config: same data dir and token,
/// so the same CA and the same node records. Keeps the old log beside.
fn restart(env: &mut Env, test: &str, n: u32) {
    let log_dir = ironroot_testkit::test_log_dir(test);
    let keep = if n == 1 {
        "server-before-restart.log".to_string()
    } else {
        format!("server-before-restart-{n}.log")
    };
    std::fs::copy(&env.server.log, log_dir.join(keep)).unwrap();
    let (conf, socket) = (env.server.conf.clone(), env.server.socket.clone());
    env.server = ServerProcess::start(test, &conf, &env.hsm, &socket);
}

/// The agent log's "sync failed" lines.
pub(crate) fn sync_failures(agent_log: &Path) -> Vec<String> {
    read(agent_log)
        .lines()
        .filter(|l| l.contains("sync failed"))
        .map(str::to_owned)
        .collect()
}

/// The delay a "retrying in 3.2s" line announces.
fn retry_delay(line: &str) -> Duration {
    line.split("retrying in ")
        .nth(1)
        .and_then(|rest| rest.split('s').next())
        .and_then(|secs| secs.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or_else(|| panic!("no retry delay in {line:?}"))
}

/// Whether `line` announces a retry within backoff step `step`: the backoff is
/// jittered into the upper half of each step, so agents do not retry in lockstep.
fn retries_within_step(line: &str, step: Duration) -> bool {
    let d = retry_delay(line);
    d >= step / 2 && d <= step
}

fn wait_sync_failures(agent_log: &Path, n: usize, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        let f = sync_failures(agent_log);
        if f.len() >= n {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "fewer than {n} sync failures logged within {within:?}: {f:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn server_outage_serves_cached_svids_and_reconnects() {
    const T: &str = "server_outage_serves_cached_svids_and_reconnects";
    let _tails = Tails(T);
    let (mut env, _tpm, mut agent, first) = setup(T, "", 0);
    let before = node(&env);
    let leaf = leaf_of(&first, WEB);
    let agent_log = ironroot_testkit::test_log_dir(T).join("agent.log");

    // A first outage, long enough for the agent to back off to 4 s.
    let n = sync_failures(&agent_log).len();
    env.server.stop();
    wait_sync_failures(&agent_log, n + 1, Duration::from_secs(10));
    // The agent keeps serving what it has.
    let r = fetch_x509(&agent.socket).expect("cached SVID served during the outage");
    assert_eq!(leaf_of(&r, WEB), leaf);
    let failures = wait_sync_failures(&agent_log, n + 3, Duration::from_secs(10));
    assert!(
        retries_within_step(&failures[n + 2], Duration::from_secs(4)),
        "{:#?}",
        &failures[n..]
    );
    let r = fetch_x509(&agent.socket).expect("cached SVID served during the outage");
    assert_eq!(leaf_of(&r, WEB), leaf);

    restart(&mut env, T, 1);
    // The agent reconnects by itself with the SVID it has, and a new entry
    // reaches the workload.
    create_entry(&env.server, API, &before.spiffe_id, 0);
    let r = wait_for_svid(&agent.socket, API, Duration::from_secs(20));
    let svid = r.svids.iter().find(|s| s.spiffe_id == API).unwrap();
    let chain = pem_ders(&api_client::concat_der_to_pem(&svid.x509_svid).unwrap());
    let roots = pem_ders(&read(&env.bundle));
    webpki_verify(&chain, &roots, now()).expect("verifies to the bootstrap bundle");
    assert_eq!(node(&env).serial, before.serial, "no re-attestation needed");

    // A second outage backs off from 1 s again (once reconnected, the
    // backoff starts over), and the agent is back within a few seconds.
    let n = sync_failures(&agent_log).len();
    env.server.stop();
    let failures = wait_sync_failures(&agent_log, n + 1, Duration::from_secs(10));
    assert!(
        retries_within_step(&failures[n], Duration::from_secs(1)),
        "{:#?}",
        &failures[n..]
    );
    restart(&mut env, T, 2);
    let third = "spiffe://example.org/workload/third";
    create_entry(&env.server, third, &before.spiffe_id, 0);
    wait_for_svid(&agent.socket, third, Duration::from_secs(10));
    assert_eq!(node(&env).serial, before.serial, "no re-attestation needed");
    assert_running(&mut agent);
}

#[test]
fn own_svid_expired_offline_attests_again_without_restart() {
    const T: &str = "own_svid_expired_offline_attests_again_without_restart";
    let _tails = Tails(T);
    let (mut env, _tpm, mut agent, _first) = setup(T, "agent_svid_ttl = \"6s\"", 0);
    let pid = agent.child.id();

    env.server.stop();
    // The agent SVID it holds now (it may have renewed just before the stop).
    let held = agent_svid_pem(&agent);
    let held_expiry = not_after(&parse(&held));
    let deadline = Instant::now() + Duration::from_secs(held_expiry.saturating_sub(now()) + 5);
    while now() <= held_expiry {
        assert!(Instant::now() < deadline, "clock stuck?");
        std::thread::sleep(Duration::from_millis(200));
    }
    restart(&mut env, T, 1);

    // The agent attests again by itself and serves new SVIDs.
    let after = wait_node(&env, Duration::from_secs(20), "re-attestation", |n| {
        n.expires_at as u64 > held_expiry
    });
    assert_ne!(
        hex::encode(ironroot_testkit::svid::serial(&held)),
        after.serial
    );
    create_entry(&env.server, API, &after.spiffe_id, 0);
    wait_for_svid(&agent.socket, API, Duration::from_secs(10));
    assert_running(&mut agent);
    assert_eq!(agent.child.id(), pid);
}
