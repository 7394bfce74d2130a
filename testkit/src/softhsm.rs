//! A private SoftHSM2 installation per test: its own configuration file and token
//! directory, tokens initialised with `softhsm2-util`, objects listed with `pkcs11-tool`.
//!
//! SoftHSM reads `SOFTHSM2_CONF` in `C_Initialize`. A test that runs a child process (the
//! server) passes [`SoftHsm::conf`] in the child's environment; a test that opens the module
//! in its own process points the process at it with [`SoftHsm::use_in_this_process`], which
//! is only sound with one test per process (nextest).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// SoftHSM2's PKCS#11 module on Debian.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The user PIN of every token [`SoftHsm::init_token`] makes.
pub const PIN: &str = "1234";
/// The security officer PIN of every token [`SoftHsm::init_token`] makes.
pub const SO_PIN: &str = "12345678";

use crate::INSTALL_HINT;

/// A SoftHSM2 configuration with its own token directory, and a PIN file holding [`PIN`].
#[derive(Debug)]
pub struct SoftHsm {
    /// The `softhsm2.conf` to put in `SOFTHSM2_CONF`.
    pub conf: PathBuf,
    /// A file holding [`PIN`] and a newline (what a `pin_file` setting names).
    pub pin_file: PathBuf,
    /// The directory holding all of it.
    pub dir: PathBuf,
    /// The token directory (`directories.tokendir`): the token files.
    pub tokens: PathBuf,
}

impl SoftHsm {
    /// Writes the configuration, the token directory and the PIN file into `dir` (created).
    pub fn new(dir: &Path) -> Self {
        let tokens = dir.join("tokens");
        std::fs::create_dir_all(&tokens)
            .unwrap_or_else(|e| panic!("token dir {}: {e}", tokens.display()));
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                tokens.display()
            ),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
        let pin_file = dir.join("pin");
        std::fs::write(&pin_file, format!("{PIN}\n"))
            .unwrap_or_else(|e| panic!("{}: {e}", pin_file.display()));
        // The key manager refuses a PIN file other users may read.
        std::fs::set_permissions(&pin_file, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", pin_file.display()));
        SoftHsm {
            conf,
            pin_file,
            dir: dir.to_owned(),
            tokens,
        }
    }

    /// Points this process's `SOFTHSM2_CONF` at this installation, for tests that load the
    /// module themselves. Panics unless the test runs alone in its process (nextest, or
    /// `RUST_TEST_THREADS=1`): the variable is process-wide.
    pub fn use_in_this_process(&self) {
        let one_test_per_process = std::env::var_os("NEXTEST").is_some()
            || std::env::var("RUST_TEST_THREADS").as_deref() == Ok("1");
        assert!(
            one_test_per_process,
            "these tests set SOFTHSM2_CONF for their process: run them with `cargo nextest run` \
             (or RUST_TEST_THREADS=1 cargo test)"
        );
        // Edition 2021: set_var is safe; the test calls this before it starts any thread.
        std::env::set_var("SOFTHSM2_CONF", &self.conf);
    }

    /// `softhsm2-util --init-token --free --label LABEL` with [`SO_PIN`] and [`PIN`].
    pub fn init_token(&self, label: &str) {
        let out = Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--init-token", "--free", "--label", label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .unwrap_or_else(|e| panic!("cannot run softhsm2-util ({INSTALL_HINT}): {e}"));
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A file (mode 0600) in this installation's dir holding `pin` and a trailing newline,
    /// as `echo` would write it.
    pub fn write_pin_file(&self, name: &str, pin: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, format!("{pin}\n"))
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    }

    /// `pkcs11-tool ARGS` on token `label`, logged in with [`PIN`]; its stdout. Panics with
    /// its output unless it succeeds.
    pub fn pkcs11_tool(&self, label: &str, args: &[&str]) -> String {
        let out = Command::new("pkcs11-tool")
            .env("SOFTHSM2_CONF", &self.conf)
            .args(["--module", MODULE, "--token-label", label])
            .args(["--login", "--pin", PIN])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run pkcs11-tool (opensc; {INSTALL_HINT}): {e}"));
        assert!(
            out.status.success(),
            "pkcs11-tool {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}
