//! PostgreSQL stopped for a minute under a running server and agent (the real processes, a
//! swtpm, a private PostgreSQL): the agent keeps syncing from the server's cache and its
//! workload keeps getting renewed SVIDs; admin writes fail saying the store is unavailable;
//! when the database is back, writes are taken again and reach the workload, with no restart
//! of anything.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::agent_resilience::{leaf_of, setup, sync_failures, Tails, API, WEB};
use crate::common::*;
use ironroot_testkit::postgres::Postgres;

/// How long the database stays down.
const OUTAGE: Duration = Duration::from_secs(60);
/// The workload's X.509-SVID lifetime: short, so that it is renewed several times during the
/// outage (the agent renews at half-life).
const SVID_TTL: u32 = 20;

#[test]
fn database_stopped_a_minute_agents_keep_syncing_and_all_heals() {
    const T: &str = "database_stopped_a_minute_agents_keep_syncing_and_all_heals";
    let _tails = Tails(T);
    let mut pg = Postgres::start();
    pg.create_database("ironroot");
    let store = format!(
        "\n[store]\nkind = \"postgres\"\nurl = \"{}\"\nwait_timeout = \"2s\"\nconnect_timeout = \"2s\"\n",
        pg.url("ironroot")
    );
    let (env, _tpm, mut agent, first) = setup(T, &store, SVID_TTL);
    let agent_log = ironroot_testkit::test_log_dir(T).join("agent.log");
    let agent_id = {
        let out = env.server.cli_ok(&["agent", "list", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["agents"][0]["spiffe_id"].as_str().unwrap().to_owned()
    };
    let failures_before = sync_failures(&agent_log).len();

    pg.stop();
    let stopped = Instant::now();

    // An admin write fails at once, and says the store is the trouble.
    // The entry the outage holds back: the same admin call during and after it.
    let create_api = || {
        env.server.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            API,
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:0",
        ])
    };
    let out = create_api();
    assert!(
        !out.status.success(),
        "a write succeeded with the database down"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("postgres store is unavailable"), "{err}");

    // For the whole minute the workload is served, and its SVID is renewed by the server.
    let mut leaves = BTreeSet::from([leaf_of(&first, WEB)]);
    while stopped.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_secs(3));
        let r = fetch_x509(&agent.socket).expect("the workload is served during the outage");
        leaves.insert(leaf_of(&r, WEB));
    }
    assert!(
        leaves.len() >= 3,
        "the workload's {SVID_TTL} s SVID was renewed {} times in a {OUTAGE:?} database outage",
        leaves.len() - 1
    );
    let failed: Vec<_> = sync_failures(&agent_log)
        .into_iter()
        .skip(failures_before)
        .collect();
    assert!(
        failed.is_empty(),
        "the agent's syncs failed while only the database was down: {failed:#?}"
    );

    // The database is back: writes are taken again by the same server process, and reach the
    // workload through the change feed.
    pg.start_again();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !create_api().status.success() {
        assert!(
            Instant::now() < deadline,
            "no write taken 30 s after the database came back:\n{}",
            env.server.log_tail()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    wait_for_svid(&agent.socket, API, Duration::from_secs(30));
    assert_eq!(env.server.health()["entries"], 2);
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent exited"
    );
}
