//! Public keys as SPKI DER and as JWK parameters (RFC 7517/7518 §6), the two
//! forms a SPIFFE bundle needs. Only parsing and encoding: no crypto here.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use der::asn1::{BitString, ObjectIdentifier, UintRef};
use der::{Any, Decode, Encode};
use serde::{Deserialize, Serialize};
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned, SubjectPublicKeyInfoRef};

const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");

/// The key algorithms a bundle can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyAlg {
    EcP256,
    EcP384,
    EcP521,
    Rsa,
}

impl KeyAlg {
    fn curve(self) -> Option<(&'static str, ObjectIdentifier, usize)> {
        match self {
            KeyAlg::EcP256 => Some(("P-256", SECP256R1, 32)),
            KeyAlg::EcP384 => Some(("P-384", SECP384R1, 48)),
            KeyAlg::EcP521 => Some(("P-521", SECP521R1, 66)),
            KeyAlg::Rsa => None,
        }
    }

    fn from_curve_oid(oid: ObjectIdentifier) -> Option<Self> {
        [KeyAlg::EcP256, KeyAlg::EcP384, KeyAlg::EcP521]
            .into_iter()
            .find(|a| a.curve().is_some_and(|(_, o, _)| o == oid))
    }

    fn from_crv(crv: &str) -> Option<Self> {
        [KeyAlg::EcP256, KeyAlg::EcP384, KeyAlg::EcP521]
            .into_iter()
            .find(|a| a.curve().is_some_and(|(name, _, _)| name == crv))
    }
}

/// A public key: the algorithm and the SPKI's subjectPublicKey bytes, which
/// are what `ring` verifies with (an uncompressed EC point, or an RSAPublicKey).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublicKey {
    pub(crate) alg: KeyAlg,
    pub(crate) raw: Vec<u8>,
}

