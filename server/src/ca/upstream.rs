//! An upstream CA that signs this server's intermediate CA certificates.

use std::path::Path;
use std::sync::Arc;

use ironroot_hsm::{KeyManager, Signer};
use rcgen::Issuer;

use super::signing_key::{HsmKey, UpstreamKey};
use super::x509::cert_not_after;
use super::{CaError, UpstreamError};

pub struct Upstream {
    pub(super) issuer: Issuer<'static, UpstreamKey>,
    /// Certificates to send after our intermediate in every SVID chain.
    pub(super) chain: Vec<Vec<u8>>,
    /// Roots published in the bundle.
    pub(super) roots: Vec<Vec<u8>>,
    pub(super) not_after: i64,
    pub(super) description: String,
}

/// Reads every CERTIFICATE block of a PEM file, in order.
pub(crate) fn read_pem_certs(path: &Path) -> Result<Vec<Vec<u8>>, CaError> {
    let text = std::fs::read(path).map_err(|source| UpstreamError::ReadCertificates {
        path: path.to_path_buf(),
        source,
    })?;
    let certs = ironroot_api::bundle::certificates_from_pem(&text).map_err(|source| {
        UpstreamError::Pem {
            path: path.to_path_buf(),
            source,
        }
    })?;
    Ok(certs)
}

impl Upstream {
    fn assemble(
        cert_file: &Path,
        bundle_file: Option<&Path>,
        key: UpstreamKey,
        description: String,
    ) -> Result<Self, CaError> {
        let certs = read_pem_certs(cert_file)?;
        let cert = certs.first().cloned().unwrap_or_default();
        let roots = match bundle_file {
            Some(b) => read_pem_certs(b)?,
            None => vec![cert.clone()],
        };
        // The upstream certificate goes into chains unless it is itself a published root;
        // any further certificates in cert_file are its own intermediates.
        let mut chain: Vec<Vec<u8>> = certs
            .iter()
            .filter(|c| !roots.contains(c))
            .cloned()
            .collect();
        chain.dedup();
        let not_after = cert_not_after(&cert)?;
        if super::x509::cert_public_key_bits(&cert)? != rcgen::PublicKeyData::der_bytes(&key) {
            return Err(UpstreamError::KeyMismatch {
                path: cert_file.to_path_buf(),
            }
            .into());
        }
        let cert_der = rustls_pki_types::CertificateDer::from(cert);
        let issuer =
            Issuer::from_ca_cert_der(&cert_der, key).map_err(|source| UpstreamError::Issuer {
                path: cert_file.to_path_buf(),
                source,
            })?;
        Ok(Upstream {
            issuer,
            chain,
            roots,
            not_after,
            description,
        })
    }

    /// Upstream key in a PEM (PKCS#8) file.
    pub(crate) fn from_files(
        cert_file: &Path,
        key_file: &Path,
        bundle_file: Option<&Path>,
    ) -> Result<Self, CaError> {
        let key_pem =
            std::fs::read_to_string(key_file).map_err(|source| UpstreamError::ReadKey {
                path: key_file.to_path_buf(),
                source,
            })?;
        let key =
            rcgen::KeyPair::from_pem(&key_pem).map_err(|source| UpstreamError::KeyFormat {
                path: key_file.to_path_buf(),
                source,
            })?;
        Self::assemble(
            cert_file,
            bundle_file,
            UpstreamKey::File(key),
            format!("upstream CA {} (key file)", cert_file.display()),
        )
    }

    /// Upstream key in a PKCS#11 token.
    pub(crate) fn from_token(
        km: Arc<dyn KeyManager>,
        key_label: &str,
        cert_file: &Path,
        bundle_file: Option<&Path>,
    ) -> Result<Self, CaError> {
        let info = km
            .find(key_label)
            .map_err(|source| UpstreamError::KeyLookup {
                label: key_label.to_string(),
                source,
            })?
            .ok_or_else(|| UpstreamError::KeyNotFound {
                label: key_label.to_string(),
                key_manager: km.describe(),
            })?;
        let description = format!(
            "upstream CA {} (key '{key_label}' in {})",
            cert_file.display(),
            km.describe()
        );
        let key = HsmKey::new(Signer::new(km, info))?;
        Self::assemble(cert_file, bundle_file, UpstreamKey::Hsm(key), description)
    }
}
