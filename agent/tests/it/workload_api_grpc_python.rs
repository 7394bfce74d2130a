//! Workload API interop with gRPC's C-core: Python `grpcio` (stubs generated
//! at test time from the project's api/proto/spiffe/workload.proto) and the
//! SPIFFE Python library, against a real `ironroot-agent run` (attested with
//! a swtpm against the real server), over every `:authority` such clients
//! send on a unix socket: C-core's percent-encoded socket path, the raw path
//! (as grpc-java sends it), an empty one and `localhost`. Also the SPIFFE
//! spec's error semantics for each client, Rust `spiffe` crate included, and
//! the agent's log of protocol-level refusals.
//!
//! The Python packages live in the venv `scripts/install-deps.sh` makes
//! (`/opt/ironroot-venv`, or `$IRONROOT_VENV`). In CI (CI=true) a missing
//! venv fails the tests; elsewhere they say they are skipped.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::*;
use ironroot_agent::api_client;
use ironroot_agent::workload::h2_authority::frames::{Refusal, ServerFrames};
use ironroot_testkit::python::{self, grpc_python};
use ironroot_testkit::svid::{assert_svid_leaf, now, webpki_verify};
use ironroot_testkit::swtpm::Swtpm;
use serde_json::Value;
use spiffe::{JwtBundle, JwtBundleSet, JwtSvid, TrustDomain, WorkloadApiClient};

const A: &str = "spiffe://example.org/interop/a";
const TD: &str = "spiffe://example.org";
/// A group no entry names: callers run with it have no identity.
const NO_ENTRY_GID: u32 = 65534;

/// A server, a booted swtpm and a running agent with one entry, A, for this
/// process's uid and gid. Fields drop in order: agent, TPM, server.
struct Setup {
    agent: AgentProcess,
    _tpm: Swtpm,
    env: Env,
    test: &'static str,
}

fn setup(test: &'static str) -> Setup {
    let env = good_env(test);
    let (tpm, log, agent_id) = booted_node(&env);
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        A,
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", nix::unistd::getuid()),
        "--selector",
        &format!("unix:gid:{}", nix::unistd::getgid()),
        "--hint",
        "a",
    ]);
    let agent = start_agent(&env, &tpm, &log, test);
    wait_synced(&agent.socket);
    Setup {
        agent,
        _tpm: tpm,
        env,
        test,
    }
}

