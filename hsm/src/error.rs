//! The crate's error type.
//!
//! Every message is complete on its own (it embeds the underlying cause as text rather than
//! exposing it through `source()`), because operators mostly see one log line: it has to say
//! what failed, on which token/key/file, and what to check.

use std::path::PathBuf;
use std::time::SystemTime;

use cryptoki::error::RvError;

/// Everything that can go wrong while loading a module, logging in, or using a key.
#[derive(thiserror::Error, Debug)]
pub enum HsmError {
    /// The configured PKCS#11 module file does not exist.
    #[error("PKCS#11 module {path} does not exist: install the HSM vendor's PKCS#11 library or fix `module` in the configuration")]
    ModuleNotFound {
        /// The path from the configuration.
        path: PathBuf,
    },

    /// The module file exists but could not be loaded as a PKCS#11 library.
    #[error("cannot load PKCS#11 module {path} (is it a PKCS#11 library built for this machine?): {detail}")]
    ModuleLoad {
        /// The path from the configuration.
        path: PathBuf,
        /// What the loader reported.
        detail: String,
    },

    /// C_Initialize failed.
    #[error("PKCS#11 module {path} failed to initialize: {detail}; check the module's own configuration (for SoftHSM2: SOFTHSM2_CONF and its tokendir)")]
    ModuleInit {
        /// The path from the configuration.
        path: PathBuf,
        /// What the module returned.
        detail: String,
    },

    /// No token with the configured label is present.
    #[error("no PKCS#11 token labelled '{label}' is present ({}); initialize the token or fix `token_label` in the configuration", available_text(.available))]
    TokenNotFound {
        /// The label from the configuration.
        label: String,
        /// Labels of the initialized tokens that are present.
        available: Vec<String>,
    },

    /// More than one token carries the configured label, so the choice would be a guess.
    #[error("{count} PKCS#11 tokens are labelled '{label}'; refusing to guess which one holds the CA keys: give the tokens distinct labels")]
    TokenAmbiguous {
        /// The label from the configuration.
        label: String,
        /// How many tokens carry it.
        count: usize,
    },

    /// The PIN file does not exist.
    #[error("PIN file {path} does not exist: create it (mode 0600) with the token's user PIN, or fix the PIN file path in the configuration")]
    PinFileMissing {
        /// The configured PIN file.
        path: PathBuf,
    },

    /// The PIN file exists but cannot be read.
    #[error("cannot read PIN file {path}: {detail}")]
    PinFileUnreadable {
        /// The configured PIN file.
        path: PathBuf,
        /// The I/O error.
        detail: std::io::Error,
    },

