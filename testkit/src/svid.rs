//! An independent check of X.509-SVIDs: rustls-webpki (and the `openssl verify` command) for
//! the chain and x509-cert for every field the SPIFFE X.509-SVID spec fixes.

use std::path::Path;
use std::process::Command;

use der::{Decode, Encode};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    BasicConstraints, ExtendedKeyUsage, KeyUsage, KeyUsages, SubjectAltName,
};
use x509_cert::Certificate;

const OID_SAN: &str = "2.5.29.17";
const OID_BC: &str = "2.5.29.19";
const OID_KU: &str = "2.5.29.15";
const OID_EKU: &str = "2.5.29.37";
const OID_SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";
const OID_CLIENT_AUTH: &str = "1.3.6.1.5.5.7.3.2";

/// Verifies `chain` (leaf first) up to one of `roots` at time `now` with rustls-webpki.
pub fn webpki_verify(chain: &[Vec<u8>], roots: &[Vec<u8>], now: u64) -> Result<(), String> {
    let root_ders: Vec<CertificateDer<'static>> = roots
        .iter()
        .map(|r| CertificateDer::from(r.clone()))
        .collect();
    let anchors: Vec<_> = root_ders
        .iter()
        .map(|r| webpki::anchor_from_trusted_cert(r).map(|a| a.to_owned()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad root: {e:?}"))?;
    let leaf = CertificateDer::from(chain[0].clone());
    let inter: Vec<CertificateDer<'static>> = chain[1..]
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    let ee = webpki::EndEntityCert::try_from(&leaf).map_err(|e| format!("leaf: {e:?}"))?;
    ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        &inter,
        UnixTime::since_unix_epoch(std::time::Duration::from_secs(now)),
        webpki::KeyUsage::client_auth(),
        None,
        None,
    )
    .map(|_| ())
    .map_err(|e| format!("{e:?}"))
}

/// Seconds since the Unix epoch, now.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Parses a DER certificate (panics if it does not parse).
pub fn parse(der: &[u8]) -> Certificate {
    Certificate::from_der(der).expect("certificate parses")
}

/// A certificate's notAfter, in seconds since the Unix epoch.
pub fn not_after(c: &Certificate) -> u64 {
    c.tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs()
}

fn ext<'a>(c: &'a Certificate, oid: &str) -> Option<&'a x509_cert::ext::Extension> {
    c.tbs_certificate
        .extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id.to_string() == oid)
}

/// Asserts every field the X.509-SVID spec fixes for a leaf.
pub fn assert_svid_leaf(der: &[u8], spiffe_id: &str) {
    let c = parse(der);
    // exactly one URI SAN, the SPIFFE ID
    let san = ext(&c, OID_SAN).expect("SAN present");
    let san = SubjectAltName::from_der(san.extn_value.as_bytes()).expect("SAN parses");
    let uris: Vec<String> = san
        .0
        .iter()
        .filter_map(|g| match g {
            GeneralName::UniformResourceIdentifier(u) => Some(u.to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(uris, vec![spiffe_id.to_string()], "exactly one URI SAN");
    // basicConstraints present with CA:false
    let bc = ext(&c, OID_BC).expect("basicConstraints must be present on a leaf");
    let bc = BasicConstraints::from_der(bc.extn_value.as_bytes()).expect("bc parses");
    assert!(!bc.ca, "leaf must be CA:false");
    // keyUsage digitalSignature (and not keyCertSign / cRLSign), critical
    let ku_ext = ext(&c, OID_KU).expect("keyUsage present");
    assert!(ku_ext.critical, "keyUsage must be critical");
    let ku = KeyUsage::from_der(ku_ext.extn_value.as_bytes()).expect("ku parses");
    assert!(ku.0.contains(KeyUsages::DigitalSignature));
    assert!(!ku.0.contains(KeyUsages::KeyCertSign));
    assert!(!ku.0.contains(KeyUsages::CRLSign));
    // EKU serverAuth + clientAuth
    let eku = ext(&c, OID_EKU).expect("EKU present");
    let eku = ExtendedKeyUsage::from_der(eku.extn_value.as_bytes()).expect("eku parses");
    let ekus: Vec<String> = eku.0.iter().map(|o| o.to_string()).collect();
    assert!(ekus.contains(&OID_SERVER_AUTH.to_string()), "{ekus:?}");
    assert!(ekus.contains(&OID_CLIENT_AUTH.to_string()), "{ekus:?}");
    // positive serial with real entropy
    let serial = c.tbs_certificate.serial_number.as_bytes();
    assert!(serial.len() >= 8, "serial too short: {serial:?}");
    assert!(serial[0] & 0x80 == 0, "serial must be positive");
    assert!(c.to_der().is_ok());
}

/// The serial number bytes of a certificate.
pub fn serial(der: &[u8]) -> Vec<u8> {
    parse(der).tbs_certificate.serial_number.as_bytes().to_vec()
}

/// Whether the certificate is a CA (basicConstraints CA:true).
pub fn is_ca(der: &[u8]) -> bool {
    let c = parse(der);
    ext(&c, OID_BC)
        .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
        .map(|b| b.ca)
        .unwrap_or(false)
}

/// `openssl verify -CAfile CA_FILE [-untrusted UNTRUSTED] CERT` (PEM files): whether it
/// verified, and what openssl printed.
pub fn openssl_verify(ca_file: &Path, untrusted: Option<&Path>, cert: &Path) -> (bool, String) {
    let mut cmd = Command::new("openssl");
    cmd.arg("verify").arg("-CAfile").arg(ca_file);
    if let Some(u) = untrusted {
        cmd.arg("-untrusted").arg(u);
    }
    let out = cmd.arg(cert).output().expect("openssl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
