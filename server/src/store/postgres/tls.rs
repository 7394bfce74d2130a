//! TLS to PostgreSQL: the database's certificate is always verified (against
//! the operator's CA file, with its host name), and a client certificate is
//! offered when one is configured. There is no "encrypt but trust anyone"
//! mode: it would hand the store to whoever sits on the path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::BACKEND;
use crate::store::StoreError;

/// `[store] tls_*`: how the server verifies the database and proves itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresTls {
    /// CA certificates (PEM) the database's certificate must chain to.
    pub(crate) ca_file: PathBuf,
    /// Client certificate chain and its key (PEM), for `cert` authentication.
    pub(crate) client_auth: Option<(PathBuf, PathBuf)>,
}

/// How connections are made: in the clear (unix sockets, or a database that
/// the operator chose not to reach over TLS) or over verified TLS.
#[derive(Clone)]
pub(super) enum Connector {
    /// No TLS.
    Plain,
    /// TLS with the configured trust.
    Tls(MakeRustlsConnect),
}

impl PostgresTls {
    /// The rustls client for this configuration; errors name the option and file.
    pub(super) fn connector(&self) -> Result<Connector, StoreError> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs("store.tls_ca_file", &self.ca_file)? {
            roots
                .add(cert)
                .map_err(|e| bad("store.tls_ca_file", &self.ca_file, e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| StoreError::backend(BACKEND, e))?
            .with_root_certificates(roots);
        let config = match &self.client_auth {
            None => builder.with_no_client_auth(),
            Some((cert_file, key_file)) => {
                let chain = read_certs("store.tls_cert_file", cert_file)?;
                let key = PrivateKeyDer::from_pem_file(key_file)
                    .map_err(|e| bad("store.tls_key_file", key_file, e.to_string()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| bad("store.tls_cert_file", cert_file, e.to_string()))?
            }
        };
        Ok(Connector::Tls(MakeRustlsConnect::new(config)))
    }
}

fn read_certs(option: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, StoreError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| bad(option, path, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(option, path, "holds no CERTIFICATE".into()));
    }
    Ok(certs)
}

fn bad(option: &str, path: &Path, why: String) -> StoreError {
    StoreError::backend(BACKEND, format!("{option} {}: {why}", path.display()))
}