/// One JWK as the SPIFFE bundle uses it. Unknown members are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Jwk {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kty: Option<String>,
    #[serde(rename = "use", default, skip_serializing_if = "Option::is_none")]
    pub(crate) use_: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) y: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) x5c: Option<Vec<String>>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo.
    pub(crate) fn from_spki_der(der: &[u8]) -> Result<Self, String> {
        let spki = SubjectPublicKeyInfoRef::from_der(der)
            .map_err(|e| format!("not a valid SubjectPublicKeyInfo: {e}"))?;
        let raw = spki
            .subject_public_key
            .as_bytes()
            .ok_or("the public key BIT STRING has unused bits")?;
        let oid = spki.algorithm.oid;
        if oid == RSA_ENCRYPTION {
            rsa_parts(raw)?;
            return Ok(PublicKey {
                alg: KeyAlg::Rsa,
                raw: raw.to_vec(),
            });
        }
        if oid != ID_EC_PUBLIC_KEY {
            return Err(format!("unsupported public key algorithm {oid}"));
        }
        let curve = spki
            .algorithm
            .parameters_oid()
            .map_err(|e| format!("EC key without a named curve: {e}"))?;
        let alg = KeyAlg::from_curve_oid(curve)
            .ok_or_else(|| format!("unsupported elliptic curve {curve}"))?;
        check_ec_point(alg, raw)?;
        Ok(PublicKey {
            alg,
            raw: raw.to_vec(),
        })
    }

    /// Encodes as a DER SubjectPublicKeyInfo.
    pub(crate) fn to_spki_der(&self) -> Result<Vec<u8>, String> {
        let parameters = match self.alg.curve() {
            Some((_, oid, _)) => Any::from(oid),
            None => Any::null(),
        };
        let oid = match self.alg {
            KeyAlg::Rsa => RSA_ENCRYPTION,
            _ => ID_EC_PUBLIC_KEY,
        };
        let spki = SubjectPublicKeyInfoOwned {
            algorithm: AlgorithmIdentifierOwned {
                oid,
                parameters: Some(parameters),
            },
            subject_public_key: BitString::from_bytes(&self.raw).map_err(|e| e.to_string())?,
        };
        spki.to_der().map_err(|e| format!("encoding SPKI: {e}"))
    }

    /// Builds the key from a JWK's parameters. `Ok(None)` when the key type
    /// is not EC or RSA: the bundle spec says to ignore such keys.
    pub(crate) fn from_jwk(jwk: &Jwk) -> Result<Option<Self>, String> {
        match jwk.kty.as_deref() {
            Some("EC") => {
                let crv = jwk.crv.as_deref().ok_or("EC key without 'crv'")?;
                let alg =
                    KeyAlg::from_crv(crv).ok_or_else(|| format!("unsupported curve '{crv}'"))?;
                let (_, _, size) = alg.curve().ok_or("not an EC algorithm")?;
                let x = b64_field(jwk.x.as_deref(), "x")?;
                let y = b64_field(jwk.y.as_deref(), "y")?;
                if x.len() != size || y.len() != size {
                    return Err(format!(
                        "'x' and 'y' of a {crv} key must be {size} bytes each"
                    ));
                }
                let mut raw = Vec::with_capacity(1 + 2 * size);
                raw.push(0x04);
                raw.extend_from_slice(&x);
                raw.extend_from_slice(&y);
                Ok(Some(PublicKey { alg, raw }))
            }
            Some("RSA") => {
                let n = b64_field(jwk.n.as_deref(), "n")?;
                let e = b64_field(jwk.e.as_deref(), "e")?;
                if n.first() == Some(&0) || e.first() == Some(&0) {
                    return Err("'n' and 'e' must not have leading zero bytes".into());
                }
                let n = UintRef::new(&n).map_err(|e| e.to_string())?;
                let e = UintRef::new(&e).map_err(|e| e.to_string())?;
                let raw = vec![n, e]
                    .to_der()
                    .map_err(|e| format!("encoding RSAPublicKey: {e}"))?;
                Ok(Some(PublicKey {
                    alg: KeyAlg::Rsa,
                    raw,
                }))
            }
            Some(_) => Ok(None),
            None => Err("'kty' is missing".into()),
        }
    }

    /// A JWK with `kty` and the key parameters set (nothing else).
    pub(crate) fn to_jwk(&self) -> Result<Jwk, String> {
        match self.alg.curve() {
            Some((crv, _, size)) => {
                check_ec_point(self.alg, &self.raw)?;
                let (x, y) = self.raw[1..].split_at(size);
                Ok(Jwk {
                    kty: Some("EC".into()),
                    crv: Some(crv.into()),
                    x: Some(URL_SAFE_NO_PAD.encode(x)),
                    y: Some(URL_SAFE_NO_PAD.encode(y)),
                    ..Jwk::default()
                })
            }
            None => {
                let (n, e) = rsa_parts(&self.raw)?;
                Ok(Jwk {
                    kty: Some("RSA".into()),
                    n: Some(URL_SAFE_NO_PAD.encode(n)),
                    e: Some(URL_SAFE_NO_PAD.encode(e)),
                    ..Jwk::default()
                })
            }
        }
    }
}

/// The public key of a DER X.509 certificate.
pub(crate) fn certificate_key(cert_der: &[u8]) -> Result<PublicKey, String> {
    let cert = x509_cert::Certificate::from_der(cert_der)
        .map_err(|e| format!("not a valid DER X.509 certificate: {e}"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| format!("re-encoding the certificate's key: {e}"))?;
    PublicKey::from_spki_der(&spki)
}

/// Splits an RSAPublicKey into the big-endian modulus and exponent.
fn rsa_parts(raw: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let ints =
        Vec::<UintRef<'_>>::from_der(raw).map_err(|e| format!("not a valid RSAPublicKey: {e}"))?;
    match ints.as_slice() {
        [n, e] if !n.is_empty() && !e.is_empty() => {
            Ok((n.as_bytes().to_vec(), e.as_bytes().to_vec()))
        }
        _ => Err("an RSAPublicKey must hold exactly a modulus and an exponent".into()),
    }
}

fn check_ec_point(alg: KeyAlg, raw: &[u8]) -> Result<(), String> {
    let (crv, _, size) = alg.curve().ok_or("not an EC algorithm")?;
    if raw.len() != 1 + 2 * size || raw[0] != 0x04 {
        return Err(format!(
            "a {crv} public key must be an uncompressed point of {} bytes",
            1 + 2 * size
        ));
    }
    Ok(())
}

fn b64_field(v: Option<&str>, name: &str) -> Result<Vec<u8>, String> {
    let v = v.ok_or_else(|| format!("'{name}' is missing"))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(v)
        .map_err(|e| format!("'{name}' is not unpadded base64url: {e}"))?;
    if bytes.is_empty() {
        return Err(format!("'{name}' is empty"));
    }
    Ok(bytes)
}
