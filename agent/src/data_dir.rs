//! The agent's `data_dir`: every file name in it, and how each is written. Files
//! are replaced atomically (temp file, fsync, rename), so a reader (the agent
//! after a crash, an operator's script) never sees half a file.
//!
//! | file                   | what                                                  | mode |
//! |------------------------|-------------------------------------------------------|------|
//! | `agent_svid.pem`       | the agent SVID chain, leaf first                      | 0644 |
//! | `agent_svid.key`       | its software key (PKCS#8); absent for a TPM key       | 0600 |
//! | `bundle.pem`           | the last bundle the server sent (added to the bootstrap bundle) | 0644 |
//! | `devid.pem`            | an enrolled LDevID (unless `tpm.devid_certificate_path`) | 0644 |
//! | `agent_key.tpm.pub`    | TPM2B_PUBLIC of the TPM-resident agent key            | 0644 |
//! | `agent_key.tpm.priv`   | its TPM2B_PRIVATE, wrapped by the storage root key    | 0600 |

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ironroot_api::bundle::certificates_to_pem;
use ironroot_tpm::device::KeyBlobs;

use crate::agent_key::AgentKey;

/// The agent SVID chain, leaf first.
pub(crate) const AGENT_SVID_FILE: &str = "agent_svid.pem";
/// The agent SVID's software key (PKCS#8 PEM).
pub(crate) const AGENT_SVID_KEY_FILE: &str = "agent_svid.key";
/// The latest bundle the server sent over an authenticated connection.
pub(crate) const BUNDLE_FILE: &str = "bundle.pem";
/// Where an enrolled LDevID goes unless `tpm.devid_certificate_path` says otherwise.
pub(crate) const DEVID_FILE: &str = "devid.pem";
/// TPM2B_PUBLIC of the TPM-resident agent key.
pub const PUBLIC_FILE: &str = "agent_key.tpm.pub";
/// TPM2B_PRIVATE of the TPM-resident agent key (wrapped by the storage root key).
pub const PRIVATE_FILE: &str = "agent_key.tpm.priv";

const PUBLIC_MODE: u32 = 0o644;
const SECRET_MODE: u32 = 0o600;

/// Why a `data_dir` file could not be written or removed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataDirError {
    #[error("cannot create {}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot replace {}", path.display())]
    Replace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot remove {}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the server granted, as `data_dir` keeps it.
pub(crate) struct SavedSvid<'a> {
    pub chain: &'a [Vec<u8>],
    pub roots: &'a [Vec<u8>],
    pub key: &'a AgentKey,
}

/// The agent's `data_dir`.
#[derive(Debug, Clone)]
pub(crate) struct DataDir {
    root: PathBuf,
}

impl DataDir {
    pub(crate) fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }

    #[cfg(test)]
    pub(crate) fn path(&self) -> &Path {
        &self.root
    }

    /// The latest bundle the server sent (it may not exist yet).
    pub(crate) fn bundle(&self) -> PathBuf {
        self.root.join(BUNDLE_FILE)
    }

    /// Where an enrolled LDevID goes by default.
    pub(crate) fn devid(&self) -> PathBuf {
        self.root.join(DEVID_FILE)
    }

    fn create(&self) -> Result<(), DataDirError> {
        std::fs::create_dir_all(&self.root).map_err(|source| DataDirError::Create {
            path: self.root.clone(),
            source,
        })
    }

    /// Keeps the agent SVID, its key and the bundle. The key goes first and the
    /// certificate last, so the certificate on disk always has its key beside it. A
    /// TPM-resident key has no file here (its TPM-wrapped blobs were written when it
    /// was made): a software key's file from an earlier run is removed, so none is
    /// left that is not the SVID's key.
    pub(crate) fn save_svid(&self, svid: &SavedSvid<'_>) -> Result<(), DataDirError> {
        self.create()?;
        let key_file = self.root.join(AGENT_SVID_KEY_FILE);
        match svid.key.pkcs8() {
            Some(der) => {
                let pem = pem::encode(&pem::Pem::new("PRIVATE KEY", der.to_vec()));
                write_atomic(&key_file, pem.as_bytes(), SECRET_MODE)?
            }
            None => match std::fs::remove_file(&key_file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(DataDirError::Remove {
                        path: key_file,
                        source,
                    })
                }
            },
        }
        write_atomic(
            &self.bundle(),
            certificates_to_pem(svid.roots).as_bytes(),
            PUBLIC_MODE,
        )?;
        write_atomic(
            &self.root.join(AGENT_SVID_FILE),
            certificates_to_pem(svid.chain).as_bytes(),
            PUBLIC_MODE,
        )
    }

    /// Writes an enrolled LDevID chain to `path` (see [`DataDir::devid`]).
    pub(crate) fn save_devid(&self, path: &Path, chain: &[Vec<u8>]) -> Result<(), DataDirError> {
        write_atomic(path, certificates_to_pem(chain).as_bytes(), PUBLIC_MODE)
    }

    /// The TPM-resident agent key's blobs, if both are there.
    pub(crate) fn tpm_agent_key(&self) -> Option<KeyBlobs> {
        let public = std::fs::read(self.root.join(PUBLIC_FILE)).ok()?;
        let private = std::fs::read(self.root.join(PRIVATE_FILE)).ok()?;
        Some(KeyBlobs { public, private })
    }

    /// Keeps a new TPM-resident agent key's blobs (private first: a public blob is
    /// never there without its private one).
    pub(crate) fn save_tpm_agent_key(&self, blobs: &KeyBlobs) -> Result<(), DataDirError> {
        self.create()?;
        write_atomic(&self.root.join(PRIVATE_FILE), &blobs.private, SECRET_MODE)?;
        write_atomic(&self.root.join(PUBLIC_FILE), &blobs.public, PUBLIC_MODE)
    }
}

/// `path` with `.tmp` appended to its file name (`agent_key.tpm.pub.tmp`): two files of
/// one directory never share a temp file.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes `data` to `path` through a temp file and a rename, so a reader never sees half
/// a file. The file is created with `mode`.
pub(crate) fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), DataDirError> {
    let tmp = temp_path(path);
    let _ = std::fs::remove_file(&tmp);
    let write = |source| DataDirError::Write {
        path: tmp.clone(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|source| DataDirError::Create {
            path: tmp.clone(),
            source,
        })?;
    f.write_all(data).map_err(write)?;
    f.sync_all().map_err(write)?;
    std::fs::rename(&tmp, path).map_err(|source| DataDirError::Replace {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_whole_files_with_their_mode_and_leaves_no_temp() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("agent_key.tpm.priv");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(temp_path(&p), dir.path().join("agent_key.tpm.priv.tmp"));
    }

    #[test]
    fn keeps_a_software_svid_with_its_key_and_reads_tpm_key_blobs_back() {
        let dir = tempfile::tempdir().unwrap();
        let d = DataDir::new(dir.path().join("agent"));
        let (key, _) = AgentKey::software().unwrap();
        let chain = [b"leaf".to_vec()];
        let roots = [b"root".to_vec()];
        d.save_svid(&SavedSvid {
            chain: &chain,
            roots: &roots,
            key: &key,
        })
        .unwrap();
        for f in [AGENT_SVID_FILE, AGENT_SVID_KEY_FILE, BUNDLE_FILE] {
            assert!(d.path().join(f).exists(), "{f}");
        }
        let blobs = KeyBlobs {
            public: b"pub".to_vec(),
            private: b"priv".to_vec(),
        };
        d.save_tpm_agent_key(&blobs).unwrap();
        assert_eq!(d.tpm_agent_key(), Some(blobs));
    }
}
