//! TCTI strings: checked here so a typo fails with a message naming it, rather than
//! tss-esapi quietly falling back to `localhost:2321` for keys it does not know.

use std::str::FromStr;

use tss_esapi::{Context, TctiNameConf};

use super::DeviceError;

/// Parses and checks a TCTI string: `device:/dev/tpmrm0`, `swtpm:host=H,port=P`,
/// `mssim:host=H,port=P` or `tabrmd:...`.
pub(crate) fn parse(tcti: &str) -> Result<TctiNameConf, DeviceError> {
    let bad = |reason: String| DeviceError::Open {
        tcti: tcti.to_string(),
        reason,
    };
    let (kind, conf) = tcti.split_once(':').unwrap_or((tcti, ""));
    match kind {
        "device" => {
            if !conf.is_empty() && !std::path::Path::new(conf).exists() {
                return Err(bad(format!("no such device {conf}")));
            }
        }
        "swtpm" | "mssim" => {
            for kv in conf.split(',').filter(|s| !s.is_empty()) {
                match kv.split_once('=') {
                    Some(("host", h)) if !h.is_empty() => {}
                    Some(("port", p)) => {
                        if p.parse::<u16>().map_or(true, |p| p == 0) {
                            return Err(bad(format!("port \"{p}\" is not a TCP port")));
                        }
                    }
                    _ => {
                        return Err(bad(format!(
                            "unknown option \"{kv}\" (expected host=H,port=P)"
                        )))
                    }
                }
            }
        }
        "tabrmd" => {}
        _ => {
            return Err(bad(
                "unknown TCTI (expected device:/dev/tpmrm0, swtpm:host=H,port=P, \
                 mssim:host=H,port=P or tabrmd:)"
                    .into(),
            ))
        }
    }
    TctiNameConf::from_str(tcti).map_err(|e| bad(format!("not a valid TCTI: {e}")))
}

/// Opens an ESYS context on `tcti`.
pub(crate) fn open(tcti: &str) -> Result<Context, DeviceError> {
    let conf = parse(tcti)?;
    Context::new(conf).map_err(|e| DeviceError::Open {
        tcti: tcti.to_string(),
        reason: format!(
            "{} (is the TPM there and reachable?)",
            super::error::describe(&e)
        ),
    })
}

#[cfg(test)]
mod tests;
