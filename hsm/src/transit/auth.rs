//! The token the key manager sends: read from a file or the environment (token auth) or
//! obtained by AppRole login, and kept alive: renewed (`auth/token/renew-self`) once half its
//! time to live has passed, by a background thread and before any call that finds it due; an
//! AppRole token that cannot be renewed any more is replaced by logging in again. The
//! key manager's side of it ([`Inner::authenticate`], [`Inner::renew_if_due`],
//! [`Inner::refresh_after_refusal`]) lives here too.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::json;
use zeroize::Zeroizing;

use super::{errors_text, parse, AuthEnvelope, Call, Inner};
use crate::{HsmError, TransitError};

/// Where a secret (token, AppRole secret ID) comes from. Never inline in configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A file holding it (trailing newlines trimmed). Refused when users other than its
    /// owner and group may access it (mode 0600, or Vault Agent's default 0640). Re-read
    /// when the server refuses the current one, so a token rotated by Vault Agent is picked
    /// up.
    File(PathBuf),
    /// An environment variable holding it.
    Env(String),
}

/// How the key manager authenticates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransitAuth {
    /// A token made by the operator (renewed if renewable).
    Token(SecretSource),
    /// AppRole login (`auth/<mount>/login`) with a role ID and a secret ID.
    AppRole {
        /// The AppRole auth mount, usually "approle".
        mount: String,
        /// The role ID (an identifier, not a secret on its own).
        role_id: String,
        /// The secret ID.
        secret_id: SecretSource,
    },
}

impl TransitAuth {
    /// "token" or "AppRole".
    pub(super) fn method(&self) -> &'static str {
        match self {
            TransitAuth::Token(_) => "token",
            TransitAuth::AppRole { .. } => "AppRole",
        }
    }
}

impl SecretSource {
    pub(super) fn read(&self, what: &'static str) -> Result<Zeroizing<String>, TransitError> {
        match self {
            SecretSource::File(path) => {
                let bad = |reason: String| TransitError::CredentialFile {
                    what,
                    path: path.clone(),
                    reason,
                };
                let meta = std::fs::metadata(path).map_err(|e| bad(e.to_string()))?;
                if let Some(mode) = crate::secret_file::exposed_mode(&meta) {
                    return Err(bad(format!(
                        "it has mode {mode:04o}: every user of this machine may read or replace \
                         it; make it private (`chmod o-rwx`: 0600, or 0640 for a group the \
                         server shares)"
                    )));
                }
                let raw = Zeroizing::new(std::fs::read(path).map_err(|e| bad(e.to_string()))?);
                let text = std::str::from_utf8(&raw).map_err(|_| bad("not UTF-8".into()))?;
                let value = text.trim_end_matches(['\n', '\r']);
                check_secret(value).map_err(|r| bad(r.into()))?;
                Ok(Zeroizing::new(value.to_owned()))
            }
            SecretSource::Env(var) => {
                let bad = |reason| TransitError::CredentialEnv {
                    var: var.clone(),
                    reason,
                };
                let value =
                    Zeroizing::new(std::env::var(var).map_err(|_| bad("not set or not UTF-8"))?);
                check_secret(value.trim_end_matches(['\n', '\r'])).map_err(bad)?;
                Ok(Zeroizing::new(
                    value.trim_end_matches(['\n', '\r']).to_owned(),
                ))
            }
        }
    }
}

/// A token goes into an HTTP header: no line breaks, no control characters.
fn check_secret(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        Err("empty")
    } else if s.chars().any(|c| c.is_control()) {
        Err("holds control characters")
    } else if s.len() > 4096 {
        Err("longer than 4096 bytes")
    } else {
        Ok(())
    }
}

/// The token in use and when to renew it.
pub(super) struct Session {
    pub(super) token: Zeroizing<String>,
    /// Renew at (half the time to live); `None`: the token does not expire.
    pub(super) renew_at: Option<Instant>,
    /// Whether `renew-self` can extend it.
    pub(super) renewable: bool,
}

impl Session {
    pub(super) fn new(token: Zeroizing<String>, ttl_secs: u64, renewable: bool) -> Session {
        let renew_at = (ttl_secs > 0).then(|| Instant::now() + Duration::from_secs(ttl_secs / 2));
        Session {
            token,
            renew_at,
            renewable,
        }
    }

    pub(super) fn due(&self) -> bool {
        self.renew_at.is_some_and(|t| Instant::now() >= t)
    }
}

/// `auth` of a login or renewal answer.
#[derive(Deserialize)]
pub(super) struct AuthAnswer {
    pub(super) client_token: String,
    #[serde(default)]
    pub(super) lease_duration: u64,
    #[serde(default)]
    pub(super) renewable: bool,
}

/// `data` of `auth/token/lookup-self`.
#[derive(Deserialize)]
pub(super) struct LookupSelf {
    #[serde(default)]
    pub(super) ttl: u64,
    #[serde(default)]
    pub(super) renewable: bool,
}

