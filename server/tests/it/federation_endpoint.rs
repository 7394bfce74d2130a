//! SPIFFE Federation between real servers on SoftHSM2 tokens: each serves its bundle
//! endpoint (https_spiffe, its own X.509-SVID), each polls the other's after a one-time
//! `bundle set` bootstrap, and a CA rotation on one side reaches the other's store (which
//! the agents of that side follow). Refusals: an endpoint presenting the wrong SPIFFE ID,
//! a bundle of another trust domain, malformed JSON (the last good bundle stays), and an
//! https_web endpoint whose certificate is not trusted.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use ironroot_api::bundle::TrustBundle;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_testkit::certs;
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use ironroot_testkit::{free_port, wait_until};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// Bootstraps `server`'s bundle of `td` with `peer`'s current roots (PEM, sequence 0).
fn bootstrap(server: &ServerProcess, td: &str, peer: &ServerProcess, dir: &Path) {
    let pem = dir.join(format!("{td}.bootstrap.pem"));
    std::fs::write(&pem, peer.cli_ok(&["bundle", "show"])).unwrap();
    server.set_federated_bundle_pem(td, &pem);
}

/// The federated bundle of `td` as `server` stores it: (sequence, X.509 roots, JWT kids).
fn stored(server: &ServerProcess, td: &str) -> Option<(u64, BTreeSet<Vec<u8>>, usize)> {
    let list: Value =
        serde_json::from_str(&server.cli_ok(&["bundle", "list", "--output", "json"])).unwrap();
    let b = list["bundles"]
        .as_array()?
        .iter()
        .find(|b| b["trust_domain"] == td)?;
    let keys = b["jwks"]["keys"].as_array().cloned().unwrap_or_default();
    let roots = keys
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| {
            base64::engine::general_purpose::STANDARD
                .decode(k["x5c"][0].as_str().unwrap())
                .unwrap()
        })
        .collect();
    let jwt = keys.iter().filter(|k| k["use"] == "jwt-svid").count();
    Some((
        b["jwks"]["spiffe_sequence"].as_u64().unwrap_or(0),
        roots,
        jwt,
    ))
}

fn log(server: &ServerProcess) -> String {
    std::fs::read_to_string(&server.log).unwrap_or_default()
}

fn relationship(td: &str, port: u16, spiffe_id: &str) -> String {
    format!(
        "[[federation.federates_with]]\ntrust_domain = \"{td}\"\n\
         bundle_endpoint_url = \"https://127.0.0.1:{port}\"\nprofile = \"https_spiffe\"\n\
         endpoint_spiffe_id = \"{spiffe_id}\"\n"
    )
}

const FAST_POLLING: &str =
    "[federation]\nmin_refresh_interval = \"1s\"\nmax_refresh_interval = \"5s\"\n";

