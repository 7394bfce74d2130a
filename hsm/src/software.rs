//! [`SoftwareKeyManager`]: private keys as PKCS#8 files. Development only.
//!
//! Anyone who can read the directory owns the CA. The server uses this only when its
//! configuration says `insecure_software_keys = true`, and `describe()` says INSECURE so the
//! startup log does too.

use std::collections::HashMap;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use p256::ecdsa::signature::hazmat::PrehashSigner as _;
// p256::pkcs8 and rsa::pkcs8 are the same crate (pkcs8 0.10): these traits serve both.
use p256::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, EncodePublicKey as _, LineEnding};
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts as _;
use zeroize::Zeroizing;

use crate::encoding::RSA_BITS;
use crate::{check_digest, HsmError, KeyAlgorithm, KeyInfo, KeyManager};

/// Key files are `<label>.key` (PKCS#8 PEM).
const KEY_EXT: &str = "key";
const MAX_LABEL_LEN: usize = 128;

enum SoftKey {
    Ec(p256::ecdsa::SigningKey),
    Rsa(Box<rsa::RsaPrivateKey>),
}

struct Loaded {
    key: SoftKey,
    info: KeyInfo,
}

/// Keys as PKCS#8 PEM files (mode 0600) in a directory (mode 0700). **Insecure**: for
/// development and tests without an HSM.
pub struct SoftwareKeyManager {
    dir: PathBuf,
    /// Parsed keys, so signing does not re-read and re-parse a file each time.
    cache: RwLock<HashMap<String, Arc<Loaded>>>,
}

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl SoftwareKeyManager {
    /// Uses `dir` (created with mode 0700 if missing; tightened to 0700 if looser).
    pub fn open(dir: &Path) -> Result<Self, HsmError> {
        let dir_err = |op, detail| HsmError::KeyFile {
            op,
            path: dir.to_owned(),
            detail,
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| dir_err("create directory", e))?;
        let meta = fs::metadata(dir).map_err(|e| dir_err("inspect directory", e))?;
        if !meta.is_dir() {
            return Err(dir_err(
                "use as key directory",
                std::io::Error::other("it is not a directory"),
            ));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(dir = %dir.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777), "software key directory was accessible to others; setting mode 0700");
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| dir_err("set mode 0700 on", e))?;
        }
        tracing::warn!(dir = %dir.display(), "using INSECURE software keys: private keys are plain files; never use this in production");
        Ok(SoftwareKeyManager {
            dir: dir.to_owned(),
            cache: RwLock::new(HashMap::new()),
        })
    }

    fn path(&self, label: &str) -> PathBuf {
        self.dir.join(format!("{label}.{KEY_EXT}"))
    }

    fn forget(&self, label: &str) {
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
    }

    /// Reads and parses `<label>.key`; `None` if the file does not exist.
    fn load(&self, label: &str) -> Result<Option<Arc<Loaded>>, HsmError> {
        let path = self.path(label);
        let pem = match fs::read_to_string(&path) {
            Ok(s) => Zeroizing::new(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.forget(label);
                return Ok(None);
            }
            Err(e) => {
                return Err(HsmError::KeyFile {
                    op: "read",
                    path,
                    detail: e,
                })
            }
        };
        let loaded = Arc::new(parse(label, &pem)?);
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), loaded.clone());
        Ok(Some(loaded))
    }

    /// Writes the PEM under a temporary name and hard-links it into place: the link fails if
    /// the label is taken (no check-then-write race), and a crash never leaves a half-written
    /// key under the real name.
    fn store(&self, label: &str, pem: &str) -> Result<(), HsmError> {
        let path = self.path(label);
        let tmp = self.dir.join(format!(
            ".{label}.{}.{}.tmp",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let file_err = |op, path: &Path, detail| HsmError::KeyFile {
            op,
            path: path.to_owned(),
            detail,
        };
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(pem.as_bytes())?;
            f.sync_all()
        };
        let result = write()
            .map_err(|e| file_err("write", &tmp, e))
            .and_then(|()| match fs::hard_link(&tmp, &path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    Err(HsmError::KeyExists {
                        label: label.to_owned(),
                    })
                }
                Err(e) => Err(file_err("create", &path, e)),
            });
        if let Err(e) = fs::remove_file(&tmp) {
            tracing::warn!(path = %tmp.display(), error = %e, "cannot remove temporary key file");
        }
        result?;
        // Make the new directory entry durable before anyone relies on the key.
        if let Ok(d) = fs::File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

fn soft_err(label: &str, reason: impl std::fmt::Display) -> HsmError {
    HsmError::Software {
        label: label.to_owned(),
        reason: reason.to_string(),
    }
}

/// Parses a PKCS#8 PEM holding a P-256 or RSA-3072 key.
fn parse(label: &str, pem: &str) -> Result<Loaded, HsmError> {
    if let Ok(sk) = p256::SecretKey::from_pkcs8_pem(pem) {
        let spki = sk
            .public_key()
            .to_public_key_der()
            .map_err(|e| soft_err(label, e))?;
        return Ok(Loaded {
            key: SoftKey::Ec(p256::ecdsa::SigningKey::from(sk)),
            info: KeyInfo {
                label: label.to_owned(),
                algorithm: KeyAlgorithm::EcP256,
                public_key_der: spki.as_bytes().to_vec(),
            },
        });
    }
    match rsa::RsaPrivateKey::from_pkcs8_pem(pem) {
        Ok(key) if key.n().bits() == RSA_BITS => {
            let spki = key
                .to_public_key()
                .to_public_key_der()
                .map_err(|e| soft_err(label, e))?;
            Ok(Loaded {
                key: SoftKey::Rsa(Box::new(key)),
                info: KeyInfo {
                    label: label.to_owned(),
                    algorithm: KeyAlgorithm::Rsa3072,
                    public_key_der: spki.as_bytes().to_vec(),
                },
            })
        }
        Ok(key) => Err(soft_err(
            label,
            format!("the key file holds RSA-{}, not RSA-3072", key.n().bits()),
        )),
        Err(_) => Err(soft_err(
            label,
            "the key file is not a PKCS#8 P-256 or RSA private key",
        )),
    }
}

/// Labels become file names, so only a conservative character set is accepted.
fn validate_label(label: &str) -> Result<(), HsmError> {
    let reason = if label.is_empty() {
        "it is empty"
    } else if label.len() > MAX_LABEL_LEN {
        "it is longer than 128 bytes"
    } else if label.starts_with('.') {
        "it starts with '.'"
    } else if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        "software keys allow only letters, digits, '-', '_' and '.'"
    } else {
        return Ok(());
    };
    Err(HsmError::InvalidLabel {
        label: label.escape_debug().to_string(),
        reason,
    })
}

