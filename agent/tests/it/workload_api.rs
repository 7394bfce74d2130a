//! The SPIFFE Workload API end to end: the real server, the `ironroot-agent
//! run` binary attesting with a swtpm, a workload (this test process, or the
//! CLI as another uid) fetching its SVIDs over the unix socket.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use ironroot_agent::api_client;
use ironroot_api::workload as pb;
use ironroot_testkit::svid::{now, webpki_verify};

#[test]
fn workloads_get_their_svids_and_only_theirs() {
    let env = good_env("workload_api_e2e");
    let (tpm, log, agent_id) = booted_node(&env);
    let web = "spiffe://example.org/workload/web";
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        web,
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
    ]);
    // Entries this agent must never serve: another agent's, and one for another uid.
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/workload/stolen",
        "--parent-id",
        "spiffe://example.org/spire/agent/tpm_ek/other",
        "--selector",
        "unix:uid:0",
    ]);
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/workload/nobody-only",
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:4242",
    ]);
    let agent = start_agent(&env, &tpm, &log, "workload_api_e2e");

    // The workload (uid 0) gets exactly its SVID, verifiable to the bundle.
    let r = wait_for_svid(&agent.socket, web, Duration::from_secs(30));
    let ids: Vec<&str> = r.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
    assert_eq!(ids, vec![web], "only the caller's authorized entries");
    let chain = der_certs(&r.svids[0].x509_svid);
    let roots = der_certs(&r.svids[0].bundle);
    ironroot_testkit::svid::assert_svid_leaf(&chain[0], web);
    webpki_verify(&chain, &roots, now()).expect("workload SVID verifies");
    assert!(!r.svids[0].x509_svid_key.is_empty());

    // Without the security header: refused.
    let e = rt().block_on(async {
        let mut c = api_client::connect(&agent.socket).await.unwrap();
        c.fetch_x509svid(tonic::Request::new(pb::X509svidRequest {}))
            .await
            .unwrap_err()
    });
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("security header"), "{e:?}");

    // Another uid with no entry: "no identity issued". It runs a copy of the
    // CLI that every user can reach, wherever the checkout lives.
    let cli = ironroot_testkit::shared_bin::SharedBinary::copy_of(Path::new(env!(
        "CARGO_BIN_EXE_ironroot-agent"
    )));
    let out = Command::new(cli.path())
        .args(["api", "fetch", "x509", "-s"])
        .arg(&agent.socket)
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no identity issued"), "{err}");
    assert!(err.contains("PermissionDenied"), "{err}");

    // JWT-SVID: minted for the audience, validated by the Workload API.
    let jwt = rt()
        .block_on(api_client::fetch_jwt(
            &agent.socket,
            vec!["db".into()],
            String::new(),
        ))
        .unwrap();
    assert_eq!(jwt.svids.len(), 1);
    assert_eq!(jwt.svids[0].spiffe_id, web);
    let v = rt()
        .block_on(api_client::validate_jwt(
            &agent.socket,
            "db".into(),
            jwt.svids[0].svid.clone(),
        ))
        .unwrap();
    assert_eq!(v.spiffe_id, web);
    let bad = rt().block_on(api_client::validate_jwt(
        &agent.socket,
        "cache".into(),
        jwt.svids[0].svid.clone(),
    ));
    assert!(format!("{:#}", bad.unwrap_err()).contains("audience"));
    let e = rt()
        .block_on(api_client::fetch_jwt(&agent.socket, vec![], String::new()))
        .unwrap_err();
    assert!(format!("{e:#}").contains("audience must be specified"));

    // A new entry reaches a waiting stream promptly (the server notifies the agent).
    let api = "spiffe://example.org/workload/api";
    let elapsed = rt().block_on(async {
        let mut c = api_client::connect(&agent.socket).await.unwrap();
        let mut stream = c
            .fetch_x509svid(api_client::request(pb::X509svidRequest {}))
            .await
            .unwrap()
            .into_inner();
        let first = stream.message().await.unwrap().unwrap();
        assert_eq!(first.svids.len(), 1);
        let t0 = Instant::now();
        env.server.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            api,
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:0",
        ]);
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("stream update within 10s")
                .unwrap()
                .unwrap();
            let ids: Vec<String> = m.svids.iter().map(|s| s.spiffe_id.clone()).collect();
            if ids.contains(&api.to_string()) {
                assert!(
                    !ids.iter()
                        .any(|i| i.contains("stolen") || i.contains("nobody-only")),
                    "{ids:?}"
                );
                break t0.elapsed();
            }
        }
    });
    assert!(
        elapsed < Duration::from_secs(3),
        "entry change took {elapsed:?}"
    );

    // A federated bundle set on the server reaches the workload whose entry
    // federates with its trust domain.
    let fed = env.dir.path().join("federated.pem");
    std::fs::write(&fed, env.server.cli_ok(&["bundle", "show"])).unwrap();
    env.server.cli_ok(&[
        "bundle",
        "set",
        "--id",
        "spiffe://partner.org",
        "--path",
        fed.to_str().unwrap(),
        "--format",
        "pem",
    ]);
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/workload/federating",
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
        "--federates-with",
        "partner.org",
    ]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = rt()
            .block_on(api_client::fetch_x509(&agent.socket))
            .unwrap();
        if let Some(b) = r.federated_bundles.get("spiffe://partner.org") {
            assert_eq!(der_certs(b), roots, "the partner bundle as set");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "federated bundle not served: {:?}",
            r.federated_bundles.keys()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
