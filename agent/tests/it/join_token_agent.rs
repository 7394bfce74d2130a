//! A join_token agent (no TPM) renews its SVID over mTLS at half life: its
//! token is single use, so attesting again is not an option.

use std::time::{Duration, Instant};

use crate::common::*;

#[test]
fn a_join_token_agent_renews_over_mtls_and_keeps_serving() {
    let env = good_env_with_node_api("join_token_agent", "agent_svid_ttl = \"6s\"\n");
    let log = ironroot_testkit::test_log_dir("join_token_agent").join("agent.log");
    // Killed on drop, also when an assertion fails.
    let agent = start_join_token_agent(&env, "jt-agent", &log, "");
    let (socket, dir) = (agent.socket.clone(), agent.dir.clone());
    let svid_file = dir.join("data/agent_svid.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !svid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "no agent SVID:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let first = std::fs::read(&svid_file).unwrap();
    // Past half life (3 s of 6 s) the agent renews; the file changes.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if std::fs::read(&svid_file)
            .map(|b| b != first)
            .unwrap_or(false)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "agent SVID not renewed:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("unknown or already used join token"),
        "it must not re-attest:\n{text}"
    );
    // After the original 6 s lifetime the agent still syncs: a new entry reaches a workload.
    std::thread::sleep(Duration::from_secs(4));
    let agents: serde_json::Value =
        serde_json::from_str(&env.server.cli_ok(&["agent", "list", "--output", "json"])).unwrap();
    let agent_id = agents["agents"][0]["spiffe_id"]
        .as_str()
        .unwrap()
        .to_string();
    // The same listing for people: times as RFC 3339 with their distance from now,
    // JSON keeps Unix seconds.
    assert!(agents["agents"][0]["last_attested_at"].as_i64().unwrap() > 1_700_000_000);
    let listing = env.server.cli_ok(&["agent", "list"]);
    for (label, relative) in [
        ("SVID expires at  : ", None),
        ("First attested   : ", Some(" ago)")),
        ("Last attested    : ", Some(" ago)")),
    ] {
        let line = listing
            .lines()
            .find_map(|l| l.strip_prefix(label))
            .unwrap_or_else(|| panic!("no {label:?} line in:\n{listing}"));
        assert_human_instant(line, relative);
    }
    assert!(
        listing.contains("Attestor         : join_token"),
        "{listing}"
    );
    // The server recorded the attestation in its audit log before answering the agent.
    let audit_dir = env.dir.path().join("data/audit");
    let intact =
        ironroot_audit::verify_dir(&audit_dir, ironroot_audit::VerifyOptions::default()).unwrap();
    assert!(intact.is_ok(), "{intact:?}");
    let recorded = ironroot_audit::read_records(&audit_dir)
        .unwrap()
        .into_iter()
        .any(|r| {
            matches!(r.event, ironroot_audit::Event::Attestation { ref attestor, agent_id: ref id, ref outcome, .. }
                if attestor == "join_token" && *id == agent_id && outcome == "accepted")
        });
    assert!(
        recorded,
        "no accepted join_token attestation of {agent_id} in the audit log"
    );
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/jt-workload",
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(15);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    loop {
        if let Ok(r) = rt.block_on(ironroot_agent::api_client::fetch_x509(&socket)) {
            if r.svids
                .iter()
                .any(|s| s.spiffe_id == "spiffe://example.org/jt-workload")
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no workload SVID after renewal:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `text` reads "2026-12-07T00:59:12Z (in 59m 12s)": an RFC 3339 instant in UTC and its
/// distance from now, ending with `relative` when given.
fn assert_human_instant(text: &str, relative: Option<&str>) {
    let b = text.as_bytes();
    assert!(
        b.len() > 22
            && b[4] == b'-'
            && b[10] == b'T'
            && b[19] == b'Z'
            && text[20..].starts_with(" (")
            && text.ends_with(')'),
        "not an RFC 3339 instant with a distance: {text:?}"
    );
    if let Some(suffix) = relative {
        // "(now)" when the second has not turned yet.
        assert!(
            text.ends_with(suffix) || text.ends_with("(now)"),
            "{text:?} should end with {suffix:?}"
        );
    }
}
