//! The parameter structures inside a TPMT_PUBLIC: object attributes, symmetric definition,
//! asymmetric and KDF schemes, ECC curves.

use std::fmt;

use super::alg::{alg_name, id};
use super::error::TpmError;
use super::marshal::{invalid, put_u16, unsupported, Reader};
use crate::verify::eventlog::HashAlg;

/// TPMA_OBJECT: the attributes of a TPM object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectAttributes(pub u32);

/// Bits Part 2 defines (Table 31); the TPM refuses objects with any other bit set.
const DEFINED_BITS: u32 = 0x000F_0CF6;

impl ObjectAttributes {
    const FLAGS: [(u32, &'static str); 12] = [
        (1 << 1, "fixedtpm"),
        (1 << 2, "stclear"),
        (1 << 4, "fixedparent"),
        (1 << 5, "sensitivedataorigin"),
        (1 << 6, "userwithauth"),
        (1 << 7, "adminwithpolicy"),
        (1 << 10, "noda"),
        (1 << 11, "encryptedduplication"),
        (1 << 16, "restricted"),
        (1 << 17, "decrypt"),
        (1 << 18, "sign"),
        (1 << 19, "x509sign"),
    ];

    fn bit(self, n: u32) -> bool {
        self.0 & (1 << n) != 0
    }

    /// What a TPM-bound restricted signing key (an AK, the agent's SVID key) lacks: the
    /// names of the unmet conditions among fixedTPM, fixedParent, sensitiveDataOrigin,
    /// restricted and sign set, decrypt clear. Empty when it has them all.
    pub fn missing_for_restricted_signing(self) -> Vec<&'static str> {
        [
            (self.fixed_tpm(), "fixedTPM"),
            (self.fixed_parent(), "fixedParent"),
            (self.sensitive_data_origin(), "sensitiveDataOrigin"),
            (self.restricted(), "restricted"),
            (self.sign_encrypt(), "sign"),
            (!self.decrypt(), "decrypt clear"),
        ]
        .into_iter()
        .filter(|(ok, _)| !ok)
        .map(|(_, name)| name)
        .collect()
    }
    /// The raw UINT32.
    pub fn bits(self) -> u32 {
        self.0
    }
    /// fixedTPM: the key cannot leave this TPM.
    pub fn fixed_tpm(self) -> bool {
        self.bit(1)
    }
    /// stClear: the object cannot be context-loaded after a TPM Restart.
    pub fn st_clear(self) -> bool {
        self.bit(2)
    }
    /// fixedParent: the key cannot be duplicated to another parent.
    pub fn fixed_parent(self) -> bool {
        self.bit(4)
    }
    /// sensitiveDataOrigin: the TPM generated the private key.
    pub fn sensitive_data_origin(self) -> bool {
        self.bit(5)
    }
    /// userWithAuth: USER role actions accept the authValue (not only a policy).
    pub fn user_with_auth(self) -> bool {
        self.bit(6)
    }
    /// adminWithPolicy: ADMIN role actions need a policy session.
    pub fn admin_with_policy(self) -> bool {
        self.bit(7)
    }
    /// Bit 7 under the name the ironroot brief used; the specification calls it
    /// adminWithPolicy (see [`Self::admin_with_policy`]).
    pub fn admin_with_identity(self) -> bool {
        self.admin_with_policy()
    }
    /// noDA: not subject to dictionary-attack protection.
    pub fn no_da(self) -> bool {
        self.bit(10)
    }
    /// encryptedDuplication.
    pub fn encrypted_duplication(self) -> bool {
        self.bit(11)
    }
    /// restricted: signs only TPM-generated digests / decrypts only TPM-formatted data.
    pub fn restricted(self) -> bool {
        self.bit(16)
    }
    /// decrypt: a decryption (or storage) key.
    pub fn decrypt(self) -> bool {
        self.bit(17)
    }
    /// sign (sign_encrypt): a signing key.
    pub fn sign_encrypt(self) -> bool {
        self.bit(18)
    }
    /// x509sign.
    pub fn x509_sign(self) -> bool {
        self.bit(19)
    }
}

