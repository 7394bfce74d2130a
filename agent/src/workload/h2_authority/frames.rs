//! HTTP/2 framing (RFC 9113 §4) for both directions of a Workload API
//! connection: [`ClientFrames`] rewrites the client's header blocks and
//! passes every other frame through byte for byte; [`ServerFrames`] only
//! watches what the server writes, to report its stream resets and GOAWAYs.

use std::collections::VecDeque;

use super::error::ShimError;
use super::hpack::{self, Field};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The server's SETTINGS_MAX_FRAME_SIZE: tonic leaves hyper's 16 KiB, the
/// protocol's initial value. Header frames larger than this are refused, and
/// the rewritten header blocks are cut to fit it.
pub(crate) const SERVER_MAX_FRAME_SIZE: usize = 16_384;

/// The largest encoded header block (HEADERS and CONTINUATION fragments) the
/// shim collects, and the most CONTINUATION frames it takes in one block.
pub(crate) const MAX_HEADER_BLOCK: usize = 64 * 1024;
pub(crate) const MAX_CONTINUATIONS: usize = 32;

pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const PUSH_PROMISE: u8 = 0x5;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// The `:authority` every unparseable one becomes: what Go and Rust clients send.
pub(crate) const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// A frame header (RFC 9113 §4.1).
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    len: usize,
    kind: u8,
    flags: u8,
    /// The 32 bits as sent, reserved bit included.
    stream_raw: u32,
}

impl FrameHead {
    fn parse(b: &[u8; 9]) -> FrameHead {
        FrameHead {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream_raw: u32::from_be_bytes([b[5], b[6], b[7], b[8]]),
        }
    }

    fn stream(&self) -> u32 {
        self.stream_raw & 0x7fff_ffff
    }
}

fn write_head(out: &mut Vec<u8>, len: usize, kind: u8, flags: u8, stream_raw: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream_raw.to_be_bytes());
}

/// Where the client→server byte stream is.
enum Phase {
    /// Inside the connection preface, this many bytes matched.
    Preface(usize),
    /// Inside a frame header, this many bytes read.
    Head([u8; 9], usize),
    /// Passing a payload through, this many bytes left.
    Pass(usize),
    /// Collecting a HEADERS or CONTINUATION payload.
    Collect(FrameHead, Vec<u8>),
}

/// A header block whose END_HEADERS has not arrived yet.
struct OpenBlock {
    head: FrameHead,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
    continuations: usize,
}

/// An `:authority` the shim replaced, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replaced {
    /// The HTTP/2 stream id whose HEADERS carried it.
    pub stream: u32,
    /// The value the client sent (bytes as decoded, not necessarily UTF-8).
    pub original: Vec<u8>,
}

/// The client→server direction: frames pass through unchanged, except that
/// each header block is decoded and written again (see the module docs of
/// `h2_authority` for the invariant).
pub struct ClientFrames {
    phase: Phase,
    hpack: hpack::Decoder,
    open: Option<OpenBlock>,
    /// A short account of the last requests, for the log of a server reset.
    recent: VecDeque<(u32, String)>,
}

impl Default for ClientFrames {
    fn default() -> Self {
        ClientFrames {
            phase: Phase::Preface(0),
            hpack: hpack::Decoder::default(),
            open: None,
            recent: VecDeque::new(),
        }
    }
}

const RECENT_REQUESTS: usize = 16;

