//! [`TransitError`]: what can go wrong between the transit key manager and an OpenBao or Vault
//! server, each case named the way an operator meets it (HTTP status and the server's own
//! words included). Carried by [`crate::HsmError::Transit`]. Key-level refusals (a key that is
//! missing, exportable, of another type) are the same [`crate::HsmError`] variants PKCS#11
//! keys get, so the CA treats both stores alike.

use std::path::PathBuf;
use std::time::SystemTime;

/// A failure talking to the transit engine of an OpenBao / Vault server.
#[derive(thiserror::Error, Debug)]
#[non_exhaustive]
pub enum TransitError {
    /// An option of the transit key manager is unusable.
    #[error("transit key manager option `{option}`: {reason}")]
    Config {
        /// The option (`address`, `mount`, `key_prefix`, `ca_file`, ...).
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The token or secret ID file cannot be read or holds nothing usable.
    #[error("transit {what} file {path}: {reason}")]
    CredentialFile {
        /// "token" or "AppRole secret ID".
        what: &'static str,
        /// The configured file.
        path: PathBuf,
        /// Why it is unusable.
        reason: String,
    },

    /// The environment variable holding the token is unset or empty.
    #[error("transit token environment variable {var}: {reason}")]
    CredentialEnv {
        /// The configured variable.
        var: String,
        /// Why it is unusable.
        reason: &'static str,
    },

    /// Nothing answered at the address (refused, no route, TLS failure, timeout). Every call
    /// fails like this until the server answers again; nothing is known to be wrong with the
    /// keys.
    #[error(
        "OpenBao/Vault at {address} unreachable since {}: {reason} (check the server, the \
         network, and `address`/`ca_file`)",
        humantime::format_rfc3339_seconds(*since)
    )]
    Unreachable {
        /// The configured address.
        address: String,
        /// When this outage was first seen.
        since: SystemTime,
        /// The latest failure.
        reason: String,
    },

    /// The server answered 503 "Vault is sealed": it holds the keys but cannot use them until
    /// an operator unseals it.
    #[error(
        "OpenBao/Vault at {address} is sealed (HTTP 503 \"Vault is sealed\") since {}: unseal \
         it (`bao operator unseal`); the CA signs again once it is",
        humantime::format_rfc3339_seconds(*since)
    )]
    Sealed {
        /// The configured address.
        address: String,
        /// When the key manager first saw it sealed.
        since: SystemTime,
    },

    /// The server answered 403: the token's policy does not allow the call (or the token has
    /// expired or been revoked).
    #[error(
        "OpenBao/Vault at {address} refused to {op} ({method} /v1/{path}): HTTP 403 permission \
         denied; the token's policy must allow it (docs/vault.md lists the policy) and the \
         token must be valid"
    )]
    PermissionDenied {
        /// The configured address.
        address: String,
        /// What the key manager was doing.
        op: String,
        /// HTTP method.
        method: &'static str,
        /// The API path.
        path: String,
    },

    /// Logging in (AppRole) or renewing the token failed.
    #[error("OpenBao/Vault at {address}: {method} authentication failed: {reason}")]
    Auth {
        /// The configured address.
        address: String,
        /// "token" or "AppRole".
        method: &'static str,
        /// The server's answer or the I/O failure.
        reason: String,
    },

    /// Any other refusal: the HTTP status and the server's error messages.
    #[error("OpenBao/Vault at {address} refused to {op}: HTTP {status}: {errors}")]
    Status {
        /// The configured address.
        address: String,
        /// What the key manager was doing.
        op: String,
        /// The HTTP status code.
        status: u16,
        /// The `errors` of the response body (or the body itself).
        errors: String,
    },

    /// The answer is not what the transit API documents.
    #[error("OpenBao/Vault at {address}: unexpected answer to {op}: {reason}")]
    Response {
        /// The configured address.
        address: String,
        /// What the key manager was doing.
        op: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The signature transit returned does not verify with the key's public key as it was
    /// found: the key under this name changed behind the key manager. Nothing is signed with it.
    #[error(
        "transit key '{name}' (label '{label}') returned a signature that does not verify with \
         its public key: the key was replaced or rotated inside transit; refusing to use it"
    )]
    SignatureMismatch {
        /// The key's label.
        label: String,
        /// The transit key name.
        name: String,
    },
}

impl TransitError {
    /// True when the server could not be used at all (unreachable or sealed), as opposed to a
    /// refusal: the same call may work once it is back.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransitError::Unreachable { .. } | TransitError::Sealed { .. }
        )
    }
}
