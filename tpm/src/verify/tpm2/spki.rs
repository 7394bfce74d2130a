//! The TPM key as an X.509 SubjectPublicKeyInfo, and comparison with a certificate's key
//! (an EK certificate's key must be the EK the agent presents).

use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::elliptic_curve::ALGORITHM_OID as EC_PUBLIC_KEY_OID;
use rsa::pkcs1::ALGORITHM_OID as RSA_ENCRYPTION_OID;
use rsa::pkcs8::EncodePublicKey;
use rsa::traits::PublicKeyParts;
use spki::der::oid::AssociatedOid;
use spki::{ObjectIdentifier, SubjectPublicKeyInfoRef};

use super::error::TpmError;
use super::marshal::{invalid, left_pad};
use super::params::EccCurve;
use super::public::{PublicKey, TpmPublic};

const S: &str = "SubjectPublicKeyInfo";

impl EccCurve {
    fn oid(self) -> ObjectIdentifier {
        match self {
            Self::NistP256 => p256::NistP256::OID,
            Self::NistP384 => p384::NistP384::OID,
        }
    }
}

impl PublicKey {
    /// The uncompressed SEC1 point `04 || x || y` with coordinates padded to the field size.
    pub fn ecc_point_uncompressed(&self) -> Option<Vec<u8>> {
        let PublicKey::Ecc { curve, x, y } = self else {
            return None;
        };
        let mut out = vec![0x04];
        out.extend(left_pad(x, curve.field_size())?);
        out.extend(left_pad(y, curve.field_size())?);
        Some(out)
    }
}

impl TpmPublic {
    /// The key as a DER SubjectPublicKeyInfo (rsaEncryption, or id-ecPublicKey with the
    /// named curve). Fails for an ECC point that is not on its curve.
    pub fn spki_der(&self) -> Result<Vec<u8>, TpmError> {
        let der = match &self.key {
            PublicKey::Rsa { modulus, exponent } => rsa::RsaPublicKey::new(
                rsa::BigUint::from_bytes_be(modulus),
                rsa::BigUint::from(*exponent),
            )
            .map_err(|e| crypto("RSA public key", e))?
            .to_public_key_der(),
            PublicKey::Ecc { curve, .. } => {
                let point = self
                    .key
                    .ecc_point_uncompressed()
                    .ok_or_else(|| TpmError::Crypto {
                        operation: "ECC public key",
                        reason: "coordinate longer than the field".into(),
                    })?;
                match curve {
                    EccCurve::NistP256 => p256::PublicKey::from_sec1_bytes(&point)
                        .map_err(|e| crypto("NIST P-256 public key", e))?
                        .to_public_key_der(),
                    EccCurve::NistP384 => p384::PublicKey::from_sec1_bytes(&point)
                        .map_err(|e| crypto("NIST P-384 public key", e))?
                        .to_public_key_der(),
                }
            }
        };
        Ok(der
            .map_err(|e| crypto("SubjectPublicKeyInfo encoding", e))?
            .into_vec())
    }

    /// True when `spki_der` (a certificate's SubjectPublicKeyInfo) holds this key. Compares
    /// key material, not encodings (leading zeros, compressed points).
    pub fn matches_spki(&self, spki_der: &[u8]) -> bool {
        self.check_spki(spki_der).is_ok()
    }

    /// As [`Self::matches_spki`], with the reason: [`TpmError::KeyMismatch`] for another key,
    /// [`TpmError::Invalid`] for a SubjectPublicKeyInfo that does not parse.
    pub fn check_spki(&self, spki_der: &[u8]) -> Result<(), TpmError> {
        let spki = SubjectPublicKeyInfoRef::try_from(spki_der)
            .map_err(|e| invalid(S, "(DER)", 0, e.to_string()))?;
        let oid = spki.algorithm.oid;
        match &self.key {
            PublicKey::Rsa { modulus, exponent } => {
                if oid != RSA_ENCRYPTION_OID {
                    return Err(mismatch(format!(
                        "the certificate key's algorithm is {oid}, the TPM key is RSA"
                    )));
                }
                let cert = rsa::RsaPublicKey::try_from(spki)
                    .map_err(|e| invalid(S, "subjectPublicKey", 0, e.to_string()))?;
                if cert.n().to_bytes_be() != strip(modulus) {
                    return Err(mismatch("the RSA moduli differ".into()));
                }
                if cert.e() != &rsa::BigUint::from(*exponent) {
                    return Err(mismatch(format!(
                        "RSA exponent {} in the certificate, {exponent} in the TPM",
                        cert.e()
                    )));
                }
                Ok(())
            }
            PublicKey::Ecc { curve, .. } => {
                if oid != EC_PUBLIC_KEY_OID {
                    return Err(mismatch(format!(
                        "the certificate key's algorithm is {oid}, the TPM key is ECC"
                    )));
                }
                let named = spki
                    .algorithm
                    .parameters_oid()
                    .map_err(|e| invalid(S, "algorithm.parameters", 0, e.to_string()))?;
                if named != curve.oid() {
                    return Err(mismatch(format!(
                        "the certificate key's curve is {named}, the TPM key is on {curve}"
                    )));
                }
                let cert_point = spki.subject_public_key.as_bytes().ok_or_else(|| {
                    invalid(S, "subjectPublicKey", 0, "not a whole number of bytes")
                })?;
                // Decoding also accepts a compressed point; re-encoding makes it comparable.
                let cert_uncompressed = match curve {
                    EccCurve::NistP256 => p256::PublicKey::from_sec1_bytes(cert_point)
                        .map(|k| k.to_encoded_point(false).as_bytes().to_vec()),
                    EccCurve::NistP384 => p384::PublicKey::from_sec1_bytes(cert_point)
                        .map(|k| k.to_encoded_point(false).as_bytes().to_vec()),
                }
                .map_err(|_| invalid(S, "subjectPublicKey", 0, "not a point on the curve"))?;
                if Some(cert_uncompressed) != self.key.ecc_point_uncompressed() {
                    return Err(mismatch("the ECC points differ".into()));
                }
                Ok(())
            }
        }
    }
}

/// `v` without leading zeros.
fn strip(v: &[u8]) -> Vec<u8> {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    v.get(first..).unwrap_or_default().to_vec()
}

fn mismatch(reason: String) -> TpmError {
    TpmError::KeyMismatch { reason }
}

fn crypto(operation: &'static str, e: impl std::fmt::Display) -> TpmError {
    TpmError::Crypto {
        operation,
        reason: e.to_string(),
    }
}
