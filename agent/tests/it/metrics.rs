//! The Prometheus endpoints of both binaries, scraped over HTTP from the real processes: a
//! join_token agent attests (the server's attestation counter moves, with its attestor and
//! outcome), a workload fetches its SVID (the agent's Workload API counter moves, the SVID
//! expiry horizon appears), a reused token is refused (counted under its gRPC code), and
//! only GET /metrics is served.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::common::*;

const TEST: &str = "metrics_endpoints";

/// One scrape: every sample by its name and sorted labels, and the `# TYPE` of each family.
#[derive(Debug)]
struct Page {
    samples: BTreeMap<(String, Vec<(String, String)>), f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Page {
    /// Parses the text exposition (the subset the endpoint writes: no escapes in label
    /// values, one sample per line). Any line it cannot read fails the test.
    fn parse(text: &str) -> Page {
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
                types.insert(name.to_string(), kind.to_string());
                continue;
            }
            if line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|e| panic!("value of {line:?}: {e}"));
            let (name, labels) = match key.split_once('{') {
                None => (key, Vec::new()),
                Some((name, rest)) => {
                    let body = rest
                        .strip_suffix('}')
                        .unwrap_or_else(|| panic!("labels of {line:?}"));
                    let mut labels: Vec<(String, String)> = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p
                                .split_once("=\"")
                                .unwrap_or_else(|| panic!("label {p:?} in {line:?}"));
                            (k.to_string(), v.trim_end_matches('"').to_string())
                        })
                        .collect();
                    labels.sort();
                    (name, labels)
                }
            };
            samples.insert((name.to_string(), labels), value);
        }
        Page {
            samples,
            types,
            text: text.to_string(),
        }
    }

    /// The sample `name{labels}`, 0 when absent (a counter not yet touched).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut l: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        l.sort();
        self.samples
            .get(&(name.to_string(), l))
            .copied()
            .unwrap_or(0.0)
    }

    /// The sum over every series of `name` whose labels include `labels`.
    fn sum(&self, name: &str, keep: impl Fn(&[(String, String)]) -> bool) -> f64 {
        self.samples
            .iter()
            .filter(|((n, l), _)| n == name && keep(l))
            .map(|(_, v)| v)
            .sum()
    }

    /// The single unlabelled sample `name`, which must exist.
    fn must(&self, name: &str) -> f64 {
        *self
            .samples
            .get(&(name.to_string(), Vec::new()))
            .unwrap_or_else(|| panic!("no {name} on the page:\n{}", self.text))
    }

    fn assert_type(&self, family: &str, kind: &str) {
        assert_eq!(
            self.types.get(family).map(String::as_str),
            Some(kind),
            "type of {family} in:\n{}",
            self.text
        );
    }
}

/// One HTTP/1.1 request; the status code and body.
fn http(address: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(address)
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {address}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line of {head:?}"));
    (status, body.to_string())
}

fn scrape(address: &str) -> Page {
    let (status, body) = http(address, "GET", "/metrics");
    assert_eq!(status, 200, "{body}");
    Page::parse(&body)
}

