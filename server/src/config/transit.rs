//! `[key_manager.transit]`: the CA keys in the transit engine of OpenBao or Vault
//! (docs/vault.md), as written and checked into an `ironroot_hsm::TransitConfig`.

use std::path::PathBuf;
use std::time::Duration;

use ironroot_hsm::{SecretSource, TransitAuth, TransitConfig};
use serde::Deserialize;

use super::{invalid, InvalidOption};

/// Default transit mount path.
pub(crate) const DEFAULT_TRANSIT_MOUNT: &str = "transit";
/// Default prefix of the key names.
pub(crate) const DEFAULT_TRANSIT_KEY_PREFIX: &str = "ironroot-";
/// Default AppRole auth mount.
pub(crate) const DEFAULT_APPROLE_MOUNT: &str = "approle";
/// Default timeout of a whole request (connect to the last byte of the answer).
pub(crate) const DEFAULT_TRANSIT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[key_manager.transit]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TransitFile {
    address: String,
    #[serde(default = "mount")]
    mount: String,
    #[serde(default = "key_prefix")]
    key_prefix: String,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
    #[serde(default = "timeout", with = "humantime_serde")]
    timeout: Duration,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    approle: Option<AppRoleFile>,
    namespace: Option<String>,
}

/// `[key_manager.transit.approle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AppRoleFile {
    #[serde(default = "approle_mount")]
    mount: String,
    role_id: String,
    secret_id_file: PathBuf,
}

fn mount() -> String {
    DEFAULT_TRANSIT_MOUNT.into()
}

fn key_prefix() -> String {
    DEFAULT_TRANSIT_KEY_PREFIX.into()
}

fn approle_mount() -> String {
    DEFAULT_APPROLE_MOUNT.into()
}

fn timeout() -> Duration {
    DEFAULT_TRANSIT_TIMEOUT
}

/// Checks `[key_manager.transit]`: exactly one of `token_file`, `token_env`, `[approle]`;
/// `http://` only with `insecure_http`; a timeout of at least a second. (The key manager
/// checks the rest when it opens: mount, prefix, CA file.)
pub(super) fn transit(f: TransitFile) -> Result<TransitConfig, InvalidOption> {
    let auth = auth(&TRANSIT, f.token_file, f.token_env, f.approle)?;
    check_connection(&TRANSIT, &f.address, f.insecure_http, f.timeout)?;
    check_namespace(&TRANSIT, f.namespace.as_deref())?;
    Ok(TransitConfig {
        address: f.address,
        mount: f.mount,
        key_prefix: f.key_prefix,
        ca_file: f.ca_file,
        insecure_http: f.insecure_http,
        auth,
        timeout: f.timeout,
        namespace: f.namespace,
    })
}

/// `[upstream] kind = "openbao"` as written: OpenBao's PKI engine signs the CA certificates.
/// Connection and authentication options are those of `[key_manager.transit]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OpenBaoPkiFile {
    address: String,
    #[serde(default = "pki_mount")]
    mount: String,
    issuer: Option<String>,
    ca_file: Option<PathBuf>,
    #[serde(default)]
    insecure_http: bool,
    #[serde(default = "timeout", with = "humantime_serde")]
    timeout: Duration,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    approle: Option<AppRoleFile>,
    root_file: Option<PathBuf>,
    namespace: Option<String>,
}

/// Default PKI mount path of `[upstream] kind = "openbao"`.
pub(crate) const DEFAULT_PKI_MOUNT: &str = "pki";

fn pki_mount() -> String {
    DEFAULT_PKI_MOUNT.into()
}

/// `[upstream] kind = "openbao"`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OpenBaoPkiConfig {
    /// Connection and authentication (`mount` is the PKI mount; `key_prefix` unused).
    pub(crate) connection: TransitConfig,
    /// The issuer reference to sign with; `None`: the mount's default issuer.
    pub(crate) issuer: Option<String>,
    /// PEM roots the returned chain must end in (`root_file`); `None`: any it verifies to.
    pub(crate) root_file: Option<PathBuf>,
}

