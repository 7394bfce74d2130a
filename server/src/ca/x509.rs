//! Certificate profiles: the CA certificate and the X.509-SVID leaf, per the
//! SPIFFE X.509-SVID specification.

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use super::{CaError, CertificateError};

/// Largest CSR accepted; a P-256 or RSA-4096 CSR is well under 2 KiB.
pub(crate) const MAX_CSR_BYTES: usize = 16 * 1024;

/// Certificates are back-dated a little so peers with slightly slow clocks accept them.
pub(crate) const BACKDATE_SECS: i64 = 10;

/// A random, positive, non-zero 128-bit serial number.
pub(crate) fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    loop {
        rand::thread_rng().fill_bytes(&mut bytes);
        bytes[0] &= 0x7f;
        if bytes.iter().any(|b| *b != 0) {
            return SerialNumber::from_slice(&bytes);
        }
    }
}

fn time_at(unix: i64) -> Result<OffsetDateTime, CaError> {
    OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|source| CertificateError::Time { unix, source }.into())
}

/// Subject fields of CA certificates.
#[derive(Debug, Clone)]
pub struct CaSubject {
    /// C= (two letters).
    pub country: String,
    /// O=.
    pub organization: String,
    /// The trust domain: its SPIFFE ID is the URI SAN; the CN names it and the notBefore.
    pub trust_domain: TrustDomain,
}

/// Parameters of a CA certificate (self-signed root, or intermediate under an upstream).
pub fn ca_params(
    subject: &CaSubject,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = authority_params(subject, "ironroot CA", not_before, not_after)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// Parameters of the certificate of an in-memory signing key (`signing = "memory"`): an
/// intermediate CA under the HSM's CA certificate that may sign X.509-SVIDs only (pathLen 0:
/// no CA below it; keyCertSign and cRLSign, nothing else), with the trust domain's SPIFFE ID.
pub fn signing_key_params(
    subject: &CaSubject,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = authority_params(subject, "ironroot signing key", not_before, not_after)?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(p)
}

/// What every authority certificate of the trust domain carries: C=, O=, a common name
/// `<what> <trust domain> <notBefore>` (distinct per key, so rotations show in every tool),
/// a random serial, the validity, and the trust domain's SPIFFE ID as its URI SAN (SPIFFE: a
/// signing certificate may carry it).
fn authority_params(
    subject: &CaSubject,
    what: &str,
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CountryName, subject.country.as_str());
    dn.push(DnType::OrganizationName, subject.organization.as_str());
    dn.push(
        DnType::CommonName,
        format!("{what} {} {not_before}", subject.trust_domain),
    );
    p.distinguished_name = dn;
    p.serial_number = Some(random_serial());
    p.not_before = time_at(not_before)?;
    p.not_after = time_at(not_after)?;
    let td_uri = format!("spiffe://{}", subject.trust_domain);
    p.subject_alt_names = vec![SanType::URI(
        td_uri
            .try_into()
            .map_err(CertificateError::TrustDomainUri)?,
    )];
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Parameters of an X.509-SVID leaf: exactly one URI SAN, CA:false present,
/// digitalSignature, serverAuth + clientAuth, random serial.
pub fn svid_params(
    spiffe_id: &SpiffeId,
    dns_names: &[String],
    not_before: i64,
    not_after: i64,
) -> Result<CertificateParams, CaError> {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "ironroot");
    if let Some(first) = dns_names.first() {
        dn.push(DnType::CommonName, first.as_str());
    }
    p.distinguished_name = dn;
    p.serial_number = Some(random_serial());
    p.not_before = time_at(not_before)?;
    p.not_after = time_at(not_after)?;
    p.is_ca = IsCa::ExplicitNoCa;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let mut sans = vec![SanType::URI(spiffe_id.to_string().try_into().map_err(
        |e| CaError::InvalidRequest(format!("SPIFFE ID {spiffe_id} is not an IA5 string: {e}")),
    )?)];
    for name in dns_names {
        sans.push(SanType::DnsName(name.as_str().try_into().map_err(|e| {
            CaError::InvalidRequest(format!("DNS name {name:?}: {e}"))
        })?));
    }
    p.subject_alt_names = sans;
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// Parses a PKCS#10 request and checks its self-signature (proof that the
/// caller holds the private key). Only the public key is used: the SPIFFE ID
/// and every other field come from the server, never from the CSR.
pub fn parse_csr(der: &[u8]) -> Result<rcgen::PublicKey, CaError> {
    if der.is_empty() {
        return Err(CaError::InvalidRequest("the CSR is empty".into()));
    }
    if der.len() > MAX_CSR_BYTES {
        return Err(CaError::InvalidRequest(format!(
            "the CSR is {} bytes; the limit is {MAX_CSR_BYTES}",
            der.len()
        )));
    }
    let csr_der = rustls_pki_types::CertificateSigningRequestDer::from(der);
    let parsed = rcgen::CertificateSigningRequestParams::from_der(&csr_der).map_err(|e| {
        let why = match e {
            rcgen::Error::InvalidCertificationRequestSignature => {
                "its signature does not verify with its own public key".to_string()
            }
            rcgen::Error::CouldNotParseCertificationRequest => {
                "it is not a DER PKCS#10 certificate request".to_string()
            }
            other => other.to_string(),
        };
        CaError::InvalidRequest(format!("CSR rejected: {why}"))
    })?;
    Ok(parsed.public_key)
}

/// The serial number of a DER certificate, hex (how nodes and logs name an SVID); `None`
/// when it does not parse.
pub(crate) fn serial_hex(der: &[u8]) -> Option<String> {
    use der::Decode;
    x509_cert::Certificate::from_der(der)
        .ok()
        .map(|c| hex::encode(c.tbs_certificate.serial_number.as_bytes()))
}

/// The notAfter of a DER certificate, in unix seconds.
pub(crate) fn cert_not_after(der: &[u8]) -> Result<i64, CaError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(CertificateError::Parse)?;
    let secs = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs();
    i64::try_from(secs).map_err(|_| CertificateError::NotAfterOutOfRange.into())
}

/// The subjectPublicKey bits of a DER certificate (EC point or RSAPublicKey),
/// to check that a key matches a certificate.
pub(crate) fn cert_public_key_bits(der: &[u8]) -> Result<Vec<u8>, CaError> {
    use der::Decode;
    let cert = x509_cert::Certificate::from_der(der).map_err(CertificateError::Parse)?;
    Ok(cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes()
        .to_vec())
}
