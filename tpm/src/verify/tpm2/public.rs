//! TPMT_PUBLIC / TPM2B_PUBLIC: the public area of an RSA or ECC key, and its Name.

use super::alg::{alg_name, id};
use super::error::TpmError;
use super::marshal::{invalid, put_tpm2b, put_u16, put_u32, unsupported, Reader};
use super::params::{
    put_kdf, put_scheme, put_symmetric, read_attributes, read_curve, read_hash, read_kdf,
    read_scheme, read_symmetric, EccCurve, KdfScheme, KeyScheme, ObjectAttributes, SymmetricDef,
};
use crate::verify::eventlog::HashAlg;

const S: &str = "TPMT_PUBLIC";
/// Larger than any TPMT_PUBLIC of a supported key (an RSA-4096 key with every optional
/// field is about 600 bytes): a cap on hostile input.
pub const MAX_TPMT_PUBLIC_SIZE: usize = 2048;
/// TPM2B_DIGEST buffer size (a SHA-512 digest).
const MAX_DIGEST: usize = 64;
/// TPM2B_PUBLIC_KEY_RSA buffer size (RSA-4096).
const MAX_RSA_BYTES: usize = 512;
/// The exponent a TPM means by 0 (2^16 + 1).
pub const DEFAULT_RSA_EXPONENT: u32 = 65537;

/// The public key of a TPM object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PublicKey {
    /// RSA: modulus (big-endian, keyBits/8 bytes) and exponent (a TPM's 0 is given as
    /// 65537, the value it stands for).
    Rsa {
        /// Modulus, big-endian.
        modulus: Vec<u8>,
        /// Public exponent.
        exponent: u32,
    },
    /// ECC: a point on `curve`; coordinates big-endian as the TPM gave them (at most the
    /// field size, normally exactly it).
    Ecc {
        /// The curve.
        curve: EccCurve,
        /// x coordinate.
        x: Vec<u8>,
        /// y coordinate.
        y: Vec<u8>,
    },
}

/// A TPM object's public area (TPMT_PUBLIC) for an RSA or ECC key.
///
/// The fields are a decoded view. [`TpmPublic::name`] and [`TpmPublic::tpmt_bytes`] always
/// use the bytes as received (what the TPM hashed into the Name), so changing a field does
/// not change them: build a new value with [`TpmPublic::from_parts`] instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TpmPublic {
    /// nameAlg: the hash of the Name (and of the key's policy).
    pub name_alg: HashAlg,
    /// objectAttributes.
    pub object_attributes: ObjectAttributes,
    /// authPolicy (empty, or a nameAlg digest).
    pub auth_policy: Vec<u8>,
    /// parameters.symmetric (`None` for TPM_ALG_NULL).
    pub symmetric: Option<SymmetricDef>,
    /// parameters.scheme (`None` for TPM_ALG_NULL).
    pub scheme: Option<KeyScheme>,
    /// parameters.kdf of an ECC key (`None` for TPM_ALG_NULL and for RSA).
    pub kdf: Option<KdfScheme>,
    /// unique, with the key size and curve from the parameters.
    pub key: PublicKey,
    raw: Vec<u8>,
    /// The Name of `raw`, computed once at parse (nameAlg is then known to be computable).
    name: Vec<u8>,
}

/// What [`TpmPublic::from_parts`] marshals: every field of [`TpmPublic`] but the bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicParts {
    /// nameAlg.
    pub name_alg: HashAlg,
    /// objectAttributes.
    pub object_attributes: ObjectAttributes,
    /// authPolicy.
    pub auth_policy: Vec<u8>,
    /// parameters.symmetric.
    pub symmetric: Option<SymmetricDef>,
    /// parameters.scheme.
    pub scheme: Option<KeyScheme>,
    /// parameters.kdf (ECC only).
    pub kdf: Option<KdfScheme>,
    /// unique, with key size and curve.
    pub key: PublicKey,
}

