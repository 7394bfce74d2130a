//! A swtpm driven with tpm2-tools, independently of `ironroot_tpm::device` ([`Tpm2Rig`]), and
//! tpm2-tools' credential files ([`make_credential`], [`credential_file`],
//! [`split_credential_file`]).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::swtpm::{Swtpm, SwtpmOptions, SwtpmState};

/// Every program the rig runs.
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
#[derive(Debug)]
pub struct Tpm2Rig {
    tpm: Swtpm,
    log: PathBuf,
}

impl Tpm2Rig {
    /// A fresh TPM, or `None` (after saying so plainly) when swtpm or tpm2-tools are
    /// missing outside CI. In CI (env `CI` set) a missing tool fails the test.
    pub fn new() -> Option<Tpm2Rig> {
        let missing: Vec<&str> = TOOLS
            .iter()
            .copied()
            .filter(|t| !crate::on_path(t))
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
        let state = SwtpmState::shared("tpm2-tools", &SwtpmOptions::default());
        let tpm = state.spawn();
        let log = crate::test_log_dir(&crate::current_test_name()).join("tpm2-tools.log");
        Some(Tpm2Rig { tpm, log })
    }

    /// A path in this TPM's scratch dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.tpm.scratch_dir().join(name)
    }

    /// The bytes of a scratch file.
    pub fn read(&self, name: &str) -> Vec<u8> {
        let p = self.path(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    /// Writes a scratch file.
    pub fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).unwrap();
    }

    /// Runs a tpm2-tools command in the scratch dir; panics with its output on failure.
    pub fn run(&self, tool: &str, args: &[&str]) -> Output {
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
    pub fn try_run(&self, tool: &str, args: &[&str]) -> Output {
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
    pub fn nv_read(&self, index: &str, file: &str) -> Vec<u8> {
        self.run("tpm2_nvread", &["-C", "o", index, "-o", file]);
        self.read(file)
    }
}

/// The DER SubjectPublicKeyInfo of a certificate (NV reads may carry trailing bytes, so
/// only the first DER value is decoded).
pub fn cert_spki(cert_der: &[u8]) -> Vec<u8> {
    use der::{Decode, Encode, SliceReader};
    let mut r = SliceReader::new(cert_der).unwrap();
    let cert = x509_cert::Certificate::decode(&mut r).unwrap();
    cert.tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap()
}

/// The file `tpm2_activatecredential -i` reads (as `tpm2_makecredential -o` writes):
/// magic 0xBADCC0DE, version 1 (both u32 BE), TPM2B_ID_OBJECT, TPM2B_ENCRYPTED_SECRET.
pub fn credential_file(id_object: &[u8], encrypted_secret: &[u8]) -> Vec<u8> {
    let mut v = 0xBADC_C0DEu32.to_be_bytes().to_vec();
    v.extend(1u32.to_be_bytes());
    for blob in [id_object, encrypted_secret] {
        v.extend(u16::try_from(blob.len()).unwrap().to_be_bytes());
        v.extend(blob);
    }
    v
}

/// tpm2-tools' software MakeCredential (`-T none`) of `secret` to the EK for `name`.
/// Returns the contents of the TPM2B_ID_OBJECT and of the TPM2B_ENCRYPTED_SECRET.
pub fn make_credential(
    dir: &Path,
    ek_public: &[u8],
    name: &[u8],
    secret: &[u8],
) -> (Vec<u8>, Vec<u8>) {
    let (ek, sec, cred) = (dir.join("ek.pub"), dir.join("secret"), dir.join("cred"));
    write(&ek, ek_public);
    write(&sec, secret);
    crate::run(
        Command::new("tpm2_makecredential")
            .args(["-T", "none", "-e"])
            .arg(&ek)
            .arg("-s")
            .arg(&sec)
            .args(["-n", &hex::encode(name), "-o"])
            .arg(&cred),
    );
    let bytes = std::fs::read(&cred).unwrap_or_else(|e| panic!("{}: {e}", cred.display()));
    split_credential_file(&bytes)
}

/// The TPM2B_ID_OBJECT and TPM2B_ENCRYPTED_SECRET of a [`credential_file`].
pub fn split_credential_file(b: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(b[..4], 0xBADC_C0DEu32.to_be_bytes(), "magic");
    assert_eq!(b[4..8], 1u32.to_be_bytes(), "version");
    let mut at = 8;
    let mut tpm2b = || {
        let n = usize::from(u16::from_be_bytes([b[at], b[at + 1]]));
        let v = b[at + 2..at + 2 + n].to_vec();
        at += 2 + n;
        v
    };
    let (id, secret) = (tpm2b(), tpm2b());
    assert_eq!(at, b.len(), "trailing bytes in the credential file");
    (id, secret)
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::write(p, bytes).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
}
