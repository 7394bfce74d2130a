//! A key set (Google's certificate map or a JWKS) read from a file and re-read when the
//! file changes (its modification time or length), so a job that refreshes the file keeps
//! the server current without a restart. A file that became unreadable or unusable keeps
//! the last good set and logs why (the keys an operator already trusted stay trusted; a
//! start with no usable file fails).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use ironroot_cloud_attest::jwt::JwkSet;
use tracing::warn;

/// The key set of one attestor.
pub(super) struct KeyFile {
    option: &'static str,
    path: PathBuf,
    state: Mutex<(Stamp, JwkSet)>,
}

/// What identifies a version of the file.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Google's certificate map or a JWKS, whichever `bytes` is.
pub(super) fn parse_key_set(bytes: &[u8]) -> Result<JwkSet, String> {
    JwkSet::from_google_certs_json(bytes).or_else(|g| {
        JwkSet::from_jwks_json(bytes)
            .map_err(|j| format!("neither Google's certificate map ({g}) nor a JWKS ({j})"))
    })
}

fn load(option: &'static str, path: &std::path::Path) -> Result<JwkSet, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{option} {}: {e}", path.display()))?;
    parse_key_set(&bytes).map_err(|e| format!("{option} {}: {e}", path.display()))
}

impl KeyFile {
    /// Reads the file now; an unusable file is a start-up error naming `option`.
    pub(super) fn open(option: &'static str, path: PathBuf) -> Result<Self, String> {
        let st = stamp(&path);
        let set = load(option, &path)?;
        Ok(KeyFile {
            option,
            path,
            state: Mutex::new((st, set)),
        })
    }

    /// The current key set: re-read first if the file changed.
    pub(super) fn current(&self) -> JwkSet {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.path);
        if now != state.0 {
            match load(self.option, &self.path) {
                Ok(set) => *state = (now, set),
                Err(e) => {
                    warn!("{e}; keeping the key set last read");
                    state.0 = now;
                }
            }
        }
        state.1.clone()
    }
}
