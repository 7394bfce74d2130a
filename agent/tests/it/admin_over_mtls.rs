//! End to end: an entry with `admin = true` gives a workload, through a real agent and the
//! Workload API, an SVID that the server accepts on its admin API over mTLS; the same
//! workload's ordinary SVID and the agent's own SVID are refused there.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ironroot_agent::api_client;
use ironroot_api::admin as pb;
use ironroot_api::workload::X509svidResponse;
use ironroot_server::cli::{AdminTlsArgs, ClientArgs, Output};

use crate::common::*;

const ADMIN: &str = "spiffe://example.org/ops/deployer";
const ORDINARY: &str = "spiffe://example.org/ops/web";

/// Writes the SVID for `id` in `r` as `svid.pem`, `svid.key` and `bundle.pem` under `dir/<name>`.
fn write_svid(r: &X509svidResponse, id: &str, dir: &Path, name: &str) -> PathBuf {
    let s = r.svids.iter().find(|s| s.spiffe_id == id).expect("svid");
    let out = dir.join(name);
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        out.join("svid.pem"),
        api_client::concat_der_to_pem(&s.x509_svid).unwrap(),
    )
    .unwrap();
    std::fs::write(
        out.join("svid.key"),
        pem::encode(&pem::Pem::new("PRIVATE KEY", s.x509_svid_key.clone())),
    )
    .unwrap();
    std::fs::write(
        out.join("bundle.pem"),
        api_client::concat_der_to_pem(&s.bundle).unwrap(),
    )
    .unwrap();
    out
}

fn tls_args(env: &Env, cert: PathBuf, key: PathBuf, bundle: PathBuf) -> ClientArgs {
    ClientArgs {
        socket_path: None,
        config: None,
        tls: AdminTlsArgs {
            tls_address: Some(env.address.clone()),
            svid_cert: Some(cert),
            svid_key: Some(key),
            bundle: Some(bundle),
        },
        output: Output::Text,
    }
}

async fn list(args: &ClientArgs) -> Result<pb::ListEntriesResponse, tonic::Status> {
    ironroot_server::client::connect(args)
        .await
        .expect("TLS to the server")
        .list_entries(pb::ListEntriesRequest::default())
        .await
        .map(|r| r.into_inner())
}

#[test]
fn a_workload_gets_an_admin_svid_from_its_agent_and_the_server_accepts_only_that_one() {
    let env = good_env_with_node_api("admin_over_mtls", "");
    let log = ironroot_testkit::test_log_dir("admin_over_mtls").join("agent.log");
    let agent = start_join_token_agent(&env, "jt-agent", &log, "");
    let dir = agent.dir.clone();
    let agent_svid = dir.join("data/agent_svid.pem");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent_svid.exists() {
        assert!(Instant::now() < deadline, "no agent SVID");
        std::thread::sleep(Duration::from_millis(100));
    }
    let agents: serde_json::Value =
        serde_json::from_str(&env.server.cli_ok(&["agent", "list", "--output", "json"])).unwrap();
    let agent_id = agents["agents"][0]["spiffe_id"]
        .as_str()
        .unwrap()
        .to_string();
    // This test process is the workload: its uid is the selector.
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    let selector = format!("unix:uid:{uid}");
    for (id, admin) in [(ADMIN, true), (ORDINARY, false)] {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &agent_id,
            "--selector",
            &selector,
        ];
        if admin {
            args.push("--admin");
        }
        env.server.cli_ok(&args);
    }

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let svids = loop {
        if let Ok(r) = rt.block_on(api_client::fetch_x509(&agent.socket)) {
            if [ADMIN, ORDINARY]
                .iter()
                .all(|id| r.svids.iter().any(|s| s.spiffe_id == *id))
            {
                break r;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the Workload API did not serve both SVIDs"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let admin_dir = write_svid(&svids, ADMIN, &dir, "admin");
    let ordinary_dir = write_svid(&svids, ORDINARY, &dir, "ordinary");
    let args = |d: &Path| {
        tls_args(
            &env,
            d.join("svid.pem"),
            d.join("svid.key"),
            d.join("bundle.pem"),
        )
    };
    rt.block_on(async {
        let listed = list(&args(&admin_dir))
            .await
            .expect("the admin entry's SVID is an admin");
        assert!(listed.entries.iter().any(|e| e
            .fields
            .as_ref()
            .is_some_and(|f| f.spiffe_id == ADMIN && f.admin)));

        let s = list(&args(&ordinary_dir))
            .await
            .expect_err("an ordinary SVID is not");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{}", s.message());
        assert!(
            s.message()
                .starts_with(&format!("{ORDINARY} is not an admin")),
            "{}",
            s.message()
        );

        // The agent's own SVID (its software key in data_dir), on the same port it syncs on.
        let s = list(&tls_args(
            &env,
            agent_svid.clone(),
            dir.join("data/agent_svid.key"),
            env.bundle.clone(),
        ))
        .await
        .expect_err("an agent SVID is not an admin");
        assert_eq!(s.code(), tonic::Code::PermissionDenied, "{}", s.message());
        assert!(
            s.message()
                .contains("agent and server SVIDs (under /spire/) are never admins by entry"),
            "{}",
            s.message()
        );
    });
}
