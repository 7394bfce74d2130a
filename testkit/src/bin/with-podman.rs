//! `with-podman -- COMMAND [ARGS…]`: runs COMMAND with `DOCKER_HOST` pointing at a private
//! rootful `podman system service` (configured as in `ironroot_testkit::podman`: its own
//! containers.conf, storage.conf and store, nothing shared with the host's podman), then
//! removes every container left in that store, stops the service by PID and exits with
//! COMMAND's status. The service's log is `target/test-logs/with-podman/podman-service.log`.
//!
//! scripts/test.sh runs the TPM test suites under it with `IRONROOT_SWTPM_BACKEND=container`.

use std::process::{Command, ExitCode};

use ironroot_testkit::podman::PodmanService;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1).peekable();
    if args.peek().is_some_and(|a| a == "--") {
        args.next();
    }
    let Some(program) = args.next() else {
        eprintln!("usage: with-podman -- COMMAND [ARGS…]");
        return ExitCode::from(2);
    };
    let log = ironroot_testkit::test_log_dir("with-podman").join("podman-service.log");
    let service = PodmanService::start(&[], &log);
    let docker_host = service.docker_host();
    eprintln!(
        "with-podman: podman service on {docker_host} (log {})",
        log.display()
    );
    let status = Command::new(&program)
        .args(args)
        .env("DOCKER_HOST", &docker_host)
        .status();
    // Dropping the service removes whatever containers the command left, then stops it.
    drop(service);
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        Ok(s) => {
            eprintln!("with-podman: {} exited with {s}", program.to_string_lossy());
            ExitCode::from(s.code().map_or(1, |c| c.clamp(1, 255) as u8))
        }
        Err(e) => {
            eprintln!("with-podman: cannot run {}: {e}", program.to_string_lossy());
            ExitCode::from(127)
        }
    }
}
