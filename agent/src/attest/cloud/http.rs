//! A blocking HTTP/1.1 client for the instance metadata services: one request per
//! connection (`Connection: close`), a timeout on connecting, sending and each read, a cap
//! on the response size, `Content-Length`, chunked and close-delimited bodies. Errors name
//! what was being fetched and from where.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// The largest response accepted (identity documents and tokens are a few KiB).
const MAX_RESPONSE: usize = 1024 * 1024;

/// Why evidence could not be fetched from the metadata service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MetadataError {
    /// No connection, or the service did not answer in time.
    #[error(
        "cannot fetch the {what} from {url}: {source} (is this agent on an instance of that \
         cloud, and is the metadata endpoint option right?)"
    )]
    Unreachable {
        /// What was fetched.
        what: &'static str,
        /// From where.
        url: String,
        /// The I/O error (timed out, refused, ...).
        #[source]
        source: std::io::Error,
    },
    /// The service answered with a status other than 200.
    #[error("the metadata service answered HTTP {status} for the {what} ({url}): {body}")]
    Status {
        /// What was fetched.
        what: &'static str,
        /// From where.
        url: String,
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer was empty.
    #[error("the metadata service sent an empty {what} ({url})")]
    Empty {
        /// What was fetched.
        what: &'static str,
        /// From where.
        url: String,
    },
    /// The answer is not HTTP, not UTF-8, too large, or not the JSON expected.
    #[error("the metadata service's answer for the {what} ({url}) is malformed: {reason}")]
    Malformed {
        /// What was fetched.
        what: &'static str,
        /// From where.
        url: String,
        /// What was wrong.
        reason: String,
    },
}

/// One request.
pub(super) struct Request<'a> {
    /// What is fetched, for errors ("IMDSv2 token", "instance identity document").
    pub(super) what: &'static str,
    /// `GET` or `PUT`.
    pub(super) method: &'static str,
    /// `http://host[:port]` (no trailing slash).
    pub(super) base: &'a str,
    /// Path and query, starting with `/`.
    pub(super) path_and_query: &'a str,
    /// Extra request headers.
    pub(super) headers: &'a [(&'a str, &'a str)],
    /// Connect, write and per-read timeout.
    pub(super) timeout: Duration,
}

impl Request<'_> {
    fn url(&self) -> String {
        format!("{}{}", self.base, self.path_and_query)
    }

    /// Sends the request; the body of a 200 answer, as text, non-empty.
    pub(super) fn send(&self) -> Result<String, MetadataError> {
        let url = self.url();
        let unreachable = |source| MetadataError::Unreachable {
            what: self.what,
            url: url.clone(),
            source,
        };
        let malformed = |reason: String| MetadataError::Malformed {
            what: self.what,
            url: url.clone(),
            reason,
        };
        let host = self
            .base
            .strip_prefix("http://")
            .ok_or_else(|| malformed("the endpoint is not an http:// URL".into()))?
            .trim_end_matches('/');
        let addr_text = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !host.ends_with(']')
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addrs: Vec<_> = addr_text.to_socket_addrs().map_err(unreachable)?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, self.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let mut stream = stream.ok_or_else(|| unreachable(last))?;
        stream
            .set_read_timeout(Some(self.timeout))
            .and_then(|()| stream.set_write_timeout(Some(self.timeout)))
            .map_err(unreachable)?;
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nAccept: */*\r\n",
            self.method, self.path_and_query
        );
        for (k, v) in self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if self.method == "PUT" {
            head.push_str("Content-Length: 0\r\n");
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).map_err(unreachable)?;
        let mut raw = Vec::new();
        (&mut stream)
            .take(MAX_RESPONSE as u64 + 1)
            .read_to_end(&mut raw)
            .map_err(unreachable)?;
        if raw.len() > MAX_RESPONSE {
            return Err(malformed(format!("larger than {MAX_RESPONSE} bytes")));
        }
        let (status, body) = parse_response(&raw).map_err(malformed)?;
        let body =
            String::from_utf8(body).map_err(|_| malformed("the body is not UTF-8".into()))?;
        if status != 200 {
            let mut shown: String = body.chars().take(200).collect();
            if shown.trim().is_empty() {
                shown = "(no body)".into();
            }
            return Err(MetadataError::Status {
                what: self.what,
                url,
                status,
                body: shown,
            });
        }
        if body.trim().is_empty() {
            return Err(MetadataError::Empty {
                what: self.what,
                url,
            });
        }
        Ok(body)
    }
}

/// The status and the (de-chunked) body of a whole response.
fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the answer is not HTTP (no end of headers)")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "the headers are not text")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next().unwrap_or_default(), parts.next());
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status = code
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(|| format!("no status code in {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))?,
            );
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            chunked = v.to_ascii_lowercase().contains("chunked");
        }
    }
    if chunked {
        return dechunk(body).map(|b| (status, b));
    }
    match length {
        Some(n) if body.len() < n => {
            Err(format!("the body ended after {} of {n} bytes", body.len()))
        }
        Some(n) => Ok((status, body[..n].to_vec())),
        None => Ok((status, body.to_vec())),
    }
}

fn dechunk(mut body: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = body
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut short")?;
        let size_text =
            std::str::from_utf8(&body[..eol]).map_err(|_| "a chunk size is not text")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        body = &body[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if body.len() < size + 2 {
            return Err("a chunk is cut short".into());
        }
        out.extend_from_slice(&body[..size]);
        body = &body[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_by_length_chunks_or_close_and_refusals_by_name() {
        let ok = |raw: &str| parse_response(raw.as_bytes()).unwrap();
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcdef"),
            (200, b"abc".to_vec())
        );
        assert_eq!(
            ok("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n"),
            (200, b"abcde".to_vec())
        );
        assert_eq!(
            ok("HTTP/1.0 404 Not Found\r\n\r\nnope"),
            (404, b"nope".to_vec())
        );
        for (raw, words) in [
            ("garbage", "no end of headers"),
            ("SMTP 200\r\n\r\n", "not an HTTP/1.x status line"),
            ("HTTP/1.1 abc\r\n\r\n", "no status code"),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab",
                "ended after 2 of 9",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                "bad chunk size",
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n9\r\nab",
                "cut short",
            ),
        ] {
            let e = parse_response(raw.as_bytes()).unwrap_err();
            assert!(e.contains(words), "{raw:?}: {e}");
        }
    }
}