/// `fixedtpm|fixedparent|…` as tpm2-tools prints them.
impl fmt::Display for ObjectAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Self::FLAGS
            .iter()
            .filter(|(m, _)| self.0 & m != 0)
            .map(|(_, n)| *n)
            .collect();
        write!(f, "{} ({:#010x})", names.join("|"), self.0)
    }
}

pub(crate) fn read_attributes(
    r: &mut Reader<'_>,
    s: &'static str,
) -> Result<ObjectAttributes, TpmError> {
    let at = r.offset();
    let v = r.u32(s, "objectAttributes")?;
    if v & !DEFINED_BITS != 0 {
        return Err(invalid(
            s,
            "objectAttributes",
            at,
            format!("reserved bits {:#010x} are set", v & !DEFINED_BITS),
        ));
    }
    Ok(ObjectAttributes(v))
}

/// A TPMI_ALG_HASH field (no NULL).
pub(crate) fn read_hash(
    r: &mut Reader<'_>,
    s: &'static str,
    f: &'static str,
) -> Result<HashAlg, TpmError> {
    let at = r.offset();
    let v = r.u16(s, f)?;
    if v == id::NULL {
        return Err(invalid(s, f, at, "TPM_ALG_NULL is not allowed here"));
    }
    HashAlg::computable_from_id(v).ok_or_else(|| {
        unsupported(
            s,
            f,
            format!(
                "hash {} (supported: sha1, sha256, sha384, sha512, sm3_256)",
                alg_name(v)
            ),
        )
    })
}

/// Block cipher of a TPMT_SYM_DEF_OBJECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymAlgorithm {
    /// TPM_ALG_AES.
    Aes,
    /// TPM_ALG_SM4.
    Sm4,
    /// TPM_ALG_CAMELLIA.
    Camellia,
}

/// Block cipher mode (TPMI_ALG_SYM_MODE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SymMode {
    /// TPM_ALG_CTR.
    Ctr,
    /// TPM_ALG_OFB.
    Ofb,
    /// TPM_ALG_CBC.
    Cbc,
    /// TPM_ALG_CFB: what storage keys (and so credential protection) use.
    Cfb,
    /// TPM_ALG_ECB.
    Ecb,
}

/// TPMT_SYM_DEF_OBJECT when not NULL: the symmetric key a storage key (an EK) protects its
/// children and credentials with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SymmetricDef {
    /// The cipher.
    pub algorithm: SymAlgorithm,
    /// Key size in bits (128, 192, 256).
    pub key_bits: u16,
    /// The mode; `None` for TPM_ALG_NULL.
    pub mode: Option<SymMode>,
}

pub(crate) fn read_symmetric(
    r: &mut Reader<'_>,
    s: &'static str,
) -> Result<Option<SymmetricDef>, TpmError> {
    let at = r.offset();
    let algorithm = match r.u16(s, "symmetric.algorithm")? {
        id::NULL => return Ok(None),
        id::AES => SymAlgorithm::Aes,
        id::SM4 => SymAlgorithm::Sm4,
        id::CAMELLIA => SymAlgorithm::Camellia,
        other => {
            return Err(invalid(
                s,
                "symmetric.algorithm",
                at,
                format!("{} is not a TPMI_ALG_SYM_OBJECT", alg_name(other)),
            ))
        }
    };
    let at = r.offset();
    let key_bits = r.u16(s, "symmetric.keyBits")?;
    if !matches!(key_bits, 128 | 192 | 256) {
        return Err(invalid(
            s,
            "symmetric.keyBits",
            at,
            format!("{key_bits} bits"),
        ));
    }
    let at = r.offset();
    let mode = match r.u16(s, "symmetric.mode")? {
        id::NULL => None,
        id::CTR => Some(SymMode::Ctr),
        id::OFB => Some(SymMode::Ofb),
        id::CBC => Some(SymMode::Cbc),
        id::CFB => Some(SymMode::Cfb),
        id::ECB => Some(SymMode::Ecb),
        other => {
            return Err(invalid(
                s,
                "symmetric.mode",
                at,
                format!("{} is not a block cipher mode", alg_name(other)),
            ))
        }
    };
    Ok(Some(SymmetricDef {
        algorithm,
        key_bits,
        mode,
    }))
}

