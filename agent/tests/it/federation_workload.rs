//! SPIFFE Federation seen by a workload: the server of `example.org` polls the bundle
//! endpoint (https_spiffe) of a second server, `td-b.test`, after a one-time `bundle set`;
//! a workload behind a real agent of `example.org` whose entry federates with td-b is
//! served td-b's bundle in `federated_bundles`, and td-b's next root (its CA rotates
//! every 30 s) reaches the workload without anyone touching `example.org`'s server. A
//! second workload (another uid) whose entry does not federate with td-b is never given
//! its bundle, and once the first entry is updated to drop td-b, neither is the first.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ironroot_testkit::server::start_trust_domain;

use crate::common::*;

const WORKLOAD: &str = "spiffe://example.org/federated-workload";
const LOCAL_ONLY: &str = "spiffe://example.org/local-only-workload";
/// The second workload's uid (nobody).
const OTHER_UID: u32 = 65534;

/// Whether `needle` (one DER certificate) is among the concatenated DER of `haystack`.
fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn a_workload_gets_the_federated_bundle_and_the_partners_next_root() {
    let dir_b = tempfile::tempdir().unwrap();
    let port_b = ironroot_testkit::free_port();
    let (_hb, b) = start_trust_domain(
        "federation_workload_b",
        dir_b.path(),
        "td-b.test",
        &format!(
            "[ca]\nca_ttl = \"30s\"\ndefault_x509_svid_ttl = \"1h\"\n\
             rotation_check_interval = \"200ms\"\n\n\
             [federation.bundle_endpoint]\nlisten = \"127.0.0.1:{port_b}\"\n"
        ),
    );
    let ca = tpm_state().ek_ca_bundle();
    let env = Env::start_with_attestors(
        "federation_workload",
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"good\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
        "",
        &format!(
            "[federation]\nmin_refresh_interval = \"1s\"\nmax_refresh_interval = \"5s\"\n\n\
             [[federation.federates_with]]\ntrust_domain = \"td-b.test\"\n\
             bundle_endpoint_url = \"https://127.0.0.1:{port_b}\"\nprofile = \"https_spiffe\"\n\
             endpoint_spiffe_id = \"spiffe://td-b.test/spire/server\"\n"
        ),
    );
    // The bootstrap: td-b's roots as they are now, handed over by the operator.
    let b_roots_at_start = b.bundle_roots();
    let pem = env.dir.path().join("td-b.pem");
    std::fs::write(&pem, b.cli_ok(&["bundle", "show"])).unwrap();
    env.server.set_federated_bundle_pem("td-b.test", &pem);

    // A join-token agent of example.org and an entry for this process (uid 0).
    let log = ironroot_testkit::test_log_dir("federation_workload").join("agent.log");
    let agent = start_join_token_agent(&env, "fed-agent", &log, "");
    let socket = agent.socket.clone();
    let context = || {
        format!(
            "agent:\n{}\nserver:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            env.server.log_tail()
        )
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent_id = loop {
        let agents: serde_json::Value =
            serde_json::from_str(&env.server.cli_ok(&["agent", "list", "--output", "json"]))
                .unwrap();
        if let Some(id) = agents["agents"][0]["spiffe_id"].as_str() {
            break id.to_string();
        }
        assert!(Instant::now() < deadline, "no agent:\n{}", context());
        std::thread::sleep(Duration::from_millis(200));
    };
    // An entry may federate only with a trust domain whose bundle the server holds.
    let refused = env.server.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        WORKLOAD,
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
        "--federates-with",
        "td-c.test",
    ]);
    assert!(
        !refused.status.success(),
        "an entry federating with td-c was created"
    );
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("federates-with-needs-bundle"), "{stderr}");
    let created = env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        WORKLOAD,
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
        "--federates-with",
        "spiffe://td-b.test",
        "--output",
        "json",
    ]);
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    let entry_id = created["entries"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["entries"][0]["federates_with"],
        serde_json::json!(["td-b.test"]),
        "stored as the bare name"
    );
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        LOCAL_ONLY,
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{OTHER_UID}"),
    ]);

    let federated = |within: Duration, what: &str, ok: &dyn Fn(&[u8]) -> bool| {
        let deadline = Instant::now() + within;
        loop {
            let last = match fetch_x509(&socket) {
                Ok(r) => match r.federated_bundles.get("spiffe://td-b.test") {
                    Some(der) if ok(der) => return,
                    Some(der) => format!("td-b bundle of {} bytes", der.len()),
                    None => format!("federated: {:?}", r.federated_bundles.keys()),
                },
                Err(e) => format!("{e:#}"),
            };
            assert!(Instant::now() < deadline, "{what}: {last}\n{}", context());
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // The bootstrap bundle (or the first fetch) reaches the workload.
    federated(Duration::from_secs(30), "td-b's bundle", &|der| {
        b_roots_at_start.iter().all(|r| holds(der, r))
    });

    // td-b publishes its next root at 15 s; example.org's server fetches it and the agent
    // serves it to the workload.
    let deadline = Instant::now() + Duration::from_secs(40);
    let new_root = loop {
        if let Some(r) = b
            .bundle_roots()
            .into_iter()
            .find(|r| !b_roots_at_start.contains(r))
        {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "td-b never rotated:\n{}",
            b.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    federated(
        Duration::from_secs(30),
        "td-b's next root at the workload",
        &|der| holds(der, &new_root),
    );

    // The workload whose entry does not federate with td-b: served its SVID and
    // example.org's bundle, never td-b's, although the agent holds td-b's bundle (the
    // first workload was just served it).
    let other = OtherUid::new(&socket);
    let bundles = other.jwt_bundles(Duration::from_secs(30), &context);
    assert!(bundles.contains("spiffe://example.org:"), "{bundles}");
    assert!(!bundles.contains("td-b.test"), "{bundles}");
    let jwt = rt()
        .block_on(ironroot_agent::api_client::fetch_jwt_bundles(&socket))
        .unwrap();
    assert!(
        jwt.bundles.contains_key("spiffe://td-b.test"),
        "the first workload's FetchJWTBundles: {:?}",
        jwt.bundles.keys()
    );
    let x509 = fetch_x509(&socket).unwrap();
    assert!(x509.federated_bundles.contains_key("spiffe://td-b.test"));

    // The first entry updated to federate with nothing: its next response drops td-b.
    env.server.cli_ok(&[
        "entry",
        "update",
        "--entry-id",
        &entry_id,
        "--spiffe-id",
        WORKLOAD,
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:0",
    ]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let withdrawn = fetch_x509(&socket).is_ok_and(|r| {
            r.svids.iter().any(|s| s.spiffe_id == WORKLOAD) && r.federated_bundles.is_empty()
        });
        if withdrawn {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "td-b's bundle not withdrawn:\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let jwt = rt()
        .block_on(ironroot_agent::api_client::fetch_jwt_bundles(&socket))
        .unwrap();
    assert_eq!(
        jwt.bundles.keys().collect::<Vec<_>>(),
        ["spiffe://example.org"],
        "FetchJWTBundles after the update"
    );
}

/// The agent CLI run as [`OTHER_UID`]: a second workload on the same agent. A copy of
/// the binary every user can reach, wherever the checkout lives.
struct OtherUid<'a> {
    cli: ironroot_testkit::shared_bin::SharedBinary,
    socket: &'a Path,
}

impl<'a> OtherUid<'a> {
    fn new(socket: &'a Path) -> Self {
        let cli = ironroot_testkit::shared_bin::SharedBinary::copy_of(Path::new(env!(
            "CARGO_BIN_EXE_ironroot-agent"
        )));
        OtherUid { cli, socket }
    }

    /// `api fetch jwt-bundles` once its entry reached the agent: one
    /// `spiffe://<td>: <jwks>` line per bundle it is given.
    fn jwt_bundles(&self, within: Duration, context: &dyn Fn() -> String) -> String {
        let deadline = Instant::now() + within;
        loop {
            let out = Command::new(self.cli.path())
                .args(["api", "fetch", "jwt-bundles", "-s"])
                .arg(self.socket)
                .uid(OTHER_UID)
                .gid(OTHER_UID)
                .output()
                .unwrap();
            if out.status.success() {
                return String::from_utf8_lossy(&out.stdout).into_owned();
            }
            assert!(
                Instant::now() < deadline,
                "uid {OTHER_UID}: {}\n{}",
                String::from_utf8_lossy(&out.stderr),
                context()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