/// Waits (Rust `spiffe` client) until the agent serves A.
fn wait_synced(socket: &Path) {
    let endpoint = format!("unix:{}", socket.display());
    let deadline = Instant::now() + Duration::from_secs(30);
    rt().block_on(async {
        loop {
            let last = match WorkloadApiClient::connect_to(&endpoint).await {
                Ok(c) => match c.fetch_x509_svid().await {
                    Ok(s) if s.spiffe_id().to_string() == A => return,
                    Ok(s) => format!("got {}", s.spiffe_id()),
                    Err(e) => format!("{e:#}"),
                },
                Err(e) => format!("connect: {e:#}"),
            };
            assert!(
                Instant::now() < deadline,
                "no SVID {A} within 30s; last: {last}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

fn unhex(s: &Value) -> Vec<u8> {
    hex::decode(s.as_str().expect("hex string")).expect("hex")
}

/// Runs the Python client; `gid` runs it in another group (no entry).
fn run_client(py: &Path, socket: &Path, extra: &[&str], gid: Option<u32>) -> Value {
    let stubs = tempfile::tempdir().unwrap();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut cmd = Command::new(py);
    cmd.arg(manifest.join("tests/it/grpc_python/workload_client.py"))
        .arg("--socket")
        .arg(socket)
        .arg("--proto")
        .arg(manifest.join("../api/proto/spiffe"))
        .arg("--stubs")
        .arg(stubs.path())
        .args(extra);
    if let Some(g) = gid {
        cmd.gid(g);
    }
    let out = cmd.output().expect("run the python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client {extra:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn ok<'a>(out: &'a Value, call: &str) -> &'a Value {
    let v = &out[call];
    assert!(v.get("error").is_none(), "{call} failed: {v}");
    v
}

fn assert_status(out: &Value, call: &str, code: &str, words: &str) {
    let e = &out[call]["error"];
    assert_eq!(e["code"], code, "{call}: {}", out[call]);
    let details = e["details"].as_str().unwrap_or_default();
    assert!(
        details.contains(words),
        "{call}: expected '{words}' in {details:?}"
    );
}

/// The JWT-SVID verifies offline against the JWT bundle the same client got
/// (checked by the Rust `spiffe` crate), for audience db only.
fn check_jwt(token: &str, jwks: &str) {
    let td = TrustDomain::new("example.org").unwrap();
    let mut set = JwtBundleSet::new();
    set.add_bundle(
        JwtBundle::from_jwt_authorities(td, jwks.as_bytes()).expect("JWT bundle parses"),
    );
    let svid = JwtSvid::parse_and_validate(token, &set, &["db"]).expect("JWT-SVID verifies");
    assert_eq!(svid.spiffe_id().to_string(), A);
    JwtSvid::parse_and_validate(token, &set, &["other"]).expect_err("another audience verifies");
}

/// Everything a stubs client with a working identity must get.
fn check_stubs_client(out: &Value, roots: &[Vec<u8>], label: &str) {
    let x = ok(out, "FetchX509SVID");
    let svids = x["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 1, "{label}");
    assert_eq!(svids[0]["spiffe_id"], A, "{label}");
    assert_eq!(svids[0]["hint"], "a", "{label}");
    let chain = der_certs(&unhex(&svids[0]["chain"]));
    assert_svid_leaf(&chain[0], A);
    webpki_verify(&chain, roots, now()).expect("the SVID verifies to the server's bundle");
    assert!(!unhex(&svids[0]["key"]).is_empty(), "{label}: no key");
    assert_eq!(der_certs(&unhex(&svids[0]["bundle"])), roots, "{label}");

    let b = ok(out, "FetchX509Bundles");
    assert_eq!(b["bundles"].as_object().unwrap().len(), 1, "{label}: {b}");
    assert_eq!(der_certs(&unhex(&b["bundles"][TD])), roots, "{label}");

    let j = ok(out, "FetchJWTSVID");
    assert_eq!(j["svids"][0]["spiffe_id"], A, "{label}");
    assert_eq!(j["svids"][0]["hint"], "a", "{label}");
    let token = j["svids"][0]["svid"].as_str().unwrap();
    let jb = ok(out, "FetchJWTBundles");
    check_jwt(
        token,
        jb["bundles"][TD].as_str().expect("JWKS for example.org"),
    );

    let v = ok(out, "ValidateJWTSVID");
    assert_eq!(v["spiffe_id"], A, "{label}");
    assert_eq!(v["claims"]["sub"], A, "{label}");
    assert_status(
        out,
        "ValidateJWTSVID/other-audience",
        "INVALID_ARGUMENT",
        "JWT-SVID is not valid",
    );
}

/// The agent's log, without the terminal colours its formatter adds.
fn agent_log(s: &Setup) -> String {
    let raw =
        std::fs::read_to_string(ironroot_testkit::test_log_dir(s.test).join("agent.log")).unwrap();
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw.as_str();
    while let Some(i) = rest.find("\x1b[") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find('m').map_or("", |j| &rest[i + j + 1..]);
    }
    out.push_str(rest);
    out
}

#[test]
fn grpc_c_core_clients_reach_every_rpc_over_every_unix_authority() {
    let Some(py) = grpc_python() else { return };
    let s = setup("grpc_python_interop");
    let roots = server_roots(&s.env);
    let raw_path = s.agent.socket.to_str().unwrap().to_string();
    for (label, authority) in [
        ("C-core's percent-encoded socket path", None),
        (
            "the raw socket path (as grpc-java)",
            Some(raw_path.as_str()),
        ),
        ("an empty authority", Some("")),
        ("localhost", Some("localhost")),
    ] {
        let mut args = vec!["--flavour", "stubs"];
        if let Some(a) = authority {
            args.extend(["--authority", a]);
        }
        let out = run_client(&py, &s.agent.socket, &args, None);
        check_stubs_client(&out, &roots, label);
    }
    // What C-core sent was a socket path, percent-encoded, and the agent said
    // so at debug level (the agent under test logs at debug).
    let encoded = raw_path.trim_start_matches('/').replace('/', "%2F");
    let log = agent_log(&s);
    assert!(
        log.contains(&format!("authority=\"{encoded}\""))
            && log.contains("handed to the server as localhost"),
        "no log line for the replaced authority {encoded:?}:\n{log}"
    );

    // The SPIFFE project's Python library, all five RPCs and its own offline
    // JWT-SVID validation against the bundles it fetched.
    let out = run_client(&py, &s.agent.socket, &["--flavour", "library"], None);
    assert_eq!(ok(&out, "FetchX509SVID")["spiffe_id"], A);
    let chain: Vec<Vec<u8>> = ok(&out, "FetchX509SVID")["chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(unhex)
        .collect();
    webpki_verify(&chain, &roots, now()).expect("the library's SVID verifies");
    let mut lib_roots: Vec<Vec<u8>> = ok(&out, "FetchX509Bundles")["bundles"]["example.org"]
        .as_array()
        .expect("an X.509 bundle for example.org")
        .iter()
        .map(unhex)
        .collect();
    lib_roots.sort();
    let mut want = roots.clone();
    want.sort();
    assert_eq!(lib_roots, want);
    let jwt = ok(&out, "FetchJWTSVID");
    assert_eq!(jwt["spiffe_id"], A);
    assert_eq!(jwt["audience"], serde_json::json!(["db"]));
    assert_eq!(
        ok(&out, "FetchJWTBundles")["trust_domains"],
        serde_json::json!(["example.org"])
    );
    assert_eq!(ok(&out, "ValidateJWTSVID")["spiffe_id"], A);
    let offline = ok(&out, "offline JWT-SVID validation");
    assert_eq!(offline["spiffe_id"], A);
    assert_ne!(offline["other_audience"], "accepted", "{offline}");
}

/// The spec's error semantics, for each client: a caller with no entry gets
/// PermissionDenied "no identity issued"; a call without the
/// `workload.spiffe.io: true` header gets InvalidArgument. And protocol-level
/// refusals on the socket are logged with the caller's PID.
#[test]
fn every_client_gets_the_spec_error_semantics_and_refusals_are_logged() {
    let Some(py) = grpc_python() else { return };
    let s = setup("grpc_python_errors");
    let sock = &s.agent.socket;
    let raw_path = sock.to_str().unwrap().to_string();

    // No security header (grpcio stubs, C-core's default authority and the raw path).
    for extra in [
        &["--flavour", "stubs", "--no-header"][..],
        &[
            "--flavour",
            "stubs",
            "--no-header",
            "--authority",
            &raw_path,
        ],
    ] {
        let out = run_client(&py, sock, extra, None);
        for call in [
            "FetchX509SVID",
            "FetchX509Bundles",
            "FetchJWTSVID",
            "FetchJWTBundles",
            "ValidateJWTSVID",
        ] {
            assert_status(&out, call, "INVALID_ARGUMENT", "security header missing");
        }
    }
    // No header, Rust (tonic) client.
    let e = rt().block_on(async {
        let mut c = api_client::connect(sock).await.unwrap();
        c.fetch_jwt_bundles(tonic::Request::new(
            ironroot_api::workload::JwtBundlesRequest {},
        ))
        .await
        .expect_err("FetchJWTBundles without the header succeeded")
    });
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");

    if !nix::unistd::getuid().is_root() {
        python::skipped(&format!(
            "the no-entry callers need root to run in group {NO_ENTRY_GID}"
        ));
        return;
    }
    // No entry: grpcio stubs, the Python library, the Rust spiffe crate.
    let out = run_client(
        &py,
        sock,
        &["--flavour", "stubs", "--authority", &raw_path],
        Some(NO_ENTRY_GID),
    );
    for call in [
        "FetchX509SVID",
        "FetchX509Bundles",
        "FetchJWTSVID",
        "FetchJWTBundles",
    ] {
        assert_status(&out, call, "PERMISSION_DENIED", "no identity issued");
    }
    let out = run_client(&py, sock, &["--flavour", "library"], Some(NO_ENTRY_GID));
    for call in [
        "FetchX509SVID",
        "FetchX509Bundles",
        "FetchJWTSVID",
        "FetchJWTBundles",
    ] {
        let details = out[call]["error"]["details"].as_str().unwrap_or_default();
        assert!(
            details.contains("no identity issued") && details.contains("PERMISSION_DENIED"),
            "{call}: {}",
            out[call]
        );
    }
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            &test_path("rust_spiffe_client_without_an_entry"),
            "--nocapture",
        ])
        .env("IRONROOT_NO_ENTRY_SOCKET", sock)
        .gid(NO_ENTRY_GID)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&child.stdout);
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("NO-ENTRY "))
        .unwrap_or_else(|| {
            panic!(
                "no result from the child: {stdout}{}",
                String::from_utf8_lossy(&child.stderr)
            )
        });
    let got: Value = serde_json::from_str(line).unwrap();
    for call in [
        "fetch_x509_svid",
        "fetch_x509_bundles",
        "fetch_jwt_svid",
        "fetch_jwt_bundles",
    ] {
        assert_eq!(got[call], "NoIdentityIssued", "{call}: {got}");
    }

    // Protocol-level refusals are logged with the reason and the caller's PID.
    let mut bad = Vec::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
    bad.extend(frame(0x4, 0, 0, &[]));
    // A literal `connection: close` (a connection-level header, refused by h2).
    let mut block = vec![0x83, 0x86, 0x04, 0x02, b'/', b'x', 0x00, 0x0a];
    block.extend_from_slice(b"connection");
    block.extend_from_slice(&[0x05]);
    block.extend_from_slice(b"close");
    bad.extend(frame(0x1, 0x5, 1, &block));
    let pid = talk(sock, &bad, |r| {
        matches!(r, Refusal::StreamReset { stream: 1, code: 1 })
    });
    let pid_field = format!("pid={pid}");
    wait_for_log(&s, |log| {
        log.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&pid_field)
                && l.contains("code=\"PROTOCOL_ERROR\"")
                && l.contains("refused a request at the protocol level")
        })
    });
    // An index past the HPACK tables: the shim closes the connection, naming the rule.
    let mut bad = Vec::from(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..]);
    bad.extend(frame(0x4, 0, 0, &[]));
    bad.extend(frame(0x1, 0x5, 1, &[0x80 | 99]));
    let pid = talk(sock, &bad, |_| false);
    let pid_field = format!("pid={pid}");
    wait_for_log(&s, |log| {
        log.lines().any(|l| {
            l.contains("WARN")
                && l.contains(&pid_field)
                && l.contains("the client broke an HTTP/2 rule")
                && l.contains("index 99 is outside the static and dynamic tables")
        })
    });
}