/// Polls `scrape` until `ok` holds (the values move asynchronously to the test).
fn scrape_until(address: &str, what: &str, ok: impl Fn(&Page) -> bool) -> Page {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = scrape(address);
        if ok(&page) {
            return page;
        }
        assert!(Instant::now() < deadline, "{what}: never on\n{}", page.text);
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A join_token agent with `token` (which a test may reuse), its metrics config appended.
fn start_agent_with_token(env: &Env, name: &str, token: &str, metrics: &str) -> AgentProcess {
    AgentProcess::start_join_token(&JoinTokenAgentSpec {
        servers: &[env.address.as_str()],
        bundle: &env.bundle,
        token,
        dir: env.dir.path().join(name),
        log: ironroot_testkit::test_log_dir(TEST).join(format!("{name}.log")),
        extra: metrics,
    })
}

#[test]
fn both_endpoints_count_attestations_signings_syncs_and_workload_calls() {
    let server_metrics = format!("127.0.0.1:{}", ironroot_testkit::free_port());
    let agent_metrics = format!("127.0.0.1:{}", ironroot_testkit::free_port());
    let ca = tpm_state().ek_ca_bundle();
    let env = Env::start_with_attestors(
        TEST,
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"good\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
        "challenge_ttl = \"20s\"",
        &format!("[metrics]\nlisten = \"{server_metrics}\"\n"),
    );
    let attestations = "ironroot_server_node_attestations_total";
    let join_token = |outcome: &'static str| [("attestor", "join_token"), ("outcome", outcome)];

    // Before any agent: nothing attested, the process facts are there.
    let before = scrape(&server_metrics);
    assert_eq!(before.value(attestations, &join_token("accepted")), 0.0);
    assert_eq!(before.must("ironroot_server_attested_agents"), 0.0);
    assert!(before.must("process_resident_memory_bytes") > 0.0);
    assert!(before.must("process_open_fds") > 0.0);
    assert!(before.must("process_start_time_seconds") > 1_700_000_000.0);
    before.must("process_cpu_seconds_total");
    // The server's own SVID (for the Node API's TLS) is the first signing.
    before.assert_type("ironroot_server_svids_signed", "counter");
    before.assert_type("process_resident_memory_bytes", "gauge");
    // Only GET /metrics is served.
    assert_eq!(http(&server_metrics, "GET", "/").0, 404);
    assert_eq!(http(&server_metrics, "GET", "/metricsx").0, 404);
    assert_eq!(http(&server_metrics, "POST", "/metrics").0, 405);

    let first = env.server.join_token();
    let agent = start_agent_with_token(
        &env,
        "agent",
        &first,
        &format!("[metrics]\nlisten = \"{agent_metrics}\"\n"),
    );
    let after = scrape_until(&server_metrics, "an accepted join_token attestation", |p| {
        p.value(attestations, &join_token("accepted")) == 1.0
            && p.value("ironroot_server_agent_syncs_total", &[("outcome", "ok")]) >= 1.0
    });
    assert_eq!(after.must("ironroot_server_attested_agents"), 1.0);
    // The agent's own SVID was signed in the HSM (the default CA mode), and timed.
    assert!(
        after.value(
            "ironroot_server_svids_signed_total",
            &[("kind", "x509"), ("ca_mode", "hsm")]
        ) >= 1.0,
        "{}",
        after.text
    );
    assert!(
        after.value(
            "ironroot_server_svid_signing_duration_seconds_count",
            &[("kind", "x509"), ("ca_mode", "hsm")]
        ) >= 1.0
    );
    assert!(
        after.value(
            "ironroot_server_node_attestation_duration_seconds_count",
            &join_token("accepted")
        ) == 1.0
    );
    after.assert_type(
        "ironroot_server_node_attestation_duration_seconds",
        "histogram",
    );
    // No series is labelled with an identity: SPIFFE IDs never become labels.
    assert!(!after.text.contains("spiffe://"), "{}", after.text);

    // A workload fetches its SVID through the Workload API.
    let agents: serde_json::Value =
        serde_json::from_str(&env.server.cli_ok(&["agent", "list", "--output", "json"])).unwrap();
    let agent_id = agents["agents"][0]["spiffe_id"]
        .as_str()
        .unwrap()
        .to_string();
    env.server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/metrics-workload",
        "--parent-id",
        &agent_id,
        "--selector",
        &format!("unix:uid:{}", nix::unistd::getuid()),
    ]);
    // The admin calls the CLI made, by method, transport and code; a refused one too.
    let bad = env.server.cli(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/",
        "--parent-id",
        &agent_id,
        "--selector",
        "unix:uid:1",
    ]);
    assert!(!bad.status.success(), "an entry without a path is refused");
    let admin = "ironroot_server_admin_calls_total";
    let counted = scrape_until(&server_metrics, "the admin calls", |p| {
        p.value(
            admin,
            &[
                ("method", "CreateEntry"),
                ("transport", "socket"),
                ("code", "ok"),
            ],
        ) == 1.0
            && p.value(
                admin,
                &[
                    ("method", "CreateEntry"),
                    ("transport", "socket"),
                    ("code", "invalid_argument"),
                ],
            ) == 1.0
    });
    assert!(
        counted.value(
            admin,
            &[
                ("method", "ListAgents"),
                ("transport", "socket"),
                ("code", "ok")
            ]
        ) >= 1.0,
        "{}",
        counted.text
    );
    counted.assert_type("ironroot_server_admin_calls", "counter");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = rt.block_on(ironroot_agent::api_client::fetch_x509(&agent.socket)) {
            if !r.svids.is_empty() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no workload SVID");
        std::thread::sleep(Duration::from_millis(200));
    }
    let calls = "ironroot_agent_workload_api_calls_total";
    let fetched = scrape_until(&agent_metrics, "an ok FetchX509SVID", |p| {
        p.value(calls, &[("rpc", "FetchX509SVID"), ("result", "ok")]) >= 1.0
    });
    assert_eq!(fetched.must("ironroot_agent_cached_svids"), 1.0);
    let horizon = fetched.must("ironroot_agent_svid_expiry_horizon_seconds");
    assert!(
        horizon > 0.0 && horizon <= 3600.0,
        "the workload SVID (1 h by default) expires in {horizon} s"
    );
    assert!(fetched.value("ironroot_agent_server_syncs_total", &[("outcome", "ok")]) >= 1.0);
    assert!(fetched.must("process_resident_memory_bytes") > 0.0);
    fetched.assert_type("ironroot_agent_workload_api_calls", "counter");
    fetched.assert_type("ironroot_agent_server_sync_duration_seconds", "histogram");

    // A refused unary call is counted under its gRPC code: a JWT-SVID without an audience.
    let refused = rt.block_on(ironroot_agent::api_client::fetch_jwt(
        &agent.socket,
        Vec::new(),
        String::new(),
    ));
    assert!(refused.is_err(), "a JWT-SVID without audience is refused");
    scrape_until(&agent_metrics, "a refused FetchJWTSVID", |p| {
        p.value(
            calls,
            &[("rpc", "FetchJWTSVID"), ("result", "invalid_argument")],
        ) == 1.0
    });
    assert_eq!(http(&agent_metrics, "GET", "/").0, 404);

    // The used token again: refused, counted under the refusal's code, not as accepted.
    let _second = start_agent_with_token(&env, "agent-reused-token", &first, "");
    let refused = scrape_until(&server_metrics, "a refused join_token attestation", |p| {
        p.sum(attestations, |l| {
            l.contains(&("attestor".into(), "join_token".into()))
                && !l.contains(&("outcome".into(), "accepted".into()))
        }) >= 1.0
    });
    assert_eq!(refused.value(attestations, &join_token("accepted")), 1.0);
}
