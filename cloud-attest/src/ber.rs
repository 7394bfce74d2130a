//! BER to DER, for PKCS#7 as AWS publishes it.
//!
//! AWS's `/rsa2048` (and OpenSSL's `-stream` output) is BER: indefinite lengths, and the
//! signed content as a constructed OCTET STRING in chunks. The `der` crate reads DER only,
//! so the input is first rewritten with definite, minimal lengths and each constructed
//! OCTET STRING joined into one primitive. Nothing else is changed (SET OF order is
//! normalised later by the decoder, which sorts), and anything not well-formed BER is
//! refused with the byte offset.

/// Deeper nesting than any PKCS#7 needs (SignedData is about ten levels deep).
const MAX_DEPTH: usize = 32;

/// Why BER input could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ASN.1 encoding is malformed at byte {offset}: {reason}")]
pub struct BerError {
    /// Byte offset in the input.
    pub offset: usize,
    /// What is wrong there.
    pub reason: &'static str,
}

fn err<T>(offset: usize, reason: &'static str) -> Result<T, BerError> {
    Err(BerError { offset, reason })
}

/// Rewrites one BER element (the whole input) as DER.
pub(crate) fn to_der(input: &[u8]) -> Result<Vec<u8>, BerError> {
    let mut out = Vec::with_capacity(input.len());
    let end = convert(input, 0, &mut out, 0)?;
    if end != input.len() {
        return err(end, "data after the end of the outermost element");
    }
    Ok(out)
}

/// Identifier and length of one element.
struct Header {
    /// The identifier octets (tag), as found.
    tag: std::ops::Range<usize>,
    constructed: bool,
    /// Start of the contents.
    body: usize,
    /// End of the contents, or `None` for the indefinite form.
    end: Option<usize>,
}

const OCTET_STRING: u8 = 0x04;
const OCTET_STRING_CONSTRUCTED: u8 = 0x24;

