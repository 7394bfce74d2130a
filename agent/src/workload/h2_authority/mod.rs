//! Lets every gRPC client reach the Workload API whatever `:authority` it
//! sends over the unix socket, and logs every protocol-level refusal.
//!
//! gRPC's C-core (Python, C++, Ruby, PHP) sends the socket path
//! percent-encoded as `:authority` (`run%2Fagent.sock`), grpc-java's netty
//! transport the raw path (`/run/agent.sock`), and some clients an empty
//! value. The agent's HTTP/2 server (h2, under tonic) parses `:authority` as
//! a URI authority and resets such a stream with PROTOCOL_ERROR before any
//! Workload API code runs (hyperium/h2#487). The agent never reads
//! `:authority`: a unix socket has no host to name.
//!
//! [`AuthorityShim`] wraps each accepted Workload API connection (only those:
//! the server's TCP listeners never see it). In the client→server direction
//! it decodes every header block with the client's HPACK state and writes it
//! again; in the other direction it passes the server's bytes on untouched
//! and reports the server's stream resets and GOAWAYs.
//!
//! # Invariant: the shim changes nothing but an unparseable `:authority`
//!
//! - Every frame other than HEADERS and CONTINUATION reaches the server byte
//!   for byte, in order (DATA, SETTINGS, PING, WINDOW_UPDATE, RST_STREAM,
//!   PRIORITY, GOAWAY and unknown types).
//! - Each header block reaches the server as the same header list: the same
//!   names and values in the same order, each "never indexed" field still
//!   never indexed; except that an `:authority` value `http`'s URI authority
//!   parser refuses (the parser h2 applies, see `frames::server_accepts_authority`)
//!   becomes `localhost`. The block is written as literals that never insert
//!   into the server's dynamic table, in a HEADERS frame with the client's
//!   stream, END_STREAM and priority fields, followed by CONTINUATION frames
//!   when it exceeds the server's maximum frame size; padding is dropped.
//! - Bytes that break an HTTP/2 or HPACK rule the server enforces (the
//!   preface, frame sizes, interrupted header blocks, a client PUSH_PROMISE,
//!   bad padding, table size updates, indices, Huffman codes) close the
//!   connection with a logged reason rather than being repaired; so do header
//!   blocks over the shim's bounds (`frames::MAX_HEADER_BLOCK`,
//!   `frames::MAX_CONTINUATIONS`, `hpack::MAX_HEADER_LIST`), which keep
//!   its memory per connection bounded.
//! - The server→client direction is never changed.
//!
//! Tests: `hpack_tests.rs` and `frames_tests.rs` (random header lists from an
//! independent HPACK encoder decode to the same list after the shim, except
//! `:authority`; adversarial blocks are refused with the rule named),
//! `agent/tests/it/h2_authority.rs` (a real h2 client and server on both sides of
//! the shim) and `agent/tests/it/workload_api_grpc_python.rs` (gRPC C-core against
//! a running agent).

pub(crate) mod error;
pub mod frames;
pub mod hpack;

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::{debug, warn};

use frames::{error_code_name, ClientFrames, Refusal, Replaced, ServerFrames};

/// How much the shim reads from the client at a time.
const READ_CHUNK: usize = 8 * 1024;

/// A Workload API connection with the `:authority` shim on its read side and
/// the refusal log on its write side.
pub struct AuthorityShim<IO> {
    io: IO,
    /// The caller's PID, for the log.
    pid: i32,
    client: ClientFrames,
    server: ServerFrames,
    /// Rewritten client bytes the server has not read yet.
    pending: Vec<u8>,
    read_at: usize,
    /// Why the client's stream was refused; every later read fails with it.
    failed: Option<String>,
    /// Whether a replaced `:authority` was logged on this connection yet.
    logged_replacement: bool,
}

impl<IO> AuthorityShim<IO> {
    /// Wraps an accepted connection from the caller with `pid` (named in the log lines).
    pub fn new(io: IO, pid: i32) -> Self {
        AuthorityShim {
            io,
            pid,
            client: ClientFrames::default(),
            server: ServerFrames::default(),
            pending: Vec::new(),
            read_at: 0,
            failed: None,
            logged_replacement: false,
        }
    }

