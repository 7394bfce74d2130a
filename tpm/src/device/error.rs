//! The one error type of the `device` module.

use std::path::PathBuf;

/// What went wrong talking to the TPM. Messages name the TPM operation and, for a TPM or TSS
/// failure, the response code's text, so an operator can act on the log line alone.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The TCTI string is malformed or the TPM behind it could not be reached.
    #[error("cannot open the TPM through TCTI \"{tcti}\": {reason}")]
    Open {
        /// The TCTI as given.
        tcti: String,
        /// Why.
        reason: String,
    },
    /// A TPM command (or the TSS around it) failed.
    #[error("TPM2_{op} failed: {detail}")]
    Tpm {
        /// The TPM command, e.g. `ActivateCredential`.
        op: &'static str,
        /// The response code's meaning, with layer and value for TSS-side codes.
        detail: String,
        /// The TSS error.
        #[source]
        source: tss_esapi::Error,
    },
    /// An argument the caller passed cannot be used (wrong size, unsupported choice).
    #[error("{op}: invalid argument: {reason}")]
    InvalidArgument {
        /// The operation that refused it.
        op: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The TPM holds or returned something other than what the operation needs (for
    /// example a persistent handle occupied by a key of the wrong kind).
    #[error("{op}: {reason}")]
    Unexpected {
        /// The operation.
        op: &'static str,
        /// What was found.
        reason: String,
    },
    /// The firmware event log could not be read.
    #[error("event log {}: {reason}", path.display())]
    EventLog {
        /// The file that was read.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// The certificate signing request could not be built.
    #[error("certificate signing request: {0}")]
    Csr(String),
}

impl DeviceError {
    /// A closure mapping a TSS error to [`DeviceError::Tpm`] for `op`.
    pub(crate) fn tpm(op: &'static str) -> impl FnOnce(tss_esapi::Error) -> DeviceError {
        move |source| DeviceError::Tpm {
            op,
            detail: describe(&source),
            source,
        }
    }

    pub(crate) fn invalid(op: &'static str, reason: impl Into<String>) -> DeviceError {
        DeviceError::InvalidArgument {
            op,
            reason: reason.into(),
        }
    }

    pub(crate) fn unexpected(op: &'static str, reason: impl Into<String>) -> DeviceError {
        DeviceError::Unexpected {
            op,
            reason: reason.into(),
        }
    }

    /// The TPM command that failed, for [`DeviceError::Tpm`].
    pub fn tpm_operation(&self) -> Option<&'static str> {
        match self {
            DeviceError::Tpm { op, .. } => Some(op),
            _ => None,
        }
    }
}

/// tss-esapi's text for a response code, completed for codes of the TSS's own layers (it
/// prints "response code not recognized" for those): layer name, base error, raw value.
pub(crate) fn describe(e: &tss_esapi::Error) -> String {
    use tss_esapi::constants::response_code::Tss2ResponseCode;
    let text = e.to_string();
    let tss_esapi::Error::Tss2Error(code) = e else {
        return text;
    };
    if code.kind().is_some() {
        return text;
    }
    // The raw value is only reachable through Display ("Response code value: 0x...").
    let raw = match code {
        Tss2ResponseCode::FormatZero(rc) => rc.to_string(),
        Tss2ResponseCode::FormatOne(rc) => rc.to_string(),
        Tss2ResponseCode::Success => return text,
    };
    let Some(rc) = raw
        .rsplit("0x")
        .next()
        .and_then(|h| u32::from_str_radix(h.trim(), 16).ok())
    else {
        return format!("{text} ({raw})");
    };
    let layer = match rc >> 16 {
        0 => "TPM",
        6 => "TSS feature API",
        7 => "ESYS",
        8 => "SYS",
        9 => "marshalling",
        10 => "TCTI",
        11 | 12 => "resource manager",
        _ => "unknown",
    };
    format!("{layer} layer: {} ({rc:#x})", base_rc_name(rc & 0xffff))
}

/// Names of the TSS base response codes (tss2_common.h).
fn base_rc_name(base: u32) -> &'static str {
    const NAMES: [&str; 28] = [
        "success",
        "general failure",
        "not implemented",
        "bad context",
        "ABI mismatch",
        "bad reference",
        "insufficient buffer",
        "bad sequence",
        "no connection",
        "try again",
        "I/O error",
        "bad value",
        "not permitted",
        "invalid sessions",
        "no decrypt parameter",
        "no encrypt parameter",
        "bad size",
        "malformed response",
        "insufficient context",
        "insufficient response",
        "incompatible TCTI",
        "not supported",
        "bad TCTI structure",
        "memory",
        "bad ESYS_TR handle",
        "more than one decrypt session",
        "more than one encrypt session",
        "response HMAC did not verify",
    ];
    usize::try_from(base)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .unwrap_or("(unnamed)")
}

#[cfg(test)]
mod tests;
