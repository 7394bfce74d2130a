//! Polling with a deadline, and log tails for failure messages.

use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `check` every 500 ms until it returns `Some`, or panics after `timeout` naming
/// `what` and whatever `context` says then (log tails).
pub fn wait_until<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
    context: impl Fn() -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {} s\n{}", timeout.as_secs(), context());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The last `lines` lines of a text file, lossily decoded (serial consoles carry the
/// firmware's escape codes), or a note that it is missing.
pub fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            format!(
                "--- {} (last {} lines)\n{}",
                path.display(),
                lines.min(all.len()),
                all[all.len().saturating_sub(lines)..].join("\n")
            )
        }
        Err(e) => format!("--- {}: {e}", path.display()),
    }
}
