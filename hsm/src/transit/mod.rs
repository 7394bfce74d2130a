//! [`TransitKeyManager`]: CA keys in the transit secrets engine of OpenBao or Vault. The
//! private keys are created inside transit as non-exportable (`exportable=false`,
//! `allow_plaintext_backup=false`) and never leave it; ironroot sends SHA-256 digests to
//! `<mount>/sign/<name>` (`prehashed=true`) and gets signatures back.
//!
//! Guarantees, the same as the PKCS#11 key manager's:
//! * `find` re-reads the key and refuses, by name, one that is exportable, allows plaintext
//!   backup, was imported, was rotated inside transit, or is not P-256 / RSA-3072
//!   ([`keys::check`]);
//! * every signature is verified against the public key found before it is returned, so a key
//!   replaced behind the key manager signs nothing ([`TransitError::SignatureMismatch`]);
//! * labels map injectively to key names under `key_prefix` ([`names`]);
//! * a sealed, unreachable or refusing server is a named [`TransitError`], never a panic, and
//!   [`KeyManager::health`] says so; the key manager needs no restart when the server is back.

mod auth;
mod http;
mod keys;
mod names;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

pub use auth::{SecretSource, TransitAuth};

use crate::{
    check_digest, HsmError, KeyAlgorithm, KeyInfo, KeyManager, KeyManagerHealth, TransitError,
};
use auth::Session;
#[cfg(feature = "fuzzing")]
pub(crate) use http::{read_response, MAX_BODY};
use http::{Client, NoAnswer, Response};
use keys::Checked;

/// Where the transit engine is and how to use it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitConfig {
    /// `https://host[:port]` of the OpenBao / Vault server (`http://` only with
    /// `insecure_http`).
    pub address: String,
    /// The transit engine's mount path, e.g. "transit".
    pub mount: String,
    /// Prepended to every key name; keys without it are not ironroot's.
    pub key_prefix: String,
    /// PEM CA certificate(s) the server's certificate must chain to; `None`: the system's.
    pub ca_file: Option<PathBuf>,
    /// Allow an `http://` address (a local dev server in tests). Never in production: the
    /// token and every digest would cross the network unprotected.
    pub insecure_http: bool,
    /// How to authenticate.
    pub auth: TransitAuth,
    /// Timeout of a whole request, from connect to the last byte of the answer.
    pub timeout: Duration,
    /// The namespace (OpenBao, Vault Enterprise) every request is made in, sent as
    /// `X-Vault-Namespace`; `None`: the root namespace. Mount paths and AppRole login are
    /// relative to it.
    pub namespace: Option<String>,
}

/// Transit keys reached over the Vault HTTP API. See the module documentation.
pub struct TransitKeyManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: TransitConfig,
    client: Client,
    session: Mutex<Session>,
    /// Keys found and checked, by label (public keys only).
    found: RwLock<HashMap<String, Arc<Checked>>>,
    /// Since when, and why, the server has not been usable (unreachable or sealed).
    outage: Mutex<Option<(SystemTime, Outage)>>,
}

#[derive(Clone)]
enum Outage {
    Unreachable(String),
    Sealed,
}

/// A call's method, path and what it is for (in messages).
struct Call<'a> {
    method: &'static str,
    path: &'a str,
    op: &'a str,
}

/// The Vault API's response envelope.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<T>,
}