pub(crate) fn put_symmetric(out: &mut Vec<u8>, sym: Option<&SymmetricDef>) {
    let Some(sym) = sym else {
        return put_u16(out, id::NULL);
    };
    put_u16(
        out,
        match sym.algorithm {
            SymAlgorithm::Aes => id::AES,
            SymAlgorithm::Sm4 => id::SM4,
            SymAlgorithm::Camellia => id::CAMELLIA,
        },
    );
    put_u16(out, sym.key_bits);
    put_u16(
        out,
        match sym.mode {
            None => id::NULL,
            Some(SymMode::Ctr) => id::CTR,
            Some(SymMode::Ofb) => id::OFB,
            Some(SymMode::Cbc) => id::CBC,
            Some(SymMode::Cfb) => id::CFB,
            Some(SymMode::Ecb) => id::ECB,
        },
    );
}

/// The scheme of an RSA (TPMT_RSA_SCHEME) or ECC (TPMT_ECC_SCHEME) key, when not NULL.
/// A key with a scheme signs (or decrypts) only with that scheme and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyScheme {
    /// RSASSA-PKCS1-v1_5.
    RsaSsa(HashAlg),
    /// RSASSA-PSS.
    RsaPss(HashAlg),
    /// RSAES-PKCS1-v1_5.
    RsaEs,
    /// RSAES-OAEP.
    Oaep(HashAlg),
    /// ECDSA.
    Ecdsa(HashAlg),
    /// ECDH.
    Ecdh(HashAlg),
    /// ECDAA with its commit count.
    EcDaa {
        /// Hash.
        hash: HashAlg,
        /// count.
        count: u16,
    },
    /// SM2.
    Sm2(HashAlg),
    /// EC-Schnorr.
    EcSchnorr(HashAlg),
    /// ECMQV.
    EcMqv(HashAlg),
}

impl KeyScheme {
    /// The TPM_ALG_ID of the scheme.
    pub fn id(self) -> u16 {
        match self {
            Self::RsaSsa(_) => id::RSASSA,
            Self::RsaPss(_) => id::RSAPSS,
            Self::RsaEs => id::RSAES,
            Self::Oaep(_) => id::OAEP,
            Self::Ecdsa(_) => id::ECDSA,
            Self::Ecdh(_) => id::ECDH,
            Self::EcDaa { .. } => id::ECDAA,
            Self::Sm2(_) => id::SM2,
            Self::EcSchnorr(_) => id::ECSCHNORR,
            Self::EcMqv(_) => id::ECMQV,
        }
    }

    /// The scheme's hash (none for RSAES).
    pub fn hash(self) -> Option<HashAlg> {
        match self {
            Self::RsaEs => None,
            Self::RsaSsa(h)
            | Self::RsaPss(h)
            | Self::Oaep(h)
            | Self::Ecdsa(h)
            | Self::Ecdh(h)
            | Self::EcDaa { hash: h, .. }
            | Self::Sm2(h)
            | Self::EcSchnorr(h)
            | Self::EcMqv(h) => Some(h),
        }
    }
}

/// Reads a TPMT_RSA_SCHEME (`rsa`) or TPMT_ECC_SCHEME.
pub(crate) fn read_scheme(
    r: &mut Reader<'_>,
    s: &'static str,
    rsa: bool,
) -> Result<Option<KeyScheme>, TpmError> {
    let at = r.offset();
    let scheme_id = r.u16(s, "scheme.scheme")?;
    if scheme_id == id::NULL {
        return Ok(None);
    }
    let for_rsa = matches!(scheme_id, id::RSASSA | id::RSAPSS | id::RSAES | id::OAEP);
    let for_ecc = matches!(
        scheme_id,
        id::ECDSA | id::ECDH | id::ECDAA | id::SM2 | id::ECSCHNORR | id::ECMQV
    );
    // Checked before the details are read, so the error names the scheme, not the bytes
    // that follow it.
    if !(for_rsa && rsa || for_ecc && !rsa) {
        let kind = if rsa { "an RSA" } else { "an ECC" };
        return Err(invalid(
            s,
            "scheme.scheme",
            at,
            format!("{} is not a scheme for {kind} key", alg_name(scheme_id)),
        ));
    }
    let f = "scheme.details.hashAlg";
    let scheme = match scheme_id {
        id::RSAES => KeyScheme::RsaEs,
        id::ECDAA => KeyScheme::EcDaa {
            hash: read_hash(r, s, f)?,
            count: r.u16(s, "scheme.details.count")?,
        },
        other => {
            let h = read_hash(r, s, f)?;
            match other {
                id::RSASSA => KeyScheme::RsaSsa(h),
                id::RSAPSS => KeyScheme::RsaPss(h),
                id::OAEP => KeyScheme::Oaep(h),
                id::ECDSA => KeyScheme::Ecdsa(h),
                id::ECDH => KeyScheme::Ecdh(h),
                id::SM2 => KeyScheme::Sm2(h),
                id::ECSCHNORR => KeyScheme::EcSchnorr(h),
                _ => KeyScheme::EcMqv(h),
            }
        }
    };
    Ok(Some(scheme))
}