#[test]
fn two_trust_domains_federate_and_a_rotation_reaches_the_other_side() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (port_a, port_b) = (free_port(), free_port());
    let (_ha, a) = start_trust_domain(
        "federation_a",
        dir_a.path(),
        "td-a.test",
        &format!(
            "{FAST_POLLING}[federation.bundle_endpoint]\nlisten = \"127.0.0.1:{port_a}\"\n\n{}",
            relationship("td-b.test", port_b, "spiffe://td-b.test/spire/server")
        ),
    );
    // td-b rotates every 30 s: the next root is published at 15 s.
    let (_hb, b) = start_trust_domain(
        "federation_b",
        dir_b.path(),
        "td-b.test",
        &format!(
            "[ca]\nca_ttl = \"30s\"\ndefault_x509_svid_ttl = \"1h\"\n\
             rotation_check_interval = \"200ms\"\n\n{FAST_POLLING}\
             [federation.bundle_endpoint]\nlisten = \"127.0.0.1:{port_b}\"\n\n{}",
            relationship("td-a.test", port_a, "spiffe://td-a.test/spire/server")
        ),
    );
    let context = || format!("A:\n{}\nB:\n{}", a.log_tail(), b.log_tail());

    // Before the bootstrap an https_spiffe endpoint cannot be authenticated: refused by name.
    wait_until(
        "the bootstrap refusal",
        Duration::from_secs(20),
        context,
        || log(&a).contains("rule bootstrap"),
    );
    assert_eq!(stored(&a, "td-b.test"), None);

    bootstrap(&a, "td-b.test", &b, dir_a.path());
    bootstrap(&b, "td-a.test", &a, dir_b.path());
    let b_roots_at_start: BTreeSet<Vec<u8>> = b.bundle_roots().into_iter().collect();

    // Each side replaces the bootstrap (sequence 0, no JWT keys) with the fetched bundle.
    for (server, peer_td, peer) in [(&a, "td-b.test", &b), (&b, "td-a.test", &a)] {
        wait_until(
            &format!("{peer_td}'s fetched bundle"),
            Duration::from_secs(30),
            context,
            || matches!(stored(server, peer_td), Some((seq, _, jwt)) if seq > 0 && jwt > 0),
        );
        let (_, roots, _) = stored(server, peer_td).unwrap();
        let peer_roots: BTreeSet<Vec<u8>> = peer.bundle_roots().into_iter().collect();
        assert!(roots.is_subset(&peer_roots) && !roots.is_empty());
    }

    // td-b's rotation publishes a new root; td-a fetches it, authenticating td-b's
    // endpoint with the bundle it fetched before.
    wait_until("td-b's next root", Duration::from_secs(40), context, || {
        b.bundle_roots()
            .into_iter()
            .any(|r| !b_roots_at_start.contains(&r))
    });
    let new_root = b
        .bundle_roots()
        .into_iter()
        .find(|r| !b_roots_at_start.contains(r))
        .unwrap();
    wait_until(
        "td-b's next root in td-a's store",
        Duration::from_secs(30),
        context,
        || matches!(stored(&a, "td-b.test"), Some((_, roots, _)) if roots.contains(&new_root)),
    );
    // The first root expires at 30 s and td-b retires it; td-a sees that only through a
    // fetch after it, from an endpoint whose SVID its new key signed (renewed across the
    // rotation) and that td-a authenticates with the bundle it fetched before.
    wait_until(
        "td-b's retired root gone from td-a's store",
        Duration::from_secs(40),
        context,
        || {
            matches!(stored(&a, "td-b.test"), Some((_, roots, _))
                if roots.contains(&new_root) && roots.is_disjoint(&b_roots_at_start))
        },
    );
    assert!(
        !log(&a).contains("rule endpoint-authentication"),
        "{}",
        a.log_tail()
    );
    assert!(log(&a).contains("federated bundle refreshed from its bundle endpoint"));
}