#[derive(Deserialize)]
struct AuthEnvelope {
    auth: Option<auth::AuthAnswer>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct SignData {
    signature: String,
}

#[derive(Deserialize)]
struct ListData {
    #[serde(default)]
    keys: Vec<String>,
}

/// How often the renewal thread looks at the token (it renews at half its time to live).
const RENEW_CHECK: Duration = Duration::from_secs(5);

impl TransitKeyManager {
    /// Checks the options, authenticates (reads the token and looks it up, or logs in with
    /// AppRole) and starts the renewal thread. Fails if the server cannot be reached or
    /// refuses the credentials: the CA does not start on keys it cannot use.
    pub fn open(config: TransitConfig) -> Result<Self, HsmError> {
        let cfg = |option, reason: String| TransitError::Config { option, reason };
        if !names::valid_mount(&config.mount) {
            return Err(cfg(
                "mount",
                format!(
                    "{:?} is not a mount path (segments of A-Z a-z 0-9 . _ - joined by /)",
                    config.mount
                ),
            )
            .into());
        }
        if let TransitAuth::AppRole { mount, .. } = &config.auth {
            if !names::valid_mount(mount) {
                return Err(cfg(
                    "approle.mount",
                    format!(
                        "{mount:?} is not an auth mount path (segments of A-Z a-z 0-9 . _ - \
                         joined by /)"
                    ),
                )
                .into());
            }
        }
        if !names::valid_prefix(&config.key_prefix) {
            return Err(cfg(
                "key_prefix",
                format!(
                    "{:?}: use at most 64 of A-Z a-z 0-9 . _ -",
                    config.key_prefix
                ),
            )
            .into());
        }
        Ok(TransitKeyManager {
            inner: Inner::connect(config)?,
        })
    }
}

impl Inner {
    /// Makes the HTTP client, authenticates (token lookup or AppRole login) and starts the
    /// renewal thread: what the transit key manager and [`OpenBaoClient`] share.
    fn connect(config: TransitConfig) -> Result<Arc<Inner>, HsmError> {
        let client = Client::new(
            &config.address,
            config.ca_file.as_deref(),
            config.insecure_http,
            config.timeout,
        )
        .map_err(|(option, reason)| TransitError::Config { option, reason })?;
        if config.insecure_http && config.address.starts_with("http://") {
            tracing::warn!(address = %config.address, "INSECURE: OpenBao/Vault over plain http (insecure_http = true): the token and everything sent cross the network unprotected; development only");
        }
        let inner = Arc::new(Inner {
            config,
            client,
            session: Mutex::new(Session::new(Zeroizing::new(String::new()), 0, false)),
            found: RwLock::new(HashMap::new()),
            outage: Mutex::new(None),
        });
        let session = inner.authenticate()?;
        *inner.lock_session() = session;
        spawn_renewal(Arc::downgrade(&inner));
        Ok(inner)
    }
}

/// An authenticated client of an OpenBao / Vault server's HTTP API for engines other than
/// transit (the CA's PKI upstream): the same TLS rules, token or AppRole login, renewal,
/// retry after a refused token, and named failures (sealed, unreachable, 403 with the path)
/// as the transit key manager, which shares this code.
pub struct OpenBaoClient {
    inner: Arc<Inner>,
}

impl OpenBaoClient {
    /// Connects and authenticates with `config`'s `address`, `ca_file`, `insecure_http`,
    /// `auth` and `timeout` (its `mount` and `key_prefix` are the transit key manager's and
    /// are not used). Fails if the server cannot be reached or refuses the credentials.
    pub fn open(config: TransitConfig) -> Result<Self, HsmError> {
        Ok(OpenBaoClient {
            inner: Inner::connect(config)?,
        })
    }

    /// `POST /v1/<path>` with a JSON `body`; returns the answer's `data` object. `op` says
    /// what the call is for in errors ("sign the CA certificate").
    pub fn write(
        &self,
        path: &str,
        op: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, HsmError> {
        let call = Call {
            method: "POST",
            path,
            op,
        };
        let resp = self
            .inner
            .call(&call, Some(body.to_string().as_bytes()), &[])?;
        self.inner.data(&call, resp)
    }

    /// The configured address.
    pub fn address(&self) -> &str {
        self.inner.address()
    }
}

impl std::fmt::Debug for OpenBaoClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "OpenBao/Vault at {} ({} auth)",
            self.inner.config.address,
            self.inner.config.auth.method()
        )
    }
}

