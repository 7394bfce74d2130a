//! The Python venv `scripts/install-deps.sh` makes for the gRPC interop tests
//! (`/opt/ironroot-venv`, or `$IRONROOT_VENV`): grpcio, grpcio-tools and the SPIFFE Python
//! library.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The venv's python, if it imports grpc, grpc_tools and spiffe. Otherwise: in CI
/// (`CI=true`) a panic naming the fix; elsewhere `None`, after saying the test is skipped
/// ([`skipped`]).
pub fn grpc_python() -> Option<PathBuf> {
    let venv = std::env::var_os("IRONROOT_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/ironroot-venv"));
    let py = venv.join("bin/python");
    let check = Command::new(&py)
        .args(["-c", "import grpc, grpc_tools, spiffe"])
        .output();
    let problem = match check {
        Ok(o) if o.status.success() => return Some(py),
        Ok(o) => format!(
            "{} cannot import grpc, grpc_tools and spiffe: {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => format!("{} not runnable: {e}", py.display()),
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{problem}; scripts/install-deps.sh installs it");
    }
    skipped(&format!(
        "{problem} (run scripts/install-deps.sh; in CI this fails)"
    ));
    None
}

/// Says the current test was skipped where `cargo test` shows it even for a passing test
/// (straight to the process's stderr, past the harness's capture).
pub fn skipped(why: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {}: {why}",
        crate::current_test_name()
    );
}