/// A one-connection-at-a-time HTTPS server: `GET <path>` answers the file `routes` maps
/// the path to, read afresh per request (a test changes what is served by rewriting it).
fn fake_endpoint(cert: &certs::CertFiles, routes: Vec<(&'static str, PathBuf)>) -> u16 {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert.cert)
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(&cert.key).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in listener.incoming().flatten() {
            let _ = tcp.set_read_timeout(Some(Duration::from_secs(5)));
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            let path = text.split_whitespace().nth(1).unwrap_or("").to_owned();
            let body = routes
                .iter()
                .find(|(p, _)| *p == path)
                .and_then(|(_, f)| std::fs::read(f).ok());
            let (status, body) = match body {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", Vec::new()),
            };
            let _ = write!(
                tls,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n",
                body.len()
            );
            let _ = tls.write_all(&body);
            let _ = tls.flush();
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    port
}

fn web_relationship(td: &str, port: u16, path: &str, ca: &Path) -> String {
    format!(
        "[[federation.federates_with]]\ntrust_domain = \"{td}\"\n\
         bundle_endpoint_url = \"https://127.0.0.1:{port}{path}\"\nprofile = \"https_web\"\n\
         ca_file = \"{}\"\n",
        ca.display()
    )
}

/// td-b.test with its bundle endpoint (https_spiffe) on a free port.
fn td_b_serving_its_bundle(test: &str, dir: &Path) -> (SoftHsm, ServerProcess, u16) {
    let port = free_port();
    let (hsm, server) = start_trust_domain(
        test,
        dir,
        "td-b.test",
        &format!("[federation.bundle_endpoint]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    (hsm, server, port)
}

#[test]
fn bad_endpoints_and_bad_bundles_are_refused_and_the_last_good_bundle_stays() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_hb, b, port_b) = td_b_serving_its_bundle("federation_refusals_b", dir_b.path());

    // The web endpoint: a good bundle of td-web.test (its root names no trust domain), then
    // junk; td-b's bundle served as if it were td-wrong.test's.
    let pki = dir_a.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let web_ca = certs::ca(&pki, "web-ca");
    let other_ca = certs::ca(&pki, "other-ca");
    let leaf = certs::leaf(&pki, "endpoint", "IP:127.0.0.1,DNS:localhost", &web_ca);
    let web_root = CertificateDer::pem_file_iter(&web_ca.cert)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .to_vec();
    let good = TrustBundle {
        x509_authorities: vec![web_root.clone()],
        sequence_number: 7,
        refresh_hint_secs: 1,
        ..TrustBundle::new(TrustDomain::parse("td-web.test").unwrap())
    };
    let served = pki.join("served.json");
    std::fs::write(&served, good.to_jwks_json().unwrap()).unwrap();
    let td_b_jwks = pki.join("td-b.json");
    std::fs::write(
        &td_b_jwks,
        b.cli_ok(&["bundle", "show", "--format", "jwks"]),
    )
    .unwrap();
    let port_web = fake_endpoint(
        &leaf,
        vec![("/served", served.clone()), ("/td-b", td_b_jwks)],
    );

    let port_metrics = free_port();
    let (_ha, a) = start_trust_domain(
        "federation_refusals_a",
        dir_a.path(),
        "td-a.test",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port_metrics}\"\n\n{FAST_POLLING}\n{}\n{}\n{}\n{}",
            relationship("td-b.test", port_b, "spiffe://td-b.test/not-the-server"),
            web_relationship("td-web.test", port_web, "/served", &web_ca.cert),
            web_relationship("td-wrong.test", port_web, "/td-b", &web_ca.cert),
            web_relationship("td-untrusted.test", port_web, "/served", &other_ca.cert),
        ),
    );
    bootstrap(&a, "td-b.test", &b, dir_a.path());
    let context = || a.log_tail();

    // https_web: the good bundle is stored.
    wait_until("td-web's bundle", Duration::from_secs(30), context, || {
        stored(&a, "td-web.test").is_some()
    });
    let (seq, roots, _) = stored(&a, "td-web.test").unwrap();
    assert_eq!((seq, roots), (7, BTreeSet::from([web_root.clone()])));

    // Wrong SPIFFE ID, wrong trust domain, untrusted web certificate: each by its rule.
    wait_until(
        "the three refusals",
        Duration::from_secs(30),
        context,
        || {
            let l = log(&a);
            l.contains("expected spiffe://td-b.test/not-the-server")
                && l.contains(
                    "rule trust-domain: x509 authority 0 names td-b.test, not td-wrong.test",
                )
                && l.contains("rule endpoint-authentication (https_web")
        },
    );
    let (seq_b, _, jwt_b) = stored(&a, "td-b.test").unwrap();
    assert_eq!((seq_b, jwt_b), (0, 0), "the bootstrap bundle stays");
    assert_eq!(stored(&a, "td-wrong.test"), None);
    assert_eq!(stored(&a, "td-untrusted.test"), None);

    // Malformed JSON: refused by rule, the last good bundle kept.
    std::fs::write(&served, "{\"keys\": [").unwrap();
    wait_until(
        "the malformed refusal",
        Duration::from_secs(30),
        context,
        || log(&a).contains("rule well-formed"),
    );
    let (seq, roots, _) = stored(&a, "td-web.test").unwrap();
    assert_eq!((seq, roots), (7, BTreeSet::from([web_root])));

    // Every outcome is counted by its rule.
    let page = ironroot_testkit::metrics_page(port_metrics);
    for outcome in [
        "changed",
        "endpoint-authentication",
        "trust-domain",
        "well-formed",
    ] {
        let series =
            format!("ironroot_server_federation_bundle_refreshes_total{{outcome=\"{outcome}\"}}");
        assert!(page.contains(&series), "no {series} in:\n{page}");
    }
}

