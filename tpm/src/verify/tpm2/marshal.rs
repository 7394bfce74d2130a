//! Bounded big-endian reading and writing of TPM structures (TPM 2.0 Part 2 marshalling).
//!
//! The reader never indexes past its input and never allocates from a length field before
//! checking both the field's cap and the bytes actually present, so hostile input yields a
//! [`TpmError`] naming the structure, field and byte offset.

use super::error::TpmError;

/// A cursor over input bytes. Offsets in errors are absolute in the caller's input, also
/// for readers over a nested TPM2B (see [`Reader::sub`]).
#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`, offsets starting at 0.
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            base: 0,
        }
    }

    /// Absolute offset of the next byte.
    pub(super) fn offset(&self) -> usize {
        self.base.saturating_add(self.pos)
    }

    /// Bytes not read yet.
    pub(super) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    /// The next `n` bytes.
    pub(super) fn take(
        &mut self,
        s: &'static str,
        f: &'static str,
        n: usize,
    ) -> Result<&'a [u8], TpmError> {
        let available = self.remaining();
        let truncated = || TpmError::Truncated {
            structure: s,
            field: f,
            offset: self.offset(),
            needed: n,
            available,
        };
        if n > available {
            return Err(truncated());
        }
        let end = self.pos.checked_add(n).ok_or_else(truncated)?;
        let out = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(
        &mut self,
        s: &'static str,
        f: &'static str,
    ) -> Result<[u8; N], TpmError> {
        let at = self.offset();
        let b = self.take(s, f, N)?;
        // `take` returned exactly N bytes; the conversion cannot fail, but stay panic-free.
        b.try_into()
            .map_err(|_| invalid(s, f, at, "internal length error"))
    }

    /// A UINT8.
    pub(super) fn u8(&mut self, s: &'static str, f: &'static str) -> Result<u8, TpmError> {
        Ok(u8::from_be_bytes(self.array(s, f)?))
    }

    /// A UINT16.
    pub(super) fn u16(&mut self, s: &'static str, f: &'static str) -> Result<u16, TpmError> {
        Ok(u16::from_be_bytes(self.array(s, f)?))
    }

    /// A UINT32.
    pub(super) fn u32(&mut self, s: &'static str, f: &'static str) -> Result<u32, TpmError> {
        Ok(u32::from_be_bytes(self.array(s, f)?))
    }

    /// A UINT64.
    pub(super) fn u64(&mut self, s: &'static str, f: &'static str) -> Result<u64, TpmError> {
        Ok(u64::from_be_bytes(self.array(s, f)?))
    }

    /// A TPM2B: UINT16 size then that many bytes; a size above `max` (the buffer size
    /// Part 2 gives the type) is rejected before anything is read.
    pub(super) fn tpm2b(
        &mut self,
        s: &'static str,
        f: &'static str,
        max: usize,
    ) -> Result<&'a [u8], TpmError> {
        let at = self.offset();
        let size = usize::from(self.u16(s, f)?);
        if size > max {
            return Err(invalid(
                s,
                f,
                at,
                format!("size {size} exceeds the maximum {max} for this field"),
            ));
        }
        self.take(s, f, size)
    }

    /// A reader over the next `n` bytes (the contents of a TPM2B wrapping a structure);
    /// this reader moves past them.
    pub(super) fn sub(
        &mut self,
        s: &'static str,
        f: &'static str,
        n: usize,
    ) -> Result<Reader<'a>, TpmError> {
        let base = self.offset();
        let buf = self.take(s, f, n)?;
        Ok(Reader { buf, pos: 0, base })
    }

    /// Fails if bytes are left: a structure must fill its input exactly, so nothing can be
    /// smuggled after a signed or hashed structure.
    pub(super) fn finish(&self, s: &'static str) -> Result<(), TpmError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(invalid(
                s,
                "(end)",
                self.offset(),
                format!("{n} unexpected bytes after the structure"),
            )),
        }
    }
}

/// An [`TpmError::Invalid`].
pub(crate) fn invalid(
    structure: &'static str,
    field: &'static str,
    offset: usize,
    reason: impl Into<String>,
) -> TpmError {
    TpmError::Invalid {
        structure,
        field,
        offset,
        reason: reason.into(),
    }
}

/// An [`TpmError::Unsupported`].
pub(crate) fn unsupported(
    structure: &'static str,
    field: &'static str,
    reason: impl Into<String>,
) -> TpmError {
    TpmError::Unsupported {
        structure,
        field,
        reason: reason.into(),
    }
}

/// Appends a UINT16.
pub(crate) fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a UINT32.
pub(crate) fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Appends a TPM2B (UINT16 size, then the bytes).
pub(crate) fn put_tpm2b(
    out: &mut Vec<u8>,
    structure: &'static str,
    bytes: &[u8],
) -> Result<(), TpmError> {
    let size = u16::try_from(bytes.len()).map_err(|_| {
        invalid(
            structure,
            "size",
            0,
            format!("{} bytes do not fit a TPM2B", bytes.len()),
        )
    })?;
    put_u16(out, size);
    out.extend_from_slice(bytes);
    Ok(())
}

/// `v` as exactly `size` big-endian bytes: leading zeros dropped, then zeros prepended (a
/// TPM may give a coordinate or an ECDSA r/s shorter than the field). `None` if the value
/// does not fit.
pub(crate) fn left_pad(v: &[u8], size: usize) -> Option<Vec<u8>> {
    let first = v.iter().position(|b| *b != 0).unwrap_or(v.len());
    let digits = v.get(first..).unwrap_or_default();
    let zeros = size.checked_sub(digits.len())?;
    let mut out = vec![0u8; zeros];
    out.extend_from_slice(digits);
    Some(out)
}

#[cfg(test)]
mod tests;