impl TpmPublic {
    /// Parses a TPM2B_PUBLIC (UINT16 size, then a TPMT_PUBLIC of exactly that size), as
    /// `tpm2_createek -u` / `tpm2_createak -u` write and TPM2_ReadPublic returns.
    pub fn from_tpm2b(bytes: &[u8]) -> Result<Self, TpmError> {
        let mut r = Reader::new(bytes);
        let at = r.offset();
        let size = usize::from(r.u16("TPM2B_PUBLIC", "size")?);
        if size > MAX_TPMT_PUBLIC_SIZE {
            return Err(invalid(
                "TPM2B_PUBLIC",
                "size",
                at,
                format!(
                    "{size} bytes is larger than any supported public area \
                     ({MAX_TPMT_PUBLIC_SIZE})"
                ),
            ));
        }
        let mut inner = r.sub("TPM2B_PUBLIC", "publicArea", size)?;
        r.finish("TPM2B_PUBLIC")?;
        let raw = bytes.get(2..).unwrap_or_default();
        Self::parse(&mut inner, raw)
    }

    /// Parses a TPMT_PUBLIC that fills `bytes` exactly.
    pub fn from_tpmt(bytes: &[u8]) -> Result<Self, TpmError> {
        if bytes.len() > MAX_TPMT_PUBLIC_SIZE {
            return Err(invalid(
                S,
                "(whole)",
                0,
                format!(
                    "{} bytes is larger than any supported public area ({MAX_TPMT_PUBLIC_SIZE})",
                    bytes.len()
                ),
            ));
        }
        Self::parse(&mut Reader::new(bytes), bytes)
    }

    /// Marshals `parts` as a TPMT_PUBLIC (an RSA exponent of 65537 is written as 0, as a
    /// TPM does for the default exponent) and parses it back, so the result is exactly what
    /// a TPM with this public area would name.
    pub fn from_parts(parts: PublicParts) -> Result<Self, TpmError> {
        let mut out = Vec::with_capacity(512);
        let ty = match parts.key {
            PublicKey::Rsa { .. } => id::RSA,
            PublicKey::Ecc { .. } => id::ECC,
        };
        put_u16(&mut out, ty);
        put_u16(&mut out, parts.name_alg.id());
        put_u32(&mut out, parts.object_attributes.bits());
        put_tpm2b(&mut out, S, &parts.auth_policy)?;
        put_symmetric(&mut out, parts.symmetric.as_ref());
        put_scheme(&mut out, parts.scheme.as_ref());
        match &parts.key {
            PublicKey::Rsa { modulus, exponent } => {
                let bits = u16::try_from(modulus.len().saturating_mul(8)).map_err(|_| {
                    invalid(S, "parameters.rsaDetail.keyBits", 0, "modulus too long")
                })?;
                put_u16(&mut out, bits);
                put_u32(
                    &mut out,
                    if *exponent == DEFAULT_RSA_EXPONENT {
                        0
                    } else {
                        *exponent
                    },
                );
                put_tpm2b(&mut out, S, modulus)?;
            }
            PublicKey::Ecc { curve, x, y } => {
                put_u16(&mut out, curve.id());
                put_kdf(&mut out, parts.kdf.as_ref());
                put_tpm2b(&mut out, S, x)?;
                put_tpm2b(&mut out, S, y)?;
            }
        }
        Self::from_tpmt(&out)
    }