    fn log_replaced(&mut self, replaced: &[Replaced]) {
        if let (Some(r), false) = (replaced.first(), self.logged_replacement) {
            self.logged_replacement = true;
            debug!(
                pid = self.pid,
                stream = r.stream,
                authority = ?String::from_utf8_lossy(&r.original[..r.original.len().min(256)]),
                "Workload API: :authority is not a URI authority (a unix socket path); \
                 handed to the server as localhost (logged once per connection)"
            );
        }
    }

    fn log_refusals(&self, refusals: &[Refusal]) {
        for r in refusals {
            match r {
                Refusal::StreamReset { stream, code } => {
                    let request = self.client.request_on(*stream).unwrap_or("not seen");
                    if matches!(code, 0x0 | 0x8) {
                        debug!(
                            pid = self.pid,
                            stream,
                            code = error_code_name(*code),
                            request,
                            "Workload API: the server closed a stream early"
                        );
                    } else {
                        warn!(
                            pid = self.pid,
                            stream,
                            code = error_code_name(*code),
                            request,
                            "Workload API: the HTTP/2 server refused a request at the protocol \
                             level (RST_STREAM); h2 logs the exact rule at debug level (target h2)"
                        );
                    }
                }
                Refusal::GoAway {
                    last_stream,
                    code,
                    debug: data,
                } => {
                    let data = String::from_utf8_lossy(data);
                    if *code == 0 {
                        debug!(
                            pid = self.pid,
                            last_stream,
                            "Workload API: the server closes the connection (GOAWAY NO_ERROR)"
                        );
                    } else {
                        warn!(
                            pid = self.pid,
                            last_stream,
                            code = error_code_name(*code),
                            debug_data = %data,
                            "Workload API: the HTTP/2 server closed the connection at the \
                             protocol level (GOAWAY); h2 logs the exact rule at debug level (target h2)"
                        );
                    }
                }
            }
        }
    }
}

fn refused(reason: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, reason.to_string())
}

impl<IO: AsyncRead + Unpin> AsyncRead for AuthorityShim<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.read_at < this.pending.len() {
                let n = (this.pending.len() - this.read_at).min(buf.remaining());
                buf.put_slice(&this.pending[this.read_at..this.read_at + n]);
                this.read_at += n;
                if this.read_at == this.pending.len() {
                    this.pending.clear();
                    this.read_at = 0;
                    if this.pending.capacity() > 4 * READ_CHUNK {
                        this.pending.shrink_to(READ_CHUNK);
                    }
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(reason) = &this.failed {
                return Poll::Ready(Err(refused(reason)));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.io).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let input = rb.filled();
            if input.is_empty() {
                // End of stream: the server sees it as the client sent it.
                return Poll::Ready(Ok(()));
            }
            let mut replaced = Vec::new();
            let result = this.client.feed(input, &mut this.pending, &mut replaced);
            this.log_replaced(&replaced);
            if let Err(e) = result {
                warn!(
                    pid = this.pid,
                    error = %e,
                    "Workload API: connection closed, the client broke an HTTP/2 rule"
                );
                // Bytes rewritten before the fault still reach the server.
                this.failed = Some(e.to_string());
            }
        }
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for AuthorityShim<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let n = match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        let mut found = Vec::new();
        this.server.observe(&buf[..n], &mut found);
        this.log_refusals(&found);
        Poll::Ready(Ok(n))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let mut n = match Pin::new(&mut this.io).poll_write_vectored(cx, bufs) {
            Poll::Ready(Ok(n)) => n,
            other => return other,
        };
        let written = n;
        let mut found = Vec::new();
        for b in bufs {
            if n == 0 {
                break;
            }
            let k = n.min(b.len());
            this.server.observe(&b[..k], &mut found);
            n -= k;
        }
        this.log_refusals(&found);
        Poll::Ready(Ok(written))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