fn header(input: &[u8], pos: usize) -> Result<Header, BerError> {
    let Some(&first) = input.get(pos) else {
        return err(pos, "input ends where an element's tag should be");
    };
    let mut p = pos + 1;
    if first & 0x1f == 0x1f {
        // High tag number: base-128 digits, the last without bit 8.
        let mut digits = 0;
        loop {
            let Some(&b) = input.get(p) else {
                return err(p, "input ends inside a long-form tag");
            };
            p += 1;
            digits += 1;
            if digits > 4 {
                return err(pos, "tag number too large");
            }
            if b & 0x80 == 0 {
                break;
            }
        }
    }
    let tag = pos..p;
    let constructed = first & 0x20 != 0;
    let Some(&len_byte) = input.get(p) else {
        return err(p, "input ends where an element's length should be");
    };
    p += 1;
    let len = if len_byte == 0x80 {
        if !constructed {
            return err(p - 1, "indefinite length on a primitive element");
        }
        return Ok(Header {
            tag,
            constructed,
            body: p,
            end: None,
        });
    } else if len_byte < 0x80 {
        usize::from(len_byte)
    } else {
        let n = usize::from(len_byte & 0x7f);
        if n > 4 {
            return err(p - 1, "length field longer than 4 bytes");
        }
        let Some(bytes) = input.get(p..p + n) else {
            return err(p, "input ends inside a length field");
        };
        p += n;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if len > input.len() - p {
        return err(p, "element length runs past the end of the input");
    }
    Ok(Header {
        tag,
        constructed,
        body: p,
        end: Some(p + len),
    })
}

fn write_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn at_end_of_contents(input: &[u8], pos: usize) -> bool {
    input.get(pos..pos + 2) == Some(&[0, 0])
}

/// Converts the element at `pos`, appending DER to `out`; returns where the element ends.
fn convert(input: &[u8], pos: usize, out: &mut Vec<u8>, depth: usize) -> Result<usize, BerError> {
    if depth > MAX_DEPTH {
        return err(pos, "nested too deeply");
    }
    let h = header(input, pos)?;
    if !h.constructed {
        // Definite by construction (indefinite primitives are refused above).
        let end = h.end.unwrap_or(h.body);
        out.extend_from_slice(&input[h.tag.clone()]);
        write_len(out, end - h.body);
        out.extend_from_slice(&input[h.body..end]);
        return Ok(end);
    }
    let mut body = Vec::new();
    let end;
    if input[h.tag.start] == OCTET_STRING_CONSTRUCTED && h.tag.len() == 1 {
        end = gather_octets(input, &h, &mut body, depth)?;
        out.push(OCTET_STRING);
    } else {
        let mut p = h.body;
        loop {
            match h.end {
                Some(e) if p == e => break,
                Some(e) if p > e => return err(e, "a nested element runs past its parent's end"),
                None if at_end_of_contents(input, p) => {
                    p += 2;
                    break;
                }
                _ => p = convert(input, p, &mut body, depth + 1)?,
            }
        }
        end = p;
        out.extend_from_slice(&input[h.tag.clone()]);
    }
    write_len(out, body.len());
    out.extend_from_slice(&body);
    Ok(end)
}

/// Joins the chunks of a constructed OCTET STRING; returns where it ends.
fn gather_octets(
    input: &[u8],
    h: &Header,
    buf: &mut Vec<u8>,
    depth: usize,
) -> Result<usize, BerError> {
    if depth > MAX_DEPTH {
        return err(h.body, "nested too deeply");
    }
    let mut p = h.body;
    loop {
        match h.end {
            Some(e) if p == e => return Ok(p),
            Some(e) if p > e => return err(e, "a nested element runs past its parent's end"),
            None if at_end_of_contents(input, p) => return Ok(p + 2),
            _ => {}
        }
        let child = header(input, p)?;
        match (input[child.tag.start], child.tag.len()) {
            (OCTET_STRING, 1) => {
                let end = child.end.unwrap_or(child.body);
                buf.extend_from_slice(&input[child.body..end]);
                p = end;
            }
            (OCTET_STRING_CONSTRUCTED, 1) => p = gather_octets(input, &child, buf, depth + 1)?,
            _ => {
                return err(
                    p,
                    "a constructed OCTET STRING holds something other than OCTET STRINGs",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_passes_through_unchanged() {
        let der = [0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xaa];
        assert_eq!(to_der(&der).unwrap(), der);
    }

    #[test]
    fn indefinite_lengths_and_chunked_octets_become_der() {
        // SEQUENCE (indefinite) { [0] (indefinite) { OCTET STRING (constructed, indefinite)
        // { "ab", "c" } } }
        let ber = [
            0x30, 0x80, 0xa0, 0x80, 0x24, 0x80, 0x04, 0x02, b'a', b'b', 0x04, 0x01, b'c', 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        assert_eq!(
            to_der(&ber).unwrap(),
            [0x30, 0x07, 0xa0, 0x05, 0x04, 0x03, b'a', b'b', b'c']
        );
    }

    #[test]
    fn non_minimal_lengths_are_minimised() {
        assert_eq!(
            to_der(&[0x04, 0x81, 0x01, 0x07]).unwrap(),
            [0x04, 0x01, 0x07]
        );
    }

    #[test]
    fn malformed_input_is_refused_with_offset() {
        for (input, offset) in [
            (&[][..], 0),
            (&[0x30, 0x05, 0x02][..], 2),
            (&[0x04, 0x80, 0x00, 0x00][..], 1),
            (&[0x30, 0x80, 0x02, 0x01, 0x01][..], 5),
            (&[0x30, 0x00, 0x00][..], 2),
            (&[0x30, 0x85, 0, 0, 0, 0, 1][..], 1),
        ] {
            let e = to_der(input).unwrap_err();
            assert_eq!(e.offset, offset, "{input:02x?}: {e}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut ber = Vec::new();
        for _ in 0..100 {
            ber.extend_from_slice(&[0x30, 0x80]);
        }
        for _ in 0..100 {
            ber.extend_from_slice(&[0, 0]);
        }
        assert_eq!(to_der(&ber).unwrap_err().reason, "nested too deeply");
    }
}
