//! Software TPM2_MakeCredential (TPM 2.0 Part 1 §24 "Credential Protection"; Part 3 §12.6).
//!
//! The server makes a credential for the AK's Name, protected to the EK; only a TPM that
//! holds the EK private key *and* has an object with that Name loaded can recover it with
//! TPM2_ActivateCredential, which proves the AK and the EK share one TPM.
//!
//! 1. A seed, shared with the EK: RSA EK: a random nameAlg-sized seed, RSA-OAEP encrypted
//!    (OAEP hash = EK nameAlg, label "IDENTITY\0"). ECC EK: ECDH between an ephemeral key
//!    and the EK on the EK's curve, Z = x of the shared point, seed = KDFe(nameAlg, Z,
//!    "IDENTITY", ephemeral x, EK x, nameAlg bits); the ephemeral point is the secret.
//! 2. symKey = KDFa(nameAlg, seed, "STORAGE", Name, "", EK symmetric keyBits);
//!    encIdentity = AES-CFB(symKey, IV 0, TPM2B_DIGEST(credential)).
//! 3. HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", nameAlg bits);
//!    outerHMAC = HMAC(HMACkey, encIdentity || Name).

use aes::{Aes128, Aes192, Aes256};
use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
use cfb_mode::Encryptor;
use p256::elliptic_curve::ecdh::EphemeralSecret;
use p256::elliptic_curve::sec1::{FromEncodedPoint, ModulusSize, ToEncodedPoint};
use p256::elliptic_curve::{AffinePoint, CurveArithmetic, FieldBytesSize};
use rand::rngs::{OsRng, StdRng};
use rand::{CryptoRng, RngCore, SeedableRng};
use rsa::Oaep;
use zeroize::Zeroizing;

use super::eventlog::HashAlg;
use super::tpm2::{uncomputable, EccCurve, PublicKey, SymAlgorithm, SymMode, TpmError, TpmPublic};

/// Label of the seed (OAEP label and KDFe "Use"), NUL included as the TPM hashes it.
const IDENTITY: &[u8] = b"IDENTITY\0";
const STORAGE: &[u8] = b"STORAGE\0";
const INTEGRITY: &[u8] = b"INTEGRITY\0";
const PURPOSE: &str = "MakeCredential";

/// What TPM2_ActivateCredential takes, as the contents of the two TPM2Bs (no outer size):
/// `tss_esapi::structures::IdObject::try_from(id_object)` and
/// `EncryptedSecret::try_from(encrypted_secret)`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MadeCredential {
    /// TPMS_ID_OBJECT: TPM2B_DIGEST integrityHMAC || encIdentity.
    pub id_object: Vec<u8>,
    /// The secret that carries the seed: the RSA-OAEP ciphertext, or the marshalled
    /// TPMS_ECC_POINT of the ephemeral key.
    pub encrypted_secret: Vec<u8>,
}

/// Makes `credential` (1 to nameAlg-digest-size bytes) recoverable only by the TPM that
/// holds `ek` and has an object named `object_name` (the AK's Name) loaded.
pub fn make_credential(
    ek: &TpmPublic,
    object_name: &[u8],
    credential: &[u8],
) -> Result<MadeCredential, TpmError> {
    // A CSPRNG seeded once from the OS: `OsRng` itself would panic inside the RSA and ECC
    // code if the OS failed to give randomness; seeding reports that as an error instead.
    let mut rng = StdRng::from_rng(OsRng).map_err(|e| TpmError::Crypto {
        operation: "seeding the random generator from the OS",
        reason: e.to_string(),
    })?;
    make_credential_with_rng(ek, object_name, credential, &mut rng)
}

/// [`make_credential`] with a caller's random generator (deterministic tests).
pub(crate) fn make_credential_with_rng<R: CryptoRng + RngCore>(
    ek: &TpmPublic,
    object_name: &[u8],
    credential: &[u8],
    rng: &mut R,
) -> Result<MadeCredential, TpmError> {
    let attrs = ek.object_attributes;
    if !(attrs.restricted() && attrs.decrypt()) {
        return Err(unsuitable(format!(
            "attributes {attrs} are not those of a restricted decryption key (an EK)"
        )));
    }
    let key_bits = match ek.symmetric {
        Some(s) if s.algorithm == SymAlgorithm::Aes && s.mode == Some(SymMode::Cfb) => s.key_bits,
        other => {
            return Err(TpmError::Unsupported {
                structure: "TPMT_SYM_DEF_OBJECT",
                field: "symmetric",
                reason: format!("{other:?} (credential protection here needs AES in CFB mode)"),
            })
        }
    };
    check_name(object_name)?;
    let hash = ek.name_alg;
    let hash_size = hash.digest_len()?;
    if credential.is_empty() || credential.len() > hash_size {
        return Err(TpmError::Invalid {
            structure: "TPM2B_DIGEST",
            field: "credential",
            offset: 0,
            reason: format!(
                "{} bytes; it must be 1 to {} (the EK's {hash} digest size)",
                credential.len(),
                hash_size
            ),
        });
    }
    let (seed, encrypted_secret) = match &ek.key {
        PublicKey::Rsa { modulus, exponent } => rsa_seed(hash, modulus, *exponent, rng)?,
        PublicKey::Ecc { curve, x, .. } => {
            let point = ek
                .key
                .ecc_point_uncompressed()
                .ok_or_else(|| unsuitable("EK coordinate longer than the field".into()))?;
            match curve {
                EccCurve::NistP256 => ecc_seed::<p256::NistP256, R>(hash, &point, x, rng)?,
                EccCurve::NistP384 => ecc_seed::<p384::NistP384, R>(hash, &point, x, rng)?,
            }
        }
    };
    let id_object = protect(hash, key_bits, &seed, object_name, credential)?;
    Ok(MadeCredential {
        id_object,
        encrypted_secret,
    })
}

