//! An upstream CA that signs this server's intermediate CA certificates: a local one whose
//! key the server holds (`kind = "disk"` / `"pkcs11"`), or OpenBao's PKI engine, which gets a
//! CSR made with the new CA key and returns the certificate (`kind = "openbao"`).

mod openbao;
pub(crate) mod validate;

use std::path::Path;
use std::sync::Arc;

use ironroot_hsm::{KeyManager, Signer};
use rcgen::Issuer;

use super::signing_key::{HsmKey, UpstreamKey};
use super::x509::{self, cert_not_after, CaSubject};
use super::{CaError, UpstreamError};

pub(crate) use openbao::OpenBaoPki;

/// The CA above this server. [`Upstream::certify`] makes the certificate of each new CA key.
pub struct Upstream {
    authority: Authority,
    pub(super) description: String,
}

enum Authority {
    /// The upstream key is held here (a file or a second token): the server signs.
    Local(Box<LocalCa>),
    /// OpenBao's PKI engine signs a CSR.
    OpenBao(OpenBaoPki),
}

struct LocalCa {
    issuer: Issuer<'static, UpstreamKey>,
    /// Certificates to send after our intermediate in every SVID chain.
    chain: Vec<Vec<u8>>,
    /// Roots published in the bundle.
    roots: Vec<Vec<u8>>,
    not_after: i64,
}

/// A new CA key's certificate from the upstream, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Certified {
    /// Our CA certificate.
    pub(crate) cert_der: Vec<u8>,
    /// Certificates between it and the roots, issuer first (sent after it in SVID chains).
    pub(crate) chain: Vec<Vec<u8>>,
    /// The roots it chains to (published in the bundle).
    pub(crate) roots: Vec<Vec<u8>>,
    /// Its notAfter: the CA key's life ends there.
    pub(crate) not_after: i64,
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
            authority: Authority::Local(Box::new(LocalCa {
                issuer,
                chain,
                roots,
                not_after,
            })),
            description,
        })
    }

    /// OpenBao's PKI engine as the upstream.
    pub(crate) fn openbao(pki: OpenBaoPki) -> Self {
        let description = pki.describe();
        Upstream {
            authority: Authority::OpenBao(pki),
            description,
        }
    }

    /// The roots every bundle publishes, whatever the journal records (a local upstream's
    /// configured roots); `None`: the roots recorded with each unexpired CA key (OpenBao,
    /// whose root may change between keys).
    pub(super) fn fixed_roots(&self) -> Option<&[Vec<u8>]> {
        match &self.authority {
            Authority::Local(l) => Some(&l.roots),
            Authority::OpenBao(_) => None,
        }
    }

    /// The certificate of a new CA key `key`, valid from `now` for at most `ttl_secs` and
    /// never beyond what the upstream allows.
    pub(super) fn certify(
        &self,
        key: &HsmKey,
        subject: &CaSubject,
        now: i64,
        ttl_secs: i64,
    ) -> Result<Certified, CaError> {
        match &self.authority {
            Authority::Local(l) => {
                let not_after = (now + ttl_secs).min(l.not_after);
                if not_after <= now {
                    return Err(UpstreamError::Expired.into());
                }
                let params = x509::ca_params(subject, now - x509::BACKDATE_SECS, not_after)?;
                let cert = params
                    .signed_by(key, &l.issuer)
                    .map_err(UpstreamError::SignIntermediate)?;
                Ok(Certified {
                    cert_der: cert.der().to_vec(),
                    chain: l.chain.clone(),
                    roots: l.roots.clone(),
                    not_after,
                })
            }
            Authority::OpenBao(pki) => pki.certify(key, subject, now, ttl_secs),
        }
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
