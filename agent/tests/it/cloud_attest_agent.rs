//! An `ironroot-agent run` process attesting with `aws_iid` against a stand-in IMDS: it
//! gets its SVID, renews it over mTLS at half life (attesting again would be refused: the
//! server trusts an instance once), and serves a workload an SVID under it.

use std::time::{Duration, Instant};

use ironroot_cloud_attest::test_support::aws_document;
use ironroot_testkit::cloud_metadata::AwsImds;

use crate::cloud_attest::{aws_section, start_server, ACCOUNT};
use crate::common::{agent_bin, AgentProcess};

pub(crate) fn wait_for(
    what: &str,
    log: &std::path::Path,
    within: Duration,
    mut done: impl FnMut() -> bool,
) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn an_aws_agent_attests_once_renews_over_mtls_and_serves_workloads() {
    let files = tempfile::tempdir().unwrap();
    let aws = AwsImds::region_certificate();
    let env = start_server(
        "cloud_attest_agent",
        &aws_section(files.path(), &aws),
        "agent_svid_ttl = \"6s\"\n",
    );
    let imds = AwsImds::start();
    let doc = aws_document(ACCOUNT, "us-west-2", "i-0a0a0a0a0a0a0a0a0");
    imds.serve(&doc, &doc, &aws);

    let dir = env.dir.path().join("aws-agent");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");
    let conf = dir.join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "trust_domain = \"example.org\"\nserver_address = \"{}\"\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"aws_iid\"\nlog_level = \"debug\"\n\n\
             [aws_iid]\nec2_metadata_endpoint = \"{}\"\ntimeout = \"2s\"\n\n\
             [workload_api]\nsocket_path = \"{}\"\n",
            env.address,
            env.bundle.display(),
            dir.join("data").display(),
            imds.server.base_url(),
            socket.display()
        ),
    )
    .unwrap();
    let log = ironroot_testkit::test_log_dir("cloud_attest_agent").join("agent.log");
    let logf = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(agent_bin())
        .args(["run", "-c"])
        .arg(&conf)
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    let _agent = AgentProcess {
        child,
        socket: socket.clone(),
        dir: dir.clone(),
    };
    let svid_file = dir.join("data/agent_svid.pem");
    wait_for("no agent SVID", &log, Duration::from_secs(20), || {
        svid_file.exists()
    });
    let first = std::fs::read(&svid_file).unwrap();
    wait_for(
        "agent SVID not renewed",
        &log,
        Duration::from_secs(15),
        || std::fs::read(&svid_file).is_ok_and(|b| b != first),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("already attested"),
        "it must renew, not attest again:\n{text}"
    );
    // One IMDSv2 round (token + three GETs): the renewal fetched nothing.
    assert_eq!(
        imds.server.requests().len(),
        4,
        "{:?}",
        imds.server.requests()
    );

    let agent_id =
        "spiffe://example.org/spire/agent/aws_iid/123456789012/us-west-2/i-0a0a0a0a0a0a0a0a0";
    let uid = nix::unistd::Uid::current().as_raw().to_string();
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/aws-workload",
        "--parent-id",
        agent_id,
        "--selector",
        &format!("unix:uid:{uid}"),
    ]);
    let rt = crate::common::rt();
    wait_for("no workload SVID", &log, Duration::from_secs(15), || {
        rt.block_on(ironroot_agent::api_client::fetch_x509(&socket))
            .is_ok_and(|r| {
                r.svids
                    .iter()
                    .any(|s| s.spiffe_id == "spiffe://example.org/aws-workload")
            })
    });
}