/// A Name for MakeCredential: nameAlg, then a digest of that algorithm's size.
fn check_name(name: &[u8]) -> Result<(), TpmError> {
    let bad = |reason: String| TpmError::Invalid {
        structure: "TPM2B_NAME",
        field: "name",
        offset: 0,
        reason,
    };
    let (alg, digest) = match name {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), rest),
        _ => return Err(bad(format!("{} bytes is too short for a Name", name.len()))),
    };
    let hash = HashAlg::computable_from_id(alg)
        .ok_or_else(|| bad(format!("starts with {alg:#06x}, not a hash algorithm")))?;
    let size = hash.digest_len()?;
    if digest.len() != size {
        return Err(bad(format!(
            "a {hash} Name has {size} digest bytes, this one {}",
            digest.len()
        )));
    }
    Ok(())
}

type Seed = (Zeroizing<Vec<u8>>, Vec<u8>);

fn rsa_seed<R: CryptoRng + RngCore>(
    hash: HashAlg,
    modulus: &[u8],
    exponent: u32,
    rng: &mut R,
) -> Result<Seed, TpmError> {
    let key = rsa::RsaPublicKey::new(
        rsa::BigUint::from_bytes_be(modulus),
        rsa::BigUint::from(exponent),
    )
    .map_err(|e| unsuitable(format!("RSA public key: {e}")))?;
    let mut seed = Zeroizing::new(vec![0u8; hash.digest_len()?]);
    rng.fill_bytes(&mut seed);
    // The label is hashed with its NUL, as the TPM does (Part 1 §B.10.3).
    let label = String::from_utf8_lossy(IDENTITY).into_owned();
    let padding = match hash {
        HashAlg::Sha1 => Oaep::new_with_label::<sha1::Sha1, _>(label),
        HashAlg::Sha256 => Oaep::new_with_label::<sha2::Sha256, _>(label),
        HashAlg::Sha384 => Oaep::new_with_label::<sha2::Sha384, _>(label),
        HashAlg::Sha512 => Oaep::new_with_label::<sha2::Sha512, _>(label),
        HashAlg::Sm3_256 => Oaep::new_with_label::<sm3::Sm3, _>(label),
        HashAlg::Unknown(_) => return Err(uncomputable(hash)),
    };
    let secret = key
        .encrypt(rng, padding, &seed)
        .map_err(|e| TpmError::Crypto {
            operation: "RSA-OAEP encryption of the seed",
            reason: e.to_string(),
        })?;
    Ok((seed, secret))
}

fn ecc_seed<C, R>(
    hash: HashAlg,
    ek_point: &[u8],
    ek_x: &[u8],
    rng: &mut R,
) -> Result<Seed, TpmError>
where
    C: CurveArithmetic,
    AffinePoint<C>: FromEncodedPoint<C> + ToEncodedPoint<C>,
    FieldBytesSize<C>: ModulusSize,
    R: CryptoRng + RngCore,
{
    let ek = p256::elliptic_curve::PublicKey::<C>::from_sec1_bytes(ek_point)
        .map_err(|_| unsuitable("the EK's point is not on its curve".into()))?;
    let ephemeral = EphemeralSecret::<C>::random(rng);
    let q = ephemeral.public_key().to_encoded_point(false);
    let (Some(qx), Some(qy)) = (q.x(), q.y()) else {
        return Err(TpmError::Crypto {
            operation: "ECDH",
            reason: "ephemeral point has no coordinates".into(),
        });
    };
    let shared = ephemeral.diffie_hellman(&ek);
    // Z is the shared point's x coordinate, field-sized; PartyVInfo is the EK's x exactly
    // as in its public area, since that is what the TPM hashes.
    let z = Zeroizing::new(shared.raw_secret_bytes().to_vec());
    let seed = kdfe(hash, &z, IDENTITY, qx, ek_x, hash.digest_len()?)?;
    let mut secret = Vec::with_capacity(4 + qx.len() + qy.len());
    for c in [&qx[..], &qy[..]] {
        super::tpm2::put_tpm2b(&mut secret, "TPMS_ECC_POINT", c)?;
    }
    Ok((seed, secret))
}