    /// The TPMT_PUBLIC bytes as received (what the Name hashes).
    pub fn tpmt_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The TPM2B_PUBLIC bytes (UINT16 size, then [`Self::tpmt_bytes`]).
    pub fn to_tpm2b(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len() + 2);
        // Parsing capped the area at MAX_TPMT_PUBLIC_SIZE, so the size fits a UINT16.
        put_u16(&mut out, u16::try_from(self.raw.len()).unwrap_or(u16::MAX));
        out.extend_from_slice(&self.raw);
        out
    }

    /// The object's Name: nameAlg (UINT16, big-endian) || H_nameAlg(TPMT_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        self.name.clone()
    }

    /// Checks the attributes DESIGN.md requires of an attestation key: fixedTPM,
    /// fixedParent, sensitiveDataOrigin, restricted and sign set, decrypt clear.
    pub fn ensure_attestation_key(&self) -> Result<(), TpmError> {
        let a = self.object_attributes;
        let missing = a.missing_for_restricted_signing();
        if missing.is_empty() {
            return Ok(());
        }
        Err(TpmError::KeyUnsuitable {
            purpose: "attestation",
            reason: format!("attributes {a} lack {}", missing.join(", ")),
        })
    }

    fn parse(r: &mut Reader<'_>, raw: &[u8]) -> Result<Self, TpmError> {
        let type_at = r.offset();
        let ty = r.u16(S, "type")?;
        match ty {
            id::RSA | id::ECC => {}
            id::KEYEDHASH | id::SYMCIPHER => {
                return Err(unsupported(
                    S,
                    "type",
                    format!("{}: only RSA and ECC keys are handled", alg_name(ty)),
                ))
            }
            other => {
                return Err(invalid(
                    S,
                    "type",
                    type_at,
                    format!("{} is not a TPMI_ALG_PUBLIC", alg_name(other)),
                ))
            }
        }
        let name_alg = read_hash(r, S, "nameAlg")?;
        let object_attributes = read_attributes(r, S)?;
        let policy_at = r.offset();
        let auth_policy = r.tpm2b(S, "authPolicy", MAX_DIGEST)?.to_vec();
        let name_size = name_alg.digest_len()?;
        if !auth_policy.is_empty() && auth_policy.len() != name_size {
            // The TPM refuses such an object (TPM_RC_SIZE): a policy is a nameAlg digest.
            return Err(invalid(
                S,
                "authPolicy",
                policy_at,
                format!(
                    "{} bytes, but a {name_alg} policy digest has {}",
                    auth_policy.len(),
                    name_size
                ),
            ));
        }
        let (symmetric, scheme, kdf, key) = if ty == id::RSA {
            let (sym, scheme, key) = parse_rsa(r)?;
            (sym, scheme, None, key)
        } else {
            parse_ecc(r)?
        };
        r.finish(S)?;
        let mut name = name_alg.id().to_be_bytes().to_vec();
        name.extend_from_slice(&name_alg.digest(raw)?);
        Ok(Self {
            name_alg,
            object_attributes,
            auth_policy,
            symmetric,
            scheme,
            kdf,
            key,
            raw: raw.to_vec(),
            name,
        })
    }
}

type RsaParts = (Option<SymmetricDef>, Option<KeyScheme>, PublicKey);

fn parse_rsa(r: &mut Reader<'_>) -> Result<RsaParts, TpmError> {
    const P: &str = "TPMS_RSA_PARMS";
    let symmetric = read_symmetric(r, P)?;
    let scheme = read_scheme(r, P, true)?;
    let bits = r.u16(P, "keyBits")?;
    if !matches!(bits, 1024 | 2048 | 3072 | 4096) {
        return Err(unsupported(
            P,
            "keyBits",
            format!("RSA-{bits} (supported: 1024, 2048, 3072, 4096)"),
        ));
    }
    let exponent = match r.u32(P, "exponent")? {
        0 => DEFAULT_RSA_EXPONENT,
        e => e,
    };
    let at = r.offset();
    let modulus = r.tpm2b(S, "unique.rsa", MAX_RSA_BYTES)?;
    let want = usize::from(bits / 8);
    if modulus.len() != want {
        let why = if modulus.is_empty() {
            "empty: this is a template, not a key".to_string()
        } else {
            format!("{} bytes, but keyBits {bits} needs {want}", modulus.len())
        };
        return Err(invalid(S, "unique.rsa", at, why));
    }
    let key = PublicKey::Rsa {
        modulus: modulus.to_vec(),
        exponent,
    };
    Ok((symmetric, scheme, key))
}

type EccParts = (
    Option<SymmetricDef>,
    Option<KeyScheme>,
    Option<KdfScheme>,
    PublicKey,
);

fn parse_ecc(r: &mut Reader<'_>) -> Result<EccParts, TpmError> {
    const P: &str = "TPMS_ECC_PARMS";
    let symmetric = read_symmetric(r, P)?;
    let scheme = read_scheme(r, P, false)?;
    let curve = read_curve(r, P)?;
    let kdf = read_kdf(r, P)?;
    let mut coord = |field: &'static str| -> Result<Vec<u8>, TpmError> {
        let at = r.offset();
        let v = r.tpm2b(S, field, curve.field_size())?;
        if v.is_empty() {
            return Err(invalid(
                S,
                field,
                at,
                "empty: this is a template, not a key",
            ));
        }
        Ok(v.to_vec())
    };
    let x = coord("unique.ecc.x")?;
    let y = coord("unique.ecc.y")?;
    Ok((symmetric, scheme, kdf, PublicKey::Ecc { curve, x, y }))
}

#[cfg(test)]
mod tests;