fn spawn_renewal(weak: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("transit-token-renewal".into())
        .spawn(move || loop {
            std::thread::sleep(RENEW_CHECK);
            let Some(inner) = weak.upgrade() else { return };
            if let Err(e) = inner.renew_if_due() {
                tracing::warn!(error = %e, "transit token renewal failed; retrying");
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the transit token renewal thread; the token is renewed on use only");
    }
}

impl Inner {
    fn address(&self) -> &str {
        &self.config.address
    }

    fn lock_session(&self) -> std::sync::MutexGuard<'_, Session> {
        self.session.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One HTTP exchange; records the start and end of outages. `None` token: no header.
    fn send(
        &self,
        call: &Call<'_>,
        token: Option<&str>,
        body: Option<&[u8]>,
    ) -> Result<Response, TransitError> {
        let mut headers = Vec::new();
        if let Some(t) = token {
            headers.push(("X-Vault-Token", t));
        }
        if let Some(ns) = &self.config.namespace {
            headers.push(("X-Vault-Namespace", ns.as_str()));
        }
        if call.method == "POST" || call.method == "DELETE" || call.method == "LIST" {
            // Vault's CSRF guard for browser-style requests; harmless elsewhere.
            headers.push(("X-Vault-Request", "true"));
        }
        match self.client.request(call.method, call.path, &headers, body) {
            Ok(resp) => {
                if resp.status == 503 && errors_text(&resp.body).contains("sealed") {
                    let since = self.outage_started(Outage::Sealed);
                    return Err(TransitError::Sealed {
                        address: self.address().to_owned(),
                        since,
                    });
                }
                self.outage_ended();
                Ok(resp)
            }
            Err(NoAnswer(reason)) => {
                let since = self.outage_started(Outage::Unreachable(reason.clone()));
                Err(TransitError::Unreachable {
                    address: self.address().to_owned(),
                    since,
                    reason,
                })
            }
        }
    }

    fn outage_started(&self, what: Outage) -> SystemTime {
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        let since = outage.as_ref().map_or_else(SystemTime::now, |(s, _)| *s);
        if outage.is_none() {
            tracing::warn!(address = %self.address(), "transit server not usable");
        }
        *outage = Some((since, what));
        since
    }

    fn outage_ended(&self) {
        let mut outage = self.outage.lock().unwrap_or_else(|p| p.into_inner());
        if outage.take().is_some() {
            tracing::info!(address = %self.address(), "transit server usable again");
        }
    }

    /// An authenticated call: renews a due token first, retries once with fresh credentials
    /// after a 403, and names 403 and other refusals. Returns the answer for statuses the
    /// caller handles itself (`accept`).
    fn call(
        &self,
        call: &Call<'_>,
        body: Option<&[u8]>,
        accept: &[u16],
    ) -> Result<Response, HsmError> {
        if let Err(e) = self.renew_if_due() {
            tracing::warn!(error = %e, "transit token renewal failed");
        }
        let token = self.lock_session().token.clone();
        let mut resp = self.send(call, Some(&token), body)?;
        if resp.status == 403 && self.refresh_after_refusal(&token) {
            let token = self.lock_session().token.clone();
            resp = self.send(call, Some(&token), body)?;
        }
        if (200..300).contains(&resp.status) || accept.contains(&resp.status) {
            return Ok(resp);
        }
        Err(self.refusal(call, &resp).into())
    }

    fn refusal(&self, call: &Call<'_>, resp: &Response) -> TransitError {
        if resp.status == 403 {
            return TransitError::PermissionDenied {
                address: self.address().to_owned(),
                op: call.op.to_owned(),
                method: call.method,
                path: call.path.to_owned(),
            };
        }
        TransitError::Status {
            address: self.address().to_owned(),
            op: call.op.to_owned(),
            status: resp.status,
            errors: errors_text(&resp.body),
        }
    }

    fn data<T: DeserializeOwned>(&self, call: &Call<'_>, resp: Response) -> Result<T, HsmError> {
        let bad = |reason: String| TransitError::Response {
            address: self.address().to_owned(),
            op: call.op.to_owned(),
            reason,
        };
        if !(200..300).contains(&resp.status) {
            return Err(self.refusal(call, &resp).into());
        }
        let env: Envelope<T> = parse(&resp.body).map_err(bad)?;
        env.data
            .ok_or_else(|| bad("no data in the answer".into()).into())
    }

    fn key_path(&self, label: &str) -> Result<(String, String), HsmError> {
        if label.is_empty() || label.len() > names::MAX_LABEL_LEN {
            return Err(HsmError::InvalidLabel {
                label: label.to_owned(),
                reason: "must be 1 to 128 bytes",
            });
        }
        let name = names::key_name(&self.config.key_prefix, label);
        let path = format!("{}/keys/{name}", self.config.mount);
        Ok((name, path))
    }

    fn find(&self, label: &str) -> Result<Option<Arc<Checked>>, HsmError> {
        let (name, path) = self.key_path(label)?;
        let op = format!("read key '{name}'");
        let call = Call {
            method: "GET",
            path: &path,
            op: &op,
        };
        let resp = self.call(&call, None, &[404])?;
        if resp.status == 404 {
            self.forget(label);
            return Ok(None);
        }
        let data: keys::KeyData = self.data(&call, resp)?;
        let checked = match keys::check(label, &name, data) {
            Ok(c) => Arc::new(c),
            Err(e) => {
                self.forget(label);
                return Err(e);
            }
        };
        self.found
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), checked.clone());
        Ok(Some(checked))
    }

    fn forget(&self, label: &str) {
        self.found
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
    }

    fn cached(&self, label: &str) -> Option<Arc<Checked>> {
        self.found
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .cloned()
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("not the JSON transit documents: {e}"))
}

