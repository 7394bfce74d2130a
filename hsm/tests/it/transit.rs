//! TransitKeyManager against a real OpenBao dev server (`testkit::openbao`): the conformance
//! suite under the least-privilege policy of docs/vault.md, and every failure an operator can
//! meet, each named: sealed, permission denied, a key deleted or replaced behind the key
//! manager, the server gone and back, foreign keys under ironroot's names, token renewal and
//! AppRole re-login.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironroot_hsm::{
    HsmError, KeyAlgorithm, KeyManager, KeyManagerHealth, SecretSource, TransitAuth, TransitConfig,
    TransitError, TransitKeyManager,
};
use ironroot_testkit::openbao::{OpenBao, ROOT_TOKEN};

use crate::conformance::Backend;
use crate::support::{sha256, verify_raw};

const MOUNT: &str = "transit";
const PREFIX: &str = "ironroot-";
const POLICY: &str = "ironroot-ca";

/// The ```hcl block of docs/vault.md: the tests run under exactly the documented policy.
fn documented_policy() -> String {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/vault.md"))
        .expect("docs/vault.md");
    let start = doc
        .find("```hcl\n")
        .expect("docs/vault.md has an ```hcl block")
        + 7;
    let len = doc[start..].find("```").expect("closed block");
    doc[start..start + len].to_owned()
}

/// A dev server with transit enabled, the documented policy, and a token of that policy in a
/// file.
pub(crate) struct Transit {
    bao: OpenBao,
    dir: tempfile::TempDir,
}

impl Transit {
    fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("{token}\n")).expect("write token file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    fn config(&self, auth: TransitAuth) -> TransitConfig {
        TransitConfig {
            address: self.bao.address(),
            mount: MOUNT.into(),
            key_prefix: PREFIX.into(),
            ca_file: None,
            insecure_http: true,
            auth,
            // Generous: RSA-3072 generation in OpenBao takes seconds on a loaded machine.
            timeout: Duration::from_secs(30),
            namespace: None,
        }
    }

    fn open_with_token(&self, token: &str) -> Result<TransitKeyManager, HsmError> {
        let file = self.token_file(&format!("token-{}", token.len()), token);
        TransitKeyManager::open(self.config(TransitAuth::Token(SecretSource::File(file))))
    }

    fn ca_token(&self, ttl: &str) -> String {
        self.bao.create_token(&[POLICY], ttl)
    }
}

impl Backend for Transit {
    fn fresh() -> Option<Self> {
        let bao = OpenBao::start_or_skip()?;
        bao.enable_transit(MOUNT);
        bao.write_policy(POLICY, &documented_policy());
        Some(Transit {
            bao,
            dir: tempfile::tempdir().expect("temp dir"),
        })
    }

    fn open(&self) -> Arc<dyn KeyManager> {
        let token = self.ca_token("1h");
        Arc::new(
            self.open_with_token(&token)
                .expect("open transit key manager"),
        )
    }
}

crate::key_manager_conformance!(crate::transit::Transit);

fn transit_error(e: &HsmError) -> &TransitError {
    match e {
        HsmError::Transit(t) => t,
        other => panic!("expected a transit error, got {other:?}"),
    }
}

#[test]
fn sealed_server_is_named_and_signing_resumes_after_unseal() {
    let Some(t) = Transit::fresh() else { return };
    let km = t.open();
    let info = km.generate("x509", KeyAlgorithm::EcP256).expect("generate");

    t.bao.seal();
    let err = km.sign_digest("x509", &sha256(b"m")).expect_err("sealed");
    assert!(
        matches!(transit_error(&err), TransitError::Sealed { .. }),
        "{err:?}"
    );
    assert!(err.is_unreachable(), "sealed counts as unreachable");
    let msg = err.to_string();
    assert!(
        msg.contains("is sealed") && msg.contains("Vault is sealed"),
        "{msg}"
    );
    let err = km.find("x509").expect_err("sealed");
    assert!(matches!(transit_error(&err), TransitError::Sealed { .. }));
    match km.health() {
        KeyManagerHealth::Unreachable { reason, .. } => {
            assert!(reason.contains("sealed"), "{reason}")
        }
        other => panic!("health while sealed: {other:?}"),
    }

    t.bao.unseal();
    assert_eq!(km.health(), KeyManagerHealth::Available);
    let sig = km
        .sign_digest("x509", &sha256(b"m"))
        .expect("sign after unseal");
    verify_raw(&info, b"m", &sig).expect("same key");
}

