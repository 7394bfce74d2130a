//! The server's own DevID CA (an HSM-held key) that issues LDevID certificates
//! to agents during a `tpm_ek` attestation: how a fleet enrolls. The LDevID's
//! subject CN is the EK hash (hardware-derived, never what the agent claims),
//! and its key is a TPM key the attested AK certified.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_hsm::{HsmError, KeyAlgorithm, KeyManager, Signer};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData,
};
use time::OffsetDateTime;
use tracing::info;

use crate::ca::signing_key::HsmKey;
use crate::ca::x509::random_serial;
use crate::ca::CaError;

/// How long the DevID CA certificate is valid (it is re-made from the same key
/// if its file is lost, so LDevIDs keep verifying).
const CA_DAYS: i64 = 3650;

/// Why the DevID CA cannot be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIdCaError {
    /// The key manager failed finding or creating the CA key.
    #[error("{0}")]
    Key(#[source] HsmError),
    /// The key cannot sign, or the certificate cannot be made.
    #[error("{0}")]
    Ca(#[source] Box<CaError>),
    /// The stored certificate does not parse.
    #[error("DevID CA certificate {}: {source}", path.display())]
    Certificate {
        /// The configured certificate file.
        path: PathBuf,
        /// Why it does not parse.
        #[source]
        source: Box<CaError>,
    },
    /// The stored certificate is not the key's: LDevIDs issued now would not verify. The
    /// operator restores the token that holds the key, or (re-enrolling every node) removes
    /// the certificate file so one is made for the key found.
    #[error(
        "DevID CA certificate {} does not match the key '{label}' in the HSM (was the token \
         replaced?); issued LDevIDs would not verify",
        path.display()
    )]
    KeyMismatch {
        /// The configured certificate file.
        path: PathBuf,
        /// Label of the DevID CA key in the token.
        label: String,
    },
    /// The stored certificate cannot be read.
    #[error("cannot read the DevID CA certificate {}: {source}", path.display())]
    Read {
        /// The configured certificate file.
        path: PathBuf,
        /// The I/O error (permissions, not a file).
        #[source]
        source: std::io::Error,
    },
    /// A new certificate cannot be written.
    #[error("cannot write the DevID CA certificate {}: {source}", path.display())]
    Write {
        /// The configured certificate file.
        path: PathBuf,
        /// The I/O error (missing directory, permissions, full disk).
        #[source]
        source: std::io::Error,
    },
    /// The certificate cannot serve as an issuer.
    #[error("DevID CA certificate {}: {source}", path.display())]
    Issuer {
        /// The configured certificate file.
        path: PathBuf,
        /// rcgen's reason for refusing it.
        #[source]
        source: rcgen::Error,
    },
}

/// The DevID CA: a P-256 key in the key manager and its self-signed certificate (valid ten
/// years, kept in a file). Issues LDevID certificates to TPM-attested agents that enroll.
pub struct DevIdCa {
    issuer: Issuer<'static, HsmKey>,
    pub(crate) cert_der: Vec<u8>,
    ttl_days: i64,
}

fn ca_params(td: &TrustDomain) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ironroot");
    dn.push(DnType::CommonName, format!("ironroot DevID CA {td}"));
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

impl DevIdCa {
    /// Finds (or creates) the key `<prefix>-devid-ca` in the key manager and
    /// the CA certificate in `cert_path` (re-made from the key if missing).
    pub(crate) fn open(
        km: Arc<dyn KeyManager>,
        prefix: &str,
        td: &TrustDomain,
        cert_path: &Path,
        ttl_days: i64,
    ) -> Result<Self, DevIdCaError> {
        let label = format!("{prefix}-devid-ca");
        let info = match km.find(&label).map_err(DevIdCaError::Key)? {
            Some(i) => i,
            None => {
                info!(key = %label, "creating the DevID CA key");
                km.generate(&label, KeyAlgorithm::EcP256)
                    .map_err(DevIdCaError::Key)?
            }
        };
        let key = HsmKey::new(Signer::new(km, info)).map_err(|e| DevIdCaError::Ca(Box::new(e)))?;
        let path = || cert_path.to_path_buf();
        let params = ca_params(td);
        let cert_der = match std::fs::read(cert_path) {
            Ok(der) => {
                let bits = crate::ca::x509::cert_public_key_bits(&der).map_err(|source| {
                    DevIdCaError::Certificate {
                        path: path(),
                        source: Box::new(source),
                    }
                })?;
                if bits != key.der_bytes() {
                    return Err(DevIdCaError::KeyMismatch {
                        path: path(),
                        label,
                    });
                }
                der
            }
            Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                return Err(DevIdCaError::Read {
                    path: path(),
                    source,
                })
            }
            Err(_) => {
                let mut p = params.clone();
                p.serial_number = Some(random_serial());
                p.not_before = OffsetDateTime::now_utc() - time::Duration::minutes(1);
                p.not_after = OffsetDateTime::now_utc() + time::Duration::days(CA_DAYS);
                let cert = p
                    .self_signed(&key)
                    .map_err(|e| DevIdCaError::Ca(Box::new(key.explain(e))))?;
                std::fs::write(cert_path, cert.der()).map_err(|source| DevIdCaError::Write {
                    path: path(),
                    source,
                })?;
                cert.der().to_vec()
            }
        };
        let cert = rustls_pki_types::CertificateDer::from(cert_der.clone());
        let issuer =
            Issuer::from_ca_cert_der(&cert, key).map_err(|source| DevIdCaError::Issuer {
                path: path(),
                source,
            })?;
        Ok(DevIdCa {
            issuer,
            cert_der,
            ttl_days,
        })
    }

    pub(crate) fn default_cert_path(data_dir: &Path) -> PathBuf {
        data_dir.join("devid-ca.der")
    }

    /// Issues an LDevID certificate for `key` with subject CN `cn`.
    pub(crate) fn issue(&self, key: &impl PublicKeyData, cn: &str) -> Result<Vec<u8>, CaError> {
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "ironroot");
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.serial_number = Some(random_serial());
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.not_before = OffsetDateTime::now_utc() - time::Duration::minutes(1);
        p.not_after = OffsetDateTime::now_utc() + time::Duration::days(self.ttl_days);
        p.use_authority_key_identifier_extension = true;
        p.signed_by(key, &self.issuer)
            .map(|c| c.der().to_vec())
            .map_err(|e| self.issuer.key().explain(e))
    }
}