/// Checks `[upstream] kind = "openbao"` the way `[key_manager.transit]` is checked, plus the
/// mount path and issuer reference (they go into API paths).
pub(super) fn openbao_pki(f: OpenBaoPkiFile) -> Result<OpenBaoPkiConfig, InvalidOption> {
    let auth = auth(&UPSTREAM, f.token_file, f.token_env, f.approle)?;
    check_connection(&UPSTREAM, &f.address, f.insecure_http, f.timeout)?;
    check_namespace(&UPSTREAM, f.namespace.as_deref())?;
    if f.mount.is_empty()
        || f.mount.starts_with('/')
        || f.mount.ends_with('/')
        || f.mount
            .split('/')
            .any(|s| s.is_empty() || s == ".." || s == ".")
        || !f.mount.bytes().all(path_byte)
    {
        return Err(invalid(
            "upstream.mount",
            format!("{:?} is not a mount path", f.mount),
        ));
    }
    if let Some(i) = &f.issuer {
        if i.is_empty() || !i.bytes().all(|b| path_byte(b) && b != b'/') {
            return Err(invalid(
                "upstream.issuer",
                format!("{i:?} is not an issuer name or ID (A-Z a-z 0-9 . _ -)"),
            ));
        }
    }
    Ok(OpenBaoPkiConfig {
        connection: TransitConfig {
            address: f.address,
            mount: f.mount,
            key_prefix: String::new(),
            ca_file: f.ca_file,
            insecure_http: f.insecure_http,
            auth,
            timeout: f.timeout,
            namespace: f.namespace,
        },
        issuer: f.issuer,
        root_file: f.root_file,
    })
}

fn path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/')
}

/// The option names of a section with OpenBao connection options, for errors.
struct Section {
    name: &'static str,
    address: &'static str,
    timeout: &'static str,
    role_id: &'static str,
    namespace: &'static str,
}

/// A namespace goes into a header and names a path: `seg(/seg)*`, each segment of
/// `A-Z a-z 0-9 _ -`, as OpenBao and Vault name them.
fn check_namespace(key: &Section, namespace: Option<&str>) -> Result<(), InvalidOption> {
    let Some(ns) = namespace else {
        return Ok(());
    };
    let segment_ok = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    if ns.len() > 256 || !ns.split('/').all(segment_ok) {
        return Err(invalid(
            key.namespace,
            format!(
                "{ns:?} is not a namespace path (segments of A-Z a-z 0-9 _ - separated by /, \
                 no leading or trailing /)"
            ),
        ));
    }
    Ok(())
}

const TRANSIT: Section = Section {
    name: "key_manager.transit",
    address: "key_manager.transit.address",
    timeout: "key_manager.transit.timeout",
    role_id: "key_manager.transit.approle.role_id",
    namespace: "key_manager.transit.namespace",
};

const UPSTREAM: Section = Section {
    name: "upstream",
    address: "upstream.address",
    timeout: "upstream.timeout",
    role_id: "upstream.approle.role_id",
    namespace: "upstream.namespace",
};

/// Exactly one of `token_file`, `token_env`, `[<section>.approle]`.
fn auth(
    key: &Section,
    token_file: Option<PathBuf>,
    token_env: Option<String>,
    approle: Option<AppRoleFile>,
) -> Result<TransitAuth, InvalidOption> {
    Ok(match (token_file, token_env, approle) {
        (Some(path), None, None) => TransitAuth::Token(SecretSource::File(path)),
        (None, Some(var), None) if !var.is_empty() => TransitAuth::Token(SecretSource::Env(var)),
        (None, None, Some(a)) => {
            if a.role_id.trim().is_empty() {
                return Err(invalid(key.role_id, "is empty"));
            }
            TransitAuth::AppRole {
                mount: a.mount,
                role_id: a.role_id,
                secret_id: SecretSource::File(a.secret_id_file),
            }
        }
        _ => {
            return Err(invalid(
                key.name,
                format!(
                    "set exactly one of token_file, token_env or [{}.approle] \
                     (tokens and secret IDs are never written in this file)",
                    key.name
                ),
            ))
        }
    })
}

/// `http://` only with `insecure_http`; a timeout of at least a second.
fn check_connection(
    key: &Section,
    address: &str,
    insecure_http: bool,
    timeout: Duration,
) -> Result<(), InvalidOption> {
    if address.starts_with("http://") && !insecure_http {
        return Err(invalid(
            key.address,
            format!(
                "{address:?} is plain http: the token and every request would cross the \
                 network unprotected; use https:// (insecure_http = true only for a local dev \
                 server)"
            ),
        ));
    }
    if timeout < Duration::from_secs(1) {
        return Err(invalid(key.timeout, "must be at least 1s"));
    }
    Ok(())
}