#[test]
fn token_without_permission_is_named_with_the_path() {
    let Some(t) = Transit::fresh() else { return };
    t.bao.write_policy(
        "read-only",
        r#"
path "transit/keys/*" { capabilities = ["read", "list"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
"#,
    );
    let token = t.bao.create_token(&["read-only"], "1h");
    let km = t.open_with_token(&token).expect("a read-only token opens");

    let err = km
        .generate("x509", KeyAlgorithm::EcP256)
        .expect_err("may not create");
    match transit_error(&err) {
        TransitError::PermissionDenied { method, path, .. } => {
            assert_eq!(
                (*method, path.as_str()),
                ("POST", "transit/keys/ironroot-x509")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(!err.is_unreachable());
    assert!(
        err.to_string().contains("HTTP 403 permission denied"),
        "{err}"
    );

    // Made by someone allowed to; this token may read it but not sign with it.
    t.bao.bao(&[
        "write",
        "-f",
        "transit/keys/ironroot-x509",
        "type=ecdsa-p256",
    ]);
    assert!(km.find("x509").expect("may read").is_some());
    let err = km
        .sign_digest("x509", &sha256(b"m"))
        .expect_err("may not sign");
    match transit_error(&err) {
        TransitError::PermissionDenied { path, .. } => {
            assert_eq!(path, "transit/sign/ironroot-x509")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn invalid_token_or_approle_secret_stops_open_by_name() {
    let Some(t) = Transit::fresh() else { return };
    let err = t.open_with_token("not-a-token").expect_err("invalid token");
    assert!(
        matches!(
            transit_error(&err),
            TransitError::Auth {
                method: "token",
                ..
            }
        ),
        "{err:?}"
    );
    let (role_id, _) = t.bao.approle("ca", &[POLICY], "1h", "24h");
    let wrong = t.token_file("wrong-secret", "00000000-0000-0000-0000-000000000000");
    let err = TransitKeyManager::open(t.config(TransitAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id: SecretSource::File(wrong),
    }))
    .expect_err("wrong secret ID");
    assert!(
        matches!(
            transit_error(&err),
            TransitError::Auth {
                method: "AppRole",
                ..
            }
        ),
        "{err:?}"
    );
    let missing = t.dir.path().join("no-such-file");
    let err = TransitKeyManager::open(t.config(TransitAuth::Token(SecretSource::File(missing))))
        .expect_err("no token file");
    assert!(matches!(
        transit_error(&err),
        TransitError::CredentialFile { .. }
    ));
}

#[test]
fn plain_http_needs_insecure_http() {
    let Some(t) = Transit::fresh() else { return };
    let file = t.token_file("root", ROOT_TOKEN);
    let mut config = t.config(TransitAuth::Token(SecretSource::File(file)));
    config.insecure_http = false;
    let err = TransitKeyManager::open(config).expect_err("http refused");
    match transit_error(&err) {
        TransitError::Config { option, reason } => {
            assert_eq!(*option, "address");
            assert!(reason.contains("insecure_http"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn key_deleted_behind_the_key_manager_is_key_not_found() {
    let Some(t) = Transit::fresh() else { return };
    let km = t.open();
    km.generate("x509", KeyAlgorithm::EcP256).expect("generate");
    km.sign_digest("x509", &sha256(b"m")).expect("sign");
    t.bao.bao(&[
        "write",
        "transit/keys/ironroot-x509/config",
        "deletion_allowed=true",
    ]);
    t.bao.bao(&["delete", "transit/keys/ironroot-x509"]);
    let err = km.sign_digest("x509", &sha256(b"m")).expect_err("gone");
    assert!(
        matches!(&err, HsmError::KeyNotFound { label } if label == "x509"),
        "{err:?}"
    );
    assert_eq!(km.find("x509").expect("find"), None);
}

#[test]
fn key_replaced_behind_the_key_manager_signs_nothing() {
    let Some(t) = Transit::fresh() else { return };
    let km = t.open();
    km.generate("x509", KeyAlgorithm::EcP256).expect("generate");
    km.sign_digest("x509", &sha256(b"m")).expect("sign");
    t.bao.bao(&[
        "write",
        "transit/keys/ironroot-x509/config",
        "deletion_allowed=true",
    ]);
    t.bao.bao(&["delete", "transit/keys/ironroot-x509"]);
    t.bao.bao(&[
        "write",
        "-f",
        "transit/keys/ironroot-x509",
        "type=ecdsa-p256",
    ]);
    let err = km
        .sign_digest("x509", &sha256(b"m"))
        .expect_err("another key under the name");
    assert!(
        matches!(
            transit_error(&err),
            TransitError::SignatureMismatch { label, name } if label == "x509" && name == "ironroot-x509"
        ),
        "{err:?}"
    );
}

#[test]
fn foreign_keys_under_our_names_are_refused_by_find_and_left_out_of_list() {
    let Some(t) = Transit::fresh() else { return };
    let km = t.open();
    let ok = km.generate("good", KeyAlgorithm::EcP256).expect("generate");
    let root = |args: &[&str]| {
        t.bao.bao(args);
    };
    root(&[
        "write",
        "-f",
        "transit/keys/ironroot-exportable",
        "type=ecdsa-p256",
        "exportable=true",
    ]);
    root(&[
        "write",
        "-f",
        "transit/keys/ironroot-backup",
        "type=ecdsa-p256",
        "allow_plaintext_backup=true",
    ]);
    root(&[
        "write",
        "-f",
        "transit/keys/ironroot-rotated",
        "type=ecdsa-p256",
    ]);
    root(&["write", "-f", "transit/keys/ironroot-rotated/rotate"]);
    root(&[
        "write",
        "-f",
        "transit/keys/ironroot-aes",
        "type=aes256-gcm96",
    ]);
    root(&[
        "write",
        "-f",
        "transit/keys/ironroot-p384",
        "type=ecdsa-p384",
    ]);
    root(&["write", "-f", "transit/keys/not-ours", "type=ecdsa-p256"]);

    for label in ["exportable", "backup"] {
        let err = km.find(label).expect_err("refused");
        assert!(
            matches!(&err, HsmError::KeyExtractable { label: l, .. } if l == label),
            "{label}: {err:?}"
        );
        let err = km.sign_digest(label, &sha256(b"m")).expect_err("refused");
        assert!(matches!(err, HsmError::KeyExtractable { .. }), "{err:?}");
    }
    for label in ["rotated", "aes", "p384"] {
        let err = km.find(label).expect_err("refused");
        assert!(
            matches!(&err, HsmError::UnsupportedKey { .. }),
            "{label}: {err:?}"
        );
    }
    assert!(km
        .find("exportable")
        .unwrap_err()
        .to_string()
        .contains("exportable=true"));
    assert_eq!(
        km.list().expect("list"),
        vec![ok],
        "only the usable key of ours"
    );
}

#[test]
fn server_gone_is_unreachable_and_the_key_manager_recovers_when_it_is_back() {
    let Some(mut t) = Transit::fresh() else {
        return;
    };
    let root = t.token_file("root", ROOT_TOKEN);
    let km = TransitKeyManager::open(t.config(TransitAuth::Token(SecretSource::File(root))))
        .expect("open");
    km.generate("x509", KeyAlgorithm::EcP256).expect("generate");

    t.bao.stop();
    let first = km
        .sign_digest("x509", &sha256(b"m"))
        .expect_err("server gone");
    let since = match transit_error(&first) {
        TransitError::Unreachable { since, reason, .. } => {
            assert!(reason.contains("connect"), "{reason}");
            *since
        }
        other => panic!("{other:?}"),
    };
    assert!(first.is_unreachable());
    let again = km.find("x509").expect_err("still gone");
    assert!(
        matches!(transit_error(&again), TransitError::Unreachable { since: s, .. } if *s == since),
        "the outage keeps its start: {again:?}"
    );
    assert!(matches!(
        km.health(),
        KeyManagerHealth::Unreachable { since: s, .. } if s == since
    ));

    // A dev server keeps nothing: the same address answers again, empty.
    t.bao.restart();
    t.bao.enable_transit(MOUNT);
    assert_eq!(km.health(), KeyManagerHealth::Available);
    assert_eq!(km.find("x509").expect("answers again"), None);
    let info = km.generate("x509", KeyAlgorithm::EcP256).expect("generate");
    let sig = km.sign_digest("x509", &sha256(b"m")).expect("sign");
    verify_raw(&info, b"m", &sig).expect("verifies");
}

#[test]
fn token_is_renewed_before_its_ttl_runs_out() {
    let Some(t) = Transit::fresh() else { return };
    let token = t.ca_token("4s");
    let km = t.open_with_token(&token).expect("open");
    let info = km.generate("x509", KeyAlgorithm::EcP256).expect("generate");
    // Three TTLs: without renewal the token dies after 4 s and OpenBao answers 403.
    for i in 0..12 {
        std::thread::sleep(Duration::from_secs(1));
        let msg = format!("m{i}");
        let sig = km
            .sign_digest("x509", &sha256(msg.as_bytes()))
            .unwrap_or_else(|e| panic!("sign after {} s: {e}", i + 1));
        verify_raw(&info, msg.as_bytes(), &sig).expect("verifies");
    }
}

#[test]
fn approle_logs_in_renews_and_logs_in_again_past_max_ttl() {
    let Some(t) = Transit::fresh() else { return };
    let (role_id, secret_id) = t.bao.approle("ca", &[POLICY], "2s", "4s");
    let secret = t.token_file("secret-id", &secret_id);
    let km = TransitKeyManager::open(t.config(TransitAuth::AppRole {
        mount: "approle".into(),
        role_id,
        secret_id: SecretSource::File(secret),
    }))
    .expect("AppRole login");
    assert!(km.describe().contains("AppRole"), "{}", km.describe());
    let info = km.generate("x509", KeyAlgorithm::EcP256).expect("generate");
    // Past the max TTL twice: the key manager must log in again by itself.
    for i in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let msg = format!("m{i}");
        let sig = km
            .sign_digest("x509", &sha256(msg.as_bytes()))
            .unwrap_or_else(|e| panic!("sign after {} s: {e}", i + 1));
        verify_raw(&info, msg.as_bytes(), &sig).expect("verifies");
    }
}

#[test]
fn https_is_verified_against_ca_file() {
    let Some(bao) = OpenBao::start_tls_or_skip() else {
        return;
    };
    bao.enable_transit(MOUNT);
    let dir = tempfile::tempdir().expect("temp dir");
    let token = dir.path().join("token");
    std::fs::write(&token, ROOT_TOKEN).expect("token file");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let config = |ca_file: Option<PathBuf>| TransitConfig {
        address: bao.address(),
        mount: MOUNT.into(),
        key_prefix: PREFIX.into(),
        ca_file,
        insecure_http: false,
        auth: TransitAuth::Token(SecretSource::File(token.clone())),
        // Generous: RSA-3072 generation in OpenBao takes seconds on a loaded machine.
        timeout: Duration::from_secs(30),
        namespace: None,
    };
    assert!(bao.address().starts_with("https://"));

    let km = TransitKeyManager::open(config(bao.ca_file())).expect("verified TLS");
    let info = km.generate("x509", KeyAlgorithm::EcP256).expect("generate");
    let sig = km
        .sign_digest("x509", &sha256(b"m"))
        .expect("sign over TLS");
    verify_raw(&info, b"m", &sig).expect("verifies");

    // The system's roots do not know the dev server's CA; nor does another CA.
    let err = TransitKeyManager::open(config(None)).expect_err("unknown issuer");
    match transit_error(&err) {
        TransitError::Unreachable { reason, .. } => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        TransitError::Config { option, .. } => assert_eq!(*option, "ca_file"),
        other => panic!("{other:?}"),
    }
    let other = ironroot_testkit::certs::ca(dir.path(), "other-ca");
    let err = TransitKeyManager::open(config(Some(other.cert))).expect_err("another CA");
    match transit_error(&err) {
        TransitError::Unreachable { reason, .. } => {
            assert!(reason.contains("certificate"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

/// With `namespace`, every request (key creation, lookup, signing) is made in that namespace:
/// the key lives in its transit mount and the root namespace's mount never sees it, and a
/// key manager without the namespace does not find it.
#[test]
fn a_namespace_is_where_every_request_goes() {
    let Some(t) = Transit::fresh() else { return };
    t.bao.bao(&["namespace", "create", "team-a"]);
    t.bao.bao(&[
        "secrets",
        "enable",
        "-ns=team-a",
        &format!("-path={MOUNT}"),
        "transit",
    ]);
    let root = t.token_file("root", ROOT_TOKEN);
    let in_namespace = TransitKeyManager::open(TransitConfig {
        namespace: Some("team-a".into()),
        ..t.config(TransitAuth::Token(SecretSource::File(root.clone())))
    })
    .expect("open in team-a");
    let made = in_namespace
        .generate("ns-key", KeyAlgorithm::EcP256)
        .expect("generate in team-a");
    assert_eq!(
        in_namespace
            .find("ns-key")
            .expect("find")
            .map(|k| k.public_key_der),
        Some(made.public_key_der.clone())
    );
    let listed = t.bao.bao(&["list", "-ns=team-a", &format!("{MOUNT}/keys")]);
    assert!(listed.contains(&format!("{PREFIX}ns-key")), "{listed}");
    let outside = TransitKeyManager::open(t.config(TransitAuth::Token(SecretSource::File(root))))
        .expect("open at the root");
    assert_eq!(outside.find("ns-key").expect("find at the root"), None);
    assert!(
        outside.list().expect("list at the root").is_empty(),
        "the root namespace's transit holds no key"
    );
}