impl KeyManager for SoftwareKeyManager {
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
        validate_label(label)?;
        if self.path(label).exists() {
            // Cheap early answer; `store` is what actually guarantees no overwrite.
            return Err(HsmError::KeyExists {
                label: label.to_owned(),
            });
        }
        let pem: Zeroizing<String> = match algorithm {
            KeyAlgorithm::EcP256 => p256::SecretKey::random(&mut OsRng)
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| soft_err(label, e))?,
            KeyAlgorithm::Rsa3072 => rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map_err(|e| soft_err(label, e))?
                .to_pkcs8_pem(LineEnding::LF)
                .map_err(|e| soft_err(label, e))?,
        };
        let loaded = parse(label, &pem)?;
        self.store(label, &pem)?;
        let info = loaded.info.clone();
        self.cache
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(label.to_owned(), Arc::new(loaded));
        tracing::warn!(label, %algorithm, dir = %self.dir.display(), "generated INSECURE software key");
        Ok(info)
    }

    fn find(&self, label: &str) -> Result<Option<KeyInfo>, HsmError> {
        validate_label(label)?;
        Ok(self.load(label)?.map(|l| l.info.clone()))
    }

    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        check_digest(digest)?;
        validate_label(label)?;
        let cached = self
            .cache
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(label)
            .cloned();
        let loaded = match cached {
            Some(l) => l,
            None => self.load(label)?.ok_or_else(|| HsmError::KeyNotFound {
                label: label.to_owned(),
            })?,
        };
        match &loaded.key {
            SoftKey::Ec(key) => {
                let sig: p256::ecdsa::Signature =
                    key.sign_prehash(digest).map_err(|e| soft_err(label, e))?;
                Ok(sig.to_bytes().to_vec())
            }
            // With an RNG the rsa crate blinds the private operation against timing attacks.
            SoftKey::Rsa(key) => key
                .sign_with_rng(&mut OsRng, rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), digest)
                .map_err(|e| soft_err(label, e)),
        }
    }

    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        let entries = fs::read_dir(&self.dir).map_err(|e| HsmError::KeyFile {
            op: "list",
            path: self.dir.clone(),
            detail: e,
        })?;
        let mut keys = Vec::new();
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some(KEY_EXT) {
                continue;
            }
            let Some(label) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if validate_label(label).is_err() {
                continue;
            }
            match self.load(label) {
                Ok(Some(l)) => keys.push(l.info.clone()),
                Ok(None) => {}
                Err(e) => tracing::warn!(label, error = %e, "ignoring an unusable software key"),
            }
        }
        keys.sort_by(|a, b| a.label.cmp(&b.label));
        Ok(keys)
    }

    fn destroy(&self, label: &str) -> Result<(), HsmError> {
        validate_label(label)?;
        self.forget(label);
        let path = self.path(label);
        match fs::remove_file(&path) {
            Ok(()) => {
                tracing::info!(label, "destroyed software key");
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(HsmError::KeyNotFound {
                label: label.to_owned(),
            }),
            Err(e) => Err(HsmError::KeyFile {
                op: "delete",
                path,
                detail: e,
            }),
        }
    }

    fn describe(&self) -> String {
        format!("INSECURE software keys in {}", self.dir.display())
    }
}

impl std::fmt::Debug for SoftwareKeyManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}
