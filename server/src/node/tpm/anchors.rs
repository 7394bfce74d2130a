//! Reading a CA bundle file (PEM) into the trust anchors the pure chain checks use.

use std::path::{Path, PathBuf};

use ironroot_api::bundle::{certificates_from_pem, PemCertificatesError};
use ironroot_tpm::verify::certchain::{AnchorError, Anchors};

/// Why a CA bundle could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnchorsFileError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The CA bundle file.
        path: PathBuf,
        /// The I/O error (missing file, permissions).
        #[source]
        source: std::io::Error,
    },
    /// The file is not PEM, or holds no certificate.
    #[error("{} {source}", path.display())]
    Pem {
        /// The CA bundle file.
        path: PathBuf,
        /// What is wrong with its content.
        #[source]
        source: PemCertificatesError,
    },
    /// A certificate of the bundle is not X.509.
    #[error("{}: {source}", path.display())]
    Certificate {
        /// The CA bundle file.
        path: PathBuf,
        /// Why the certificate does not parse.
        #[source]
        source: AnchorError,
    },
}

/// Every certificate of the PEM bundle at `path`.
pub fn from_pem_file(path: &Path) -> Result<Anchors, AnchorsFileError> {
    let text = std::fs::read(path).map_err(|source| AnchorsFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let ders = certificates_from_pem(&text).map_err(|source| AnchorsFileError::Pem {
        path: path.to_path_buf(),
        source,
    })?;
    Anchors::from_der(ders).map_err(|source| AnchorsFileError::Certificate {
        path: path.to_path_buf(),
        source,
    })
}
