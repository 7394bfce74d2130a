//! `[node_api.limits]` against the real server, through the agent's own Node API client:
//! a flood of attestations from one address is refused by name while that address's
//! signing goes on, and the budget refills; signing counts one token per CSR and an agent
//! keeps what a partly refused round signed; oversize requests are refused by name; the
//! (N+1)th connection is closed at accept; the watch-stream cap refuses by name; each
//! connection is told its stream limit. Every agent here is a join_token agent from
//! 127.0.0.1 (no TPM needed: the limits come before any attestor).

use std::time::{Duration, Instant};

use ironroot_agent::attest::{attest, AttestError, AttestOutcome};
use ironroot_agent::refused::Refused;
use ironroot_agent::sync::AgentSvid;
use ironroot_api::agent as pb;
use ironroot_api::spiffe_id::SpiffeId;
use ironroot_testkit::server::{NodeApiServer, TD};
use tonic::Code;

use crate::common::{agent, attested, join_token, rt};

/// A server with the Node API (join tokens; no TPM policy) and `limits` as its
/// `[node_api.limits]`.
fn server(test: &str, limits: &str) -> NodeApiServer {
    NodeApiServer::start(test, "", &[], &format!("[node_api.limits]\n{limits}"))
}

/// The status a refused attestation got.
fn refusal(r: Result<AttestOutcome, AttestError>) -> Refused {
    match r {
        Ok(o) => panic!("attestation passed but must be refused: {}", o.spiffe_id),
        Err(AttestError::Refused(r)) => r,
        Err(e) => panic!("attestation failed without a status: {e:#}"),
    }
}

