//! The Workload API for containers, end to end: the real server, a swtpm,
//! `ironroot-agent run` with the podman workload attestor pointed at a private
//! rootful podman (`ironroot_testkit::podman::workloads`), and processes inside containers
//! calling the Workload API through the agent's socket, bind-mounted into the
//! container. The client in the container is the agent binary itself
//! (`ironroot-agent api fetch x509`), bind-mounted with the libraries `ldd`
//! lists for it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::*;
use ironroot_testkit::podman::workloads::{Podman, IMAGE};
use ironroot_testkit::server::pem_ders;
use ironroot_testkit::svid::{assert_svid_leaf, now, webpki_verify};
use ironroot_testkit::tail;

const T: &str = "podman_workload_gets_its_svid_through_the_workload_api";
const WEB: &str = "spiffe://example.org/workload/podman-web";
const PROBE: &str = "spiffe://example.org/workload/host-probe";
/// Who the host probe runs as (no container runs as this uid).
const PROBE_UID: u32 = 65534;

/// `--volume` arguments that make the agent binary (at /ironroot-agent) and
/// its shared libraries (at their host paths) visible in a container.
fn agent_binary_volumes() -> Vec<String> {
    let bin = agent_bin();
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    assert!(ldd.status.success(), "ldd {}: {ldd:?}", bin.display());
    let mut v = vec![format!("{}:/ironroot-agent:ro", bin.display())];
    for lib in String::from_utf8_lossy(&ldd.stdout)
        .split_whitespace()
        .filter(|w| w.starts_with('/'))
    {
        let real = std::fs::canonicalize(lib).unwrap_or_else(|e| panic!("{lib}: {e}"));
        v.push(format!("{}:{lib}:ro", real.display()));
    }
    v
}

/// Runs `ironroot-agent api fetch x509` in a new container (removed after)
/// with `labels`, the agent socket dir at /sock and `out` at /out.
fn fetch_in_container(podman: &Podman, socket_dir: &Path, out: &Path, labels: &[&str]) -> Output {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        "none".into(),
    ];
    for l in labels {
        args.extend(["--label".into(), (*l).into()]);
    }
    for v in [
        format!("{}:/sock", socket_dir.display()),
        format!("{}:/out", out.display()),
    ]
    .into_iter()
    .chain(agent_binary_volumes())
    {
        args.extend(["--volume".into(), v]);
    }
    args.push(IMAGE.into());
    args.push(
        "exec /ironroot-agent api fetch x509 -s /sock/api.sock --write /out --output json".into(),
    );
    podman.cli().command(&args).output().expect("podman run")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Prints the agent's and server's log tails if the test fails (podman's
/// is printed by `Podman`).
struct Tails(Vec<PathBuf>);

impl Drop for Tails {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for p in &self.0 {
                eprintln!("--- tail of {} ---\n{}", p.display(), tail(p, 40));
            }
        }
    }
}

#[test]
fn podman_workload_gets_its_svid_through_the_workload_api() {
    let logs = ironroot_testkit::test_log_dir(T);
    let _tails = Tails(vec![
        logs.join("server.log"),
        logs.join("swtpm.log"),
        logs.join("agent.log"),
    ]);
    let podman = Podman::start();
    let env = good_env(T);
    let (tpm, log, agent_id) = booted_node(&env);
    let entry = |id: &str, selectors: &[&str]| {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &agent_id,
        ];
        for s in selectors {
            args.extend(["--selector", s]);
        }
        env.server.cli_ok(&args);
    };
    entry(WEB, &["podman:label:app:web", "unix:uid:0"]);
    let probe_uid = format!("unix:uid:{PROBE_UID}");
    entry(PROBE, &[&probe_uid]);
    let agent = start_agent_with(
        &env,
        &tpm,
        &log,
        T,
        &format!(
            "\n[workload_attestors.podman]\nsocket_path = \"{}\"\n",
            podman.socket().display()
        ),
    );

    // Ready when a host process (another uid, so no container matches its
    // entry) gets its SVID: the entries were synced together. That uid runs
    // a copy of the CLI it can reach, wherever the checkout lives.
    let probe_cli = ironroot_testkit::shared_bin::SharedBinary::copy_of(&agent_bin());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let o = Command::new(probe_cli.path())
            .args(["api", "fetch", "x509", "--output", "json", "-s"])
            .arg(&agent.socket)
            .uid(PROBE_UID)
            .gid(PROBE_UID)
            .output()
            .unwrap();
        if o.status.success() && String::from_utf8_lossy(&o.stdout).contains(PROBE) {
            break;
        }
        assert!(Instant::now() < deadline, "agent not serving: {}", text(&o));
        std::thread::sleep(Duration::from_millis(100));
    }
    let socket_dir = agent.socket.parent().unwrap();

    // app=web: the process in the container gets the podman entry's SVID.
    let out = podman.dir().join("out-web");
    std::fs::create_dir_all(&out).unwrap();
    let o = fetch_in_container(&podman, socket_dir, &out, &["app=web", "tier=front"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("json: {e}\n{}", text(&o)));
    let ids: Vec<&str> = v["svids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["spiffe_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![WEB], "{}", text(&o));
    let chain = pem_ders(&std::fs::read_to_string(out.join("svid.pem")).unwrap());
    let roots = pem_ders(&std::fs::read_to_string(out.join("bundle.pem")).unwrap());
    assert_svid_leaf(&chain[0], WEB);
    webpki_verify(&chain, &roots, now()).expect("the container's SVID verifies");

    // app=other: nothing.
    let out = podman.dir().join("out-other");
    std::fs::create_dir_all(&out).unwrap();
    let o = fetch_in_container(&podman, socket_dir, &out, &["app=other"]);
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no identity issued"), "{}", text(&o));
    assert!(err.contains("PermissionDenied"), "{}", text(&o));
    assert!(!out.join("svid.pem").exists());
}