impl ClientFrames {
    /// Consumes `input`, appending what the server is to read to `out` and
    /// each replaced `:authority` to `replaced`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        out: &mut Vec<u8>,
        replaced: &mut Vec<Replaced>,
    ) -> Result<(), ShimError> {
        while !input.is_empty() {
            match &mut self.phase {
                Phase::Preface(seen) => {
                    let n = (PREFACE.len() - *seen).min(input.len());
                    if input[..n] != PREFACE[*seen..*seen + n] {
                        return Err(ShimError::NotHttp2);
                    }
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *seen += n;
                    if *seen == PREFACE.len() {
                        self.phase = Phase::Head([0; 9], 0);
                    }
                }
                Phase::Head(buf, have) => {
                    let n = (9 - *have).min(input.len());
                    buf[*have..*have + n].copy_from_slice(&input[..n]);
                    input = &input[n..];
                    *have += n;
                    if *have == 9 {
                        let raw = *buf;
                        self.start_frame(&raw, out, replaced)?;
                    }
                }
                Phase::Pass(left) => {
                    let n = (*left).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    *left -= n;
                    if *left == 0 {
                        self.phase = Phase::Head([0; 9], 0);
                    }
                }
                Phase::Collect(head, buf) => {
                    let n = (head.len - buf.len()).min(input.len());
                    buf.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if buf.len() == head.len {
                        let head = *head;
                        let payload = std::mem::take(buf);
                        self.phase = Phase::Head([0; 9], 0);
                        self.end_frame(head, payload, out, replaced)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// The requests' pseudo-headers last seen on `stream`, if still remembered.
    pub fn request_on(&self, stream: u32) -> Option<&str> {
        self.recent
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, r)| r.as_str())
    }

    fn start_frame(
        &mut self,
        raw: &[u8; 9],
        out: &mut Vec<u8>,
        replaced: &mut Vec<Replaced>,
    ) -> Result<(), ShimError> {
        let head = FrameHead::parse(raw);
        match head.kind {
            HEADERS | CONTINUATION => {
                if head.kind == HEADERS {
                    if let Some(open) = &self.open {
                        return Err(ShimError::HeaderBlockInterrupted {
                            stream: open.head.stream(),
                            kind: head.kind,
                        });
                    }
                } else if self.open.as_ref().map(|o| o.head.stream()) != Some(head.stream()) {
                    return Err(ShimError::UnexpectedContinuation {
                        stream: head.stream(),
                    });
                }
                if head.len > SERVER_MAX_FRAME_SIZE {
                    return Err(ShimError::FrameTooLarge {
                        frame: if head.kind == HEADERS {
                            "HEADERS"
                        } else {
                            "CONTINUATION"
                        },
                        len: head.len,
                        stream: head.stream(),
                        max: SERVER_MAX_FRAME_SIZE,
                    });
                }
                self.phase = Phase::Head([0; 9], 0);
                if head.len == 0 {
                    self.end_frame(head, Vec::new(), out, replaced)?;
                } else {
                    self.phase = Phase::Collect(head, Vec::with_capacity(head.len));
                }
            }
            PUSH_PROMISE => return Err(ShimError::ClientPushPromise),
            kind => {
                if let Some(open) = &self.open {
                    return Err(ShimError::HeaderBlockInterrupted {
                        stream: open.head.stream(),
                        kind,
                    });
                }
                out.extend_from_slice(raw);
                self.phase = if head.len == 0 {
                    Phase::Head([0; 9], 0)
                } else {
                    Phase::Pass(head.len)
                };
            }
        }
        Ok(())
    }

    fn end_frame(
        &mut self,
        head: FrameHead,
        payload: Vec<u8>,
        out: &mut Vec<u8>,
        replaced: &mut Vec<Replaced>,
    ) -> Result<(), ShimError> {
        let stream = head.stream();
        if head.kind == HEADERS {
            let (priority, fragment) = split_headers_payload(&head, &payload)?;
            self.open = Some(OpenBlock {
                head,
                priority,
                fragment: fragment.to_vec(),
                continuations: 0,
            });
        } else if let Some(open) = &mut self.open {
            open.continuations += 1;
            if open.continuations > MAX_CONTINUATIONS {
                return Err(ShimError::TooManyContinuations {
                    stream,
                    max: MAX_CONTINUATIONS,
                });
            }
            open.fragment.extend_from_slice(&payload);
        }
        if let Some(open) = &self.open {
            if open.fragment.len() > MAX_HEADER_BLOCK {
                return Err(ShimError::HeaderBlockTooLarge {
                    stream,
                    max: MAX_HEADER_BLOCK,
                });
            }
        }
        if head.flags & END_HEADERS != 0 {
            if let Some(open) = self.open.take() {
                self.end_block(open, out, replaced)?;
            }
        }
        Ok(())
    }

    /// Decodes a complete header block, replaces an unparseable `:authority`,
    /// and writes the block again as HEADERS plus CONTINUATIONs.
    fn end_block(
        &mut self,
        open: OpenBlock,
        out: &mut Vec<u8>,
        replaced: &mut Vec<Replaced>,
    ) -> Result<(), ShimError> {
        let stream = open.head.stream();
        let mut fields = self
            .hpack
            .decode_block(&open.fragment)
            .map_err(|source| ShimError::Hpack { stream, source })?;
        for f in fields.iter_mut() {
            if f.name == b":authority" && !server_accepts_authority(&f.value) {
                let original = std::mem::replace(&mut f.value, REPLACEMENT_AUTHORITY.to_vec());
                replaced.push(Replaced { stream, original });
            }
        }
        self.remember(stream, &fields);
        let mut block = Vec::with_capacity(open.fragment.len() * 2);
        hpack::encode_block(&fields, &mut block);
        write_block(out, &open.head, open.priority, &block);
        Ok(())
    }

    fn remember(&mut self, stream: u32, fields: &[Field]) {
        let summary: Vec<String> = fields
            .iter()
            .filter(|f| f.name.first() == Some(&b':'))
            .map(|f| {
                format!(
                    "{} {:?}",
                    String::from_utf8_lossy(&f.name),
                    String::from_utf8_lossy(&f.value[..f.value.len().min(128)])
                )
            })
            .collect();
        if self.recent.len() == RECENT_REQUESTS {
            self.recent.pop_front();
        }
        self.recent.push_back((stream, summary.join(" ")));
    }
}

/// Whether the server's HTTP/2 stack takes `value` as an `:authority`: h2
/// (server.rs, `convert_poll_message`) parses it with `http`'s URI authority
/// parser and resets the stream with PROTOCOL_ERROR when that fails, which it
/// does for a unix socket path, raw (`/run/agent.sock`) or percent-encoded
/// (`run%2Fagent.sock`), and for an empty value.
pub(crate) fn server_accepts_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// A HEADERS payload without its padding (RFC 9113 §6.2): the priority
/// fields, if flagged, and the header block fragment.
fn split_headers_payload<'a>(
    head: &FrameHead,
    payload: &'a [u8],
) -> Result<(Option<[u8; 5]>, &'a [u8]), ShimError> {
    let stream = head.stream();
    let mut body = payload;
    if head.flags & PADDED != 0 {
        let (&pad, rest) = body.split_first().ok_or(ShimError::BadPadding { stream })?;
        let pad = usize::from(pad);
        if pad > rest.len() {
            return Err(ShimError::BadPadding { stream });
        }
        body = &rest[..rest.len() - pad];
    }
    if head.flags & PRIORITY == 0 {
        return Ok((None, body));
    }
    if body.len() < 5 {
        return Err(ShimError::BadPriority { stream });
    }
    let (p, fragment) = body.split_at(5);
    Ok((Some([p[0], p[1], p[2], p[3], p[4]]), fragment))
}

/// Writes `block` as a HEADERS frame (END_STREAM and priority as the
/// client's, no padding) and as many CONTINUATION frames as the server's
/// maximum frame size needs.
fn write_block(out: &mut Vec<u8>, head: &FrameHead, priority: Option<[u8; 5]>, block: &[u8]) {
    let prio_len = if priority.is_some() { 5 } else { 0 };
    let first_len = block.len().min(SERVER_MAX_FRAME_SIZE - prio_len);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = head.flags & (END_STREAM | PRIORITY);
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_head(out, prio_len + first.len(), HEADERS, flags, head.stream_raw);
    if let Some(p) = priority {
        out.extend_from_slice(&p);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let n = rest.len().min(SERVER_MAX_FRAME_SIZE);
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        write_head(out, n, CONTINUATION, flags, head.stream_raw);
        out.extend_from_slice(chunk);
    }
}

/// A refusal the server wrote to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// RST_STREAM (RFC 9113 §6.4).
    StreamReset {
        /// The stream reset.
        stream: u32,
        /// The HTTP/2 error code (RFC 9113 §7).
        code: u32,
    },
    /// GOAWAY (RFC 9113 §6.8), with the start of its debug data.
    GoAway {
        /// The last stream id the server processed.
        last_stream: u32,
        /// The HTTP/2 error code (RFC 9113 §7).
        code: u32,
        /// The first 256 bytes of the debug data.
        debug: Vec<u8>,
    },
}

