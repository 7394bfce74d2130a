//! Reading the firmware's TCG event log from securityfs.

use std::io::Read;
use std::path::Path;

use super::DeviceError;

/// Where Linux exposes the firmware event log (securityfs, root only).
pub const DEFAULT_EVENT_LOG_PATH: &str = "/sys/kernel/security/tpm0/binary_bios_measurements";
/// Far above any real log (a few hundred KiB at most): a cap so a wrong path cannot make
/// the agent read without end.
pub const MAX_EVENT_LOG_SIZE: u64 = 4 * 1024 * 1024;

/// Reads the binary event log at `path` (normally [`DEFAULT_EVENT_LOG_PATH`]), at most
/// [`MAX_EVENT_LOG_SIZE`] bytes. securityfs reports size 0, so the file is read to its end
/// rather than trusting its metadata.
pub fn read_event_log(path: &Path) -> Result<Vec<u8>, DeviceError> {
    let err = |reason: String| DeviceError::EventLog {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| {
        err(match e.kind() {
            std::io::ErrorKind::NotFound => "not found (is securityfs mounted, and did the \
                 firmware leave a TCG event log? set the event log path otherwise)"
                .to_string(),
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (the firmware event log is readable by root only)".to_string()
            }
            _ => format!("cannot open: {e}"),
        })
    })?;
    let mut data = Vec::new();
    file.take(MAX_EVENT_LOG_SIZE + 1)
        .read_to_end(&mut data)
        .map_err(|e| err(format!("cannot read: {e}")))?;
    if data.len() as u64 > MAX_EVENT_LOG_SIZE {
        return Err(err(format!(
            "larger than the {} MiB cap",
            MAX_EVENT_LOG_SIZE / (1024 * 1024)
        )));
    }
    if data.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(data)
}
