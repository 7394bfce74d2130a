//! What every case of a run shares, built once per run under a file lock.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use ironroot_testkit::server::server_bin;
use ironroot_testkit::softhsm::SoftHsm;
use nix::fcntl::{Flock, FlockArg};

use crate::guest::{Boot, Machine};
use crate::server::{EdgeServer, TOKEN};

/// The trust domain of the fixture's server (testkit's).
pub const TRUST_DOMAIN: &str = ironroot_testkit::server::TD;

/// The kernel command line of every boot that is not about the command line. The golden
/// boot uses it too, so its PCR 9 LoadOptions digest is the policy's.
pub const BOOT_ARGS: &[&str] = &["ironroot.demo_timeout=600"];

/// Packages whose programs and files the cases need (scripts/install-deps.sh installs
/// them for `make test`).
const REQUIRED: &[&str] = &[
    "/usr/bin/qemu-system-x86_64",
    "/usr/share/OVMF/OVMF_CODE_4M.fd",
    "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd",
    "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd",
    "/usr/share/ovmf/PkKek-1-snakeoil.key",
    "/usr/bin/swtpm_setup",
    "/usr/bin/osslsigncode",
    "/bin/busybox",
    "/usr/bin/cpio",
];

/// The run's shared state (paths under `run_dir/fixture`).
#[derive(Debug, Clone)]
pub struct Fixture {
    /// `target/qemu-tests/<run>`: every case's logs.
    pub run_dir: PathBuf,
    /// The Node API port baked into the image (guests reach it at 10.0.2.2).
    pub port: u16,
    /// The server's SoftHSM token (`hsm/tokens`) and data dir (`data`), never run.
    pub server_template: PathBuf,
    /// The manufactured TPM state and its EK CA (`ek-ca.pem`), never run.
    pub tpm_template: PathBuf,
    /// The edge image (vmlinuz, initrd.img) with the server's bundle and the test hook.
    pub image: PathBuf,
    /// Policies: `edge-gateway` (generated from the golden boot), `secure-boot`.
    pub policies_dir: PathBuf,
    /// The golden boot's firmware event log.
    pub golden_log: PathBuf,
}

