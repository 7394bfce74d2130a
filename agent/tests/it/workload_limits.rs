//! The Workload API's per-caller limits and shared responses, end to end:
//! the real server (CA in SoftHSM), `ironroot-agent run` attested with a
//! swtpm, this test process as the uid-0 workload and the agent's CLI run as
//! uid 65534 as a second caller.
//!
//! - the JWT-SVID cache stays within its capacity however many audiences are
//!   asked for, and still serves valid tokens;
//! - a uid past its JWT mint rate gets ResourceExhausted naming the limit,
//!   while another uid is not affected, and cached tokens are still served;
//! - a connection over the per-uid limit is refused with ResourceExhausted
//!   naming the limit and a log line, another uid still connects, and a
//!   freed slot is usable again;
//! - streams that share one encoded response still give each caller only
//!   its own SVIDs, also after an entry change.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use ironroot_agent::api_client;
use ironroot_api::workload as pb;

const ROOT_ID: &str = "spiffe://example.org/workload/root";
const ROOT_ID2: &str = "spiffe://example.org/workload/root-2";
const NOBODY_ID: &str = "spiffe://example.org/workload/nobody";
const NOBODY: u32 = 65534;

/// A server, a swtpm and the agent's SPIFFE ID, with an entry for uid 0 and
/// one for uid 65534.
struct Setup {
    env: Env,
    tpm: ironroot_testkit::swtpm::Swtpm,
    log: Vec<u8>,
    agent_id: String,
}

fn setup(test: &str) -> Setup {
    let env = good_env(test);
    let (tpm, log, agent_id) = booted_node(&env);
    let s = Setup {
        env,
        tpm,
        log,
        agent_id,
    };
    s.entry(ROOT_ID, "unix:uid:0");
    s.entry(NOBODY_ID, &format!("unix:uid:{NOBODY}"));
    s
}

impl Setup {
    fn entry(&self, id: &str, selector: &str) {
        self.env.server.cli_ok(&[
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &self.agent_id,
            "--selector",
            selector,
        ]);
    }

    fn agent(&self, test: &str, limits: &str) -> AgentProcess {
        start_agent_with(
            &self.env,
            &self.tpm,
            &self.log,
            test,
            &format!("\n[workload_api.limits]\n{limits}\n"),
        )
    }

    /// The agent binary copied where uid 65534 can run it (the checkout may
    /// be in a directory other users cannot enter).
    fn cli_for_nobody(&self) -> PathBuf {
        let dir = self.env.dir.path().join("bin");
        let bin = dir.join("ironroot-agent");
        if !bin.exists() {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(agent_bin(), &bin).unwrap();
            for (p, mode) in [(&dir, 0o755), (&bin, 0o755)] {
                std::fs::set_permissions(p, std::os::unix::fs::PermissionsExt::from_mode(mode))
                    .unwrap();
            }
        }
        bin
    }

    /// `ironroot-agent api <args> -s <socket>` as uid 65534.
    fn as_nobody(&self, socket: &Path, args: &[&str]) -> std::process::Output {
        Command::new(self.cli_for_nobody())
            .arg("api")
            .args(args)
            .arg("-s")
            .arg(socket)
            .uid(NOBODY)
            .gid(NOBODY)
            .output()
            .unwrap()
    }
}