/// How much of a GOAWAY's debug data is kept for the log.
const GOAWAY_DEBUG_KEPT: usize = 256;

enum Watch {
    Head([u8; 9], usize),
    Skip(usize),
    /// A RST_STREAM or GOAWAY payload: the frame, the bytes kept so far, how
    /// many to keep, and how many follow that are skipped.
    Capture(FrameHead, Vec<u8>, usize),
}

/// The server→client direction, watched and never changed.
pub struct ServerFrames {
    watch: Watch,
}

impl Default for ServerFrames {
    fn default() -> Self {
        ServerFrames {
            watch: Watch::Head([0; 9], 0),
        }
    }
}

impl ServerFrames {
    /// Reads `bytes` (as written to the client) and reports each refusal in them.
    pub fn observe(&mut self, mut bytes: &[u8], found: &mut Vec<Refusal>) {
        while !bytes.is_empty() {
            match &mut self.watch {
                Watch::Head(buf, have) => {
                    let n = (9 - *have).min(bytes.len());
                    buf[*have..*have + n].copy_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    *have += n;
                    if *have == 9 {
                        let head = FrameHead::parse(buf);
                        let keep = match head.kind {
                            RST_STREAM => 4,
                            GOAWAY => 8 + GOAWAY_DEBUG_KEPT,
                            _ => 0,
                        }
                        .min(head.len);
                        self.watch = if keep > 0 {
                            Watch::Capture(head, Vec::with_capacity(keep), keep)
                        } else {
                            Watch::Skip(head.len)
                        };
                        self.finish_if_done(found);
                    }
                }
                Watch::Skip(left) => {
                    let n = (*left).min(bytes.len());
                    bytes = &bytes[n..];
                    *left -= n;
                    self.finish_if_done(found);
                }
                Watch::Capture(_, kept, keep) => {
                    let n = (*keep - kept.len()).min(bytes.len());
                    kept.extend_from_slice(&bytes[..n]);
                    bytes = &bytes[n..];
                    self.finish_if_done(found);
                }
            }
        }
    }

    fn finish_if_done(&mut self, found: &mut Vec<Refusal>) {
        match &self.watch {
            Watch::Skip(0) => self.watch = Watch::Head([0; 9], 0),
            Watch::Capture(head, kept, keep) if kept.len() == *keep => {
                let word = |i: usize| {
                    kept.get(i..i + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                };
                let refusal = match head.kind {
                    RST_STREAM => word(0).map(|code| Refusal::StreamReset {
                        stream: head.stream(),
                        code,
                    }),
                    _ => word(0).zip(word(4)).map(|(last, code)| Refusal::GoAway {
                        last_stream: last & 0x7fff_ffff,
                        code,
                        debug: kept[8..].to_vec(),
                    }),
                };
                found.extend(refusal);
                self.watch = Watch::Skip(head.len - keep);
                self.finish_if_done(found);
            }
            _ => {}
        }
    }
}

/// The name of an HTTP/2 error code (RFC 9113 §7).
pub(crate) fn error_code_name(code: u32) -> &'static str {
    match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => "unknown error code",
    }
}

#[cfg(test)]
#[path = "frames_tests.rs"]
mod tests;