fn assert_names(text: &str, words: &[&str]) {
    for w in words {
        assert!(text.contains(w), "expected {w:?} in: {text}");
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `within`.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut f: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn an_attestation_flood_is_refused_by_name_while_signing_goes_on() {
    const BURST: usize = 3;
    // One token every 2 s: the flood below takes far less.
    let env = server(
        "limits_attestation_flood",
        "attestations_per_ip_per_second = 0.5\nattestation_burst = 3",
    );
    let good = agent(&env, &join_token(&env), "good");
    let later = agent(&env, &join_token(&env), "later");
    let bogus = agent(&env, "not-a-token", "bogus");
    rt().block_on(async {
        let svid = AgentSvid::from(attest(&good).await.expect("first attestation"));
        // Attestations with a bogus token: the attestor refuses them, and each spent a token.
        let mut admitted = 1;
        let exhausted = loop {
            let r = refusal(attest(&bogus).await);
            match r.code() {
                Code::PermissionDenied => admitted += 1,
                Code::ResourceExhausted => break r,
                c => panic!("unexpected {c:?}: {r}"),
            }
            assert!(
                admitted <= BURST + 1,
                "no limit after {admitted} attestations"
            );
        };
        // The burst passes; one more only if the flood took over 2 s (a token came back).
        assert!(
            (BURST..=BURST + 1).contains(&admitted),
            "{admitted} attestations passed before the first refusal"
        );
        assert_names(
            exhausted.message(),
            &[
                "127.0.0.1",
                "node_api.limits.attestations_per_ip_per_second",
                "node_api.limits.attestation_burst",
                "retry in",
            ],
        );
        // A valid token is refused too, before the attestor sees it (it is not spent).
        let r = refusal(attest(&later).await);
        assert_eq!(r.code(), Code::ResourceExhausted, "{r}");

        // Signing from the same address has its own budget.
        let renewed = ironroot_agent::sync::renew_agent_svid(&good, &svid)
            .await
            .expect("signing is not limited by the attestation budget");
        assert_ne!(renewed.chain[0], svid.chain[0]);

        // The bucket refills: the unspent token attests once a token is back.
        let o = eventually(Duration::from_secs(15), "the bucket refills", || async {
            match attest(&later).await {
                Ok(o) => Some(o),
                Err(AttestError::Refused(r)) if r.code() == Code::ResourceExhausted => None,
                Err(e) => panic!("after the refill: {e:#}"),
            }
        })
        .await;
        assert!(
            o.spiffe_id.contains("/spire/agent/join_token/"),
            "{}",
            o.spiffe_id
        );
    });
    let log = std::fs::read_to_string(&env.server.log).expect("server log");
    assert_names(
        &log,
        &[
            "node API refused",
            "node_api.limits.attestations_per_ip_per_second",
        ],
    );
}

/// `count` CSR requests for entries nobody may have: each is answered with its own error,
/// but each costs a signing token.
fn unauthorized_batch(count: usize) -> pb::BatchNewX509SvidRequest {
    pb::BatchNewX509SvidRequest {
        requests: (0..count)
            .map(|i| pb::X509SvidRequest {
                entry_id: format!("no-such-entry-{i}"),
                csr: Vec::new(),
            })
            .collect(),
    }
}

fn jwt_request(audiences: usize) -> pb::NewJwtSvidRequest {
    pb::NewJwtSvidRequest {
        entry_id: "no-such-entry".into(),
        audience: (0..audiences).map(|i| format!("aud-{i}")).collect(),
    }
}

#[test]
fn signing_is_limited_per_csr_and_oversize_requests_are_refused_by_name() {
    let env = server(
        "limits_signing",
        "signings_per_ip_per_second = 0.5\nsigning_burst = 100\n\
         max_x509_svids_per_batch = 100\nmax_jwt_audiences = 2",
    );
    let a = agent(&env, &join_token(&env), "a");
    let b = agent(&env, &join_token(&env), "b");
    rt().block_on(async {
        let (_svid, mut client) = attested(&a).await;
        // Too large to ever pass: INVALID_ARGUMENT, and no token spent.
        let e = client
            .batch_new_x509_svid(unauthorized_batch(101))
            .await
            .expect_err("101 CSRs");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_names(
            e.message(),
            &["101 CSRs", "node_api.limits.max_x509_svids_per_batch"],
        );
        let e = client
            .new_jwt_svid(jwt_request(3))
            .await
            .expect_err("3 audiences");
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert_names(
            e.message(),
            &["3 audiences", "node_api.limits.max_jwt_audiences"],
        );

        // 100 CSRs spend the whole burst (each answered with its own refusal)...
        let r = client
            .batch_new_x509_svid(unauthorized_batch(100))
            .await
            .expect("a batch within the burst")
            .into_inner();
        assert_eq!(r.results.len(), 100);
        assert!(r.results.iter().all(|r| r.error.contains("not authorized")));
        // ... so one more SVID is over the rate.
        let e = client.new_jwt_svid(jwt_request(1)).await.expect_err("over");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_names(
            e.message(),
            &[
                "127.0.0.1",
                "node_api.limits.signings_per_ip_per_second",
                "node_api.limits.signing_burst",
            ],
        );
        // Attestation from the same address has its own budget.
        attest(&b)
            .await
            .expect("attestation is not limited by signing");
        // A token is back within 2 s: the call then reaches the entry check.
        let e = eventually(Duration::from_secs(15), "a signing token is back", || {
            let mut client = client.clone();
            async move {
                let e = client
                    .new_jwt_svid(jwt_request(1))
                    .await
                    .expect_err("no entry");
                (e.code() != Code::ResourceExhausted).then_some(e)
            }
        })
        .await;
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert_names(e.message(), &["not authorized"]);
    });
}

#[test]
fn an_agent_keeps_what_a_partly_refused_signing_round_got() {
    // 150 entries, a burst of 100: the agent's second call (50 CSRs) is over the rate
    // until 10 s later.
    let env = server(
        "limits_partial_signing",
        "signings_per_ip_per_second = 5.0\nsigning_burst = 100\nmax_x509_svids_per_batch = 100",
    );
    let cfg = agent(&env, &join_token(&env), "a");
    rt().block_on(async {
        let (svid, mut client) = attested(&cfg).await;
        let entries: Vec<serde_json::Value> = (0..150)
            .map(|i| {
                serde_json::json!({
                    "spiffe_id": format!("spiffe://{TD}/w/{i}"),
                    "parent_id": svid.spiffe_id,
                    "selectors": [{"type": "unix", "value": format!("uid:{}", 1000 + i)}],
                })
            })
            .collect();
        let data = env.dir.path().join("entries.json");
        std::fs::write(&data, serde_json::json!({ "entries": entries }).to_string())
            .expect("entries file");
        env.server
            .cli_ok(&["entry", "create", "--data", data.to_str().expect("path")]);
        // The server answers agents from a cache that follows the store: wait until it
        // has the entries (SyncEntries signs nothing), so that one sync asks for all 150.
        eventually(
            Duration::from_secs(10),
            "the server serves the entries",
            || {
                let mut client = client.clone();
                async move {
                    let r = client
                        .sync_entries(pb::SyncEntriesRequest { known_revision: 0 })
                        .await
                        .expect("entries")
                        .into_inner();
                    (r.entries.len() == 150).then_some(())
                }
            },
        )
        .await;

        let cache = ironroot_agent::cache::Cache::new(TD);
        ironroot_agent::sync::sync_once(&mut client, &cache)
            .await
            .expect("a refused chunk does not fail the sync");
        assert_eq!(cache.entry_ids().len(), 150);
        let first = cache.svid_chains();
        assert_eq!(
            first.len(),
            ironroot_agent::sync::CSRS_PER_CALL,
            "the first call's SVIDs are kept, the second call was refused"
        );
        // Later syncs ask only for the rest, and get them once the budget allows.
        eventually(Duration::from_secs(30), "every entry has its SVID", || {
            let (mut client, cache) = (client.clone(), cache.clone());
            async move {
                ironroot_agent::sync::sync_once(&mut client, &cache)
                    .await
                    .expect("sync");
                (cache.svid_chains().len() == 150).then_some(())
            }
        })
        .await;
        // The first 100 were not signed again.
        let last = cache.svid_chains();
        for (id, chain) in &first {
            assert_eq!(&last[id], chain, "entry {id} was re-signed");
        }
    });
}

#[test]
fn the_connection_after_max_connections_is_closed_at_accept() {
    let env = server("limits_connections", "max_connections = 2");
    let roots = ironroot_agent::connect::read_bundle(&env.bundle).expect("bundle");
    let id = SpiffeId::server(&ironroot_testkit::server::td());
    let servers =
        ironroot_agent::servers::Servers::new(&[env.address.parse().expect("server address")]);
    let connect = || async {
        ironroot_agent::connect::channel(&servers, roots.clone(), id.clone())
            .await
            .map(|(channel, _server)| channel)
    };
    rt().block_on(async {
        let first = connect().await.expect("connection 1");
        let _second = connect().await.expect("connection 2");
        let e = connect().await.expect_err("connection 3 is over the cap");
        assert!(
            matches!(e, ironroot_agent::connect::ConnectError::Unreachable { .. }),
            "{e:?}"
        );
        // The refused connection took no slot: once one closes, exactly one fits.
        drop(first);
        let _third = eventually(Duration::from_secs(10), "a slot is free", || async {
            connect().await.ok()
        })
        .await;
        connect().await.expect_err("the cap holds again");
    });
    let log = std::fs::read_to_string(&env.server.log).expect("server log");
    assert_names(&log, &["closed", "node_api.limits.max_connections"]);
}

#[test]
fn watch_streams_are_capped_by_name_and_each_connection_is_told_its_stream_limit() {
    let env = server(
        "limits_streams",
        "max_watch_streams = 1\nmax_streams_per_connection = 3",
    );
    let a = agent(&env, &join_token(&env), "a");
    let b = agent(&env, &join_token(&env), "b");
    rt().block_on(async {
        let (_sa, mut ca) = attested(&a).await;
        let (_sb, mut cb) = attested(&b).await;
        let mut held = ca
            .watch_changes(pb::WatchChangesRequest {})
            .await
            .expect("the first stream")
            .into_inner();
        held.message().await.expect("a notice").expect("a notice");
        let e = cb
            .watch_changes(pb::WatchChangesRequest {})
            .await
            .expect_err("a second stream is over the cap");
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_names(e.message(), &["node_api.limits.max_watch_streams"]);
        // The slot is freed when the stream ends.
        drop(held);
        eventually(Duration::from_secs(10), "the stream's slot is free", || {
            let mut cb = cb.clone();
            async move { cb.watch_changes(pb::WatchChangesRequest {}).await.ok() }
        })
        .await;

        assert_eq!(h2_max_streams(&env).await, 3);
    });
}

/// The SETTINGS_MAX_CONCURRENT_STREAMS the server announces on a new connection, read
/// with h2 itself over TLS.
async fn h2_max_streams(env: &NodeApiServer) -> usize {
    use std::sync::Arc;
    let roots = ironroot_agent::connect::read_bundle(&env.bundle).expect("bundle");
    let id = SpiffeId::server(&ironroot_testkit::server::td());
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .expect("TLS 1.3")
    .dangerous()
    .with_custom_certificate_verifier(ironroot_api::tls::SpiffeServerVerifier::new(roots, id))
    .with_no_client_auth();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(&env.address)
        .await
        .expect("tcp");
    let name = rustls::pki_types::ServerName::try_from("ironroot-server").expect("name");
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect(name, tcp)
        .await
        .expect("TLS");
    let (send, conn) = h2::client::Builder::new()
        // Not the server's value, so that reading it proves the SETTINGS arrived.
        .initial_max_send_streams(usize::MAX)
        .handshake::<_, bytes::Bytes>(stream)
        .await
        .expect("h2 handshake");
    tokio::spawn(conn);
    let send = send.ready().await.expect("h2 ready");
    eventually(Duration::from_secs(10), "the server's SETTINGS", || {
        let n = send.current_max_send_streams();
        async move { (n != usize::MAX).then_some(n) }
    })
    .await
}
