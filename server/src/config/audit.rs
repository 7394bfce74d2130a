//! `[audit]`: the tamper-evident audit log (docs/operations.md, "Audit log").

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, InvalidOption};

const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;
const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
const DEFAULT_SVID_SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// `[audit]` as written and as used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct AuditConfig {
    /// On by default: a regulated site must not have to remember to switch it on.
    pub(crate) enabled: bool,
    /// Empty: `data_dir/audit`.
    pub(crate) dir: PathBuf,
    /// A new file starts once the current one is this large (bytes).
    pub(crate) max_file_bytes: u64,
    /// How often the chain's head is signed by the checkpoint key (when records were added).
    #[serde(with = "humantime_serde")]
    pub(crate) checkpoint_interval: Duration,
    /// How often the count of signed SVIDs is written (one record per interval).
    #[serde(with = "humantime_serde")]
    pub(crate) svid_summary_interval: Duration,
    /// Label of the P-256 checkpoint key in the key manager; created if absent.
    /// Empty: `<ca.key_label_prefix>-audit`.
    pub(crate) checkpoint_key_label: String,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            enabled: true,
            dir: PathBuf::new(),
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
            svid_summary_interval: DEFAULT_SVID_SUMMARY_INTERVAL,
            checkpoint_key_label: String::new(),
        }
    }
}

impl AuditConfig {
    pub(super) fn check(&self) -> Result<(), InvalidOption> {
        if self.max_file_bytes < 4096 {
            return Err(invalid("audit.max_file_bytes", "must be at least 4096"));
        }
        if self.checkpoint_interval < Duration::from_secs(1) {
            return Err(invalid("audit.checkpoint_interval", "must be at least 1s"));
        }
        if self.svid_summary_interval < Duration::from_secs(1) {
            return Err(invalid(
                "audit.svid_summary_interval",
                "must be at least 1s",
            ));
        }
        Ok(())
    }

    /// The log's directory.
    pub(crate) fn dir(&self, data_dir: &Path) -> PathBuf {
        if self.dir.as_os_str().is_empty() {
            data_dir.join("audit")
        } else {
            self.dir.clone()
        }
    }

    /// The checkpoint key's label.
    pub(crate) fn key_label(&self, key_label_prefix: &str) -> String {
        if self.checkpoint_key_label.is_empty() {
            format!("{key_label_prefix}-audit")
        } else {
            self.checkpoint_key_label.clone()
        }
    }
}
