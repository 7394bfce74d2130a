//! Why the `:authority` shim closed a Workload API connection. Each variant
//! names the HTTP/2 or HPACK rule the client broke; the agent's own HTTP/2
//! server would have refused the same bytes.

use loona_hpack::huffman::HuffmanDecoderError;

/// A client→server byte stream the shim refuses; the connection is closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShimError {
    #[error("the client did not open with the HTTP/2 connection preface (RFC 9113 §3.4)")]
    NotHttp2,
    #[error(
        "{frame} frame of {len} bytes on stream {stream} exceeds the server's maximum frame \
         size of {max} bytes (RFC 9113 §4.2)"
    )]
    FrameTooLarge {
        frame: &'static str,
        len: usize,
        stream: u32,
        max: usize,
    },
    #[error(
        "the header block of stream {stream} was interrupted by a frame of type {kind} \
         (RFC 9113 §6.10: its CONTINUATION frames must follow at once)"
    )]
    HeaderBlockInterrupted { stream: u32, kind: u8 },
    #[error(
        "CONTINUATION frame on stream {stream} with no header block open on it (RFC 9113 §6.10)"
    )]
    UnexpectedContinuation { stream: u32 },
    #[error("PUSH_PROMISE frame from a client: only servers push (RFC 9113 §8.4)")]
    ClientPushPromise,
    #[error(
        "HEADERS frame on stream {stream}: its padding is longer than the frame (RFC 9113 §6.2)"
    )]
    BadPadding { stream: u32 },
    #[error(
        "HEADERS frame on stream {stream} is too short for its priority fields (RFC 9113 §6.2)"
    )]
    BadPriority { stream: u32 },
    #[error("the header block of stream {stream} exceeds the shim's limit of {max} bytes")]
    HeaderBlockTooLarge { stream: u32, max: usize },
    #[error(
        "the header block of stream {stream} spans more than {max} CONTINUATION frames \
         (the shim's limit)"
    )]
    TooManyContinuations { stream: u32, max: usize },
    #[error("the header block of stream {stream} is not valid HPACK: {source}")]
    Hpack {
        stream: u32,
        #[source]
        source: HpackError,
    },
}

/// A header block the shim's HPACK decoder refuses (RFC 7541).
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum HpackError {
    #[error("an integer ends before its last octet (RFC 7541 §5.1)")]
    IntegerTruncated,
    #[error("an integer is longer than 5 octets (RFC 7541 §5.1: excessively large)")]
    IntegerOverflow,
    #[error("a string literal announces {len} octets but only {left} remain (RFC 7541 §5.2)")]
    StringTruncated { len: usize, left: usize },
    #[error("a Huffman-coded string literal is invalid (RFC 7541 §5.2): {0}")]
    Huffman(HuffmanDecoderError),
    #[error(
        "index {index} is outside the static and dynamic tables ({entries} entries; RFC 7541 §2.3.3)"
    )]
    BadIndex { index: usize, entries: usize },
    #[error(
        "dynamic table size update to {size} exceeds the server's SETTINGS_HEADER_TABLE_SIZE \
         of {max} (RFC 7541 §6.3)"
    )]
    TableSizeTooLarge { size: usize, max: usize },
    #[error(
        "dynamic table size update after a header field (RFC 7541 §4.2: only at the start of \
         a header block)"
    )]
    LateTableSizeUpdate,
    #[error(
        "the decoded header list exceeds the shim's limit of {max} bytes (RFC 9113 §6.5.2 sizes)"
    )]
    HeaderListTooLarge { max: usize },
}
