use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread;

use super::*;

/// Connects to `socket` and GETs `path`.
fn get(socket: &Path, path: &str, timeout: Duration, max: usize) -> Result<Response, HttpError> {
    get_on(connect(socket, timeout).unwrap(), path, timeout, max)
}

#[test]
fn content_length_body() {
    let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.reason, "OK");
    assert_eq!(r.body, b"hello");
}

#[test]
fn header_names_are_case_insensitive_and_extra_bytes_ignored() {
    let r = parse_response(b"HTTP/1.0 404 Not Found\r\ncontent-length:  3 \r\n\r\nabcdef").unwrap();
    assert_eq!((r.status, r.reason.as_str()), (404, "Not Found"));
    assert_eq!(r.body, b"abc");
}

#[test]
fn chunked_body_with_extensions_and_trailers() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                4;name=v\r\n{\"a\"\r\nA\r\n:\"0123456\"\r\n1\r\n}\r\n0\r\nX-Trailer: t\r\n\r\n";
    let r = parse_response(raw).unwrap();
    assert_eq!(r.body, br#"{"a":"0123456"}"#);
}

#[test]
fn chunked_wins_over_content_length() {
    let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
                2\r\nok\r\n0\r\n\r\n";
    assert_eq!(parse_response(raw).unwrap().body, b"ok");
}

#[test]
fn body_delimited_by_close() {
    let r = parse_response(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\nuntil the end").unwrap();
    assert_eq!(r.body, b"until the end");
}

#[test]
fn empty_reason_phrase() {
    let r = parse_response(b"HTTP/1.1 204\r\n\r\n").unwrap();
    assert_eq!((r.status, r.reason.as_str()), (204, ""));
    assert!(r.body.is_empty());
}

fn malformed(raw: &[u8]) -> String {
    match parse_response(raw) {
        Err(HttpError::Malformed(m)) => m,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

#[test]
fn malformed_responses() {
    assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n").contains("end of the header"));
    assert!(malformed(b"SSH-2.0-OpenSSH\r\n\r\n").contains("status line"));
    assert!(malformed(b"HTTP/1.1 2000 OK\r\n\r\n").contains("status line"));
    assert!(malformed(b"HTTP/1.1 abc OK\r\n\r\n").contains("status line"));
    assert!(malformed(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n").contains("no ':'"));
    assert!(malformed(b"HTTP/1.1 200 OK\r\nX: \xff\r\n\r\n").contains("UTF-8"));
    assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n").contains("not a number"));
    assert!(
        malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")
            .contains("conflicting")
    );
    assert!(malformed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort").contains("truncated"));
}

#[test]
fn malformed_chunked_bodies() {
    for (body, words) in [
        (&b"5\r\nab"[..], "truncated (data)"),
        (b"5\r\nabcde", "not followed by CRLF"),
        (b"2\r\nab\r\n", "truncated (size line)"),
        (b"zz\r\nab\r\n0\r\n\r\n", "chunk size"),
        (b"\r\n", "chunk size"),
        (b"ffffffffffffffffff\r\n", "chunk size"),
    ] {
        match decode_chunked(body) {
            Err(HttpError::Malformed(m)) => assert!(m.contains(words), "{m} vs {words}"),
            other => panic!("{body:?}: expected Malformed, got {other:?}"),
        }
    }
}

/// A one-shot server on a fresh socket: reads the request head, hands it to
/// the test over the join handle, and answers with `reply` (written in the
/// given pieces, so framing split across reads is exercised).
fn serve(reply: Vec<Vec<u8>>) -> (tempfile::TempDir, PathBuf, thread::JoinHandle<String>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let handle = thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn);
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let mut conn = reader.into_inner();
        for piece in reply {
            if conn.write_all(&piece).is_err() {
                break;
            }
            conn.flush().ok();
            thread::sleep(Duration::from_millis(5));
        }
        head
    });
    (dir, path, handle)
}

#[test]
fn get_sends_a_closing_get_and_decodes_a_split_chunked_reply() {
    let (_dir, path, server) = serve(vec![
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chun".to_vec(),
        b"ked\r\n\r\n3\r\nab".to_vec(),
        b"c\r\n0\r\n\r\n".to_vec(),
    ]);
    let r = get(&path, "/v4.0.0/libpod/_ping", Duration::from_secs(5), 1024).unwrap();
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
    let head = server.join().unwrap();
    assert!(
        head.starts_with("GET /v4.0.0/libpod/_ping HTTP/1.1\r\n"),
        "{head}"
    );
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert!(head.contains("Host: "), "{head}");
}

#[test]
fn get_caps_the_response_size() {
    let mut big = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 4096));
    let (_dir, path, _server) = serve(vec![big]);
    match get(&path, "/big", Duration::from_secs(5), 1000) {
        Err(HttpError::TooLarge(1000)) => {}
        other => panic!("expected TooLarge, got {other:?}"),
    }
}

#[test]
fn get_times_out_when_the_server_never_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("slow.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    // Accept and hold the connection open, without answering, until told.
    let holder = thread::spawn(move || {
        let conn = listener.accept().map(|(c, _)| c);
        done_rx.recv().ok();
        drop(conn);
    });
    let started = Instant::now();
    match get(&path, "/slow", Duration::from_millis(200), 1024) {
        Err(HttpError::TimedOut(d)) => assert_eq!(d, Duration::from_millis(200)),
        other => panic!("expected TimedOut, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

#[test]
fn connect_times_out_when_the_backlog_is_full() {
    use nix::sys::socket::{bind, listen, Backlog};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.sock");
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    bind(fd.as_raw_fd(), &UnixAddr::new(&path).unwrap()).unwrap();
    listen(&fd, Backlog::new(0).unwrap()).unwrap();
    // Nobody accepts: the first connection fills the (empty) backlog.
    let mut held = Vec::new();
    let started = Instant::now();
    let err = loop {
        match connect(&path, Duration::from_millis(200)) {
            Ok(c) => held.push(c),
            Err(e) => break e,
        }
        assert!(held.len() < 10, "backlog never filled");
    };
    assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn connect_to_a_missing_socket_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let err = connect(&dir.path().join("none.sock"), Duration::from_secs(5)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::NotFound);
}

#[test]
fn get_refuses_paths_that_would_break_the_request_line() {
    for bad in ["relative", "/a b", "/a\r\nX: y"] {
        let (a, _b) = UnixStream::pair().unwrap();
        assert!(matches!(
            get_on(a, bad, Duration::from_secs(1), 10),
            Err(HttpError::Malformed(_))
        ));
    }
}
