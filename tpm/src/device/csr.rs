//! A PKCS#10 certificate signing request for a TPM-resident key (the DevID, the agent SVID
//! key), signed in the TPM.

use std::cell::RefCell;

use rcgen::{
    CertificateParams, DistinguishedName, DnType, PublicKeyData, SignatureAlgorithm, SigningKey,
    PKCS_ECDSA_P256_SHA256,
};
use sha2::{Digest, Sha256};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::structures::Public;

use super::keys::parse_tpm2b_public;
use super::sign::pad;
use super::{DeviceError, LoadedKey, Tpm};

/// X.520 upper bound of a common name.
const MAX_CN: usize = 64;

/// How the TPM signs for the CSR.
#[derive(Clone, Copy)]
enum Signing {
    /// SHA-256 in software, TPM2_Sign of the digest (non-restricted keys).
    Digest,
    /// TPM2_Hash then TPM2_Sign with its ticket (restricted keys too).
    Message,
}

/// rcgen's view of the TPM key: it asks for the public point and for signatures.
struct TpmSigner<'a> {
    /// `sign` takes `&self`; the TPM needs `&mut`. rcgen signs once, never re-entrantly.
    tpm: RefCell<&'a mut Tpm>,
    key: &'a LoadedKey,
    signing: Signing,
    /// The uncompressed EC point (0x04 || x || y): the SubjectPublicKeyInfo's bit string.
    point: Vec<u8>,
    /// rcgen's error type cannot carry ours, so the TPM's error waits here.
    error: RefCell<Option<DeviceError>>,
}

impl PublicKeyData for TpmSigner<'_> {
    fn der_bytes(&self) -> &[u8] {
        &self.point
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        &PKCS_ECDSA_P256_SHA256
    }
}

impl SigningKey for TpmSigner<'_> {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        let out = match self.tpm.try_borrow_mut() {
            Ok(mut tpm) => match self.signing {
                Signing::Digest => tpm.sign_digest(self.key, &Sha256::digest(msg)),
                Signing::Message => tpm.sign_message(self.key, msg),
            }
            .and_then(|rs| ecdsa_p256_der(&rs)),
            Err(_) => Err(DeviceError::Csr("the TPM is busy".into())),
        };
        out.map_err(|e| {
            if let Ok(mut slot) = self.error.try_borrow_mut() {
                *slot = Some(e);
            }
            rcgen::Error::RemoteKeyError
        })
    }
}

/// ECDSA P-256 r||s (32 bytes each, as [`Tpm::sign_message`] returns it) as the DER
/// `ECDSA-Sig-Value` X.509 and TLS want.
pub fn ecdsa_p256_der(rs: &[u8]) -> Result<Vec<u8>, DeviceError> {
    let sig = p256::ecdsa::Signature::from_slice(rs)
        .map_err(|e| DeviceError::Csr(format!("the TPM's ECDSA signature is not valid: {e}")))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// The uncompressed P-256 point of an ECC public area.
fn p256_point(public: &Public) -> Result<Vec<u8>, DeviceError> {
    let Public::Ecc {
        parameters, unique, ..
    } = public
    else {
        return Err(DeviceError::Csr("the key is not an ECC key".into()));
    };
    if parameters.ecc_curve() != EccCurve::NistP256 {
        return Err(DeviceError::Csr("the key is not on P-256".into()));
    }
    let (Some(x), Some(y)) = (pad(unique.x().value(), 32), pad(unique.y().value(), 32)) else {
        return Err(DeviceError::Csr("the key's point is malformed".into()));
    };
    Ok([&[0x04u8][..], &x, &y].concat())
}

/// A DER PKCS#10 CSR with subject `CN=subject_cn` for the TPM-resident P-256 `key` (a
/// DevID), self-signed by the key inside the TPM (ECDSA with SHA-256).
pub fn devid_csr(tpm: &mut Tpm, key: &LoadedKey, subject_cn: &str) -> Result<Vec<u8>, DeviceError> {
    csr(tpm, key, subject_cn, Signing::Digest)
}

/// [`devid_csr`] for a key that may be restricted (the agent SVID key): the TPM hashes the
/// request itself and signs with the ticket ([`Tpm::sign_message`]).
pub fn tpm_key_csr(
    tpm: &mut Tpm,
    key: &LoadedKey,
    subject_cn: &str,
) -> Result<Vec<u8>, DeviceError> {
    csr(tpm, key, subject_cn, Signing::Message)
}

fn csr(
    tpm: &mut Tpm,
    key: &LoadedKey,
    subject_cn: &str,
    signing: Signing,
) -> Result<Vec<u8>, DeviceError> {
    if subject_cn.is_empty() || subject_cn.len() > MAX_CN {
        return Err(DeviceError::Csr(format!(
            "the subject common name must be 1 to {MAX_CN} bytes, not {}",
            subject_cn.len()
        )));
    }
    let point = p256_point(&parse_tpm2b_public(&key.public)?)?;
    let mut params = CertificateParams::new(Vec::<String>::new())
        .map_err(|e| DeviceError::Csr(e.to_string()))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, subject_cn);
    params.distinguished_name = dn;
    let signer = TpmSigner {
        tpm: RefCell::new(tpm),
        key,
        signing,
        point,
        error: RefCell::new(None),
    };
    match params.serialize_request(&signer) {
        Ok(csr) => Ok(csr.der().to_vec()),
        Err(e) => Err(signer
            .error
            .into_inner()
            .unwrap_or_else(|| DeviceError::Csr(e.to_string()))),
    }
}
