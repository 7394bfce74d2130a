//! The transit client's HTTP/1.1 answer reader (`hsm/src/transit/http.rs`) on what an
//! OpenBao server, or anything between it and us, may send.
//!
//! The first byte picks the mode:
//! * raw: the rest is the answer as sent. Never a panic; an accepted body is no longer than
//!   the answer and the body limit; an answer framed by one `Content-Length` (no transfer
//!   coding) gives exactly the bytes after the head, never more than declared.
//! * built: the rest chooses a status, a body, its framing (Content-Length, chunked with
//!   fuzzer-chosen chunk sizes and extensions, or the end of the connection) and extra
//!   headers; a well-framed answer must give back that status and that body exactly, and
//!   a misframed one (a chunk not followed by CRLF, a Content-Length above or at odds with
//!   another) must be refused, never read as a body the server did not declare.
#![no_main]

use ironroot_hsm::fuzzing::{read_transit_answer, MAX_TRANSIT_BODY};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        raw(rest);
    } else {
        let _ = built(&mut Unstructured::new(rest));
    }
});

fn raw(answer: &[u8]) {
    let Ok(got) = read_transit_answer(answer) else {
        return;
    };
    assert!(got.body.len() <= MAX_TRANSIT_BODY, "body past the limit");
    assert!(
        got.body.len() <= answer.len(),
        "body longer than the answer"
    );
    // The head as a plain reader sees it: lines up to the first empty one.
    let Some((head, after)) = split_head(answer) else {
        return;
    };
    let mut lengths = Vec::new();
    let mut coded = false;
    for line in head.split(|b| *b == b'\n').skip(1) {
        let line = String::from_utf8_lossy(line);
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            lengths.push(value.trim().to_owned());
        }
        if name.eq_ignore_ascii_case("transfer-encoding") {
            coded = true;
        }
    }
    if coded || lengths.len() != 1 {
        return;
    }
    let declared: usize = lengths[0]
        .parse()
        .expect("an accepted Content-Length parses");
    assert_eq!(
        got.body.len(),
        declared,
        "body length is not the declared length"
    );
    assert_eq!(
        &got.body[..],
        &after[..declared],
        "body is not the bytes after the head"
    );
}

/// The head (status line and headers, without the empty line) and what follows it.
fn split_head(answer: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut start = 0;
    while let Some(n) = answer[start..].iter().position(|b| *b == b'\n') {
        let line = &answer[start..start + n];
        if line.iter().all(|b| *b == b'\r') && start > 0 {
            return Some((&answer[..start.saturating_sub(1)], &answer[start + n + 1..]));
        }
        start += n + 1;
    }
    None
}

/// How the built answer frames its body.
enum Framing {
    Length,
    Chunked,
    Close,
}

fn built(u: &mut Unstructured<'_>) -> Result<()> {
    let status: u16 = u.int_in_range(100..=599)?;
    let framing = match u.int_in_range(0..=2)? {
        0 => Framing::Length,
        1 => Framing::Chunked,
        _ => Framing::Close,
    };
    // What goes wrong on purpose (0: nothing).
    let fault: u8 = u.int_in_range(0..=3)?;
    let body_len = u.int_in_range(0..=u.len().min(2048))?;
    let body: Vec<u8> = u.bytes(body_len)?.to_vec();
    let mut answer = format!("HTTP/1.1 {status} Whatever\r\n").into_bytes();
    for _ in 0..u.int_in_range(0..=3)? {
        // Headers the reader must not mistake for framing.
        let name = *u.choose(&["X-Vault-Request", "Content-Type", "Cache-Control", "Date"])?;
        let value: String = (0..u.int_in_range(0..=20)?)
            .map(|_| u.int_in_range(b' '..=b'~').map(char::from))
            .collect::<Result<_>>()?;
        answer.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    let mut must_fail = false;
    match framing {
        Framing::Length => {
            let declared = format!("Content-Length: {}\r\n", body.len());
            match fault {
                // A second, different length, before or after: which is the body's is
                // unknowable (RFC 9112 §6.3: an unrecoverable error).
                1 => {
                    let mut other = u.int_in_range(0..=body.len() + 256)?;
                    if other == body.len() {
                        other += 1;
                    }
                    let other = format!("content-length: {other}\r\n");
                    if u.arbitrary()? {
                        answer.extend_from_slice(other.as_bytes());
                        answer.extend_from_slice(declared.as_bytes());
                    } else {
                        answer.extend_from_slice(declared.as_bytes());
                        answer.extend_from_slice(other.as_bytes());
                    }
                    must_fail = true;
                }
                // The same length twice is the same declaration.
                2 => {
                    answer.extend_from_slice(declared.as_bytes());
                    answer.extend_from_slice(
                        format!("Content-Length:  {}\r\n", body.len()).as_bytes(),
                    );
                }
                _ => answer.extend_from_slice(declared.as_bytes()),
            }
            answer.extend_from_slice(b"\r\n");
            answer.extend_from_slice(&body);
            if fault == 3 {
                // Bytes past the declared length are not body.
                answer.extend_from_slice(u.bytes(u.len().min(64))?);
            }
        }
        Framing::Chunked => {
            answer.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            let mut rest = &body[..];
            let mut broken = fault == 1 && !body.is_empty();
            while !rest.is_empty() {
                let n = u.int_in_range(1..=rest.len())?;
                let (chunk, tail) = rest.split_at(n);
                let size = if u.arbitrary()? {
                    format!("{n:x}")
                } else {
                    format!("{n:X}")
                };
                answer.extend_from_slice(size.as_bytes());
                if u.arbitrary()? {
                    answer.extend_from_slice(b";name=value");
                }
                answer.extend_from_slice(b"\r\n");
                answer.extend_from_slice(chunk);
                if broken && u.arbitrary()? {
                    // Data past the chunk's size before its CRLF.
                    answer.extend_from_slice(b"junk");
                    must_fail = true;
                    broken = false;
                }
                answer.extend_from_slice(b"\r\n");
                rest = tail;
            }
            answer.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::Close => {
            answer.extend_from_slice(b"\r\n");
            answer.extend_from_slice(&body);
        }
    }
    let got = read_transit_answer(&answer);
    if must_fail {
        assert!(got.is_err(), "a misframed answer was read: {got:?}");
        return Ok(());
    }
    let got = got.unwrap_or_else(|e| panic!("a well-framed answer was refused: {e}"));
    assert_eq!(got.status, status);
    let expected: &[u8] = match framing {
        // No body without a framing for 204 and 304.
        Framing::Close if status == 204 || status == 304 => &[],
        _ => &body,
    };
    assert_eq!(got.body, expected, "the body read is not the body sent");
    Ok(())
}
