//! Workloads logging in to a real OpenBao with their SVIDs (docs/vault.md, "Workloads logging
//! in with their SVIDs"), end to end: the real server (SoftHSM2) with its OIDC discovery
//! endpoint over HTTPS, `ironroot-agent run` attested with a swtpm, this test process as the
//! workload (uid 0) fetching its SVIDs through the Workload API, and a `bao server -dev -dev-tls`
//! configured with the `bao` CLI as an operator would (`jwt` through OIDC discovery and through
//! `jwks_url`; `cert` trusting the bundle). The workload logs in with the `bao` CLI
//! (no token of its own), reads the one secret its policy allows, and every forged, expired or
//! misdirected credential is refused by OpenBao itself.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ironroot_agent::api_client;
use ironroot_api::workload::X509svidResponse;
use ironroot_testkit::certs;
use ironroot_testkit::openbao::OpenBao;
use ironroot_testkit::server::NodeApiServer;
use serde_json::Value;

use crate::common::*;

const WEB: &str = "spiffe://example.org/workload/web";
const OTHER: &str = "spiffe://example.org/workload/other";
const AUDIENCE: &str = "openbao";
/// The web entry's JWT-SVID lifetime: long enough to log in, short enough to wait out.
const WEB_JWT_TTL_SECS: u64 = 10;
/// An identity whose X.509-SVID has no DNS name, so no subject CN.
const NO_DNS: &str = "spiffe://example.org/workload/no-dns-name";
/// WEB's first DNS name, its X.509-SVID's subject CN (OpenBao's `cert` method names the
/// identity alias by the CN and refuses a certificate without one).
const WEB_DNS: &str = "web.example.org";
const SECRET: &str = "correct-horse-battery-staple";

/// The server (with `oidc_section` added), a booted swtpm, and the agent serving the workload
/// (uid 0) one identity per `entries` (SPIFFE ID, extra `entry create` arguments).
/// Fields drop in order: the agent stops before the server.
struct Workload {
    agent: AgentProcess,
    _tpm: ironroot_testkit::swtpm::Swtpm,
    _env: NodeApiServer,
}

fn start_workload(test: &str, oidc_section: &str, entries: &[(&str, &[&str])]) -> Workload {
    let ca = tpm_state().ek_ca_bundle();
    let env = NodeApiServer::start_with_attestors(
        test,
        &format!(
            "ek_ca_bundle = \"{}\"\ndefault_policy = \"good\"",
            ca.display()
        ),
        &[("good", policy_toml("good", &Boot::default()))],
        "challenge_ttl = \"20s\"",
        oidc_section,
    );
    let (tpm, log, agent_id) = booted_node(&env);
    for (id, extra) in entries {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            id,
            "--parent-id",
            &agent_id,
            "--selector",
            "unix:uid:0",
        ];
        args.extend_from_slice(extra);
        env.server.cli_ok(&args);
    }
    let agent = start_agent(&env, &tpm, &log, test);
    for (id, _) in entries {
        wait_for_svid(&agent.socket, id, Duration::from_secs(30));
    }
    Workload {
        agent,
        _tpm: tpm,
        _env: env,
    }
}

/// The operator's side shared by both methods: a secret for WEB, one it must not read, and
/// the policy `web-secrets` allowing only the first.
fn store_secrets(bao: &OpenBao) {
    bao.bao(&[
        "kv",
        "put",
        "-mount=secret",
        "web/db",
        &format!("password={SECRET}"),
    ]);
    bao.bao(&[
        "kv",
        "put",
        "-mount=secret",
        "other/db",
        "password=not-for-web",
    ]);
    bao.write_policy(
        "web-secrets",
        "path \"secret/data/web/*\" {\n  capabilities = [\"read\"]\n}\n",
    );
}

