//! `with-podman -- COMMAND [ARGS…]`: runs COMMAND with `DOCKER_HOST` pointing at a private
//! rootful `podman system service` (configured as in `ironroot_testkit::podman`: its own
//! containers.conf, storage.conf and store, nothing shared with the host's podman), then
//! removes every container left in that store, stops the service by PID and exits with
//! COMMAND's status. The service's log is `target/test-logs/with-podman/podman-service.log`.
//!
//! SIGINT and SIGTERM are passed on to COMMAND and the cleanup still runs, so an interrupted
//! run leaves no container behind (a test process killed by a timeout cannot drop its
//! containers: this cleanup removes them).
//!
//! scripts/test.sh runs the tpm tests under it with `IRONROOT_SWTPM_BACKEND=container`.

use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use ironroot_testkit::podman::PodmanService;
use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// The last SIGINT or SIGTERM received, not yet passed on (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn note_signal(sig: i32) {
    PENDING.store(sig, Ordering::SeqCst);
}

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
    let handler = SigAction::new(
        SigHandler::Handler(note_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic. Handlers reset to the default on
        // exec, so COMMAND gets the default dispositions.
        #[allow(unsafe_code)] // installing a signal handler is unsafe by signature
        let installed = unsafe { signal::sigaction(sig, &handler) };
        if let Err(e) = installed {
            eprintln!("with-podman: cannot handle {sig}: {e}");
        }
    }
    let child = Command::new(&program)
        .args(args)
        .env("DOCKER_HOST", &docker_host)
        .spawn();
    let status = child.and_then(|mut child| loop {
        if let Some(status) = child.try_wait()? {
            break Ok(status);
        }
        let sig = PENDING.swap(0, Ordering::SeqCst);
        if let Ok(sig) = Signal::try_from(sig) {
            let _ = signal::kill(Pid::from_raw(child.id() as i32), sig);
        }
        std::thread::sleep(Duration::from_millis(50));
    });
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
