//! Where the token's user PIN comes from, and reading it without leaving copies behind.

use std::fs::File;
use std::io::Read;
use std::path::PathBuf;

use cryptoki::types::AuthPin;
use zeroize::Zeroizing;

use crate::HsmError;

/// PIN files larger than this are certainly a misconfiguration (a key, a certificate...), and
/// bounding the size lets the read buffer be allocated once, so no reallocation leaves an
/// unzeroized copy of the PIN on the heap.
const MAX_PIN_FILE: u64 = 4096;

/// Where the PKCS#11 user PIN is read from.
///
/// The PIN is read when the token is opened (and again only if every session was lost and a
/// new login is needed), handed to C_Login, and zeroized. It is never logged or kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinSource {
    /// A file holding the PIN; trailing newlines (`\n`, `\r\n`) are trimmed. Refused when
    /// users other than its owner and group may access it (mode 0600 or 0640).
    File(PathBuf),
    /// The name of an environment variable holding the PIN.
    Env(String),
}

impl PinSource {
    /// Reads the PIN. The returned [`AuthPin`] zeroizes itself when dropped.
    pub(crate) fn read(&self) -> Result<AuthPin, HsmError> {
        match self {
            PinSource::File(path) => read_file(path),
            PinSource::Env(var) => read_env(var),
        }
    }

    /// For log lines: where the PIN came from, never the PIN.
    pub(crate) fn describe(&self) -> String {
        match self {
            PinSource::File(path) => format!("file {}", path.display()),
            PinSource::Env(var) => format!("environment variable {var}"),
        }
    }
}

fn read_file(path: &PathBuf) -> Result<AuthPin, HsmError> {
    let unreadable = |detail| HsmError::PinFileUnreadable {
        path: path.clone(),
        detail,
    };
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(HsmError::PinFileMissing { path: path.clone() })
        }
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    if let Some(mode) = crate::secret_file::exposed_mode(&meta) {
        return Err(HsmError::PinFileExposed {
            path: path.clone(),
            mode,
        });
    }
    let len = meta.len();
    if len > MAX_PIN_FILE {
        return Err(HsmError::PinFileInvalid {
            path: path.clone(),
            reason: "it is larger than 4 KiB, so it cannot be a PIN",
        });
    }
    // +1 so read_to_end can detect EOF without growing the buffer.
    let mut buf = Zeroizing::new(Vec::with_capacity(MAX_PIN_FILE as usize + 1));
    file.take(MAX_PIN_FILE)
        .read_to_end(&mut buf)
        .map_err(unreadable)?;
    let text = std::str::from_utf8(&buf).map_err(|_| HsmError::PinFileInvalid {
        path: path.clone(),
        reason: "it is not UTF-8 text",
    })?;
    let pin = trim_newlines(text);
    if pin.is_empty() {
        return Err(HsmError::PinFileInvalid {
            path: path.clone(),
            reason: "it is empty",
        });
    }
    Ok(AuthPin::new(Box::from(pin)))
}

fn read_env(var: &str) -> Result<AuthPin, HsmError> {
    let value = match std::env::var(var) {
        Ok(v) => Zeroizing::new(v),
        Err(std::env::VarError::NotPresent) => {
            return Err(HsmError::PinEnvMissing {
                var: var.to_owned(),
            })
        }
        Err(std::env::VarError::NotUnicode(_)) => {
            return Err(HsmError::PinEnvInvalid {
                var: var.to_owned(),
                reason: "it is not valid UTF-8",
            })
        }
    };
    let pin = trim_newlines(&value);
    if pin.is_empty() {
        return Err(HsmError::PinEnvInvalid {
            var: var.to_owned(),
            reason: "it is empty",
        });
    }
    Ok(AuthPin::new(Box::from(pin)))
}

/// `echo 1234 > pin` writes a newline that is not part of the PIN. Other whitespace is kept:
/// it could be part of a PIN and silently changing a secret is worse than a login failure.
fn trim_newlines(s: &str) -> &str {
    s.trim_end_matches(['\n', '\r'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newline_trimming() {
        assert_eq!(trim_newlines("1234\n"), "1234");
        assert_eq!(trim_newlines("1234\r\n"), "1234");
        assert_eq!(trim_newlines(" 12 34 \n\n"), " 12 34 ");
    }

    #[test]
    fn missing_file_is_named() {
        let path = PathBuf::from("/nonexistent/ironroot/pin");
        let err = PinSource::File(path.clone()).read().map(|_| ());
        assert!(
            matches!(&err, Err(HsmError::PinFileMissing { path: p }) if *p == path),
            "{err:?}"
        );
    }
}
