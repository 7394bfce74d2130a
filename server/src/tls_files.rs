//! A TLS server certificate and key read from PEM files and read again when either file
//! changes, for the HTTPS listeners whose certificate an operator (or an ACME client)
//! renews in place: OIDC discovery and the `https_web` bundle endpoint. A renewed pair is
//! taken up within [`CHECK_INTERVAL`], without a restart; a pair that does not load is
//! logged once and the one in use kept, so a half-written renewal never takes the
//! listener down.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tracing::{error, info, warn};

/// How often the files' modification stamps are compared.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// The configuration options that name the two files, for errors and logs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileOptions {
    /// e.g. `oidc.tls_cert_file`.
    pub(crate) cert: &'static str,
    /// e.g. `oidc.tls_key_file`.
    pub(crate) key: &'static str,
    /// What serves with it, for log lines (`OIDC discovery`).
    pub(crate) listener: &'static str,
}

/// A certificate or key file that cannot serve TLS, named by its option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option} {}: {reason}", path.display())]
pub(crate) struct TlsFileError {
    /// The option naming the file.
    pub(crate) option: &'static str,
    /// The file.
    pub(crate) path: PathBuf,
    /// What is wrong with it.
    pub(crate) reason: String,
}

/// Reads the chain in `cert_file` and the key in `key_file`, and checks that they match
/// (a key that is not the certificate's would fail every handshake).
pub(crate) fn load_pair(
    cert_file: &Path,
    key_file: &Path,
    options: FileOptions,
) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let cert_err = |reason: String| TlsFileError {
        option: options.cert,
        path: cert_file.to_owned(),
        reason,
    };
    let key_err = |reason: String| TlsFileError {
        option: options.key,
        path: key_file.to_owned(),
        reason,
    };
    let chain = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| cert_err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_err(e.to_string()))?;
    if chain.is_empty() {
        return Err(cert_err("no CERTIFICATE block".into()));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| key_err(e.to_string()))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| key_err(format!("not a key rustls can sign with: {e}")))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        key_err(format!(
            "does not match the certificate in {}: {e}",
            options.cert
        ))
    })?;
    Ok(Arc::new(certified))
}

type FileStamps = [Option<(SystemTime, u64)>; 2];

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// The pair in use, with the files' stamps when it was read.
#[derive(Debug)]
pub(crate) struct FileCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    options: FileOptions,
    current: RwLock<(Arc<CertifiedKey>, FileStamps)>,
}

impl FileCertificate {
    /// Reads the pair; a pair that does not load is the caller's start-up error.
    pub(crate) fn load(
        cert_file: &Path,
        key_file: &Path,
        options: FileOptions,
    ) -> Result<Arc<Self>, TlsFileError> {
        let stamps = [stamp(cert_file), stamp(key_file)];
        let key = load_pair(cert_file, key_file, options)?;
        Ok(Arc::new(FileCertificate {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            options,
            current: RwLock::new((key, stamps)),
        }))
    }

    /// Re-reads the files when either changed; a pair that does not load is logged and
    /// the one in use kept. Returns whether a new pair was taken up.
    pub(crate) fn reload_if_changed(&self) -> bool {
        let stamps = [stamp(&self.cert_file), stamp(&self.key_file)];
        if self.current.read().map(|g| g.1 == stamps).unwrap_or(true) {
            return false;
        }
        match load_pair(&self.cert_file, &self.key_file, self.options) {
            Ok(key) => {
                if let Ok(mut g) = self.current.write() {
                    *g = (key, stamps);
                }
                info!(
                    listener = self.options.listener,
                    cert_file = %self.cert_file.display(),
                    "TLS certificate reloaded"
                );
                true
            }
            Err(e) => {
                // Remember the stamps so a broken pair is reported once, not every check.
                if let Ok(mut g) = self.current.write() {
                    g.1 = stamps;
                }
                error!(
                    listener = self.options.listener,
                    error = %e,
                    "the changed TLS certificate or key cannot be used; the previous one stays in use"
                );
                false
            }
        }
    }

    /// Checks the files every [`CHECK_INTERVAL`] until aborted.
    pub(crate) fn spawn_reloader(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let watched = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(CHECK_INTERVAL);
            loop {
                tick.tick().await;
                let w = watched.clone();
                if let Err(e) = tokio::task::spawn_blocking(move || w.reload_if_changed()).await {
                    warn!(listener = watched.options.listener, error = %e, "certificate reload task failed");
                }
            }
        })
    }
}

impl ResolvesServerCert for FileCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|g| g.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPTIONS: FileOptions = FileOptions {
        cert: "test.cert_file",
        key: "test.key_file",
        listener: "test",
    };

    fn pair(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k, cert.der().to_vec())
    }

    fn served(f: &FileCertificate) -> Vec<u8> {
        f.current.read().unwrap().0.cert[0].to_vec()
    }

    #[test]
    fn a_changed_pair_is_taken_up_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, first) = pair(dir.path(), "a");
        let f = FileCertificate::load(&cert, &key, OPTIONS).unwrap();
        assert_eq!(served(&f), first);
        assert!(!f.reload_if_changed(), "nothing changed");

        // Renewed in place (another size, so the stamp changes even within a second).
        let (cert_b, key_b, second) = pair(dir.path(), "b");
        std::fs::copy(&cert_b, &cert).unwrap();
        std::fs::copy(&key_b, &key).unwrap();
        std::fs::write(
            &cert,
            [std::fs::read(&cert).unwrap(), b"\n".to_vec()].concat(),
        )
        .unwrap();
        assert!(f.reload_if_changed());
        assert_eq!(served(&f), second);

        // A certificate whose key is still the old one: refused, the renewed pair stays.
        let (cert_c, _, _) = pair(dir.path(), "c");
        std::fs::copy(&cert_c, &cert).unwrap();
        assert!(!f.reload_if_changed());
        assert_eq!(served(&f), second);
    }

    #[test]
    fn each_unusable_file_is_named_by_its_option() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, _) = pair(dir.path(), "a");
        let (_, other_key, _) = pair(dir.path(), "b");
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "").unwrap();
        for (c, k, option, words) in [
            (&missing, &key, "test.cert_file", "missing.pem"),
            (&empty, &key, "test.cert_file", "no CERTIFICATE block"),
            (&cert, &missing, "test.key_file", "missing.pem"),
            (
                &cert,
                &other_key,
                "test.key_file",
                "does not match the certificate in test.cert_file",
            ),
        ] {
            let e = load_pair(c, k, OPTIONS).unwrap_err();
            assert_eq!(e.option, option, "{e}");
            assert!(e.to_string().contains(words), "{e}");
        }
    }
}
