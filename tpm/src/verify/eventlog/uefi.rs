//! UEFI structures carried in event data: UEFI_VARIABLE_DATA, EFI_SIGNATURE_LIST, GUIDs.
//! Parsing here is lenient (a short or odd structure gives `None`), because the digest
//! check, not this layout, decides whether the data can be trusted.

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::reader::{le_u32, le_u64};

/// An EFI_GUID in its on-disk (mixed-endian) byte order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// Builds a GUID from its textual fields (as in `8be4df61-93ca-11d2-aa0d-00e098032b8c`).
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Self {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Self([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    fn from_slice(b: &[u8]) -> Option<Self> {
        Some(Self(b.get(..16)?.try_into().ok()?))
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// EFI_GLOBAL_VARIABLE: SecureBoot, PK, KEK, Boot####.
pub const EFI_GLOBAL_VARIABLE: Guid = Guid::from_fields(
    0x8be4_df61,
    0x93ca,
    0x11d2,
    [0xaa, 0x0d, 0x00, 0xe0, 0x98, 0x03, 0x2b, 0x8c],
);
/// EFI_IMAGE_SECURITY_DATABASE_GUID: db, dbx.
pub const EFI_IMAGE_SECURITY_DATABASE: Guid = Guid::from_fields(
    0xd719_b2cb,
    0x3d3a,
    0x4596,
    [0xa3, 0xbc, 0xda, 0xd0, 0x0e, 0x67, 0x65, 0x6f],
);
/// EFI_CERT_SHA256_GUID: an EFI_SIGNATURE_DATA holding a SHA-256 image hash.
pub const EFI_CERT_SHA256: Guid = Guid::from_fields(
    0xc1c4_1626,
    0x504c,
    0x4092,
    [0xac, 0xa9, 0x41, 0xf9, 0x36, 0x93, 0x43, 0x28],
);
/// EFI_CERT_X509_GUID: an EFI_SIGNATURE_DATA holding a DER certificate.
pub const EFI_CERT_X509: Guid = Guid::from_fields(
    0xa5c0_59a1,
    0x94e4,
    0x4aa7,
    [0x87, 0xb5, 0xab, 0x15, 0x5c, 0x2b, 0xf0, 0x72],
);

/// A parsed UEFI_VARIABLE_DATA: VariableName (GUID), UnicodeNameLength and
/// VariableDataLength (u64), UnicodeName (CHAR16[]), VariableData.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UefiVariable<'a> {
    /// Vendor GUID.
    pub guid: Guid,
    /// Variable name.
    pub name: String,
    /// Variable contents.
    pub data: &'a [u8],
}

/// Parses UEFI_VARIABLE_DATA. Declared lengths must fit in the event, not fill it: real
/// firmware (and old shim) leaves trailing bytes.
pub fn parse_variable(event_data: &[u8]) -> Option<UefiVariable<'_>> {
    let guid = Guid::from_slice(event_data)?;
    let name_chars = le_u64(event_data, 16)?;
    let data_len = le_u64(event_data, 24)?;
    let name_bytes = usize::try_from(name_chars).ok()?.checked_mul(2)?;
    let name_end = 32usize.checked_add(name_bytes)?;
    let data_end = name_end.checked_add(usize::try_from(data_len).ok()?)?;
    let name_raw = event_data.get(32..name_end)?;
    let data = event_data.get(name_end..data_end)?;
    let units = name_raw
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]));
    let name: String = char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .take_while(|c| *c != '\0')
        .collect();
    Some(UefiVariable { guid, name, data })
}

/// One EFI_SIGNATURE_DATA of an EFI_SIGNATURE_LIST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureEntry {
    /// The list's SignatureType (e.g. [`EFI_CERT_X509`], [`EFI_CERT_SHA256`]).
    pub signature_type: Guid,
    /// SignatureOwner.
    pub owner: Guid,
    /// SignatureData (a certificate, a hash, ...).
    pub data: Vec<u8>,
}

impl SignatureEntry {
    /// A SHA-256 identifying the entry: the hash itself for an [`EFI_CERT_SHA256`] entry,
    /// otherwise SHA-256 of the signature data (for X.509, of the DER certificate). Policies
    /// name dbx entries by this value.
    pub fn fingerprint(&self) -> [u8; 32] {
        if self.signature_type == EFI_CERT_SHA256 {
            if let Ok(h) = <[u8; 32]>::try_from(self.data.as_slice()) {
                return h;
            }
        }
        Sha256::digest(&self.data).into()
    }
}

/// Most entries accepted in one variable (a current dbx has a few hundred).
const MAX_SIGNATURE_ENTRIES: usize = 16_384;

/// Parses a sequence of EFI_SIGNATURE_LIST (the contents of PK, KEK, db, dbx). `None` if the
/// structure is malformed.
pub fn parse_signature_lists(mut data: &[u8]) -> Option<Vec<SignatureEntry>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let signature_type = Guid::from_slice(data)?;
        let list_size = usize::try_from(le_u32(data, 16)?).ok()?;
        let header_size = usize::try_from(le_u32(data, 20)?).ok()?;
        let sig_size = usize::try_from(le_u32(data, 24)?).ok()?;
        let list = data.get(..list_size)?;
        let body = list.get(28usize.checked_add(header_size)?..)?;
        if sig_size < 16 || body.len() % sig_size != 0 {
            return None;
        }
        for sig in body.chunks_exact(sig_size) {
            if out.len() >= MAX_SIGNATURE_ENTRIES {
                return None;
            }
            out.push(SignatureEntry {
                signature_type,
                owner: Guid::from_slice(sig)?,
                data: sig.get(16..)?.to_vec(),
            });
        }
        data = data.get(list_size..)?;
        if list_size == 0 {
            return None;
        }
    }
    Some(out)
}

/// Encodes a UEFI_VARIABLE_DATA (for building logs and for hashing expected values).
pub fn encode_variable(guid: &Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u16> = name.encode_utf16().collect();
    let mut out = Vec::with_capacity(32 + name16.len() * 2 + data.len());
    out.extend_from_slice(&guid.0);
    out.extend_from_slice(&(name16.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for u in name16 {
        out.extend_from_slice(&u.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests;
