//! Test support for ironroot: real components run per test.
//!
//! Every helper here owns the processes it starts and kills them **by PID** when dropped
//! (also when the test panics; swtpm on the container backend: removes its container), waits for readiness by polling with a deadline, and keeps
//! the child's log under `target/test-logs/<test name>/`. A missing system package is a
//! failure that names the fix (`scripts/install-deps.sh`), never a silent skip.
//!
//! Only a dev-dependency: nothing here is meant for production code.

pub mod fixtures;
pub mod podman;
pub mod postgres;
pub mod server;
pub mod shared_bin;
pub mod svid;
pub mod swtpm;

use std::path::{Path, PathBuf};

/// The cargo target dir of the running test binary: `$CARGO_TARGET_DIR`, else the ancestor of
/// the test executable that holds cargo's `CACHEDIR.TAG`, else the system temp dir.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.ancestors().find(|d| d.join("CACHEDIR.TAG").is_file()) {
            return dir.to_path_buf();
        }
    }
    std::env::temp_dir()
}

/// `target/test-logs/<name>/`, created. `name` is made filesystem-safe.
pub fn test_log_dir(name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let dir = target_dir().join("test-logs").join(safe);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        panic!("cannot create test log dir {}: {e}", dir.display());
    }
    dir
}

/// The current test's name as libtest (and nextest) set it on the test thread, or a
/// process-unique fallback.
pub fn current_test_name() -> String {
    match std::thread::current().name() {
        Some(n) if n != "main" => n.to_string(),
        _ => format!("pid-{}", std::process::id()),
    }
}

/// The last `n` lines of a log file (or why it cannot be read).
pub fn tail(p: &Path, n: usize) -> String {
    match std::fs::read(p) {
        Ok(b) => {
            let s = String::from_utf8_lossy(&b);
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read: {e})"),
    }
}
