//! Throw-away PKI for TLS tests, made with the `openssl` command (an independent
//! implementation from the rustls the code under test uses): a CA, and leaf certificates
//! it signs for host names and addresses.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A certificate and its private key, PEM files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// The certificate.
    pub cert: PathBuf,
    /// Its key (PKCS#8, unencrypted).
    pub key: PathBuf,
}

fn openssl(args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run openssl: {e} (scripts/install-deps.sh)"));
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A self-signed P-256 CA, `<dir>/<name>.pem` and `<dir>/<name>.key`.
pub fn ca(dir: &Path, name: &str) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        &format!("/CN={name}"),
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        "-keyout",
        path_str(&files.key),
        "-out",
        path_str(&files.cert),
    ]);
    files
}

/// A P-256 leaf certificate signed by `ca` with subjectAltName `san` (e.g.
/// `DNS:localhost,IP:127.0.0.1`), for TLS servers and clients alike (`CN=<name>`).
pub fn leaf(dir: &Path, name: &str, san: &str, ca: &CertFiles) -> CertFiles {
    let files = CertFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    };
    let csr = dir.join(format!("{name}.csr"));
    openssl(&[
        "req",
        "-new",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        &format!("/CN={name}"),
        "-keyout",
        path_str(&files.key),
        "-out",
        path_str(&csr),
    ]);
    let ext = dir.join(format!("{name}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName={san}\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n"
        ),
    )
    .unwrap_or_else(|e| panic!("{}: {e}", ext.display()));
    openssl(&[
        "x509",
        "-req",
        "-in",
        path_str(&csr),
        "-CA",
        path_str(&ca.cert),
        "-CAkey",
        path_str(&ca.key),
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        path_str(&ext),
        "-out",
        path_str(&files.cert),
    ]);
    files
}
