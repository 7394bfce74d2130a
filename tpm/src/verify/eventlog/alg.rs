//! Hash algorithms (of PCR banks and of TPM structures), fixed-size digests, hashing and PCR
//! extension. [`HashAlg`] is the crate's one hash-algorithm type; what TPM structures ask
//! of it (Names, HMAC, KDFs) is in `verify::tpm2`.

use std::fmt;
use std::str::FromStr;

use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};
use sm3::Sm3;

/// Largest digest this parser carries (SHA-512). A Spec ID event declaring a larger digest
/// is rejected, which also bounds what one digest can allocate.
pub const MAX_DIGEST_SIZE: usize = 64;

/// A hash algorithm by its TPM_ALG_ID: of a PCR bank, or of a TPM structure (TPMI_ALG_HASH).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM_ALG_SHA512 (0x000D).
    Sha512,
    /// TPM_ALG_SM3_256 (0x0012).
    Sm3_256,
    /// Any other algorithm: its digests are carried with the size the Spec ID event
    /// declares, but never computed or replayed.
    Unknown(u16),
}

impl HashAlg {
    /// Every algorithm this crate computes (the ones with a [`HashAlg::known_size`]).
    pub const COMPUTABLE: [HashAlg; 5] = [
        Self::Sha1,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512,
        Self::Sm3_256,
    ];

    /// The algorithm for a TPM_ALG_ID.
    pub fn from_id(id: u16) -> Self {
        match id {
            0x0004 => Self::Sha1,
            0x000B => Self::Sha256,
            0x000C => Self::Sha384,
            0x000D => Self::Sha512,
            0x0012 => Self::Sm3_256,
            other => Self::Unknown(other),
        }
    }

    /// The TPM_ALG_ID.
    pub fn id(self) -> u16 {
        match self {
            Self::Sha1 => 0x0004,
            Self::Sha256 => 0x000B,
            Self::Sha384 => 0x000C,
            Self::Sha512 => 0x000D,
            Self::Sm3_256 => 0x0012,
            Self::Unknown(id) => id,
        }
    }

    /// Digest size in bytes for algorithms this crate computes; `None` for unknown ones.
    pub fn known_size(self) -> Option<usize> {
        match self {
            Self::Sha1 => Some(20),
            Self::Sha256 | Self::Sm3_256 => Some(32),
            Self::Sha384 => Some(48),
            Self::Sha512 => Some(64),
            Self::Unknown(_) => None,
        }
    }

    /// True when this crate can hash with the algorithm (and so replay its bank).
    pub fn is_known(self) -> bool {
        self.known_size().is_some()
    }

    /// Hashes `parts` as one message. `None` for an unknown algorithm.
    pub fn hash_parts(self, parts: &[&[u8]]) -> Option<Digest> {
        fn run<D: sha2::Digest>(alg: HashAlg, parts: &[&[u8]]) -> Digest {
            let mut h = D::new();
            for p in parts {
                h.update(p);
            }
            Digest::from_slice_unchecked(alg, &h.finalize())
        }
        Some(match self {
            Self::Sha1 => run::<Sha1>(self, parts),
            Self::Sha256 => run::<Sha256>(self, parts),
            Self::Sha384 => run::<Sha384>(self, parts),
            Self::Sha512 => run::<Sha512>(self, parts),
            Self::Sm3_256 => run::<Sm3>(self, parts),
            Self::Unknown(_) => return None,
        })
    }

    /// Hashes `data`. `None` for an unknown algorithm.
    pub fn hash(self, data: &[u8]) -> Option<Digest> {
        self.hash_parts(&[data])
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sha1 => f.write_str("sha1"),
            Self::Sha256 => f.write_str("sha256"),
            Self::Sha384 => f.write_str("sha384"),
            Self::Sha512 => f.write_str("sha512"),
            Self::Sm3_256 => f.write_str("sm3_256"),
            Self::Unknown(id) => write!(f, "alg_{id:#06x}"),
        }
    }
}