/// Runs the `bao` CLI as a client with `token` (none: not logged in), `stdin` on its input.
fn client(bao: &OpenBao, token: Option<&str>, args: &[&str], stdin: &str) -> Output {
    let mut cmd = bao.client_command();
    if let Some(t) = token {
        cmd.env("BAO_TOKEN", t);
    }
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bao");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The `auth` block of a successful login (`-format=json`).
fn logged_in(o: &Output, what: &str) -> Value {
    assert!(o.status.success(), "{what} must log in: {}", text(o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("login JSON");
    v["auth"].clone()
}

/// Asserts OpenBao refused (`Code: <code>`) with a message containing `words`.
fn assert_refused(o: &Output, what: &str, code: u16, words: &str) {
    let t = text(o);
    assert!(!o.status.success(), "{what} must be refused, but: {t}");
    eprintln!("{what}: refused by OpenBao: {}", t.trim());
    assert!(
        t.contains(&format!("Code: {code}")),
        "{what}: expected HTTP {code}: {t}"
    );
    assert!(t.contains(words), "{what}: expected {words:?} in: {t}");
}

/// With the token of `auth`: WEB's secret is read, the other one refused by the policy.
fn assert_reads_only_its_secret(bao: &OpenBao, auth: &Value) {
    let token = auth["client_token"].as_str().expect("client_token");
    let read = client(
        bao,
        Some(token),
        &["kv", "get", "-format=json", "-mount=secret", "web/db"],
        "",
    );
    assert!(read.status.success(), "read web/db: {}", text(&read));
    let v: Value = serde_json::from_slice(&read.stdout).unwrap();
    assert_eq!(v["data"]["data"]["password"], SECRET);
    let denied = client(
        bao,
        Some(token),
        &["kv", "get", "-mount=secret", "other/db"],
        "",
    );
    assert_refused(
        &denied,
        "reading another workload's secret",
        403,
        "permission denied",
    );
}

fn jwt_svid(w: &Workload, audience: &str, id: &str) -> String {
    let r = rt()
        .block_on(api_client::fetch_jwt(
            &w.agent.socket,
            vec![audience.into()],
            id.into(),
        ))
        .expect("FetchJWTSVID");
    assert_eq!(r.svids.len(), 1);
    assert_eq!(r.svids[0].spiffe_id, id);
    r.svids[0].svid.clone()
}

fn jwt_part(token: &str, i: usize) -> Value {
    let part = token.split('.').nth(i).expect("three JWS parts");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// A token with `claims` and `kid`, signed (ES256) by a fresh P-256 key that no bundle holds.
fn forged(claims: &Value, kid: &str) -> String {
    use ring::rand::SystemRandom;
    use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let key =
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let header = serde_json::json!({"alg": "ES256", "kid": kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = key.sign(&rng, input.as_bytes()).unwrap();
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `auth/<mount>/login` with `role` and `token` (on stdin), as the workload.
fn jwt_login_at(bao: &OpenBao, mount: &str, role: &str, token: &str) -> Output {
    client(
        bao,
        None,
        &[
            "write",
            "-format=json",
            &format!("auth/{mount}/login"),
            &format!("role={role}"),
            "jwt=-",
        ],
        token,
    )
}

fn jwt_login(bao: &OpenBao, token: &str) -> Output {
    jwt_login_at(bao, "jwt", "web", token)
}

/// The role `web` of the jwt method at `mount`: WEB's SPIFFE ID, OpenBao's audience, the
/// `web-secrets` policy.
fn write_web_role(bao: &OpenBao, mount: &str) {
    bao.bao(&[
        "write",
        &format!("auth/{mount}/role/web"),
        "role_type=jwt",
        "user_claim=sub",
        &format!("bound_subject={WEB}"),
        &format!("bound_audiences={AUDIENCE}"),
        "token_policies=web-secrets",
        "token_ttl=5m",
        "claim_mappings=sub=spiffe_id",
        // No grace past exp: an expired SVID is refused the second it expires.
        "expiration_leeway=-1",
        "not_before_leeway=-1",
        "clock_skew_leeway=-1",
    ]);
}

#[test]
fn a_jwt_svid_logs_in_to_openbao_through_oidc_discovery() {
    let Some(bao) = OpenBao::start_tls_or_skip() else {
        return;
    };
    let test = "vault_login_jwt";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The discovery endpoint's HTTPS certificate, from a CA OpenBao is told to trust.
    let oidc_ca = certs::ca(dir, "oidc-ca");
    let oidc_tls = certs::leaf(dir, "oidc", "DNS:localhost,IP:127.0.0.1", &oidc_ca);
    let address = format!("127.0.0.1:{}", ironroot_testkit::free_port());
    let issuer = format!("https://{address}");
    let w = start_workload(
        test,
        &format!(
            "[oidc]\nlisten = \"{address}\"\nissuer = \"{issuer}\"\n\
             tls_cert_file = \"{}\"\ntls_key_file = \"{}\"\n",
            oidc_tls.cert.display(),
            oidc_tls.key.display()
        ),
        &[
            (WEB, &["--jwt-svid-ttl", &WEB_JWT_TTL_SECS.to_string()]),
            (OTHER, &[]),
        ],
    );

    // The operator's side (docs/vault.md): OpenBao reads the discovery document when the
    // config is written, so a wrong URL or CA fails here.
    store_secrets(&bao);
    bao.bao(&["auth", "enable", "jwt"]);
    bao.bao(&[
        "write",
        "auth/jwt/config",
        &format!("oidc_discovery_url={issuer}"),
        &format!("oidc_discovery_ca_pem=@{}", oidc_ca.cert.display()),
        &format!("bound_issuer={issuer}"),
    ]);
    write_web_role(&bao, "jwt");

    // The workload's JWT-SVID for OpenBao's audience logs in and reads its secret.
    let token = jwt_svid(&w, AUDIENCE, WEB);
    let claims = jwt_part(&token, 1);
    assert_eq!(claims["iss"], issuer.as_str(), "the iss OpenBao compares");
    let auth = logged_in(&jwt_login(&bao, &token), "WEB's JWT-SVID");
    assert!(
        auth["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "web-secrets"),
        "{auth}"
    );
    assert_eq!(auth["metadata"]["spiffe_id"], WEB, "{auth}");
    assert_eq!(auth["metadata"]["role"], "web", "{auth}");
    assert_reads_only_its_secret(&bao, &auth);

    // Minted for another audience: refused.
    let other_audience = jwt_svid(&w, "someone-else", WEB);
    assert_refused(
        &jwt_login(&bao, &other_audience),
        "a JWT-SVID for another audience",
        400,
        "invalid audience (aud) claim",
    );
    // Another workload's SVID against the role bound to WEB: refused.
    let other_id = jwt_svid(&w, AUDIENCE, OTHER);
    assert_refused(
        &jwt_login(&bao, &other_id),
        "another SPIFFE ID's JWT-SVID",
        400,
        "invalid subject (sub) claim",
    );
    // ... which a role bound to OTHER accepts: the subject binding refused it.
    bao.bao(&[
        "write",
        "auth/jwt/role/other",
        "role_type=jwt",
        "user_claim=sub",
        &format!("bound_subject={OTHER}"),
        &format!("bound_audiences={AUDIENCE}"),
        "token_policies=default",
    ]);
    logged_in(
        &jwt_login_at(&bao, "jwt", "other", &other_id),
        "OTHER's JWT-SVID to its own role",
    );
    // WEB's claims, still valid in time, signed by a key outside the bundle: with the
    // genuine kid the signature fails, with its own kid no key is found.
    let mut fresh = claims.clone();
    fresh["exp"] = (unix_now() + 300).into();
    let genuine_kid = jwt_part(&token, 0)["kid"].as_str().unwrap().to_owned();
    for kid in [genuine_kid.as_str(), "not-in-the-bundle"] {
        assert_refused(
            &jwt_login(&bao, &forged(&fresh, kid)),
            &format!("a JWT signed by a key outside the bundle (kid {kid})"),
            400,
            "failed to verify id token signature",
        );
    }
    // The first token once its exp has passed (no leeway): refused.
    let exp = claims["exp"].as_u64().expect("exp");
    assert!(exp <= unix_now() + WEB_JWT_TTL_SECS, "entry TTL applied");
    while unix_now() <= exp + 1 {
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_refused(
        &jwt_login(&bao, &token),
        "an expired JWT-SVID",
        400,
        "token is expired",
    );
    // A second mount with jwks_url instead of discovery: OpenBao fetches the key set itself.
    bao.bao(&["auth", "enable", "-path=jwt-jwks", "jwt"]);
    bao.bao(&[
        "write",
        "auth/jwt-jwks/config",
        &format!("jwks_url={issuer}/keys"),
        &format!("jwks_ca_pem=@{}", oidc_ca.cert.display()),
        &format!("bound_issuer={issuer}"),
    ]);
    write_web_role(&bao, "jwt-jwks");
    // The agent keeps serving fresh ones: the workload logs in again.
    let again = jwt_svid(&w, AUDIENCE, WEB);
    assert_ne!(again, token);
    logged_in(&jwt_login(&bao, &again), "WEB's next JWT-SVID");

    // ... and through jwks_url.
    let auth = logged_in(
        &jwt_login_at(&bao, "jwt-jwks", "web", &again),
        "WEB's JWT-SVID through jwks_url",
    );
    assert_reads_only_its_secret(&bao, &auth);
    assert_refused(
        &jwt_login_at(&bao, "jwt-jwks", "web", &forged(&fresh, &genuine_kid)),
        "a forged JWT through jwks_url",
        400,
        "failed to verify id token signature",
    );
}

/// `svid`'s chain and key as PEM files `<dir>/<name>.pem`, `<dir>/<name>.key`, and the
/// bundle as `<dir>/bundle.pem`.
fn write_svid(r: &X509svidResponse, id: &str, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let one = X509svidResponse {
        svids: r
            .svids
            .iter()
            .filter(|s| s.spiffe_id == id)
            .cloned()
            .collect(),
        ..r.clone()
    };
    let out = dir.join(name);
    api_client::write_x509(&one, &out).expect("write SVID");
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::rename(out.join("svid.pem"), &cert).unwrap();
    std::fs::rename(out.join("svid.key"), &key).unwrap();
    std::fs::rename(out.join("bundle.pem"), dir.join("bundle.pem")).unwrap();
    (cert, key)
}

fn cert_login(bao: &OpenBao, role: &str, cert: &Path, key: &Path) -> Output {
    client(
        bao,
        None,
        &[
            "write",
            "-format=json",
            &format!("-client-cert={}", cert.display()),
            &format!("-client-key={}", key.display()),
            "auth/cert/login",
            &format!("name={role}"),
        ],
        "",
    )
}

#[test]
fn an_x509_svid_logs_in_to_openbao_through_cert_auth() {
    let Some(bao) = OpenBao::start_tls_or_skip() else {
        return;
    };
    let test = "vault_login_cert";
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = start_workload(
        test,
        "",
        &[
            (WEB, &["--dns-name", WEB_DNS]),
            (OTHER, &["--dns-name", "other.example.org"]),
            (NO_DNS, &[]),
        ],
    );
    let r = fetch_x509(&w.agent.socket).expect("FetchX509SVID");
    let (web_cert, web_key) = write_svid(&r, WEB, dir, "web");
    let (other_cert, other_key) = write_svid(&r, OTHER, dir, "other");

    // The operator's side: the trust bundle as the trusted CA, the role bound to WEB's URI SAN.
    store_secrets(&bao);
    bao.bao(&["auth", "enable", "cert"]);
    bao.bao(&[
        "write",
        "auth/cert/certs/web",
        &format!("certificate=@{}", dir.join("bundle.pem").display()),
        &format!("allowed_uri_sans={WEB}"),
        "token_policies=web-secrets",
        "token_ttl=5m",
    ]);

    let auth = logged_in(
        &cert_login(&bao, "web", &web_cert, &web_key),
        "WEB's X.509-SVID",
    );
    assert!(
        auth["policies"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "web-secrets"),
        "{auth}"
    );
    assert_eq!(auth["metadata"]["cert_name"], "web", "{auth}");
    assert_eq!(auth["metadata"]["common_name"], WEB_DNS, "{auth}");
    assert_reads_only_its_secret(&bao, &auth);

    // Another workload's SVID from the same CA: refused by allowed_uri_sans (the same SVID
    // logs in to a role that allows its SPIFFE ID, so nothing else refused it).
    assert_refused(
        &cert_login(&bao, "web", &other_cert, &other_key),
        "another SPIFFE ID's X.509-SVID",
        400,
        "no chain matching all constraints",
    );
    bao.bao(&[
        "write",
        "auth/cert/certs/other",
        &format!("certificate=@{}", dir.join("bundle.pem").display()),
        &format!("allowed_uri_sans={OTHER}"),
        "token_policies=default",
    ]);
    logged_in(
        &cert_login(&bao, "other", &other_cert, &other_key),
        "OTHER's X.509-SVID to its own role",
    );
    // WEB's SPIFFE ID in a certificate from another CA: refused.
    let other_ca = certs::ca(dir, "other-ca");
    let impostor = certs::leaf(dir, "impostor", &format!("URI:{WEB}"), &other_ca);
    assert_refused(
        &cert_login(&bao, "web", &impostor.cert, &impostor.key),
        "an X.509-SVID from another CA",
        400,
        "invalid certificate or no client certificate supplied",
    );
    // No client certificate at all: refused.
    let none = client(
        &bao,
        None,
        &["write", "-format=json", "auth/cert/login", "name=web"],
        "",
    );
    assert_refused(
        &none,
        "a login without a client certificate",
        400,
        "certificate",
    );
}
