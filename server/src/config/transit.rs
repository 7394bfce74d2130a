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
    const KEY: &str = "key_manager.transit";
    let auth = match (f.token_file, f.token_env, f.approle) {
        (Some(path), None, None) => TransitAuth::Token(SecretSource::File(path)),
        (None, Some(var), None) if !var.is_empty() => TransitAuth::Token(SecretSource::Env(var)),
        (None, None, Some(a)) => {
            if a.role_id.trim().is_empty() {
                return Err(invalid("key_manager.transit.approle.role_id", "is empty"));
            }
            TransitAuth::AppRole {
                mount: a.mount,
                role_id: a.role_id,
                secret_id: SecretSource::File(a.secret_id_file),
            }
        }
        _ => {
            return Err(invalid(
                KEY,
                "set exactly one of token_file, token_env or [key_manager.transit.approle] \
                 (tokens and secret IDs are never written in this file)",
            ))
        }
    };
    if f.address.starts_with("http://") && !f.insecure_http {
        return Err(invalid(
            "key_manager.transit.address",
            format!(
                "{:?} is plain http: the token and every digest would cross the network \
                 unprotected; use https:// (insecure_http = true only for a local dev server)",
                f.address
            ),
        ));
    }
    if f.timeout < Duration::from_secs(1) {
        return Err(invalid(
            "key_manager.transit.timeout",
            "must be at least 1s",
        ));
    }
    Ok(TransitConfig {
        address: f.address,
        mount: f.mount,
        key_prefix: f.key_prefix,
        ca_file: f.ca_file,
        insecure_http: f.insecure_http,
        auth,
        timeout: f.timeout,
    })
}
