//! Test-side producers of real-format evidence, signed with keys the test generates
//! (feature `test-support`; never in a shipped binary).
//!
//! - PKCS#7 SignedData comes from the `openssl cms -sign` CLI, an implementation
//!   independent of the parser under test, as BER with indefinite lengths (`-stream`, the
//!   shape AWS publishes) or DER.
//! - RS256 JWTs are signed with ring over the exact claim sets Google and Entra ID issue.
//! - TokenReview, Pod and Node JSON are written as the Kubernetes API returns them.
//!
//! Keys are RSA-2048 from `openssl genpkey`; certificates are made with rcgen. The
//! documents and claim sets themselves are in `documents.rs` (re-exported here).
//! Every function panics on failure: it is test scaffolding.

mod documents;

pub use documents::*;

use std::io::Write as _;
use std::process::Command;
use std::time::{Duration, SystemTime};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};
use serde_json::{json, Value};

/// An RSA-2048 private key (PKCS#8).
#[derive(Clone)]
pub struct TestKey {
    pkcs8_pem: String,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestKey(RSA-2048)")
    }
}

impl TestKey {
    /// A fresh RSA-2048 key from `openssl genpkey`.
    pub fn rsa2048() -> Self {
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("run openssl genpkey");
        assert!(
            out.status.success(),
            "openssl genpkey: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            pkcs8_pem: String::from_utf8(out.stdout).expect("PEM is text"),
        }
    }

    /// The key as PKCS#8 PEM.
    pub fn pem(&self) -> &str {
        &self.pkcs8_pem
    }

    fn der(&self) -> Vec<u8> {
        pem::parse(&self.pkcs8_pem)
            .expect("PKCS#8 PEM")
            .into_contents()
    }

    fn rcgen(&self) -> KeyPair {
        KeyPair::from_pkcs8_pem_and_sign_algo(&self.pkcs8_pem, &rcgen::PKCS_RSA_SHA256)
            .expect("rcgen accepts the RSA key")
    }

    fn ring(&self) -> ring::signature::RsaKeyPair {
        ring::signature::RsaKeyPair::from_pkcs8(&self.der()).expect("ring accepts the RSA key")
    }

    /// A compact RS256 JWS over `claims` with header `{"alg":"RS256","kid":kid,"typ":"JWT"}`.
    pub fn sign_jwt(&self, kid: &str, claims: &Value) -> String {
        self.sign_jwt_with_header(&json!({"alg": "RS256", "kid": kid, "typ": "JWT"}), claims)
    }

    /// A compact JWS with an arbitrary header, signed RS256 whatever the header says.
    pub fn sign_jwt_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let key = self.ring();
        let mut sig = vec![0; key.public().modulus_len()];
        key.sign(
            &ring::signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .expect("RSA signing");
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }

    /// The public key as a JWK, as Entra ID and Google publish them.
    pub fn jwk(&self, kid: &str) -> Value {
        let key = self.ring();
        let public: ring::rsa::PublicKeyComponents<Vec<u8>> = key.public().into();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": kid,
            "n": URL_SAFE_NO_PAD.encode(&public.n),
            "e": URL_SAFE_NO_PAD.encode(&public.e),
        })
    }
}

/// A certificate and its key.
pub struct TestCert {
    /// The certificate's key.
    pub key: TestKey,
    /// DER.
    pub der: Vec<u8>,
    params: CertificateParams,
}

impl std::fmt::Debug for TestCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCert")
            .field("der_len", &self.der.len())
            .finish()
    }
}

/// Validity of a test certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// notBefore.
    pub not_before: SystemTime,
    /// notAfter.
    pub not_after: SystemTime,
}

impl Validity {
    /// From an hour ago to `days` days from now (whole seconds).
    pub fn around_now(days: u64) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(3600),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }
}

fn odt(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .expect("zero nanoseconds")
}

impl TestCert {
    /// A self-signed certificate with a given CN and serial (as AWS's per-region
    /// certificates are, and as SPIRE's tests build them).
    pub fn self_signed(cn: &str, serial: u64, validity: Validity) -> Self {
        Self::self_signed_with_key(TestKey::rsa2048(), cn, serial, validity)
    }

