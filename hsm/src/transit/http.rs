//! A small blocking HTTP/1.1 client for the Vault API: one request per connection
//! (`Connection: close`), TLS through rustls verified against the configured CA file (or the
//! system's roots), plain HTTP only when the configuration says `insecure_http = true`.
//!
//! Blocking because [`crate::KeyManager`] is synchronous (the server calls it from its
//! blocking pool, like the PKCS#11 one); std's sockets plus rustls's blocking stream need no
//! runtime. The configured timeout bounds the whole request, from connect to the last byte of
//! the answer: every read and write gets only the time left, so a server (or a proxy) that
//! trickles its answer cannot hold a signing call past it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// Largest answer body read (a key listing of thousands of names fits easily).
pub(crate) const MAX_BODY: usize = 4 << 20;
/// Largest status or header line.
const MAX_LINE: usize = 16 << 10;

/// The server's answer.
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
}

/// A request that got no HTTP answer; the text says why.
#[derive(Debug)]
pub(super) struct NoAnswer(pub(super) String);

enum Scheme {
    Http,
    Https {
        config: Arc<rustls::ClientConfig>,
        name: ServerName<'static>,
    },
}

/// Where the server is and how to reach it.
pub(super) struct Client {
    scheme: Scheme,
    host: String,
    port: u16,
    timeout: Duration,
}

/// Why the address or TLS options are unusable (option name, reason).
pub(super) type OptionError = (&'static str, String);

impl Client {
    /// `address` is `https://host[:port]` (or `http://` when `insecure_http`), no path.
    pub(super) fn new(
        address: &str,
        ca_file: Option<&Path>,
        insecure_http: bool,
        timeout: Duration,
    ) -> Result<Client, OptionError> {
        let bad = |reason: &str| ("address", format!("{address:?}: {reason}"));
        let (tls, rest) = if let Some(rest) = address.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = address.strip_prefix("http://") {
            if !insecure_http {
                return Err(bad(
                    "plain http sends the token and every digest unprotected; use https:// \
                     (set insecure_http = true only for a local dev server)",
                ));
            }
            (false, rest)
        } else {
            return Err(bad("must start with https://"));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.is_empty() || rest.contains('/') || rest.contains('@') {
            return Err(bad("must be scheme://host[:port] with no path or user"));
        }
        let (host, port) = split_host_port(rest).ok_or_else(|| bad("bad host or port"))?;
        let default_port = if tls { 443 } else { 80 };
        let port = port.unwrap_or(default_port);
        let scheme = if tls {
            let config = tls_config(ca_file)?;
            let name = ServerName::try_from(host.clone())
                .map_err(|e| bad(&format!("not a host name or address: {e}")))?;
            Scheme::Https { config, name }
        } else {
            Scheme::Http
        };
        Ok(Client {
            scheme,
            host,
            port,
            timeout,
        })
    }

    /// Sends one request and reads the whole answer.
    pub(super) fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Result<Response, NoAnswer> {
        let deadline = Instant::now() + self.timeout;
        let tcp = self.connect(deadline)?;
        let mut head = format!(
            "{method} /v1/{path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\n\
             Connection: close\r\nUser-Agent: ironroot\r\n",
            self.authority()
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        if !body.is_empty() || method != "GET" {
            head.push_str("Content-Type: application/json\r\n");
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let timeout = self.timeout;
        let io = |e: std::io::Error| match e.kind() {
            // A socket read or write timeout shows as EAGAIN.
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => NoAnswer(format!(
                "{method} /v1/{path}: no answer within {timeout:?} (the `timeout` option, over \
                 the whole request)"
            )),
            _ => NoAnswer(format!("{method} /v1/{path}: {e}")),
        };
        match &self.scheme {
            Scheme::Http => exchange(tcp, head.as_bytes(), body).map_err(io),
            Scheme::Https { config, name } => {
                let conn = rustls::ClientConnection::new(config.clone(), name.clone())
                    .map_err(|e| NoAnswer(format!("TLS set-up: {e}")))?;
                let stream = rustls::StreamOwned::new(conn, tcp);
                exchange(stream, head.as_bytes(), body).map_err(io)
            }
        }
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    fn connect(&self, deadline: Instant) -> Result<Deadlined, NoAnswer> {
        let addrs = resolve(&self.host, self.port, deadline, self.timeout)?;
        let mut last = None;
        for addr in addrs {
            let Some(left) = time_left(deadline) else {
                last = Some(format!(
                    "connect to {addr}: no connection within {:?} (the `timeout` option)",
                    self.timeout
                ));
                break;
            };
            match TcpStream::connect_timeout(&addr, left) {
                Ok(tcp) => {
                    tcp.set_nodelay(true)
                        .map_err(|e| NoAnswer(format!("socket options: {e}")))?;
                    return Ok(Deadlined { tcp, deadline });
                }
                Err(e) => last = Some(format!("connect to {addr}: {e}")),
            }
        }
        Err(NoAnswer(last.unwrap_or_else(|| {
            format!("{} resolves to no address", self.host)
        })))
    }
}

/// The addresses of `host`, within the request's deadline. The system resolver has its own
/// timeouts (resolv.conf: seconds per server, per attempt), longer than a signing call may
/// take, so a name is resolved on a helper thread that is left to finish on its own when
/// the deadline passes first. An address literal needs no lookup.
fn resolve(
    host: &str,
    port: u16,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<SocketAddr>, NoAnswer> {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let late = || {
        NoAnswer(format!(
            "cannot resolve {host}: no answer from the system resolver within {timeout:?} (the \
             `timeout` option, over the whole request)"
        ))
    };
    let left = time_left(deadline).ok_or_else(late)?;
    let (tx, rx) = std::sync::mpsc::channel();
    let name = host.to_owned();
    std::thread::Builder::new()
        .name("transit-resolve".into())
        .spawn(move || {
            let found = (name.as_str(), port)
                .to_socket_addrs()
                .map(|a| a.collect::<Vec<_>>());
            // The caller may have given up: nobody to tell.
            let _ = tx.send(found);
        })
        .map_err(|e| {
            NoAnswer(format!(
                "cannot resolve {host}: no thread for the lookup: {e}"
            ))
        })?;
    match rx.recv_timeout(left) {
        Ok(Ok(addrs)) => Ok(addrs),
        Ok(Err(e)) => Err(NoAnswer(format!("cannot resolve {host}: {e}"))),
        Err(_) => Err(late()),
    }
}

/// The time until `deadline`; `None` once it has passed (a zero socket timeout would mean
/// none at all).
fn time_left(deadline: Instant) -> Option<Duration> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
}

/// A connection whose reads and writes share one deadline: each gets the time left as its
/// socket timeout, and none starts after the deadline.
struct Deadlined {
    tcp: TcpStream,
    deadline: Instant,
}

impl Deadlined {
    fn left(&self) -> std::io::Result<Duration> {
        time_left(self.deadline).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request's deadline passed",
            )
        })
    }
}

impl Read for Deadlined {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        self.tcp.read(buf)
    }
}

impl Write for Deadlined {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?.parse().ok()?),
        };
        return Some((host.to_owned(), port));
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            Some((host.to_owned(), Some(port.parse().ok()?)))
        }
        Some(_) => None,
        None => Some((s.to_owned(), None)),
    }
}

