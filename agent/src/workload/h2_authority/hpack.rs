//! HPACK (RFC 7541) for the client→server direction of a Workload API
//! connection: a decoder that keeps the client's dynamic table, and an encoder
//! that writes a header list back as plain literals, never touching the
//! server's dynamic table.
//!
//! The decoder follows the rules the agent's HTTP/2 server (h2) applies, so
//! that a block the server would refuse is refused here too rather than
//! cleaned up: table size updates only at the start of a block and never above
//! the server's `SETTINGS_HEADER_TABLE_SIZE`, integers of at most 5 octets,
//! index 0 and indices past the tables refused, Huffman padding checked.
//! Huffman strings are decoded by `loona-hpack`'s table-driven decoder (the
//! RFC's code table is data best taken from a maintained crate); everything
//! else is here, small enough to read in one sitting.

use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

use loona_hpack::huffman::HuffmanDecoder;

use super::error::HpackError;

/// The server's SETTINGS_HEADER_TABLE_SIZE: tonic leaves h2's default, the
/// protocol's initial 4,096 octets, so no client may size its table above it.
pub(crate) const SERVER_HEADER_TABLE_SIZE: usize = 4_096;

/// The largest decoded header list (RFC 9113 §6.5.2 sizes: name + value + 32
/// per field) the shim decodes: four times what the server accepts (hyper's
/// 16 KiB), so the server keeps answering oversized requests itself, while an
/// HPACK bomb (a few bytes that index a large table entry many times) stops here.
pub(crate) const MAX_HEADER_LIST: usize = 64 * 1024;

/// The static table, RFC 7541 Appendix A (index 1 first).
pub(crate) const STATIC_TABLE: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// One header field as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The field name, as decoded (pseudo-headers keep their leading `:`).
    pub name: Vec<u8>,
    /// The value (bytes as decoded, not necessarily UTF-8).
    pub value: Vec<u8>,
    /// Sent as "never indexed" (RFC 7541 §6.2.3): written again the same way,
    /// so the mark an intermediary must keep (§7.1.3) survives the shim.
    pub never_indexed: bool,
}

impl Field {
    /// Its size in a header list or the dynamic table (RFC 7541 §4.1).
    fn size(&self) -> usize {
        entry_size(&self.name, &self.value)
    }
}

fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// The client's dynamic table (RFC 7541 §2.3.2), newest entry first.
struct DynamicTable {
    entries: VecDeque<(Vec<u8>, Vec<u8>)>,
    size: usize,
    max_size: usize,
}

impl DynamicTable {
    fn evict_to(&mut self, limit: usize) {
        while self.size > limit {
            match self.entries.pop_back() {
                Some((n, v)) => self.size -= entry_size(&n, &v),
                None => {
                    self.size = 0;
                    break;
                }
            }
        }
    }

    /// RFC 7541 §4.4: evict until the new entry fits; an entry larger than the
    /// whole table empties it and is not added.
    fn insert(&mut self, name: Vec<u8>, value: Vec<u8>) {
        let size = entry_size(&name, &value);
        if size > self.max_size {
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict_to(self.max_size - size);
        self.size += size;
        self.entries.push_front((name, value));
    }
}

/// Decodes the client's header blocks, one after the other, as the server would.
pub(crate) struct Decoder {
    table: DynamicTable,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: DynamicTable {
                entries: VecDeque::new(),
                size: 0,
                max_size: SERVER_HEADER_TABLE_SIZE,
            },
        }
    }
}

impl Decoder {
    /// Decodes one complete header block (HEADERS plus its CONTINUATIONs),
    /// updating the dynamic table as the client's encoder did.
    pub(crate) fn decode_block(&mut self, block: &[u8]) -> Result<Vec<Field>, HpackError> {
        let mut fields = Vec::new();
        let mut list_size = 0usize;
        let mut pos = 0;
        while pos < block.len() {
            let first = block[pos];
            let field = if first & 0x80 != 0 {
                // Indexed header field (§6.1).
                let index = decode_int(block, &mut pos, 7)?;
                let (name, value) = self.lookup(index)?;
                Field {
                    name: name.to_vec(),
                    value: value.to_vec(),
                    never_indexed: false,
                }
            } else if first & 0x40 != 0 {
                // Literal with incremental indexing (§6.2.1).
                let f = self.literal(block, &mut pos, 6, false)?;
                self.table.insert(f.name.clone(), f.value.clone());
                f
            } else if first & 0x20 != 0 {
                // Dynamic table size update (§6.3), only before any field (§4.2).
                if !fields.is_empty() {
                    return Err(HpackError::LateTableSizeUpdate);
                }
                let size = decode_int(block, &mut pos, 5)?;
                if size > SERVER_HEADER_TABLE_SIZE {
                    return Err(HpackError::TableSizeTooLarge {
                        size,
                        max: SERVER_HEADER_TABLE_SIZE,
                    });
                }
                self.table.max_size = size;
                self.table.evict_to(size);
                continue;
            } else {
                // Literal never indexed (§6.2.3) or without indexing (§6.2.2).
                self.literal(block, &mut pos, 4, first & 0x10 != 0)?
            };
            list_size += field.size();
            if list_size > MAX_HEADER_LIST {
                return Err(HpackError::HeaderListTooLarge {
                    max: MAX_HEADER_LIST,
                });
            }
            fields.push(field);
        }
        Ok(fields)
    }

