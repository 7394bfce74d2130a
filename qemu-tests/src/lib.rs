//! Measured boot on real firmware: the edge image (images/) booted by OVMF under QEMU (TCG)
//! with a swtpm TPM, attesting to a server on the host whose CA keys are in SoftHSM.
//!
//! What one test run shares ([`Fixture`], built once per `cargo nextest run` under a file
//! lock, since nextest runs every test in its own process): the server's CA (token and
//! data), a manufactured TPM whose EK certificate comes from a local CA, the image built
//! with that server's bundle and address, and the golden boot whose event log became the
//! `edge-gateway` policy. Each case then copies what it needs: its own server process on
//! the fixed port the image names, its own machine (TPM state and disk), its own boots.
//!
//! Everything a case leaves is under `target/qemu-tests/<run>/<case>/`: the serial
//! consoles, swtpm's log, the event log the guest exported, the server log. A failing case
//! prints their tails.

mod fixture;
mod guest;
mod server;
mod wait;

pub use fixture::{Fixture, BOOT_ARGS, TRUST_DOMAIN};
pub use guest::{copy_dir, Boot, Guest, Machine};
pub use server::EdgeServer;
pub use wait::{tail, wait_until};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// The workspace root (the images/ scripts live there).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("qemu-tests sits in the workspace")
        .to_path_buf()
}

/// Cases boot one at a time: every guest reaches the server at the one port baked into
/// the image, and under TCG a boot takes a whole core. nextest's `qemu` test group (in
/// .config/nextest.toml) serializes the processes; this serializes threads under
/// `cargo test`.
static ONE_CASE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// One test case: its directory under the run's, and the shared fixture.
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    pub fixture: &'static Fixture,
    _serial: MutexGuard<'static, ()>,
}

impl Case {
    /// Builds (or waits for) the run's fixture, then makes a fresh directory for `name`.
    pub fn new(name: &str) -> Case {
        let serial = ONE_CASE_AT_A_TIME
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fixture = Fixture::get();
        let dir = fixture.run_dir.join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("case dir {}: {e}", dir.display()));
        println!("case {name}: logs in {}", dir.display());
        Case {
            name: name.into(),
            dir,
            fixture,
            _serial: serial,
        }
    }

    /// A new machine: a copy of the fixture's manufactured TPM (same EK CA), empty disk.
    pub fn machine(&self, label: &str) -> Machine {
        Machine::copy_of(&self.fixture.tpm_template, &self.dir.join(label))
    }

    /// A server with the fixture's CA, `default_policy` and `extra` TOML appended to its
    /// `[node_attestors.tpm]` table.
    pub fn server(&self, default_policy: &str, tpm_extra: &str) -> EdgeServer {
        EdgeServer::start(self, default_policy, tpm_extra, "")
    }
}