impl Inner {
    /// A session from the configured credentials.
    pub(super) fn authenticate(&self) -> Result<Session, HsmError> {
        let address = self.address().to_owned();
        let method = self.config.auth.method();
        let auth_err = |reason: String| TransitError::Auth {
            address: address.clone(),
            method,
            reason,
        };
        match &self.config.auth {
            TransitAuth::Token(source) => {
                let token = source.read("token")?;
                let call = Call {
                    method: "GET",
                    path: "auth/token/lookup-self",
                    op: "look up its token",
                };
                let resp = self.send(&call, Some(&token), None)?;
                if resp.status == 403 {
                    return Err(auth_err(
                        "the token is invalid, expired or revoked (HTTP 403 on \
                         auth/token/lookup-self)"
                            .into(),
                    )
                    .into());
                }
                let data: LookupSelf = self.data(&call, resp)?;
                Ok(Session::new(token, data.ttl, data.renewable))
            }
            TransitAuth::AppRole {
                mount,
                role_id,
                secret_id,
            } => {
                let secret = secret_id.read("AppRole secret ID")?;
                let path = format!("auth/{mount}/login");
                let call = Call {
                    method: "POST",
                    path: &path,
                    op: "log in with AppRole",
                };
                let body = Zeroizing::new(
                    json!({"role_id": role_id, "secret_id": secret.as_str()}).to_string(),
                );
                let resp = self.send(&call, None, Some(body.as_bytes()))?;
                if resp.status != 200 {
                    return Err(auth_err(format!(
                        "HTTP {} on {path}: {} (check role_id, the secret ID and the role's \
                         bindings)",
                        resp.status,
                        errors_text(&resp.body)
                    ))
                    .into());
                }
                let answer: AuthEnvelope = parse(&resp.body)
                    .map_err(|e| auth_err(format!("unexpected login answer: {e}")))?;
                let a = answer
                    .auth
                    .ok_or_else(|| auth_err("login answer has no auth".into()))?;
                Ok(Session::new(
                    Zeroizing::new(a.client_token),
                    a.lease_duration,
                    a.renewable,
                ))
            }
        }
    }

    /// Renews the token once half its time to live has passed; an AppRole token that cannot
    /// be renewed is replaced by a new login.
    pub(super) fn renew_if_due(&self) -> Result<(), HsmError> {
        let mut session = self.lock_session();
        if !session.due() {
            return Ok(());
        }
        if session.renewable {
            let call = Call {
                method: "POST",
                path: "auth/token/renew-self",
                op: "renew its token",
            };
            let resp = self.send(&call, Some(&session.token), Some(b"{}"))?;
            if resp.status == 200 {
                if let Ok(AuthEnvelope { auth: Some(a) }) = parse::<AuthEnvelope>(&resp.body) {
                    tracing::debug!(ttl_secs = a.lease_duration, "transit token renewed");
                    let token = std::mem::take(&mut session.token);
                    *session = Session::new(token, a.lease_duration, a.renewable);
                    return Ok(());
                }
            }
            tracing::warn!(status = resp.status, errors = %errors_text(&resp.body), "transit token renewal refused");
        }
        match &self.config.auth {
            TransitAuth::AppRole { .. } => {
                drop(session);
                let fresh = self.authenticate()?;
                tracing::info!("transit: logged in again with AppRole");
                *self.lock_session() = fresh;
            }
            TransitAuth::Token(_) => {
                // Not renewable (or refused): it keeps working until it expires; a new token in
                // the file is picked up on the first refusal. Do not retry every few seconds.
                session.renew_at = Some(Instant::now() + Duration::from_secs(60));
                tracing::warn!("transit token cannot be renewed: replace it before it expires (token_file is re-read when the server refuses the token)");
            }
        }
        Ok(())
    }

    /// After a 403: new credentials (AppRole login, or a token file that changed); `true` if
    /// the call is worth retrying with them.
    pub(super) fn refresh_after_refusal(&self, used: &str) -> bool {
        match &self.config.auth {
            TransitAuth::AppRole { .. } => match self.authenticate() {
                Ok(fresh) => {
                    let changed = fresh.token.as_str() != used;
                    *self.lock_session() = fresh;
                    changed
                }
                Err(_) => false,
            },
            TransitAuth::Token(source @ SecretSource::File(_)) => match source.read("token") {
                Ok(token) if token.as_str() != used => match self.authenticate() {
                    Ok(fresh) => {
                        tracing::info!("transit: using the new token from token_file");
                        *self.lock_session() = fresh;
                        true
                    }
                    Err(_) => false,
                },
                _ => false,
            },
            TransitAuth::Token(SecretSource::Env(_)) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secrets_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s.abc\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let src = SecretSource::File(f.clone());
        assert_eq!(src.read("token").unwrap().as_str(), "s.abc");
        // Other users may read it: refused, naming the mode and the fix.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        match src.read("token") {
            Err(TransitError::CredentialFile { reason, .. }) => {
                assert!(
                    reason.contains("mode 0644") && reason.contains("chmod o-rwx"),
                    "{reason}"
                )
            }
            other => panic!("a world-readable token file was accepted: {other:?}"),
        }
        // Group access (Vault Agent's default sink mode) is allowed.
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(src.read("token").unwrap().as_str(), "s.abc");
        std::fs::write(&f, "a\nb\n").unwrap();
        assert!(matches!(
            src.read("token"),
            Err(TransitError::CredentialFile { .. })
        ));
        std::fs::write(&f, "\n").unwrap();
        assert!(src.read("token").is_err());
        let missing = SecretSource::Env("IRONROOT_TEST_SURELY_UNSET_VAR".into());
        assert!(matches!(
            missing.read("token"),
            Err(TransitError::CredentialEnv { .. })
        ));
    }

    #[test]
    fn renewal_is_due_at_half_the_ttl() {
        let s = Session::new(Zeroizing::new("t".into()), 0, false);
        assert!(!s.due(), "a token without a TTL never needs renewing");
        let s = Session::new(Zeroizing::new("t".into()), 3600, true);
        assert!(!s.due());
        let s = Session {
            renew_at: Some(Instant::now()),
            ..s
        };
        assert!(s.due());
    }
}
