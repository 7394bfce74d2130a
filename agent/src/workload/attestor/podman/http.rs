//! A minimal blocking HTTP/1.1 GET over a unix socket, enough for podman's
//! REST API: one request per connection (`Connection: close`), the whole
//! exchange bounded by a deadline and the response by a size cap, bodies
//! delimited by `Content-Length`, `Transfer-Encoding: chunked` or the close.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, UnixAddr};
use nix::sys::time::{TimeVal, TimeValLike};

/// Why a GET failed below the level of HTTP status codes.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Writing the request or reading the response failed.
    #[error("{what} failed: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    /// No complete response within the deadline.
    #[error("no complete response within {0:?}")]
    TimedOut(Duration),
    /// The response is larger than the cap.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// The bytes are not an HTTP/1.x response this client understands.
    #[error("malformed HTTP response: {0}")]
    Malformed(String),
}

/// A response: status and the decoded body (header fields are not kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// The reason phrase, e.g. "OK" (may be empty).
    pub reason: String,
    /// The body with any chunked framing removed.
    pub body: Vec<u8>,
}

/// Connects to the unix socket `path`, waiting at most `timeout` (a server
/// whose accept backlog is full would otherwise block the caller forever).
pub(super) fn connect(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let micros = i64::try_from(timeout.as_micros()).unwrap_or(i64::MAX / 2);
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &TimeVal::microseconds(micros.max(1)),
    )?;
    let addr = UnixAddr::new(path)?;
    match nix::sys::socket::connect(fd.as_raw_fd(), &addr) {
        Ok(()) => Ok(UnixStream::from(fd)),
        Err(Errno::EAGAIN) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {timeout:?}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Sends `GET path` on `stream` (connected to the server, e.g. after its
/// peer credentials were checked) and returns the response. `timeout` bounds
/// the whole exchange; `max_bytes` bounds the raw response (status line,
/// headers and body together).
pub(super) fn get_on(
    mut stream: UnixStream,
    path: &str,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Response, HttpError> {
    check_path(path)?;
    let deadline = Instant::now() + timeout;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: podman\r\nUser-Agent: ironroot-agent\r\n\
         Accept: application/json\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining(deadline, timeout)?))
        .map_err(|source| HttpError::Io {
            what: "setting the write timeout",
            source,
        })?;
    stream
        .write_all(request.as_bytes())
        .map_err(|source| timed_out_or(source, timeout, "writing the request"))?;
    let raw = read_to_close(&mut stream, deadline, timeout, max_bytes)?;
    parse_response(&raw)
}

/// A request path must be absolute and fit in the request line.
fn check_path(path: &str) -> Result<(), HttpError> {
    if !path.starts_with('/') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err(HttpError::Malformed(format!(
            "request path {path:?} is not an absolute path without spaces"
        )));
    }
    Ok(())
}

/// Time left before `deadline`, or `TimedOut` when none is.
fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(HttpError::TimedOut(timeout))
    } else {
        Ok(left)
    }
}

/// Socket timeouts surface as `WouldBlock` or `TimedOut`; report them as such.
fn timed_out_or(source: io::Error, timeout: Duration, what: &'static str) -> HttpError {
    match source.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => HttpError::TimedOut(timeout),
        _ => HttpError::Io { what, source },
    }
}

/// Reads until the server closes, at most `max_bytes`, before `deadline`.
fn read_to_close(
    stream: &mut UnixStream,
    deadline: Instant,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Vec<u8>, HttpError> {
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        stream
            .set_read_timeout(Some(remaining(deadline, timeout)?))
            .map_err(|source| HttpError::Io {
                what: "setting the read timeout",
                source,
            })?;
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(raw),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(timed_out_or(e, timeout, "reading the response")),
        };
        if raw.len() + n > max_bytes {
            return Err(HttpError::TooLarge(max_bytes));
        }
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Parses a complete HTTP/1.x response (everything the server sent before
/// closing the connection).
pub(super) fn parse_response(raw: &[u8]) -> Result<Response, HttpError> {
    let head_end = find(raw, b"\r\n\r\n")
        .ok_or_else(|| HttpError::Malformed("no end of the header section".into()))?;
    let head = std::str::from_utf8(&raw[..head_end])
        .map_err(|_| HttpError::Malformed("header section is not UTF-8".into()))?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (status, reason) = parse_status_line(status_line)?;

    let mut chunked = false;
    let mut content_length: Option<usize> = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::Malformed(format!("header line {line:?} has no ':'")))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            // Only "chunked" (last, per RFC 9112) changes the framing here.
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("content-length") {
            let len = value.parse::<usize>().map_err(|_| {
                HttpError::Malformed(format!("Content-Length {value:?} is not a number"))
            })?;
            if content_length.is_some_and(|seen| seen != len) {
                return Err(HttpError::Malformed("conflicting Content-Length".into()));
            }
            content_length = Some(len);
        }
    }

    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(len) = content_length {
        rest.get(..len)
            .ok_or_else(|| {
                HttpError::Malformed(format!(
                    "body truncated: Content-Length {len}, got {} bytes",
                    rest.len()
                ))
            })?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        reason,
        body,
    })
}

/// `HTTP/1.1 404 Not Found` → (404, "Not Found").
fn parse_status_line(line: &str) -> Result<(u16, String), HttpError> {
    let bad = || HttpError::Malformed(format!("status line {line:?}"));
    let mut parts = line.splitn(3, ' ');
    let version = parts.next().ok_or_else(bad)?;
    if !matches!(version, "HTTP/1.1" | "HTTP/1.0") {
        return Err(bad());
    }
    let code = parts.next().ok_or_else(bad)?;
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status = code.parse::<u16>().map_err(|_| bad())?;
    Ok((status, parts.next().unwrap_or_default().to_owned()))
}

/// Removes chunked framing: `<hex size>[;ext]\r\n<data>\r\n` … `0\r\n[trailers]\r\n`.
pub(super) fn decode_chunked(mut input: &[u8]) -> Result<Vec<u8>, HttpError> {
    let mut body = Vec::new();
    loop {
        let line_end = find(input, b"\r\n")
            .ok_or_else(|| HttpError::Malformed("chunked body truncated (size line)".into()))?;
        let size_line = std::str::from_utf8(&input[..line_end])
            .map_err(|_| HttpError::Malformed("chunk size line is not UTF-8".into()))?;
        let hex = size_line.split(';').next().unwrap_or_default().trim();
        if hex.is_empty() || hex.len() > 15 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(HttpError::Malformed(format!("chunk size {hex:?}")));
        }
        let size = usize::from_str_radix(hex, 16)
            .map_err(|_| HttpError::Malformed(format!("chunk size {hex:?}")))?;
        input = &input[line_end + 2..];
        if size == 0 {
            // Trailer fields (ignored) end with an empty line; a server that
            // closes right after the last chunk is tolerated.
            return Ok(body);
        }
        let data = input
            .get(..size)
            .ok_or_else(|| HttpError::Malformed("chunked body truncated (data)".into()))?;
        body.extend_from_slice(data);
        input = &input[size..];
        input = input
            .strip_prefix(b"\r\n")
            .ok_or_else(|| HttpError::Malformed("chunk data not followed by CRLF".into()))?;
    }
}

/// Offset of the first `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
