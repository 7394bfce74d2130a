//! DER encodings shared by both key managers: SubjectPublicKeyInfo, the SHA-256 DigestInfo for
//! RSA PKCS#1 v1.5, ECDSA signature formats, and the CKA_ID derived from a label.
//!
//! Everything goes through the RustCrypto `der`/`spki`/`p256`/`rsa` encoders rather than
//! hand-assembled byte strings, so a malformed value fails to encode instead of producing a
//! certificate nobody can parse.

use der::asn1::{Null, ObjectIdentifier, OctetStringRef};
use der::{Decode, Encode, Sequence};
// p256::pkcs8 and rsa::pkcs8 are the same crate (pkcs8 0.10): one import serves both.
use p256::pkcs8::EncodePublicKey as _;
use sha2::{Digest, Sha256};
use spki::AlgorithmIdentifier;

use crate::HsmError;

/// prime256v1 / secp256r1 (RFC 5480). `new_unwrap` runs at compile time in a const, so a typo
/// here is a build error, never a runtime panic.
pub(crate) const P256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
/// id-sha256 (RFC 8017 appendix A.2.4).
const SHA256_OID: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");

/// Length of CKA_ID values we derive from labels.
pub(crate) const KEY_ID_LEN: usize = 16;

/// RSA-3072 modulus size in bits.
pub(crate) const RSA_BITS: usize = 3072;

/// CKA_ID for a label: the first 16 bytes of SHA-256(label). Deterministic, so a key can be
/// found by id after a restart (or by tools that only show ids), and the same label always
/// maps to the same id on every token.
pub(crate) fn key_id(label: &str) -> Vec<u8> {
    Sha256::digest(label.as_bytes())[..KEY_ID_LEN].to_vec()
}

/// DER of the P-256 named-curve OID, the value of CKA_EC_PARAMS.
pub(crate) fn p256_ec_params() -> Result<Vec<u8>, HsmError> {
    P256_OID
        .to_der()
        .map_err(|e| encoding("P-256 curve parameters", e))
}

/// SPKI DER for an uncompressed P-256 point (0x04 || X || Y). Also checks the point is on the
/// curve, so a corrupt CKA_EC_POINT is caught here rather than in a relying party.
pub(crate) fn ec_spki_from_point(point: &[u8]) -> Result<Vec<u8>, HsmError> {
    let key =
        p256::PublicKey::from_sec1_bytes(point).map_err(|e| encoding("P-256 public key", e))?;
    let doc = key
        .to_public_key_der()
        .map_err(|e| encoding("P-256 SubjectPublicKeyInfo", e))?;
    Ok(doc.as_bytes().to_vec())
}

/// CKA_EC_POINT is specified as a DER OCTET STRING wrapping the point; a few older modules
/// return the bare point. Accept both, but only a well-formed uncompressed P-256 point.
pub(crate) fn unwrap_ec_point(attr: &[u8]) -> Result<Vec<u8>, HsmError> {
    const UNCOMPRESSED_LEN: usize = 65;
    if let Ok(os) = OctetStringRef::from_der(attr) {
        let inner = os.as_bytes();
        if inner.len() == UNCOMPRESSED_LEN && inner[0] == 0x04 {
            return Ok(inner.to_vec());
        }
    }
    if attr.len() == UNCOMPRESSED_LEN && attr[0] == 0x04 {
        return Ok(attr.to_vec());
    }
    Err(HsmError::Encoding {
        what: "P-256 public key",
        reason: format!(
            "CKA_EC_POINT is neither a DER OCTET STRING holding an uncompressed point nor a bare one ({} bytes)",
            attr.len()
        ),
    })
}