/// The `errors` of a Vault error body, joined; the body itself if it has none.
fn errors_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(e) if !e.errors.is_empty() => e
            .errors
            .iter()
            .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
    }
}

impl KeyManager for TransitKeyManager {
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
        let inner = &self.inner;
        let (name, path) = inner.key_path(label)?;
        // Creating over an existing key changes nothing in transit and answers 200, so the
        // label must be checked first. (Two servers racing on one new label would both get
        // the one key; the CA's labels carry the time and its journal decides which it uses.)
        if inner.find(label)?.is_some() {
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        }
        let op = format!("create key '{name}'");
        let call = Call {
            method: "POST",
            path: &path,
            op: &op,
        };
        let body = json!({
            "type": keys::transit_type(algorithm),
            "exportable": false,
            "allow_plaintext_backup": false,
        })
        .to_string();
        inner.call(&call, Some(body.as_bytes()), &[])?;
        let found = inner.find(label)?.ok_or_else(|| TransitError::Response {
            address: inner.address().to_owned(),
            op: op.clone(),
            reason: "the key is not there right after creating it".into(),
        })?;
        if found.info.algorithm != algorithm {
            // Someone made a key of another type under this name in between.
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        }
        tracing::info!(label, key = %name, %algorithm, "transit key created");
        Ok(found.info.clone())
    }

    fn find(&self, label: &str) -> Result<Option<KeyInfo>, HsmError> {
        Ok(self.inner.find(label)?.map(|c| c.info.clone()))
    }

    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        check_digest(digest)?;
        let inner = &self.inner;
        let key = match inner.cached(label) {
            Some(k) => k,
            None => inner.find(label)?.ok_or_else(|| HsmError::KeyNotFound {
                label: label.to_owned(),
            })?,
        };
        let name = names::key_name(&inner.config.key_prefix, label);
        let path = format!("{}/sign/{name}", inner.config.mount);
        let op = format!("sign with key '{name}'");
        let call = Call {
            method: "POST",
            path: &path,
            op: &op,
        };
        let mut body = json!({
            "input": base64::engine::general_purpose::STANDARD.encode(digest),
            "prehashed": true,
            "hash_algorithm": "sha2-256",
            "key_version": keys::KEY_VERSION,
        });
        match key.info.algorithm {
            KeyAlgorithm::EcP256 => body["marshaling_algorithm"] = "asn1".into(),
            KeyAlgorithm::Rsa3072 => body["signature_algorithm"] = "pkcs1v15".into(),
        }
        let resp = inner.call(&call, Some(body.to_string().as_bytes()), &[400])?;
        if resp.status == 400 {
            let errors = errors_text(&resp.body);
            if errors.contains("not found") {
                inner.forget(label);
                return Err(HsmError::KeyNotFound {
                    label: label.to_owned(),
                });
            }
            return Err(inner.refusal(&call, &resp).into());
        }
        let data: SignData = inner.data(&call, resp)?;
        keys::signature(&key, digest, &data.signature).ok_or_else(|| {
            inner.forget(label);
            TransitError::SignatureMismatch {
                label: label.to_owned(),
                name,
            }
            .into()
        })
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let inner = &self.inner;
        let path = format!("{}/keys", inner.config.mount);
        let call = Call {
            method: "LIST",
            path: &path,
            op: "list keys",
        };
        let resp = inner.call(&call, None, &[404])?;
        if resp.status == 404 {
            return Ok(Vec::new());
        }
        let data: ListData = inner.data(&call, resp)?;
        let mut out = Vec::new();
        for name in data.keys {
            let Some(label) = names::label_of(&inner.config.key_prefix, &name) else {
                continue;
            };
            match inner.find(&label) {
                Ok(Some(c)) => out.push(c.info.clone()),
                Ok(None) => {}
                Err(e @ (HsmError::KeyExtractable { .. } | HsmError::UnsupportedKey { .. })) => {
                    tracing::warn!(key = %name, error = %e, "transit key left out");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn destroy(&self, label: &str) -> Result<(), HsmError> {
        let inner = &self.inner;
        let (name, path) = inner.key_path(label)?;
        // Only keys ironroot may use: a foreign key under our name is not ours to delete.
        let exists = match inner.find(label) {
            Ok(found) => found.is_some(),
            Err(HsmError::KeyExtractable { .. } | HsmError::UnsupportedKey { .. }) => true,
            Err(e) => return Err(e),
        };
        if !exists {
            return Err(HsmError::KeyNotFound {
                label: label.to_owned(),
            });
        }
        let config_path = format!("{path}/config");
        let op = format!("allow deleting key '{name}'");
        let call = Call {
            method: "POST",
            path: &config_path,
            op: &op,
        };
        inner.call(&call, Some(br#"{"deletion_allowed":true}"#), &[])?;
        let op = format!("delete key '{name}'");
        let call = Call {
            method: "DELETE",
            path: &path,
            op: &op,
        };
        inner.call(&call, None, &[])?;
        inner.forget(label);
        tracing::info!(label, key = %name, "transit key deleted");
        Ok(())
    }

    fn describe(&self) -> String {
        let c = &self.inner.config;
        format!(
            "transit mount '{}' at {} (keys named '{}*', {} auth)",
            c.mount,
            c.address,
            c.key_prefix,
            c.auth.method()
        )
    }

    fn health(&self) -> KeyManagerHealth {
        let inner = &self.inner;
        let call = Call {
            method: "GET",
            path: "sys/health?standbyok=true&perfstandbyok=true",
            op: "check health",
        };
        match inner.send(&call, None, None) {
            Ok(resp) if resp.status == 200 || resp.status == 429 || resp.status == 473 => {
                KeyManagerHealth::Available
            }
            Ok(resp) => KeyManagerHealth::Unreachable {
                since: SystemTime::now(),
                reason: format!("sys/health answered HTTP {}", resp.status),
            },
            Err(e) => {
                let outage = inner
                    .outage
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                match outage {
                    Some((since, Outage::Sealed)) => KeyManagerHealth::Unreachable {
                        since,
                        reason: "sealed (HTTP 503 \"Vault is sealed\")".into(),
                    },
                    Some((since, Outage::Unreachable(reason))) => {
                        KeyManagerHealth::Unreachable { since, reason }
                    }
                    None => KeyManagerHealth::Unreachable {
                        since: SystemTime::now(),
                        reason: e.to_string(),
                    },
                }
            }
        }
    }
}

impl std::fmt::Debug for TransitKeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