fn protect(
    hash: HashAlg,
    key_bits: u16,
    seed: &[u8],
    name: &[u8],
    credential: &[u8],
) -> Result<Vec<u8>, TpmError> {
    let sym_key = kdfa(hash, seed, STORAGE, name, &[], usize::from(key_bits / 8))?;
    let mut enc_identity = Vec::with_capacity(2 + credential.len());
    super::tpm2::put_tpm2b(&mut enc_identity, "TPM2B_DIGEST", credential)?;
    aes_cfb_encrypt(&sym_key, &mut enc_identity)?;
    let hmac_key = kdfa(hash, seed, INTEGRITY, &[], &[], hash.digest_len()?)?;
    let outer_hmac = hash.hmac(&hmac_key, &[&enc_identity, name])?;
    let mut id_object = Vec::with_capacity(2 + outer_hmac.len() + enc_identity.len());
    super::tpm2::put_tpm2b(&mut id_object, "TPMS_ID_OBJECT", &outer_hmac)?;
    id_object.extend_from_slice(&enc_identity);
    Ok(id_object)
}

/// AES in CFB mode with a zero IV, the key size choosing the cipher.
pub(crate) fn aes_cfb_encrypt(key: &[u8], buf: &mut [u8]) -> Result<(), TpmError> {
    let iv = [0u8; 16];
    let err = |e: cfb_mode::cipher::InvalidLength| TpmError::Crypto {
        operation: "AES-CFB key setup",
        reason: e.to_string(),
    };
    match key.len() {
        16 => Encryptor::<Aes128>::new_from_slices(key, &iv)
            .map_err(err)?
            .encrypt(buf),
        24 => Encryptor::<Aes192>::new_from_slices(key, &iv)
            .map_err(err)?
            .encrypt(buf),
        32 => Encryptor::<Aes256>::new_from_slices(key, &iv)
            .map_err(err)?
            .encrypt(buf),
        n => {
            return Err(TpmError::Crypto {
                operation: "AES-CFB key setup",
                reason: format!("{n}-byte key"),
            })
        }
    }
    Ok(())
}

/// KDFa (Part 1 §11.4.10.2, SP 800-108 counter mode with HMAC):
/// HMAC(key, i || label || 00 || contextU || contextV || bits) for i = 1, 2, …, cut to
/// `bytes`. `label` ends with its NUL.
pub(crate) fn kdfa(
    hash: HashAlg,
    key: &[u8],
    label: &[u8],
    context_u: &[u8],
    context_v: &[u8],
    bytes: usize,
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    let bits = u32::try_from(bytes.saturating_mul(8)).map_err(|_| too_long("KDFa"))?;
    counter_kdf(bytes, |counter| {
        hash.hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                context_u,
                context_v,
                &bits.to_be_bytes(),
            ],
        )
    })
}

/// KDFe (Part 1 §11.4.10.3, SP 800-56A concatenation KDF):
/// H(i || Z || label || partyUInfo || partyVInfo) for i = 1, 2, …, cut to `bytes`.
/// `label` ends with its NUL.
pub(crate) fn kdfe(
    hash: HashAlg,
    z: &[u8],
    label: &[u8],
    party_u: &[u8],
    party_v: &[u8],
    bytes: usize,
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    counter_kdf(bytes, |counter| {
        hash.digest_parts(&[&counter.to_be_bytes(), z, label, party_u, party_v])
    })
}

/// Concatenates `block(1)`, `block(2)`, … until `bytes` are produced.
fn counter_kdf(
    bytes: usize,
    mut block: impl FnMut(u32) -> Result<Vec<u8>, TpmError>,
) -> Result<Zeroizing<Vec<u8>>, TpmError> {
    // Key material here is at most a few hundred bytes; the cap keeps the counter small.
    if bytes > 4096 {
        return Err(too_long("KDF"));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(bytes));
    let mut counter = 0u32;
    while out.len() < bytes {
        counter = counter.saturating_add(1);
        let b = Zeroizing::new(block(counter)?);
        if b.is_empty() {
            return Err(too_long("KDF"));
        }
        out.extend_from_slice(&b);
    }
    out.truncate(bytes);
    Ok(out)
}

fn too_long(op: &'static str) -> TpmError {
    TpmError::Crypto {
        operation: op,
        reason: "requested output too long".into(),
    }
}

fn unsuitable(reason: String) -> TpmError {
    TpmError::KeyUnsuitable {
        purpose: PURPOSE,
        reason,
    }
}

#[cfg(test)]
mod tests;