/// Error for an algorithm name that is not one of `sha1`, `sha256`, `sha384`, `sha512`,
/// `sm3_256`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown hash algorithm {0:?} (expected sha1, sha256, sha384, sha512 or sm3_256)")]
pub struct UnknownAlgName(pub String);

impl FromStr for HashAlg {
    type Err = UnknownAlgName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "sha1" => Ok(Self::Sha1),
            "sha256" => Ok(Self::Sha256),
            "sha384" => Ok(Self::Sha384),
            "sha512" => Ok(Self::Sha512),
            "sm3_256" | "sm3" => Ok(Self::Sm3_256),
            _ => Err(UnknownAlgName(s.to_string())),
        }
    }
}

/// One digest of one bank. Fixed size and `Copy` so that events and PCR banks need no
/// allocation per digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Digest {
    alg: HashAlg,
    len: u8,
    bytes: [u8; MAX_DIGEST_SIZE],
}

impl Digest {
    /// A digest from raw bytes; `None` if `bytes` is longer than [`MAX_DIGEST_SIZE`] or does
    /// not have the size of a known algorithm.
    pub fn new(alg: HashAlg, bytes: &[u8]) -> Option<Self> {
        if bytes.len() > MAX_DIGEST_SIZE {
            return None;
        }
        if let Some(size) = alg.known_size() {
            if size != bytes.len() {
                return None;
            }
        }
        Some(Self::from_slice_unchecked(alg, bytes))
    }

    /// Caller guarantees `bytes.len() <= MAX_DIGEST_SIZE`; longer input is cut, never a panic.
    fn from_slice_unchecked(alg: HashAlg, bytes: &[u8]) -> Self {
        let mut out = [0u8; MAX_DIGEST_SIZE];
        let n = bytes.len().min(MAX_DIGEST_SIZE);
        if let (Some(dst), Some(src)) = (out.get_mut(..n), bytes.get(..n)) {
            dst.copy_from_slice(src);
        }
        Self {
            alg,
            len: n as u8,
            bytes: out,
        }
    }

    /// The all-zero value of a PCR of this bank, with `last` as its final byte (a
    /// StartupLocality or H-CRTM seed, or 0 for a reset PCR).
    pub fn seed(alg: HashAlg, size: usize, last: u8) -> Self {
        let n = size.min(MAX_DIGEST_SIZE);
        let mut d = Self::from_slice_unchecked(alg, &[0u8; MAX_DIGEST_SIZE][..n]);
        if let Some(b) = n.checked_sub(1).and_then(|i| d.bytes.get_mut(i)) {
            *b = last;
        }
        d
    }

    /// The all-0xFF value (reset value of PCR17-22).
    pub fn ones(alg: HashAlg, size: usize) -> Self {
        let n = size.min(MAX_DIGEST_SIZE);
        Self::from_slice_unchecked(alg, &[0xFFu8; MAX_DIGEST_SIZE][..n])
    }

    /// Parses lowercase or uppercase hex for `alg`.
    pub fn from_hex(alg: HashAlg, s: &str) -> Option<Self> {
        let bytes = hex::decode(s.trim()).ok()?;
        Self::new(alg, &bytes)
    }

    /// The bank's algorithm.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// The digest bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or(&[])
    }

    /// Lowercase hex of the digest bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.as_bytes())
    }

    /// `H(self || data)`: the TPM2_PCR_Extend of this PCR value with `data`. `None` for an
    /// unknown algorithm.
    pub fn extend(&self, data: &Digest) -> Option<Digest> {
        self.alg.hash_parts(&[self.as_bytes(), data.as_bytes()])
    }

    /// True when all bytes are zero.
    pub fn is_zero(&self) -> bool {
        self.as_bytes().iter().all(|b| *b == 0)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.alg, self.to_hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Policies name banks as `sha256` etc.; unknown algorithms cannot be named.
impl serde::Serialize for HashAlg {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for HashAlg {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