    /// The PIN file grants access to users outside its owner and group.
    #[error(
        "PIN file {path} has mode {mode:04o}: every user of this machine may read or replace \
         the HSM's user PIN; make it private (`chmod o-rwx {path}`: 0600, or 0640 for a \
         group the server shares)"
    )]
    PinFileExposed {
        /// The configured PIN file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The PIN file's content is not usable as a PIN.
    #[error("PIN file {path} is not usable: {reason}")]
    PinFileInvalid {
        /// The configured PIN file.
        path: PathBuf,
        /// Why (empty, too large, not UTF-8).
        reason: &'static str,
    },

    /// The PIN environment variable is not set.
    #[error("environment variable {var} (the PKCS#11 user PIN) is not set")]
    PinEnvMissing {
        /// The configured variable name.
        var: String,
    },

    /// The PIN environment variable is set but not usable.
    #[error("environment variable {var} (the PKCS#11 user PIN) is not usable: {reason}")]
    PinEnvInvalid {
        /// The configured variable name.
        var: String,
        /// Why (empty, not UTF-8).
        reason: &'static str,
    },

    /// The token rejected the PIN.
    #[error("the user PIN for PKCS#11 token '{token}' is incorrect (CKR_PIN_INCORRECT): check the PIN file or variable; repeated failures may lock the token")]
    PinIncorrect {
        /// The token label.
        token: String,
    },

    /// The token's user PIN is locked after too many failures.
    #[error("the user PIN of PKCS#11 token '{token}' is locked (CKR_PIN_LOCKED): the security officer must reset it")]
    PinLocked {
        /// The token label.
        token: String,
    },

    /// Login failed for another reason.
    #[error("cannot log in to PKCS#11 token '{token}': {detail}")]
    Login {
        /// The token label.
        token: String,
        /// What the module returned.
        detail: String,
    },

    /// A key with this label already exists.
    #[error(
        "a key labelled '{label}' already exists; pick another label or destroy the old key first"
    )]
    KeyExists {
        /// The label asked for.
        label: String,
    },

    /// No key with this label exists.
    #[error("no key labelled '{label}' exists")]
    KeyNotFound {
        /// The label asked for.
        label: String,
    },

    /// More than one key pair carries the label, so using one would be a guess.
    #[error("{count} private keys are labelled '{label}'; refusing to guess which one to use: remove or relabel the extra keys")]
    KeyAmbiguous {
        /// The label asked for.
        label: String,
        /// How many private keys carry it.
        count: usize,
    },

    /// The private key could leave (or may have left) the token: never use it.
    #[error("refusing to use key '{label}': its private key is or was extractable from the token ({reason}); generate a new key inside the token")]
    KeyExtractable {
        /// The key's label.
        label: String,
        /// Which attribute check failed.
        reason: String,
    },

    /// The key exists but is not one ironroot can use.
    #[error("key '{label}' cannot be used: {reason}")]
    UnsupportedKey {
        /// The key's label.
        label: String,
        /// What is wrong with it (type, size, missing public half, ...).
        reason: String,
    },

    /// The label is not acceptable.
    #[error("invalid key label '{label}': {reason}")]
    InvalidLabel {
        /// The label asked for.
        label: String,
        /// Why.
        reason: &'static str,
    },

    /// `sign_digest` was given something other than a SHA-256 digest.
    #[error("sign_digest needs a 32-byte SHA-256 digest, got {len} bytes")]
    InvalidDigest {
        /// The length received.
        len: usize,
    },

    /// An algorithm name that is neither "ec-p256" nor "rsa-3072".
    #[error("unknown key algorithm '{name}': use \"ec-p256\" or \"rsa-3072\"")]
    UnknownAlgorithm {
        /// The name given.
        name: String,
    },

    /// A PKCS#11 call failed.
    #[error("PKCS#11 {op} failed on token '{token}': {detail}")]
    Pkcs11 {
        /// What we were doing (e.g. "sign with key 'x'").
        op: String,
        /// The token label.
        token: String,
        /// The PKCS#11 function and CKR_ code.
        detail: String,
    },

    /// The token cannot be reached: the device, its connection, or the module's state is gone
    /// (CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT, ... and session or login
    /// losses that opening a new session did not repair). The key manager fails fast with this
    /// until it has reconnected: it re-initialises the module (C_Finalize + C_Initialize),
    /// opens new sessions and logs in again, in the background with jittered backoff.
    #[error(
        "PKCS#11 token '{token}' unreachable since {}: {reason}; reconnecting in the background \
         (check the HSM, its network link or p11-kit server, and the module's log)",
        humantime::format_rfc3339_seconds(*since)
    )]
    Unreachable {
        /// The token label.
        token: String,
        /// When the key manager first saw it gone (the start of this outage).
        since: SystemTime,
        /// The failure that showed it (or the latest reconnection attempt's): the PKCS#11
        /// function and CKR_ code.
        reason: String,
    },

    /// A key or signature could not be encoded or decoded.
    #[error("cannot encode {what}: {reason}")]
    Encoding {
        /// What was being encoded.
        what: &'static str,
        /// The encoder's message.
        reason: String,
    },

    /// A file or directory of the software key store could not be used.
    #[error("software key store: cannot {op} {path}: {detail}")]
    KeyFile {
        /// What we were doing ("create", "read", "write", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        detail: std::io::Error,
    },

    /// A software key operation failed.
    #[error("software key '{label}': {reason}")]
    Software {
        /// The key's label.
        label: String,
        /// What failed.
        reason: String,
    },

    /// The OpenBao / Vault transit engine failed or refused (sealed, permission denied,
    /// unreachable, ...).
    #[error(transparent)]
    Transit(#[from] crate::TransitError),
}

impl HsmError {
    /// True when the key store could not be reached at all ([`HsmError::Unreachable`]), as
    /// opposed to a store that answered with a refusal: nothing is known to be wrong with the
    /// keys themselves, and the same call may work once the store is back.
    pub fn is_unreachable(&self) -> bool {
        match self {
            HsmError::Unreachable { .. } => true,
            HsmError::Transit(e) => e.is_unreachable(),
            _ => false,
        }
    }
}