#[test]
fn an_https_web_endpoint_serves_the_bundle_and_reloads_its_certificate() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let pki = dir_b.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    let web_ca = certs::ca(&pki, "web-ca");
    let other_ca = certs::ca(&pki, "other-ca");
    let first = certs::leaf(&pki, "first", "IP:127.0.0.1,DNS:localhost", &web_ca);
    let second = certs::leaf(&pki, "second", "IP:127.0.0.1,DNS:localhost", &other_ca);
    let (cert_file, key_file) = (pki.join("endpoint.pem"), pki.join("endpoint.key"));
    std::fs::copy(&first.cert, &cert_file).unwrap();
    std::fs::copy(&first.key, &key_file).unwrap();
    let port_b = free_port();
    let (_hb, b) = start_trust_domain(
        "federation_web_b",
        dir_b.path(),
        "td-b.test",
        &format!(
            "[federation.bundle_endpoint]\nlisten = \"127.0.0.1:{port_b}\"\n\
             profile = \"https_web\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            cert_file.display(),
            key_file.display()
        ),
    );

    // The document: a SPIFFE JWK Set of td-b's bundle, as JSON, at / only.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let get = |path: &str, ca: &Path| {
        let tls = ironroot_runtime::https::TlsOptions {
            ca_file: Some(("ca_file", ca.to_owned())),
            ..Default::default()
        }
        .client_config()
        .unwrap();
        let client = ironroot_runtime::https::HttpsClient::new(
            &format!("https://127.0.0.1:{port_b}"),
            tls,
            Duration::from_secs(10),
            1 << 20,
        )
        .unwrap();
        rt.block_on(client.request(hyper::Method::GET, path, None, None))
    };
    let answer = get("/", &web_ca.cert).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "application/json");
    let served = TrustBundle::from_jwks_json(
        TrustDomain::parse("td-b.test").unwrap(),
        std::str::from_utf8(&answer.body).unwrap(),
    )
    .unwrap();
    assert_eq!(served.x509_authorities, b.bundle_roots());
    assert!(served.sequence_number > 0 && served.refresh_hint_secs > 0);
    assert_eq!(served.jwt_authorities.len(), 1);
    assert_eq!(get("/other", &web_ca.cert).unwrap().status, 404);

    // A partner with an https_web relationship trusting web-ca fetches it, no bootstrap.
    let (_ha, a) = start_trust_domain(
        "federation_web_a",
        dir_a.path(),
        "td-a.test",
        &format!(
            "{FAST_POLLING}\n{}",
            web_relationship("td-b.test", port_b, "/", &web_ca.cert)
        ),
    );
    wait_until(
        "td-b's bundle over https_web",
        Duration::from_secs(30),
        || a.log_tail(),
        || matches!(stored(&a, "td-b.test"), Some((seq, _, 1)) if seq == served.sequence_number),
    );

    // New files: the endpoint presents the new certificate within seconds, no restart.
    std::fs::copy(&second.cert, &cert_file).unwrap();
    std::fs::copy(&second.key, &key_file).unwrap();
    wait_until(
        "the reloaded certificate",
        Duration::from_secs(20),
        || b.log_tail(),
        || get("/", &other_ca.cert).is_ok_and(|r| r.status == 200),
    );
    assert!(get("/", &web_ca.cert).unwrap_err().is_tls());
    assert!(log(&b).contains("TLS certificate reloaded"));
}

/// A bootstrap `bundle set` is taken up when it is stored, not at the poller's next retry:
/// here the retry is ten minutes away, so only the change notice can make the fetch happen
/// within the test.
#[test]
fn a_bootstrap_is_fetched_from_when_it_is_set_not_at_the_next_retry() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_hb, b, port_b) = td_b_serving_its_bundle("bootstrap_wake_b", dir_b.path());
    let (_ha, a) = start_trust_domain(
        "bootstrap_wake_a",
        dir_a.path(),
        "td-a.test",
        &format!(
            "[federation]\nmin_refresh_interval = \"10m\"\nmax_refresh_interval = \"1h\"\n\n{}",
            relationship("td-b.test", port_b, "spiffe://td-b.test/spire/server")
        ),
    );
    let context = || format!("A:\n{}\nB:\n{}", a.log_tail(), b.log_tail());
    wait_until(
        "the bootstrap refusal",
        Duration::from_secs(20),
        context,
        || log(&a).contains("rule bootstrap"),
    );
    bootstrap(&a, "td-b.test", &b, dir_a.path());
    wait_until(
        "td-b's fetched bundle, long before the next retry",
        Duration::from_secs(30),
        context,
        || matches!(stored(&a, "td-b.test"), Some((seq, _, jwt)) if seq > 0 && jwt > 0),
    );
    assert!(
        log(&a).contains("fetching now instead of at the next refresh"),
        "{}",
        context()
    );
}
