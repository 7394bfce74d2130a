//! Finding the shared firmware event-log fixtures (never copied into the repo).

use std::path::{Path, PathBuf};

/// `$IRONROOT_FIXTURES`, else `<workspace>/../shared/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    match std::env::var_os("IRONROOT_FIXTURES") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/fixtures"
        )),
    }
}

/// The fixtures dir, or `None` (after saying so plainly) when it is absent outside CI. In
/// CI (env `CI` set) a missing dir fails the test.
pub fn fixtures_or_skip() -> Option<PathBuf> {
    let dir = fixtures_dir();
    if dir.join("eventlogs").is_dir() {
        return Some(dir);
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "event log fixtures not found at {} (set IRONROOT_FIXTURES)",
            dir.display()
        );
    }
    println!(
        "NOT RUN: event log fixtures not found at {} (set IRONROOT_FIXTURES)",
        dir.display()
    );
    None
}

/// Reads a fixture file.
pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