pub(crate) fn put_scheme(out: &mut Vec<u8>, scheme: Option<&KeyScheme>) {
    let Some(scheme) = scheme else {
        return put_u16(out, id::NULL);
    };
    put_u16(out, scheme.id());
    if let Some(h) = scheme.hash() {
        put_u16(out, h.id());
    }
    if let KeyScheme::EcDaa { count, .. } = scheme {
        put_u16(out, *count);
    }
}

/// TPMT_KDF_SCHEME of an ECC key, when not NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct KdfScheme {
    /// TPM_ALG_ID of the KDF (MGF1, KDF1_SP800_56A, KDF2, KDF1_SP800_108).
    pub kdf: u16,
    /// Its hash.
    pub hash: HashAlg,
}

pub(crate) fn read_kdf(r: &mut Reader<'_>, s: &'static str) -> Result<Option<KdfScheme>, TpmError> {
    let at = r.offset();
    match r.u16(s, "kdf.scheme")? {
        id::NULL => Ok(None),
        kdf @ (id::MGF1 | id::KDF1_SP800_56A | id::KDF2 | id::KDF1_SP800_108) => {
            Ok(Some(KdfScheme {
                kdf,
                hash: read_hash(r, s, "kdf.details.hashAlg")?,
            }))
        }
        other => Err(invalid(
            s,
            "kdf.scheme",
            at,
            format!("{} is not a key derivation function", alg_name(other)),
        )),
    }
}

pub(crate) fn put_kdf(out: &mut Vec<u8>, kdf: Option<&KdfScheme>) {
    match kdf {
        None => put_u16(out, id::NULL),
        Some(k) => {
            put_u16(out, k.kdf);
            put_u16(out, k.hash.id());
        }
    }
}

/// The ECC curves this crate handles (TPM_ECC_CURVE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EccCurve {
    /// TPM_ECC_NIST_P256 (0x0003).
    NistP256,
    /// TPM_ECC_NIST_P384 (0x0004).
    NistP384,
}

impl EccCurve {
    /// The TPM_ECC_CURVE value.
    pub fn id(self) -> u16 {
        match self {
            Self::NistP256 => 0x0003,
            Self::NistP384 => 0x0004,
        }
    }

    /// The curve for a TPM_ECC_CURVE value.
    pub fn from_id(v: u16) -> Option<Self> {
        match v {
            0x0003 => Some(Self::NistP256),
            0x0004 => Some(Self::NistP384),
            _ => None,
        }
    }

    /// Size of a coordinate (and of a scalar) in bytes.
    pub fn field_size(self) -> usize {
        match self {
            Self::NistP256 => 32,
            Self::NistP384 => 48,
        }
    }
}

impl fmt::Display for EccCurve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NistP256 => "NIST P-256",
            Self::NistP384 => "NIST P-384",
        })
    }
}

pub(crate) fn read_curve(r: &mut Reader<'_>, s: &'static str) -> Result<EccCurve, TpmError> {
    let v = r.u16(s, "curveID")?;
    EccCurve::from_id(v).ok_or_else(|| {
        unsupported(
            s,
            "curveID",
            format!("ECC curve {v:#06x} (supported: NIST P-256 0x0003, NIST P-384 0x0004)"),
        )
    })
}