    /// An entry of the static table followed by the dynamic table (§2.3.3).
    fn lookup(&self, index: usize) -> Result<(&[u8], &[u8]), HpackError> {
        let entries = STATIC_TABLE.len() + self.table.entries.len();
        let bad = HpackError::BadIndex { index, entries };
        match index {
            0 => Err(bad),
            i if i <= STATIC_TABLE.len() => {
                let (n, v) = STATIC_TABLE[i - 1];
                Ok((n.as_bytes(), v.as_bytes()))
            }
            i => self
                .table
                .entries
                .get(i - STATIC_TABLE.len() - 1)
                .map(|(n, v)| (n.as_slice(), v.as_slice()))
                .ok_or(bad),
        }
    }

    /// A literal field: an indexed or literal name, then a literal value.
    fn literal(
        &self,
        block: &[u8],
        pos: &mut usize,
        prefix: u8,
        never_indexed: bool,
    ) -> Result<Field, HpackError> {
        let index = decode_int(block, pos, prefix)?;
        let name = if index == 0 {
            decode_string(block, pos)?
        } else {
            self.lookup(index)?.0.to_vec()
        };
        let value = decode_string(block, pos)?;
        Ok(Field {
            name,
            value,
            never_indexed,
        })
    }
}

/// An integer with an N-bit prefix (§5.1) at `block[*pos]`; at most 5 octets,
/// as h2 allows, so it always fits in 32 bits.
fn decode_int(block: &[u8], pos: &mut usize, prefix: u8) -> Result<usize, HpackError> {
    let mask = (1u16 << prefix) as usize - 1;
    let first = *block.get(*pos).ok_or(HpackError::IntegerTruncated)?;
    *pos += 1;
    let mut value = first as usize & mask;
    if value < mask {
        return Ok(value);
    }
    for shift in [0u32, 7, 14, 21] {
        let b = *block.get(*pos).ok_or(HpackError::IntegerTruncated)?;
        *pos += 1;
        value += ((b & 0x7f) as usize) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(HpackError::IntegerOverflow)
}

/// A string literal (§5.2), Huffman-decoded when its H bit is set.
fn decode_string(block: &[u8], pos: &mut usize) -> Result<Vec<u8>, HpackError> {
    let huffman = block.get(*pos).is_some_and(|b| b & 0x80 != 0);
    let len = decode_int(block, pos, 7)?;
    let left = block.len() - *pos;
    if len > left {
        return Err(HpackError::StringTruncated { len, left });
    }
    let raw = &block[*pos..*pos + len];
    *pos += len;
    if !huffman {
        return Ok(raw.to_vec());
    }
    huffman_decode(raw)
}

/// One Huffman decoder for the process: building its tables costs more than
/// a string, and it keeps no state between strings.
fn huffman_decode(raw: &[u8]) -> Result<Vec<u8>, HpackError> {
    static DECODER: OnceLock<Mutex<HuffmanDecoder>> = OnceLock::new();
    let mut d = DECODER
        .get_or_init(|| Mutex::new(HuffmanDecoder::new()))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    d.decode(raw).map_err(HpackError::Huffman)
}

/// Writes `fields` as one header block of literals without indexing (or never
/// indexed, as they came), with literal names and no Huffman coding: the
/// server's dynamic table stays empty, so no later block depends on this one.
pub fn encode_block(fields: &[Field], out: &mut Vec<u8>) {
    for f in fields {
        out.push(if f.never_indexed { 0x10 } else { 0x00 });
        encode_string(&f.name, out);
        encode_string(&f.value, out);
    }
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    encode_int(s.len(), 7, 0x00, out);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix (§5.1); `flags` fills the bits above it.
fn encode_int(mut value: usize, prefix: u8, flags: u8, out: &mut Vec<u8>) {
    let mask = (1usize << prefix) - 1;
    if value < mask {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        out.push((value & 0x7f) as u8 | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[cfg(test)]
#[path = "hpack_tests.rs"]
pub(super) mod tests;
