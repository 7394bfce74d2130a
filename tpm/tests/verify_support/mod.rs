//! A swtpm per test, driven with tpm2-tools (independent of `ironroot_tpm::device`), for the
//! `verify` acceptance tests.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

use ironroot_testkit::swtpm::{Swtpm, SwtpmOptions, SwtpmState};

/// Every program these tests run.
const TOOLS: &[&str] = &[
    "swtpm",
    "swtpm_setup",
    "tpm2_createek",
    "tpm2_createak",
    "tpm2_createprimary",
    "tpm2_readpublic",
    "tpm2_nvread",
    "tpm2_startauthsession",
    "tpm2_policysecret",
    "tpm2_activatecredential",
    "tpm2_flushcontext",
    "tpm2_pcrextend",
    "tpm2_quote",
    "tpm2_certify",
];

/// A running swtpm (own state copy, own ports, killed by PID on drop) and a scratch dir.
pub(crate) struct Rig {
    tpm: Swtpm,
    log: PathBuf,
}

impl Rig {
    /// A fresh TPM, or `None` (after saying so plainly) when swtpm or tpm2-tools are
    /// missing outside CI. In CI (env `CI` set) a missing tool fails the test.
    pub(crate) fn new() -> Option<Rig> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let missing: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| !std::env::split_paths(&path).any(|d| d.join(t).is_file()))
            .collect();
        if !missing.is_empty() {
            let msg = format!(
                "swtpm / tpm2-tools missing ({}): install them with scripts/install-deps.sh",
                missing.join(", ")
            );
            if std::env::var_os("CI").is_some() {
                panic!("{msg}");
            }
            println!("NOT RUN: {msg}");
            return None;
        }
        let state = SwtpmState::shared("verify", &SwtpmOptions::default());
        let tpm = state.spawn();
        let log = ironroot_testkit::test_log_dir(&ironroot_testkit::current_test_name())
            .join("tpm2-tools.log");
        Some(Rig { tpm, log })
    }

    /// A path in this TPM's scratch dir.
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.tpm.scratch_dir().join(name)
    }

    /// The bytes of a scratch file.
    pub(crate) fn read(&self, name: &str) -> Vec<u8> {
        let p = self.path(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Writes a scratch file.
    pub(crate) fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    /// Runs a tpm2-tools command in the scratch dir; panics with its output on failure.
    pub(crate) fn run(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.try_run(tool, args);
        if !out.status.success() {
            panic!(
                "{tool} {} failed ({}):\n{}{}\n(log: {})",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                self.log.display()
            );
        }
        out
    }

    /// Runs a tpm2-tools command, then flushes every transient object: swtpm has no
    /// resource manager and only 3 object slots, and tpm2-tools leaves objects loaded.
    pub(crate) fn try_run(&self, tool: &str, args: &[&str]) -> Output {
        let out = self.command(tool, args);
        let flush = self.command("tpm2_flushcontext", &["-t"]);
        assert!(flush.status.success(), "tpm2_flushcontext -t failed");
        out
    }

    fn command(&self, tool: &str, args: &[&str]) -> Output {
        let out = Command::new(tool)
            .args(args)
            .current_dir(self.tpm.scratch_dir())
            .env("TPM2TOOLS_TCTI", self.tpm.tcti())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        if let Ok(mut f) = OpenOptions::new().create(true).append(true).open(&self.log) {
            let _ = writeln!(
                f,
                "$ {tool} {}\n[{}]\n{}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out
    }

    /// The DER certificate in an NV index.
    pub(crate) fn nv_read(&self, index: &str, file: &str) -> Vec<u8> {
        self.run("tpm2_nvread", &["-C", "o", index, "-o", file]);
        self.read(file)
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (NV reads may carry trailing bytes, so
/// only the first DER value is decoded).
pub(crate) fn cert_spki(cert_der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode, SliceReader};
    let mut r = SliceReader::new(cert_der).unwrap();
    let cert = x509_cert::Certificate::decode(&mut r).unwrap();
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap()
}

/// The file `tpm2_activatecredential -i` reads (as `tpm2_makecredential -o` writes):
/// magic 0xBADCC0DE, version 1, TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
pub(crate) fn tpm2_tools_credential(id_object: &[u8], encrypted_secret: &[u8]) -> Vec<u8> {
    let mut v = 0xBADC_C0DEu32.to_be_bytes().to_vec();
    v.extend(1u32.to_be_bytes());
    for blob in [id_object, encrypted_secret] {
        v.extend(u16::try_from(blob.len()).unwrap().to_be_bytes());
        v.extend(blob);
    }
    v
}