/// The agent's log, without the terminal colour codes around field names.
fn agent_log(test: &str) -> String {
    let raw = std::fs::read_to_string(ironroot_testkit::test_log_dir(test).join("agent.log"))
        .unwrap_or_default();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Polls FetchX509SVID until the response holds exactly `ids`.
fn wait_for_ids(socket: &Path, ids: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = rt().block_on(api_client::fetch_x509(socket)) {
            let mut got: Vec<&str> = r.svids.iter().map(|s| s.spiffe_id.as_str()).collect();
            got.sort();
            if got == ids {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no response with {ids:?} within 30s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn jwt_call(
    rt: &tokio::runtime::Runtime,
    c: &mut pb::spiffe_workload_api_client::SpiffeWorkloadApiClient<tonic::transport::Channel>,
    aud: &str,
) -> Result<pb::JwtsvidResponse, tonic::Status> {
    rt.block_on(c.fetch_jwtsvid(api_client::request(pb::JwtsvidRequest {
        audience: vec![aud.to_string()],
        spiffe_id: String::new(),
    })))
    .map(|r| r.into_inner())
}

/// The highest `cached_total` / `cached_for_identity` the agent logged.
fn most_cached(log: &str, field: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("JWT-SVID minted"))
        .filter_map(|l| {
            let rest = &l[l.find(&format!("{field}="))? + field.len() + 1..];
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn jwt_cache_stays_bounded_and_mints_are_limited_per_uid() {
    const T: &str = "workload_limits_jwt";
    let s = setup(T);
    let agent = s.agent(
        T,
        "jwt_mints_per_second = 0.001\njwt_mint_burst = 12\n\
         jwt_cache_capacity = 6\njwt_cache_per_identity = 3",
    );
    wait_for_ids(&agent.socket, &[ROOT_ID]);
    // One runtime: the connection lives as long as it does.
    let rt = rt();
    let mut c = rt.block_on(api_client::connect(&agent.socket)).unwrap();

    // Ten audiences: ten mints, each token valid for its audience.
    let mut first = Vec::new();
    for i in 0..10 {
        let aud = format!("aud-{i}");
        let r = jwt_call(&rt, &mut c, &aud).expect("within the mint burst");
        assert_eq!(r.svids.len(), 1);
        assert_eq!(r.svids[0].spiffe_id, ROOT_ID);
        let v = rt
            .block_on(api_client::validate_jwt(
                &agent.socket,
                aud.clone(),
                r.svids[0].svid.clone(),
            ))
            .expect("a valid token");
        assert_eq!(v.spiffe_id, ROOT_ID);
        first.push(r.svids[0].svid.clone());
    }
    // The most recent audiences are served from the cache (same token, no mint)...
    assert_eq!(
        jwt_call(&rt, &mut c, "aud-9").unwrap().svids[0].svid,
        first[9]
    );
    assert_eq!(
        jwt_call(&rt, &mut c, "aud-8").unwrap().svids[0].svid,
        first[8]
    );
    // ...the oldest was evicted (3 per identity): a new mint, a new token.
    let again = jwt_call(&rt, &mut c, "aud-0").expect("mint 11 of 12");
    assert_ne!(
        again.svids[0].svid, first[0],
        "aud-0 must have been evicted"
    );
    let log = agent_log(T);
    assert!(
        most_cached(&log, "cached_for_identity") <= 3,
        "per-identity bound: {log}"
    );
    assert!(most_cached(&log, "cached_total") <= 6, "capacity: {log}");
    assert!(most_cached(&log, "cached_total") >= 3, "the log reports it");

    // Mint 12 passes; 13 is over the burst: ResourceExhausted naming the limit.
    let twelfth = jwt_call(&rt, &mut c, "aud-new-1").expect("mint 12 of 12");
    let e = jwt_call(&rt, &mut c, "aud-new-2").unwrap_err();
    assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("uid 0"), "{e:?}");
    assert!(
        e.message()
            .contains("workload_api.limits.jwt_mints_per_second"),
        "{e:?}"
    );
    // A cached token still costs nothing and is served.
    assert_eq!(
        jwt_call(&rt, &mut c, "aud-new-1").unwrap().svids[0].svid,
        twelfth.svids[0].svid
    );

    // Another uid is not affected.
    let out = s.as_nobody(
        &agent.socket,
        &[
            "fetch",
            "jwt",
            "--audience",
            "aud-new-2",
            "--output",
            "json",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "uid {NOBODY}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(NOBODY_ID), "{stdout}");

    // The refusal is logged, naming the limit.
    let log = agent_log(T);
    assert!(
        log.lines().any(|l| l.contains("JWT-SVID refused")
            && l.contains("jwt_mints_per_second")
            && l.contains("uid 0")),
        "no log line for the refusal:\n{log}"
    );
}

#[test]
fn connections_over_the_per_uid_limit_are_refused_and_named() {
    const T: &str = "workload_limits_connections";
    let s = setup(T);
    let agent = s.agent(T, "max_connections_per_uid = 3");
    wait_for_ids(&agent.socket, &[ROOT_ID]);
    let rt = rt();
    // Three connections, each with a held stream.
    let mut held = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while held.len() < 3 {
        // The polling connections above may not all be closed on the
        // agent's side yet: retry until three are held.
        let r = rt.block_on(async {
            let mut c = api_client::connect(&agent.socket).await?;
            let mut st = c
                .fetch_x509svid(api_client::request(pb::X509svidRequest {}))
                .await?
                .into_inner();
            st.message().await?;
            Ok::<_, anyhow::Error>((c, st))
        });
        match r {
            Ok(h) => held.push(h),
            Err(e) => assert!(Instant::now() < deadline, "3 connections: {e:#}"),
        }
    }
    // The fourth is refused, with the limit named.
    let e = rt
        .block_on(async {
            let mut c = api_client::connect(&agent.socket).await?;
            c.fetch_x509svid(api_client::request(pb::X509svidRequest {}))
                .await
                .map_err(anyhow::Error::from)
        })
        .map(|_| ())
        .unwrap_err();
    let status = e
        .downcast_ref::<tonic::Status>()
        .unwrap_or_else(|| panic!("not a gRPC status: {e:#}"));
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status
            .message()
            .contains("workload_api.limits.max_connections_per_uid = 3"),
        "{status:?}"
    );
    assert!(status.message().contains("uid 0"), "{status:?}");

    // Another uid is not affected.
    let out = s.as_nobody(&agent.socket, &["fetch", "x509", "--output", "json"]);
    assert!(
        out.status.success(),
        "uid {NOBODY}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(NOBODY_ID));

    // The refusal was logged with its reason.
    let log = agent_log(T);
    assert!(
        log.lines().any(|l| l.contains("connection refused")
            && l.contains("max_connections_per_uid")
            && l.contains("uid 0")),
        "no log line for the refusal:\n{log}"
    );

    // A slot freed is usable again.
    held.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match rt.block_on(api_client::fetch_x509(&agent.socket)) {
            Ok(r) => {
                assert_eq!(r.svids[0].spiffe_id, ROOT_ID);
                break;
            }
            Err(e) => assert!(Instant::now() < deadline, "slot not freed: {e:#}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn shared_responses_still_give_each_caller_only_its_svids() {
    const T: &str = "workload_limits_shared";
    let s = setup(T);
    let agent = s.agent(T, "");
    wait_for_ids(&agent.socket, &[ROOT_ID]);
    let rt = rt();
    // Several uid-0 streams held at once share one encoded response.
    let mut streams = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..5 {
            let mut c = api_client::connect(&agent.socket).await.unwrap();
            let mut st = c
                .fetch_x509svid(api_client::request(pb::X509svidRequest {}))
                .await
                .unwrap()
                .into_inner();
            let m = st.message().await.unwrap().unwrap();
            let ids: Vec<_> = m.svids.iter().map(|x| x.spiffe_id.clone()).collect();
            assert_eq!(ids, vec![ROOT_ID.to_string()]);
            v.push((c, st));
        }
        v
    });
    // Meanwhile uid 65534 gets its own and only its own.
    let out = s.as_nobody(&agent.socket, &["fetch", "x509", "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(NOBODY_ID), "{stdout}");
    assert!(!stdout.contains(ROOT_ID), "{stdout}");

    // An entry change reaches every held stream, still with uid 0's SVIDs only.
    s.entry(ROOT_ID2, "unix:uid:0");
    rt.block_on(async {
        for (_, st) in streams.iter_mut() {
            let m = tokio::time::timeout(Duration::from_secs(15), st.message())
                .await
                .expect("update within 15s")
                .unwrap()
                .unwrap();
            let mut ids: Vec<_> = m.svids.iter().map(|x| x.spiffe_id.as_str()).collect();
            ids.sort();
            assert_eq!(ids, vec![ROOT_ID, ROOT_ID2]);
            for svid in &m.svids {
                let pem = api_client::concat_der_to_pem(&svid.x509_svid).unwrap();
                let der = ironroot_testkit::server::pem_ders(&pem);
                ironroot_testkit::svid::assert_svid_leaf(&der[0], &svid.spiffe_id);
            }
        }
    });
    let out = s.as_nobody(&agent.socket, &["fetch", "x509", "--output", "json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(NOBODY_ID) && !stdout.contains("root"),
        "{stdout}"
    );

    // The bundle streams answer both uids (and nobody without an entry would
    // be refused as before).
    rt.block_on(async {
        let mut c = api_client::connect(&agent.socket).await.unwrap();
        let mut b = c
            .fetch_x509_bundles(api_client::request(pb::X509BundlesRequest {}))
            .await
            .unwrap()
            .into_inner();
        let m = b.message().await.unwrap().unwrap();
        assert!(m.bundles.contains_key("spiffe://example.org"));
        let mut j = c
            .fetch_jwt_bundles(api_client::request(pb::JwtBundlesRequest {}))
            .await
            .unwrap()
            .into_inner();
        let m = j.message().await.unwrap().unwrap();
        assert!(m.bundles.contains_key("spiffe://example.org"));
    });
    let out = s.as_nobody(&agent.socket, &["fetch", "jwt-bundles"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("spiffe://example.org"));
}
