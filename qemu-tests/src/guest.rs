//! A machine (a TPM's state and a disk) and its boots through images/boot.sh.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::wait::{tail, wait_until};

/// One machine: `dir` holds its TPM state (what swtpm_setup manufactured, copied) and
/// `dir/disk`, the persistent disk the guest mounts over 9p.
pub struct Machine {
    pub dir: PathBuf,
}

impl Machine {
    /// A machine whose TPM is a copy of `template` (same EK, same EK CA).
    pub fn copy_of(template: &Path, dir: &Path) -> Machine {
        let _ = std::fs::remove_dir_all(dir);
        copy_dir(template, dir);
        Machine { dir: dir.into() }
    }

    /// The machine's disk as the host sees it (`/var/lib/ironroot` in the guest).
    pub fn disk(&self) -> PathBuf {
        self.dir.join("disk")
    }

    /// Starts a boot; its logs go to `out`.
    pub fn boot(&self, boot: &Boot, out: &Path) -> Guest {
        let _ = std::fs::remove_dir_all(out);
        std::fs::create_dir_all(out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        std::fs::create_dir_all(self.disk()).expect("machine disk");
        let log = std::fs::File::create(out.join("boot.log")).expect("boot.log");
        let mut cmd = Command::new("bash");
        cmd.arg(crate::workspace_root().join("images/boot.sh"))
            .arg(&self.dir)
            .args(&boot.args)
            .env("IMAGE_DIR", &boot.image)
            .env("BOOT_OUT", out)
            .env("BOOT_TIMEOUT", boot.timeout.as_secs().to_string())
            .env(
                "BOOT_UNTIL_EVENTLOG",
                if boot.until_event_log { "1" } else { "0" },
            )
            .env("BOOT_SECURE_BOOT", if boot.secure_boot { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("boot.log"))
            .stderr(log)
            // its own process group: stopping the boot stops QEMU with it
            .process_group(0);
        if let Some(k) = &boot.kernel {
            cmd.env("BOOT_KERNEL", k);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run images/boot.sh: {e}"));
        println!(
            "boot {}: {}{} {}",
            out.display(),
            if boot.secure_boot {
                "Secure Boot, "
            } else {
                ""
            },
            boot.kernel
                .as_deref()
                .unwrap_or(&boot.image.join("vmlinuz"))
                .display(),
            boot.args.join(" ")
        );
        Guest {
            child: Some(child),
            out: out.into(),
            started: Instant::now(),
        }
    }
}

/// How to boot.
#[derive(Clone, Debug)]
pub struct Boot {
    /// The image (vmlinuz, initrd.img).
    pub image: PathBuf,
    /// Another kernel (a signed one).
    pub kernel: Option<PathBuf>,
    /// OVMF's Secure Boot build with the snakeoil keys.
    pub secure_boot: bool,
    /// Kernel command line arguments after boot.sh's own.
    pub args: Vec<String>,
    /// Stop once the guest exported its event log (a golden boot).
    pub until_event_log: bool,
    /// boot.sh's own limit.
    pub timeout: Duration,
}

impl Boot {
    /// The image with the fixture's command line, no Secure Boot, 600 s limit.
    pub fn of(image: &Path) -> Boot {
        Boot {
            image: image.into(),
            kernel: None,
            secure_boot: false,
            args: crate::BOOT_ARGS.iter().map(|a| a.to_string()).collect(),
            until_event_log: false,
            timeout: Duration::from_secs(600),
        }
    }
}

/// A running (or finished) boot.
pub struct Guest {
    child: Option<Child>,
    pub out: PathBuf,
    started: Instant,
}

impl Guest {
    /// The serial console so far.
    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.out.join("console.log")).unwrap_or_default())
            .into_owned()
    }

    /// Seconds since QEMU was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// True while boot.sh (and so QEMU) runs.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits until the console holds `needle`; fails early if the guest stopped.
    pub fn wait_console(&mut self, needle: &str, timeout: Duration) -> String {
        let out = self.out.clone();
        let mut stopped = false;
        wait_until(
            timeout,
            &format!("console line {needle:?}"),
            || {
                let c = self.console();
                if let Some(line) = c.lines().find(|l| l.contains(needle)) {
                    return Some(line.to_string());
                }
                if stopped {
                    panic!("the guest stopped before {needle:?}\n{}", logs(&out));
                }
                stopped = !self.running();
                None
            },
            || logs(&out),
        )
    }

    /// Waits for boot.sh to end by itself (poweroff, or the event log is out).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let out = self.out.clone();
        let child = self.child.as_mut().expect("boot running");
        wait_until(
            timeout,
            "the boot to end",
            || child.try_wait().ok().flatten(),
            || logs(&out),
        )
    }

    /// The firmware event log the guest exported on its second serial port.
    pub fn event_log(&self) -> PathBuf {
        let p = self.out.join("binary_bios_measurements");
        assert!(
            p.is_file(),
            "the guest exported no event log ({})\n{}",
            p.display(),
            logs(&self.out)
        );
        p
    }

    /// Stops QEMU (and boot.sh); the swtpm ends with QEMU's channel.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = Pid::from_raw(c.id() as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(c.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = c.wait();
        }
        // a swtpm QEMU never connected to does not end by itself; the pid is only ours
        // while that process is a swtpm serving this boot's socket (pids are reused)
        if let Ok(pid) = std::fs::read_to_string(self.out.join("swtpm.pid")) {
            if let Ok(pid) = pid.trim().parse::<i32>() {
                let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let ours = String::from_utf8_lossy(&cmdline)
                    .contains(&format!("{}", self.out.join("swtpm.sock").display()));
                if ours {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
            }
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", logs(&self.out));
        }
        self.stop();
    }
}

/// The tails of a boot's logs, for failure messages.
pub(crate) fn logs(out: &Path) -> String {
    [
        tail(&out.join("boot.log"), 10),
        tail(&out.join("console.log"), 40),
        tail(&out.join("swtpm.log"), 5),
    ]
    .join("\n")
}

/// `cp -a src/. dst` (the TPM state is a handful of small files).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display()));
    let st = Command::new("cp")
        .arg("-a")
        .arg(src.join("."))
        .arg(dst)
        .status()
        .expect("cp");
    assert!(
        st.success(),
        "cp -a {} {} failed",
        src.display(),
        dst.display()
    );
}