/// What a PKCS#11 error says is gone, if anything: the classes of failure the key manager
/// repairs, each in its own way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The device, its connection, or the module's own state: only C_Finalize + C_Initialize
    /// (then new sessions and a new login) bring it back.
    Device,
    /// This session (closed by the module or by other code of the process): open another.
    Session,
    /// The login (the token or other code of the process logged out): log in again.
    Login,
}

impl Lost {
    /// The class of `rv`; `None` for errors about the operation itself (a bad mechanism, a
    /// missing object, a wrong PIN), which reconnecting would not fix.
    pub(crate) fn of(rv: RvError) -> Option<Lost> {
        match rv {
            RvError::DeviceError
            | RvError::DeviceRemoved
            | RvError::DeviceMemory
            | RvError::TokenNotPresent
            | RvError::TokenNotRecognized
            | RvError::SlotIdInvalid
            | RvError::CryptokiNotInitialized
            // "Some horrible, unrecoverable error": the module's state is not to be trusted.
            | RvError::GeneralError => Some(Lost::Device),
            RvError::SessionHandleInvalid | RvError::SessionClosed => Some(Lost::Session),
            RvError::UserNotLoggedIn => Some(Lost::Login),
            _ => None,
        }
    }
}

fn available_text(labels: &[String]) -> String {
    if labels.is_empty() {
        "no initialized tokens are present".to_owned()
    } else {
        let quoted: Vec<String> = labels.iter().map(|l| format!("'{l}'")).collect();
        format!("tokens present: {}", quoted.join(", "))
    }
}

/// Renders a cryptoki error the way HSM documentation names it: "C_Sign returned
/// CKR_KEY_HANDLE_INVALID". The crate's own Display ("Function::Sign: PKCS11 error: <a
/// paragraph of the spec>") is long and hides the code operators search for.
pub(crate) fn ck_text(err: &cryptoki::error::Error) -> String {
    match err {
        cryptoki::error::Error::Pkcs11(rv, function) => {
            format!("C_{function:?} returned {}", ckr_name(rv))
        }
        other => other.to_string(),
    }
}

/// `RvError::KeyHandleInvalid` -> `CKR_KEY_HANDLE_INVALID`.
pub(crate) fn ckr_name(rv: &cryptoki::error::RvError) -> String {
    let camel = format!("{rv:?}");
    let mut out = String::from("CKR");
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ckr_names_match_the_spec_spelling() {
        use cryptoki::error::RvError;
        assert_eq!(
            ckr_name(&RvError::KeyHandleInvalid),
            "CKR_KEY_HANDLE_INVALID"
        );
        assert_eq!(ckr_name(&RvError::PinIncorrect), "CKR_PIN_INCORRECT");
    }

    #[test]
    fn losses_are_classified_by_what_brings_them_back() {
        use RvError::*;
        for rv in [
            DeviceError,
            DeviceRemoved,
            TokenNotPresent,
            CryptokiNotInitialized,
        ] {
            assert_eq!(Lost::of(rv), Some(Lost::Device), "{rv:?}");
        }
        assert_eq!(Lost::of(SessionHandleInvalid), Some(Lost::Session));
        assert_eq!(Lost::of(SessionClosed), Some(Lost::Session));
        assert_eq!(Lost::of(UserNotLoggedIn), Some(Lost::Login));
        for rv in [
            KeyHandleInvalid,
            PinIncorrect,
            MechanismInvalid,
            FunctionFailed,
        ] {
            assert_eq!(
                Lost::of(rv),
                None,
                "{rv:?} is about the operation, not a loss"
            );
        }
    }

    #[test]
    fn unreachable_names_the_token_the_time_and_the_cause() {
        let e = HsmError::Unreachable {
            token: "ca".into(),
            since: std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000),
            reason: "C_Sign returned CKR_DEVICE_ERROR".into(),
        };
        assert!(e.is_unreachable());
        let msg = e.to_string();
        assert!(
            msg.contains("'ca' unreachable since 2023-11-14T22:13:20Z"),
            "{msg}"
        );
        assert!(msg.contains("CKR_DEVICE_ERROR"), "{msg}");
        assert!(!HsmError::KeyNotFound { label: "x".into() }.is_unreachable());
    }

    #[test]
    fn token_not_found_lists_labels() {
        let e = HsmError::TokenNotFound {
            label: "ca".into(),
            available: vec!["a".into(), "b".into()],
        };
        assert!(e.to_string().contains("tokens present: 'a', 'b'"));
    }

    #[test]
    fn errors_cross_threads() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<HsmError>();
    }
}