/// SPKI DER for an RSA public key given as big-endian modulus and exponent (CKA_MODULUS,
/// CKA_PUBLIC_EXPONENT).
pub(crate) fn rsa_spki(modulus: &[u8], exponent: &[u8]) -> Result<Vec<u8>, HsmError> {
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from_bytes_be(exponent),
    )
    .map_err(|e| encoding("RSA public key", e))?;
    let doc = key
        .to_public_key_der()
        .map_err(|e| encoding("RSA SubjectPublicKeyInfo", e))?;
    Ok(doc.as_bytes().to_vec())
}

/// DigestInfo ::= SEQUENCE { digestAlgorithm AlgorithmIdentifier, digest OCTET STRING }
/// (RFC 8017 section 9.2). CKM_RSA_PKCS pads whatever it is given, so the DigestInfo has to be
/// built here; signing a bare digest would give signatures no verifier accepts.
#[derive(Sequence)]
struct DigestInfo<'a> {
    digest_algorithm: AlgorithmIdentifier<Null>,
    digest: OctetStringRef<'a>,
}

/// The DER DigestInfo for a SHA-256 digest, the input CKM_RSA_PKCS signs.
pub(crate) fn sha256_digest_info(digest: &[u8]) -> Result<Vec<u8>, HsmError> {
    let info = DigestInfo {
        digest_algorithm: AlgorithmIdentifier {
            oid: SHA256_OID,
            // RFC 8017 says the parameters "SHOULD" be an explicit NULL; every verifier accepts it.
            parameters: Some(Null),
        },
        digest: OctetStringRef::new(digest).map_err(|e| encoding("SHA-256 DigestInfo", e))?,
    };
    info.to_der().map_err(|e| encoding("SHA-256 DigestInfo", e))
}

/// Raw r||s (what CKM_ECDSA and JWS ES256 use) to the DER Ecdsa-Sig-Value X.509 wants.
pub(crate) fn ecdsa_raw_to_der(raw: &[u8]) -> Result<Vec<u8>, HsmError> {
    let sig =
        p256::ecdsa::Signature::from_slice(raw).map_err(|e| encoding("ECDSA signature", e))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

fn encoding(what: &'static str, e: impl std::fmt::Display) -> HsmError {
    HsmError::Encoding {
        what,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn digest_info_matches_rsa_crate_prefix() -> TestResult {
        // The rsa crate carries the RFC 8017 prefix as a constant: an independent check.
        let digest = [7u8; 32];
        let ours = sha256_digest_info(&digest)?;
        let theirs = rsa::Pkcs1v15Sign::new::<Sha256>();
        assert_eq!(&ours[..ours.len() - 32], &*theirs.prefix);
        assert_eq!(&ours[ours.len() - 32..], &digest);
        Ok(())
    }

    #[test]
    fn ec_params_are_prime256v1() -> TestResult {
        assert_eq!(
            p256_ec_params()?,
            [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07]
        );
        Ok(())
    }

    #[test]
    fn ec_point_wrapped_and_bare() -> TestResult {
        let sk = p256::SecretKey::from_slice(&[1u8; 32])?;
        let point = sk.public_key().to_sec1_bytes().to_vec();
        let wrapped = OctetStringRef::new(&point)?.to_der()?;
        assert_eq!(unwrap_ec_point(&wrapped)?, point);
        assert_eq!(unwrap_ec_point(&point)?, point);
        assert!(matches!(
            unwrap_ec_point(&point[..64]),
            Err(HsmError::Encoding { .. })
        ));
        ec_spki_from_point(&point)?;
        Ok(())
    }

    #[test]
    fn key_id_is_16_bytes_of_sha256() {
        let id = key_id("x509-ca");
        assert_eq!(id.len(), KEY_ID_LEN);
        assert_eq!(id, Sha256::digest(b"x509-ca")[..16].to_vec());
    }

    #[test]
    fn raw_signature_rejects_zero() {
        assert!(matches!(
            ecdsa_raw_to_der(&[0u8; 64]),
            Err(HsmError::Encoding { .. })
        ));
        assert!(matches!(
            ecdsa_raw_to_der(&[1u8; 63]),
            Err(HsmError::Encoding { .. })
        ));
    }
}