    /// Same, with a given key.
    pub fn self_signed_with_key(key: TestKey, cn: &str, serial: u64, validity: Validity) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Amazon Web Services LLC");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.not_before = odt(validity.not_before);
        params.not_after = odt(validity.not_after);
        let cert = params.self_signed(&key.rcgen()).expect("self-sign");
        Self {
            key,
            der: cert.der().to_vec(),
            params,
        }
    }

    /// A CA certificate: self-signed (a root) or issued by `issuer` (an intermediate).
    pub fn ca(cn: &str, issuer: Option<&TestCert>, validity: Validity) -> Self {
        let key = TestKey::rsa2048();
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.not_before = odt(validity.not_before);
        params.not_after = odt(validity.not_after);
        let der = match issuer {
            None => params.self_signed(&key.rcgen()).expect("self-sign"),
            Some(i) => params.signed_by(&key.rcgen(), &i.issuer()).expect("issue"),
        }
        .der()
        .to_vec();
        Self { key, der, params }
    }

    /// A TLS server leaf (as Azure's `*.metadata.azure.com` signer): DNS names, serverAuth,
    /// and an AIA caIssuers URL if given.
    pub fn tls_leaf(
        serial: u64,
        cn: &str,
        dns_names: &[&str],
        aia_ca_issuers: Option<&str>,
        issuer: &TestCert,
        validity: Validity,
    ) -> Self {
        let key = TestKey::rsa2048();
        let mut params = CertificateParams::new(
            dns_names
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>(),
        )
        .expect("params");
        params.distinguished_name.push(DnType::CommonName, cn);
        params.serial_number = Some(SerialNumber::from(serial));
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = odt(validity.not_before);
        params.not_after = odt(validity.not_after);
        if let Some(url) = aia_ca_issuers {
            params.custom_extensions.push(aia_extension(url));
        }
        let der = params
            .signed_by(&key.rcgen(), &issuer.issuer())
            .expect("issue")
            .der()
            .to_vec();
        Self { key, der, params }
    }

    fn issuer(&self) -> Issuer<'static, KeyPair> {
        Issuer::new(self.params.clone(), self.key.rcgen())
    }

    /// PEM.
    pub fn pem(&self) -> String {
        pem::encode(&pem::Pem::new("CERTIFICATE", self.der.clone()))
    }
}

/// DER of `AuthorityInfoAccessSyntax` with one caIssuers URI.
fn aia_extension(url: &str) -> CustomExtension {
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if body.len() < 0x80 {
            out.push(body.len() as u8);
        } else {
            out.push(0x82);
            out.extend_from_slice(&(body.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(body);
        out
    }
    // id-ad-caIssuers 1.3.6.1.5.5.7.48.2
    let oid = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let mut desc = oid.to_vec();
    desc.extend(tlv(0x86, url.as_bytes()));
    let content = tlv(0x30, &tlv(0x30, &desc));
    CustomExtension::from_oid_content(&[1, 3, 6, 1, 5, 5, 7, 1, 1], content)
}

/// How to produce a PKCS#7 SignedData.
#[derive(Debug, Clone)]
pub struct Pkcs7Options {
    /// Leave the content out (a detached signature).
    pub detached: bool,
    /// BER with indefinite lengths and chunked content (`openssl -stream`), as AWS sends.
    pub ber_stream: bool,
    /// Include the signer's certificate.
    pub embed_signer: bool,
    /// Further certificates (DER) to put in the bag.
    pub extra_certs: Vec<Vec<u8>>,
    /// Include signed attributes (content type, signing time, message digest).
    pub signed_attributes: bool,
    /// Digest (`sha256`, `sha1`, ...).
    pub digest: &'static str,
}

impl Default for Pkcs7Options {
    /// Attached, BER-streamed, signer embedded, signed attributes, SHA-256.
    fn default() -> Self {
        Self {
            detached: false,
            ber_stream: true,
            embed_signer: true,
            extra_certs: Vec::new(),
            signed_attributes: true,
            digest: "sha256",
        }
    }
}

/// Signs `content` with `signer` using `openssl cms -sign`; returns the SignedData bytes.
pub fn pkcs7_sign(signer: &TestCert, content: &[u8], opts: &Pkcs7Options) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |n: &str| dir.path().join(n);
    let write = |n: &str, data: &[u8]| {
        let mut f = std::fs::File::create(path(n)).expect("create");
        f.write_all(data).expect("write");
    };
    write("content", content);
    write("signer.pem", signer.pem().as_bytes());
    write("key.pem", signer.key.pem().as_bytes());
    let mut cmd = Command::new("openssl");
    cmd.args([
        "cms",
        "-sign",
        "-binary",
        "-outform",
        "DER",
        "-md",
        opts.digest,
    ])
    .arg("-in")
    .arg(path("content"))
    .arg("-signer")
    .arg(path("signer.pem"))
    .arg("-inkey")
    .arg(path("key.pem"))
    .arg("-out")
    .arg(path("out.p7"));
    if !opts.detached {
        cmd.arg("-nodetach");
    }
    if opts.ber_stream {
        cmd.arg("-stream");
    }
    if !opts.embed_signer {
        cmd.arg("-nocerts");
    }
    if !opts.signed_attributes {
        cmd.arg("-noattr");
    }
    if !opts.extra_certs.is_empty() {
        let pems: String = opts
            .extra_certs
            .iter()
            .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
            .collect();
        write("extra.pem", pems.as_bytes());
        cmd.arg("-certfile").arg(path("extra.pem"));
    }
    let out = cmd.output().expect("run openssl cms");
    assert!(
        out.status.success(),
        "openssl cms -sign: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path("out.p7")).expect("read signature")
}

/// Base64 wrapped at 64 columns, as IMDS serves `/rsa2048`.
pub fn base64_wrapped(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    b64.as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect::<Vec<_>>()
        .join("\n")
}