impl Fixture {
    /// The run's fixture: built by the first case of the run, read by the others.
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Self::shared)
    }

    fn shared() -> Fixture {
        let qemu_tests = ironroot_testkit::target_dir().join("qemu-tests");
        // nextest gives every process of one run the same id
        let run = std::env::var("NEXTEST_RUN_ID")
            .map(|id| format!("run-{}", id.get(..8).unwrap_or(&id)))
            .unwrap_or_else(|_| format!("run-pid{}", std::process::id()));
        let run_dir = qemu_tests.join(&run);
        std::fs::create_dir_all(&run_dir).unwrap_or_else(|e| panic!("{}: {e}", run_dir.display()));
        let lock = File::create(run_dir.join("fixture.lock")).expect("fixture lock");
        let _lock = Flock::lock(lock, FlockArg::LockExclusive)
            .unwrap_or_else(|(_, e)| panic!("locking the fixture: {e}"));
        let dir = run_dir.join("fixture");
        let port_file = dir.join("port");
        let failed = run_dir.join("fixture.failed");
        if let Ok(why) = std::fs::read_to_string(&failed) {
            panic!("the run's fixture could not be built (an earlier case says why):\n{why}");
        }
        if let Ok(port) = std::fs::read_to_string(&port_file) {
            return Self::paths(&run_dir, port.trim().parse().expect("port file"));
        }
        remove_older_runs(&qemu_tests, &run);
        for path in REQUIRED {
            assert!(
                Path::new(path).exists(),
                "{path} is missing: install the packages with scripts/install-deps.sh"
            );
        }
        let fixture = Self::paths(&run_dir, free_port());
        let built = std::panic::catch_unwind(|| fixture.build());
        if let Err(panic) = built {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into());
            let _ = std::fs::write(&failed, why);
            std::panic::resume_unwind(panic);
        }
        std::fs::write(&port_file, fixture.port.to_string()).expect("port file");
        fixture
    }

    fn paths(run_dir: &Path, port: u16) -> Fixture {
        let dir = run_dir.join("fixture");
        Fixture {
            run_dir: run_dir.into(),
            port,
            server_template: dir.join("server"),
            tpm_template: dir.join("tpm"),
            image: dir.join("image"),
            policies_dir: dir.join("policies"),
            golden_log: dir.join("golden.log"),
        }
    }

    fn build(&self) {
        let dir = self.run_dir.join("fixture");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&self.policies_dir).expect("policies dir");
        let t0 = std::time::Instant::now();

        // a machine's TPM, EK certificate from a local CA (the server's ek_ca_bundle)
        script(
            &dir.join("tpm-setup.log"),
            Command::new("bash")
                .arg(crate::workspace_root().join("images/boot.sh"))
                .arg(&self.tpm_template)
                .env("BOOT_SETUP_ONLY", "1"),
        );

        // the server's CA in SoftHSM; its bundle goes into the image
        let hsm = SoftHsm::new(&self.server_template.join("hsm"));
        hsm.init_token(TOKEN);
        let bundle = dir.join("bundle.pem");
        {
            let server =
                EdgeServer::start_in(&self.server_template, &hsm, self, "", "", "", "fixture");
            std::fs::write(&bundle, server.bundle_pem()).expect("bundle");
        }

        // the image: the agent cargo built beside this test, the test hook overlay
        let agent = server_bin().with_file_name("ironroot-agent");
        assert!(
            agent.is_file(),
            "{} is missing: build the workspace first",
            agent.display()
        );
        script(
            &dir.join("image-build.log"),
            Command::new("bash")
                .arg(crate::workspace_root().join("images/build.sh"))
                .env("IMAGE_OUT", &self.image)
                .env("IRONROOT_AGENT", &agent)
                .env("IRONROOT_BUNDLE", &bundle)
                .env("IRONROOT_SERVER", format!("10.0.2.2:{}", self.port))
                .env("IRONROOT_TRUST_DOMAIN", TRUST_DOMAIN)
                .env("IRONROOT_ENROLL_DEVID", "1")
                .env(
                    "IRONROOT_OVERLAY",
                    crate::workspace_root().join("qemu-tests/overlay"),
                ),
        );
        // the staging tree is 3x the initrd; only the image is needed
        let _ = std::fs::remove_dir_all(self.image.join("rootfs"));

        // the golden boot: its event log becomes the reference policy
        let machine = Machine::copy_of(&self.tpm_template, &dir.join("golden-machine"));
        let mut boot = Boot::of(&self.image);
        boot.until_event_log = true;
        let mut golden = machine.boot(&boot, &dir.join("golden-boot"));
        let status = golden.wait_exit(Duration::from_secs(600));
        assert!(status.success(), "golden boot: boot.sh {status}");
        std::fs::copy(golden.event_log(), &self.golden_log).expect("golden log");
        drop(golden);

        let out = Command::new(server_bin())
            .args(["policy", "generate", "--name", "edge-gateway", "--eventlog"])
            .arg(&self.golden_log)
            .arg("--output")
            .arg(self.policies_dir.join("edge-gateway.toml"))
            .output()
            .expect("policy generate");
        assert!(
            out.status.success(),
            "policy generate on the golden boot's log failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Secure Boot required, nothing pinned: the cases about the firmware's Secure
        // Boot state are judged by that rule alone
        let mut sb = File::create(self.policies_dir.join("secure-boot.toml")).expect("policy");
        writeln!(sb, "name = \"secure-boot\"\nrequire_secure_boot = true").expect("policy");
        println!(
            "fixture built in {} s: {}",
            t0.elapsed().as_secs(),
            dir.display()
        );
    }
}

/// Runs a script with its output in `log`; panics with the log's tail when it fails.
fn script(log: &Path, cmd: &mut Command) {
    let f = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let status = cmd
        .stdout(f.try_clone().expect("log"))
        .stderr(f)
        .status()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        status.success(),
        "{cmd:?}: {status}\n{}",
        crate::wait::tail(log, 30)
    );
}

/// A free port below the kernel's ephemeral range (32768-60999 by default), so that the
/// other tests' `127.0.0.1:0` listeners cannot take it between cases.
fn free_port() -> u16 {
    let start = 20000 + (std::process::id() % 10000) as u16;
    (start..32000)
        .chain(20000..start)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000-32000")
}

/// Earlier runs' directories (images, TPM states, logs), except the newest one.
fn remove_older_runs(qemu_tests: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(qemu_tests) else {
        return;
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .filter(|e| e.file_name() != current)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    runs.sort();
    runs.pop(); // the previous run's logs stay for a look
    for (_, dir) in runs {
        let _ = std::fs::remove_dir_all(dir);
    }
}