fn tls_config(ca_file: Option<&Path>) -> Result<Arc<rustls::ClientConfig>, OptionError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let bad = |reason: String| ("ca_file", format!("{}: {reason}", path.display()));
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            for cert in found.certs {
                // A malformed system certificate is skipped, as every client does.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err((
                    "ca_file",
                    "not set and the system has no CA certificates: set ca_file to the CA \
                     that issued the server's certificate"
                        .into(),
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ("address", format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn exchange<S: Read + Write>(mut s: S, head: &[u8], body: &[u8]) -> std::io::Result<Response> {
    s.write_all(head)?;
    s.write_all(body)?;
    s.flush()?;
    read_response(BufReader::new(s))
}

fn invalid(msg: impl Into<String>) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg.into())
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut line = Vec::new();
    let n = r.take(MAX_LINE as u64).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a complete answer",
        ));
    }
    if !line.ends_with(b"\n") {
        return Err(invalid("header line too long or cut off"));
    }
    let text = String::from_utf8(line).map_err(|_| invalid("header not UTF-8"))?;
    Ok(text.trim_end_matches(['\r', '\n']).to_owned())
}

/// Parses an HTTP/1.1 answer: status, headers, and a body framed by `Content-Length`,
/// chunked transfer coding, or the end of the connection.
pub(crate) fn read_response(mut r: impl BufRead) -> std::io::Result<Response> {
    let status_line = read_line(&mut r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1 answer: {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(&mut r)?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(invalid(format!("bad header line {line:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n: usize = value.parse().map_err(|_| invalid("bad Content-Length"))?;
            // Two different lengths leave the body's end unknowable (RFC 9112 §6.3).
            if length.is_some_and(|l| l != n) {
                return Err(invalid("differing Content-Length headers"));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = read_line(&mut r)?;
            let size_hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                break;
            }
            // Checked: the size is the server's number, and a wrapped sum would pass.
            if body.len().checked_add(size).is_none_or(|n| n > MAX_BODY) {
                return Err(invalid("answer body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            // The chunk's data ends at its size: anything before the CRLF is misframing.
            if !read_line(&mut r)?.is_empty() {
                return Err(invalid(format!(
                    "chunk of {size} bytes not followed by CRLF"
                )));
            }
        }
    } else if let Some(n) = length {
        if n > MAX_BODY {
            return Err(invalid("answer body too large"));
        }
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        r.take(MAX_BODY as u64 + 1).read_to_end(&mut body)?;
        if body.len() > MAX_BODY {
            return Err(invalid("answer body too large"));
        }
    }
    Ok(Response { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_resolved_within_the_deadline_and_literals_without_a_lookup() {
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            resolve("127.0.0.1", 8200, soon, Duration::from_secs(5)).unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 8200))]
        );
        assert_eq!(
            resolve("::1", 8200, soon, Duration::from_secs(5)).unwrap(),
            vec!["[::1]:8200".parse::<SocketAddr>().unwrap()]
        );
        // A literal needs no time at all, even past the deadline.
        let past = Instant::now() - Duration::from_millis(1);
        assert!(resolve("127.0.0.1", 1, past, Duration::from_secs(1)).is_ok());
        // A name is not looked up once the deadline has passed.
        let e = resolve("localhost", 8200, past, Duration::from_secs(1)).unwrap_err();
        assert!(e.0.contains("within 1s (the `timeout` option"), "{}", e.0);
        // Within the deadline, the system resolver answers.
        assert!(resolve("localhost", 8200, soon, Duration::from_secs(5))
            .unwrap()
            .iter()
            .all(|a| a.port() == 8200 && a.ip().is_loopback()));
        let e = resolve("no-such-host.invalid", 8200, soon, Duration::from_secs(5)).unwrap_err();
        assert!(
            e.0.starts_with("cannot resolve no-such-host.invalid"),
            "{}",
            e.0
        );
    }

    #[test]
    fn content_length_chunked_and_empty_bodies() {
        let r = read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"[..]).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"{}"[..]));
        let r = read_response(
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..],
        )
        .unwrap();
        assert_eq!(r.body, b"abcde");
        let r = read_response(&b"HTTP/1.1 204 No Content\r\n\r\n"[..]).unwrap();
        assert_eq!((r.status, r.body.len()), (204, 0));
        assert!(read_response(&b"SSH-2.0-x\r\n\r\n"[..]).is_err());
        assert!(read_response(&b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}"[..]).is_err());
    }

    #[test]
    fn a_chunk_size_past_usize_is_refused_not_a_panic() {
        // One byte, then a chunk whose size added to it overflows usize.
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       1\r\na\r\nFFFFFFFFFFFFFFFF\r\n";
        let e = read_response(&answer[..]).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("too large"), "{e}");
    }

    #[test]
    fn a_chunk_not_followed_by_crlf_is_refused() {
        // Found by the transit_http_response fuzz target: bytes past a chunk's declared size
        // were dropped up to the next line end, and the answer read as if well framed.
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3\r\nabcjunk\r\n0\r\n\r\n";
        let e = read_response(&answer[..]).err().expect("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("chunk"), "{e}");
    }

    #[test]
    fn differing_content_lengths_are_refused() {
        // Found by the transit_http_response fuzz target: the last Content-Length won, so an
        // answer declaring 2 and then 5 gave five bytes of body.
        for heads in [
            "Content-Length: 2\r\nContent-Length: 5",
            "Content-Length: 5\r\ncontent-length: 2",
        ] {
            let answer = format!("HTTP/1.1 200 OK\r\n{heads}\r\n\r\n{{}}abc");
            let e = read_response(answer.as_bytes()).err().expect("refused");
            assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
            assert!(e.to_string().contains("Content-Length"), "{e}");
        }
        // The same length twice is one declaration.
        let r = read_response(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}"[..],
        )
        .unwrap();
        assert_eq!(r.body, b"{}");
    }

    /// A server that answers a header at once and then one body byte every 200 ms (each read
    /// well inside the timeout, the whole answer far past it).
    fn trickling_server() -> (u16, std::thread::JoinHandle<()>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("accept");
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            while read_line(&mut r).is_ok_and(|l| !l.is_empty()) {}
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n");
            for _ in 0..30 {
                std::thread::sleep(Duration::from_millis(200));
                if s.write_all(b"x").is_err() {
                    return; // the client gave up
                }
            }
        });
        (port, server)
    }

    #[test]
    fn the_timeout_bounds_the_whole_answer_not_each_read() {
        let (port, server) = trickling_server();
        let client = Client::new(
            &format!("http://127.0.0.1:{port}"),
            None,
            true,
            Duration::from_secs(1),
        )
        .expect("client");
        let e = client
            .request("GET", "sys/health", &[], None)
            .err()
            .expect("a 6 s answer must not beat a 1 s timeout");
        assert!(e.0.contains("no answer within 1s"), "{}", e.0);
        server.join().expect("server");
    }

    #[test]
    fn addresses_need_https_unless_insecure_http() {
        let t = Duration::from_secs(1);
        assert!(Client::new("http://127.0.0.1:8200", None, false, t).is_err());
        assert!(Client::new("http://127.0.0.1:8200", None, true, t).is_ok());
        assert!(Client::new("ftp://x", None, true, t).is_err());
        assert!(Client::new("http://h:8200/v1", None, true, t).is_err());
        assert!(Client::new("http://[::1]:8200", None, true, t).is_ok());
        assert!(Client::new("http://h:port", None, true, t).is_err());
        let missing = Path::new("/nonexistent/ca.pem");
        let err = Client::new("https://h", Some(missing), false, t)
            .err()
            .unwrap();
        assert_eq!(err.0, "ca_file");
    }
}
