//! SPIFFE trust bundles and their JWKS form (SPIFFE Trust Domain and Bundle
//! §4, X509-SVID §6, JWT-SVID §6).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::admin;
use crate::pubkey::{certificate_key, Jwk, PublicKey};
use crate::spiffe_id::TrustDomain;

/// Largest JWKS document accepted, in bytes; a federated bundle is untrusted
/// input until parsed.
pub const MAX_BUNDLE_JSON_LEN: usize = 1024 * 1024;

const USE_X509: &str = "x509-svid";
const USE_JWT: &str = "jwt-svid";

/// Why a bundle cannot be encoded or parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// The JWKS document is larger than [`MAX_BUNDLE_JSON_LEN`].
    #[error("bundle JSON is {len} bytes; the maximum is {max}")]
    TooLarge {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not JSON, or not a JWK Set (e.g. no `keys` array).
    #[error("bundle is not a valid JWK Set: {0}")]
    Json(String),
    /// One JWK is malformed.
    #[error("keys[{index}]: {reason}")]
    Key {
        /// The key's or authority's position in its list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Two `jwt-svid` keys share a key id.
    #[error("keys[{index}]: key id '{kid}' appears more than once")]
    DuplicateKeyId {
        /// The key's or authority's position in its list.
        index: usize,
        /// The key id.
        kid: String,
    },
    /// An X.509 authority of the bundle cannot be put into a JWK.
    #[error("x509_authorities[{index}]: {reason}")]
    X509Authority {
        /// The key's or authority's position in its list.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A JWT authority of the bundle cannot be put into a JWK.
    #[error("jwt_authorities[{index}] (kid '{kid}'): {reason}")]
    JwtAuthority {
        /// The key's or authority's position in its list.
        index: usize,
        /// The key id.
        kid: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A key that signs JWT-SVIDs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtAuthority {
    /// The JWT `kid` that names this key.
    pub key_id: String,
    /// DER SubjectPublicKeyInfo.
    #[serde(with = "crate::serde_b64::bytes")]
    pub public_key_der: Vec<u8>,
    /// Unix seconds after which the key is retired; 0 when unknown (the JWKS
    /// form does not carry it).
    pub expires_at: i64,
}

/// The keys that are authoritative for one trust domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrustBundle {
    /// The trust domain the keys are authoritative for.
    pub trust_domain: TrustDomain,
    /// DER CA certificates for X.509-SVIDs.
    #[serde(with = "crate::serde_b64::list")]
    pub x509_authorities: Vec<Vec<u8>>,
    /// Keys for JWT-SVIDs.
    pub jwt_authorities: Vec<JwtAuthority>,
    /// `spiffe_sequence`: goes up whenever the contents change.
    pub sequence_number: u64,
    /// `spiffe_refresh_hint` in seconds; 0 means none.
    pub refresh_hint_secs: u64,
}

#[derive(Serialize)]
struct JwkSetOut<'a> {
    keys: &'a [Jwk],
    spiffe_sequence: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    spiffe_refresh_hint: Option<u64>,
}

#[derive(Deserialize)]
struct JwkSetIn {
    // Values first, so that one odd key (of a type we ignore) cannot fail the set.
    keys: Vec<serde_json::Value>,
    #[serde(default)]
    spiffe_sequence: Option<u64>,
    #[serde(default)]
    spiffe_refresh_hint: Option<u64>,
}

impl TrustBundle {
    /// An empty bundle for `trust_domain`.
    pub fn new(trust_domain: TrustDomain) -> Self {
        TrustBundle {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence_number: 0,
            refresh_hint_secs: 0,
        }
    }

    /// The JWT authority named `kid`.
    pub fn jwt_authority(&self, kid: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.key_id == kid)
    }

    /// The bundle as a SPIFFE JWK Set: one `x509-svid` key per CA certificate
    /// (with `x5c` and the key parameters, no `kid`), one `jwt-svid` key per
    /// JWT authority (with `kid`), `spiffe_sequence`, and
    /// `spiffe_refresh_hint` when it is not 0.
    pub fn to_jwks_json(&self) -> Result<String, BundleError> {
        let mut keys = Vec::with_capacity(self.x509_authorities.len() + self.jwt_authorities.len());
        for (index, cert) in self.x509_authorities.iter().enumerate() {
            let mut jwk = certificate_key(cert)
                .and_then(|k| k.to_jwk())
                .map_err(|reason| BundleError::X509Authority { index, reason })?;
            jwk.use_ = Some(USE_X509.into());
            jwk.x5c = Some(vec![STANDARD.encode(cert)]);
            keys.push(jwk);
        }
        for (index, a) in self.jwt_authorities.iter().enumerate() {
            let mut jwk = PublicKey::from_spki_der(&a.public_key_der)
                .and_then(|k| k.to_jwk())
                .map_err(|reason| BundleError::JwtAuthority {
                    index,
                    kid: a.key_id.clone(),
                    reason,
                })?;
            jwk.use_ = Some(USE_JWT.into());
            jwk.kid = Some(a.key_id.clone());
            keys.push(jwk);
        }
        let set = JwkSetOut {
            keys: &keys,
            spiffe_sequence: self.sequence_number,
            spiffe_refresh_hint: (self.refresh_hint_secs > 0).then_some(self.refresh_hint_secs),
        };
        serde_json::to_string(&set).map_err(|e| BundleError::Json(e.to_string()))
    }

    /// Parses a SPIFFE JWK Set for `trust_domain` (the document does not name
    /// its trust domain). Keys of unknown `use` or `kty` are ignored, as are
    /// `x509-svid` keys without `x5c`, as the specs require; malformed keys of
    /// a known kind are errors.
    pub fn from_jwks_json(trust_domain: TrustDomain, json: &str) -> Result<Self, BundleError> {
        if json.len() > MAX_BUNDLE_JSON_LEN {
            return Err(BundleError::TooLarge {
                len: json.len(),
                max: MAX_BUNDLE_JSON_LEN,
            });
        }
        let set: JwkSetIn =
            serde_json::from_str(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let mut bundle = TrustBundle::new(trust_domain);
        bundle.sequence_number = set.spiffe_sequence.unwrap_or(0);
        bundle.refresh_hint_secs = set.spiffe_refresh_hint.unwrap_or(0);
        for (index, value) in set.keys.into_iter().enumerate() {
            let key_err = |reason: String| BundleError::Key { index, reason };
            let jwk: Jwk = serde_json::from_value(value).map_err(|e| key_err(e.to_string()))?;
            match jwk.use_.as_deref() {
                Some(USE_X509) => {
                    if let Some(cert) = parse_x509_key(&jwk).map_err(key_err)? {
                        bundle.x509_authorities.push(cert);
                    }
                }
                Some(USE_JWT) => {
                    let Some(authority) = parse_jwt_key(&jwk).map_err(key_err)? else {
                        continue;
                    };
                    if bundle.jwt_authority(&authority.key_id).is_some() {
                        return Err(BundleError::DuplicateKeyId {
                            index,
                            kid: authority.key_id,
                        });
                    }
                    bundle.jwt_authorities.push(authority);
                }
                _ => {}
            }
        }
        Ok(bundle)
    }

    /// The X.509 authorities as concatenated `CERTIFICATE` PEM blocks.
    pub fn to_pem(&self) -> String {
        let mut out = String::new();
        for cert in &self.x509_authorities {
            out.push_str("-----BEGIN CERTIFICATE-----\n");
            let b64 = STANDARD.encode(cert);
            // RFC 7468: 64 characters a line. Base64 is ASCII, so byte chunks are chars.
            for line in b64.as_bytes().chunks(64) {
                out.push_str(&String::from_utf8_lossy(line));
                out.push('\n');
            }
            out.push_str("-----END CERTIFICATE-----\n");
        }
        out
    }

    /// The admin API's `Bundle` message.
    pub fn to_admin_bundle(&self) -> Result<admin::Bundle, BundleError> {
        Ok(admin::Bundle {
            trust_domain: self.trust_domain.to_string(),
            x509_authorities: self.x509_authorities.clone(),
            jwks_json: self.to_jwks_json()?,
            sequence_number: i64::try_from(self.sequence_number).unwrap_or(i64::MAX),
        })
    }
}

/// The CA certificate of an `x509-svid` key; `None` when it must be ignored.
fn parse_x509_key(jwk: &Jwk) -> Result<Option<Vec<u8>>, String> {
    let Some(first) = jwk.x5c.as_ref().and_then(|v| v.first()) else {
        return Ok(None); // X509-SVID §6.2: no x5c, ignore the entry.
    };
    let Some(declared) = PublicKey::from_jwk(jwk)? else {
        return Ok(None); // unknown kty
    };
    let cert = STANDARD
        .decode(first)
        .map_err(|e| format!("x5c[0] is not base64: {e}"))?;
    let actual = certificate_key(&cert).map_err(|e| format!("x5c[0]: {e}"))?;
    check_extensions(&cert).map_err(|e| format!("x5c[0]: {e}"))?;
    // A key whose parameters disagree with its certificate is either corrupt
    // or an attempt to make two consumers trust different keys.
    if actual != declared {
        return Err("the key parameters do not match the x5c certificate's key".into());
    }
    Ok(Some(cert))
}

/// Every extension of a kind relying parties decode (RFC 5280 §4.2) decodes, and none
/// appears twice: a CA certificate that Go's crypto/x509 (or any parser that reads the
/// extensions) cannot read fails the whole bundle for a workload that parses it.
fn check_extensions(cert_der: &[u8]) -> Result<(), String> {
    use der::oid::AssociatedOid;
    use der::Decode;
    use x509_cert::ext::pkix::{
        AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints, CertificatePolicies,
        CrlDistributionPoints, ExtendedKeyUsage, IssuerAltName, KeyUsage, NameConstraints,
        SubjectAltName, SubjectKeyIdentifier,
    };

    fn decodes<'a, T: Decode<'a>>(value: &'a [u8]) -> Result<(), String> {
        T::from_der(value).map(|_| ()).map_err(|e| e.to_string())
    }
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| format!("not a valid DER X.509 certificate: {e}"))?;
    let extensions = cert.tbs_certificate.extensions.unwrap_or_default();
    for (i, ext) in extensions.iter().enumerate() {
        let oid = ext.extn_id;
        if extensions[..i].iter().any(|e| e.extn_id == oid) {
            return Err(format!("extension {oid} appears twice"));
        }
        let value = ext.extn_value.as_bytes();
        let decoded = match oid {
            BasicConstraints::OID => decodes::<BasicConstraints>(value),
            KeyUsage::OID => decodes::<KeyUsage>(value),
            ExtendedKeyUsage::OID => decodes::<ExtendedKeyUsage>(value),
            SubjectAltName::OID => decodes::<SubjectAltName>(value),
            IssuerAltName::OID => decodes::<IssuerAltName>(value),
            NameConstraints::OID => decodes::<NameConstraints>(value),
            SubjectKeyIdentifier::OID => decodes::<SubjectKeyIdentifier>(value),
            AuthorityKeyIdentifier::OID => decodes::<AuthorityKeyIdentifier>(value),
            CertificatePolicies::OID => decodes::<CertificatePolicies>(value),
            CrlDistributionPoints::OID => decodes::<CrlDistributionPoints>(value),
            AuthorityInfoAccessSyntax::OID => decodes::<AuthorityInfoAccessSyntax>(value),
            _ => Ok(()),
        };
        decoded.map_err(|e| format!("extension {oid} does not parse: {e}"))?;
    }
    Ok(())
}

/// The JWT authority of a `jwt-svid` key; `None` when it must be ignored.
fn parse_jwt_key(jwk: &Jwk) -> Result<Option<JwtAuthority>, String> {
    let Some(key) = PublicKey::from_jwk(jwk)? else {
        return Ok(None);
    };
    let kid = match jwk.kid.as_deref() {
        Some(k) if !k.is_empty() => k.to_owned(),
        _ => return Err("a jwt-svid key must have a 'kid'".into()),
    };
    Ok(Some(JwtAuthority {
        key_id: kid,
        public_key_der: key.to_spki_der()?,
        expires_at: 0,
    }))
}

#[cfg(test)]
mod tests;

/// Why a PEM text gave no certificates.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PemCertificatesError {
    /// The text is not PEM (the parser's message).
    #[error("is not valid PEM: {0}")]
    Syntax(String),
    /// The text is PEM, but no block is a CERTIFICATE.
    #[error("holds no CERTIFICATE block")]
    NoCertificate,
}

/// `CERTIFICATE` PEM blocks of `ders`, in order (the form written to files and printed by
/// the CLIs: the `pem` crate's encoding, CRLF line ends).
pub fn certificates_to_pem(ders: &[Vec<u8>]) -> String {
    ders.iter()
        .map(|d| pem::encode(&pem::Pem::new("CERTIFICATE", d.clone())))
        .collect()
}

/// The DER contents of every CERTIFICATE block of a PEM text, in order; at
/// least one. Other block types are ignored.
pub fn certificates_from_pem(text: &[u8]) -> Result<Vec<Vec<u8>>, PemCertificatesError> {
    let certs: Vec<Vec<u8>> = pem::parse_many(text)
        .map_err(|e| PemCertificatesError::Syntax(e.to_string()))?
        .into_iter()
        .filter(|b| b.tag() == "CERTIFICATE")
        .map(|b| b.into_contents())
        .collect();
    if certs.is_empty() {
        return Err(PemCertificatesError::NoCertificate);
    }
    Ok(certs)
}
