//! A bounds-checked little-endian cursor: every read is checked against the bytes left and
//! reports the event index, field and offset when it cannot be satisfied.

use super::error::{EventLogError, Field};

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Index of the event being read, for errors.
    pub(crate) index: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self {
            buf,
            pos: 0,
            index: 0,
        }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Takes `n` bytes; `n` is a u64 so that a hostile 32- or 64-bit length is compared
    /// before any conversion or allocation.
    pub(crate) fn take(&mut self, n: u64, field: Field) -> Result<&'a [u8], EventLogError> {
        let have = self.remaining();
        let short = || EventLogError::Truncated {
            index: self.index,
            field,
            offset: self.pos,
            need: n,
            have,
        };
        let n = usize::try_from(n).map_err(|_| short())?;
        if n > have {
            return Err(short());
        }
        let end = self.pos.checked_add(n).ok_or_else(short)?;
        let out = self.buf.get(self.pos..end).ok_or_else(short)?;
        self.pos = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, field: Field) -> Result<[u8; N], EventLogError> {
        let b = self.take(N as u64, field)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        Ok(out)
    }

    pub(crate) fn u8(&mut self, field: Field) -> Result<u8, EventLogError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub(crate) fn u16(&mut self, field: Field) -> Result<u16, EventLogError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub(crate) fn u32(&mut self, field: Field) -> Result<u32, EventLogError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
}

/// Little-endian reads from a slice for event-data structures (UEFI_VARIABLE_DATA, ...),
/// where a short read just means "not that structure": `None`, never a panic.
pub(crate) fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

pub(crate) fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reads_are_errors() {
        let mut r = Reader::new(&[1, 0, 0]);
        r.index = 7;
        assert_eq!(
            r.u32(Field::EventSize),
            Err(EventLogError::Truncated {
                index: 7,
                field: Field::EventSize,
                offset: 0,
                need: 4,
                have: 3
            })
        );
        assert_eq!(r.u16(Field::DigestAlgorithm), Ok(1));
        assert!(r.take(u64::MAX, Field::EventData).is_err());
        assert_eq!(r.u8(Field::EventData), Ok(0));
        assert_eq!(r.remaining(), 0);
        assert_eq!(le_u32(&[1, 2, 3], 0), None);
        assert_eq!(le_u64(&[0; 8], usize::MAX), None);
    }
}