/// The path of test `name` of this module as the harness knows it (`module::name`, the
/// binary's crate name left out): what `--exact` matches.
fn test_path(name: &str) -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::{name}")
}

/// The Rust `spiffe` crate as a caller with no entry: run by the test above
/// in another group, it prints what each call returned.
#[test]
#[ignore = "run by every_client_gets_the_spec_error_semantics_and_refusals_are_logged"]
fn rust_spiffe_client_without_an_entry() {
    let sock = std::env::var("IRONROOT_NO_ENTRY_SOCKET").expect("IRONROOT_NO_ENTRY_SOCKET");
    let kind = |e: spiffe::WorkloadApiError| {
        let s = format!("{e:?}");
        s.split(['(', ' ', '{'])
            .next()
            .unwrap_or_default()
            .to_string()
    };
    let got = rt().block_on(async {
        let c = WorkloadApiClient::connect_to(&format!("unix:{sock}")).await.unwrap();
        serde_json::json!({
            "fetch_x509_svid": c.fetch_x509_svid().await.map(|_| "ok".to_string()).unwrap_or_else(kind),
            "fetch_x509_bundles": c.fetch_x509_bundles().await.map(|_| "ok".to_string()).unwrap_or_else(kind),
            "fetch_jwt_svid": c.fetch_jwt_svid(["db"], None).await.map(|_| "ok".to_string()).unwrap_or_else(kind),
            "fetch_jwt_bundles": c.fetch_jwt_bundles().await.map(|_| "ok".to_string()).unwrap_or_else(kind),
        })
    });
    println!("NO-ENTRY {got}");
}

/// Sends `bytes` on a new connection from a child process (so its PID is
/// its own) and reads until the server writes a refusal `done` accepts, or
/// closes; returns the child's PID.
fn talk(sock: &Path, bytes: &[u8], done: impl Fn(&Refusal) -> bool) -> u32 {
    // socat relays stdin to the socket and the answer to stdout.
    let mut child = Command::new("socat")
        .arg("-t2")
        .arg("STDIO")
        .arg(format!("UNIX-CONNECT:{}", sock.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("socat (scripts/install-deps.sh installs it)");
    let pid = child.id();
    child.stdin.as_mut().unwrap().write_all(bytes).unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut watch = ServerFrames::default();
    let mut buf = [0u8; 4096];
    loop {
        let n = match stdout.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut found = Vec::new();
        watch.observe(&buf[..n], &mut found);
        if found.iter().any(&done) {
            break;
        }
    }
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    pid
}

fn wait_for_log(s: &Setup, found: impl Fn(&str) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = agent_log(s);
        if found(&log) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expected log line missing:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
