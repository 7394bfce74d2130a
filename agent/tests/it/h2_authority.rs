//! The `:authority` shim between real h2 peers: the agent's HTTP/2 server
//! (h2, as tonic runs it) refuses the socket-path authorities gRPC clients
//! send, accepts them through the shim, and sees every other header exactly
//! as a real h2 client sent it; its refusals and the shim's are logged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{frame, rt};

use ironroot_agent::workload::h2_authority::frames::{Refusal, ServerFrames};
use ironroot_agent::workload::h2_authority::hpack::{encode_block, Field};
use ironroot_agent::workload::h2_authority::AuthorityShim;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A gRPC-shaped request on stream 1 with `authority` (none: absent), as
/// literal HPACK, after the preface and an empty SETTINGS.
fn raw_request(authority: Option<&[u8]>) -> Vec<u8> {
    let mut list: Vec<(&[u8], &[u8])> = vec![
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
    ];
    if let Some(a) = authority {
        list.push((b":authority", a));
    }
    list.push((b"content-type", b"application/grpc"));
    list.push((b"te", b"trailers"));
    list.push((b"workload.spiffe.io", b"true"));
    let fields: Vec<Field> = list
        .into_iter()
        .map(|(n, v)| Field {
            name: n.to_vec(),
            value: v.to_vec(),
            never_indexed: false,
        })
        .collect();
    let mut block = Vec::new();
    encode_block(&fields, &mut block);
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x4 | 0x1, 1, &block));
    out
}

#[derive(Debug, PartialEq)]
enum Outcome {
    /// The server handed the request to the application, with this URI.
    Accepted(String),
    /// The server reset stream 1 with this HTTP/2 error code.
    Reset(u32),
    /// The connection ended (the shim closed it).
    Closed,
}

/// Sends `bytes` to an h2 server (through the shim when `shim`) and reports
/// what became of stream 1.
async fn exchange(bytes: Vec<u8>, shim: bool) -> Outcome {
    let (mut client, server_io) = tokio::io::duplex(1 << 20);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let accepted = tx.clone();
    tokio::spawn(async move {
        async fn serve<T>(io: T, tx: mpsc::UnboundedSender<Outcome>) -> Result<(), h2::Error>
        where
            T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
        {
            let mut conn = h2::server::handshake(io).await?;
            while let Some(r) = conn.accept().await {
                let (req, mut respond) = r?;
                let _ = tx.send(Outcome::Accepted(req.uri().to_string()));
                respond.send_response(http::Response::new(()), true)?;
            }
            Ok(())
        }
        let _ = if shim {
            serve(AuthorityShim::new(server_io, 4242), accepted).await
        } else {
            serve(server_io, accepted).await
        };
    });
    client.write_all(&bytes).await.unwrap();
    let reader = async move {
        let mut watch = ServerFrames::default();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = client.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                let _ = tx.send(Outcome::Closed);
                return;
            }
            let mut found = Vec::new();
            watch.observe(&buf[..n], &mut found);
            for f in found {
                if let Refusal::StreamReset { stream: 1, code } = f {
                    let _ = tx.send(Outcome::Reset(code));
                }
            }
        }
    };
    tokio::spawn(reader);
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("the server neither accepted nor refused the request within 10 s")
        .unwrap()
}

const SOCKET_AUTHORITIES: &[&[u8]] = &[
    b"tmp%2Frun%2Fagent.sock",
    b"%2Frun%2Fspire%2Fsockets%2Fagent.sock",
    b"/tmp/run/agent.sock",
    b"",
];

/// The bug, reproduced: h2 resets the stream (PROTOCOL_ERROR) for every
/// authority a gRPC client derives from a unix socket path.
#[test]
fn h2_alone_refuses_socket_path_authorities() {
    rt().block_on(async {
        for a in SOCKET_AUTHORITIES {
            assert_eq!(
                exchange(raw_request(Some(a)), false).await,
                Outcome::Reset(1),
                "authority {:?}",
                String::from_utf8_lossy(a)
            );
        }
        for (a, uri) in [
            (
                Some(&b"localhost"[..]),
                "http://localhost/SpiffeWorkloadAPI/FetchX509SVID",
            ),
            (None, "/SpiffeWorkloadAPI/FetchX509SVID"),
        ] {
            assert_eq!(
                exchange(raw_request(a), false).await,
                Outcome::Accepted(uri.into())
            );
        }
    });
}

/// Through the shim every one of them reaches the application, as localhost;
/// `localhost` and an absent authority are unchanged.
#[test]
fn through_the_shim_h2_accepts_every_authority_a_client_sends() {
    rt().block_on(async {
        for a in SOCKET_AUTHORITIES {
            assert_eq!(
                exchange(raw_request(Some(a)), true).await,
                Outcome::Accepted("http://localhost/SpiffeWorkloadAPI/FetchX509SVID".into()),
                "authority {:?}",
                String::from_utf8_lossy(a)
            );
        }
        for (a, uri) in [
            (
                Some(&b"localhost"[..]),
                "http://localhost/SpiffeWorkloadAPI/FetchX509SVID",
            ),
            (
                Some(b"example.org:8081"),
                "http://example.org:8081/SpiffeWorkloadAPI/FetchX509SVID",
            ),
            (None, "/SpiffeWorkloadAPI/FetchX509SVID"),
        ] {
            assert_eq!(
                exchange(raw_request(a), true).await,
                Outcome::Accepted(uri.into())
            );
        }
    });
}

/// Random requests from a real h2 client (HPACK with Huffman, a dynamic
/// table and its evictions, size updates, never-indexed sensitive values)
/// reach a real h2 server through the shim with the same URI, headers and
/// values, many per connection. (h2 does not report "never indexed" on the
/// receiving side; the unit tests check the shim keeps it.)
#[test]
fn a_real_h2_client_s_headers_reach_the_server_unchanged() {
    rt().block_on(async {
        for seed in 0..4u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let (client_io, server_io) = tokio::io::duplex(1 << 20);
            let (seen_tx, mut seen) = mpsc::unbounded_channel();
            // A smaller table than the protocol's makes the client send a size update.
            let table = [4096u32, 1024, 0][seed as usize % 3];
            tokio::spawn(async move {
                let mut conn = h2::server::Builder::new()
                    .header_table_size(table)
                    .handshake::<_, bytes::Bytes>(AuthorityShim::new(server_io, 1))
                    .await
                    .unwrap();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    let _ = seen_tx.send(req.into_parts().0);
                    let _ = respond.send_response(http::Response::new(()), true);
                }
            });
            let (mut send, conn) = h2::client::handshake(client_io).await.unwrap();
            tokio::spawn(conn);
            for i in 0..40 {
                let mut req = http::Request::builder()
                    .method("POST")
                    .uri(format!("http://localhost/SpiffeWorkloadAPI/Call{}", i % 3));
                let mut sent = http::HeaderMap::new();
                for _ in 0..rng.gen_range(0..10) {
                    let name = format!("x-{}", rng.gen_range(0..8));
                    let max = if rng.gen_bool(0.1) { 1500 } else { 30 };
                    let len = rng.gen_range(0..max);
                    let bytes: Vec<u8> = (0..len)
                        .map(|_| match rng.gen_range(0..3) {
                            0 => rng.gen_range(0x80..=0xff),
                            _ => rng.gen_range(0x21..=0x7e),
                        })
                        .collect();
                    let mut v = http::HeaderValue::from_bytes(&bytes).unwrap();
                    v.set_sensitive(rng.gen_bool(0.3));
                    sent.append(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), v);
                }
                *req.headers_mut().unwrap() = sent.clone();
                let req = req.body(()).unwrap();
                let uri = req.uri().clone();
                send = send.ready().await.unwrap();
                let (resp, _) = send.send_request(req, true).unwrap();
                let got = tokio::time::timeout(Duration::from_secs(10), seen.recv())
                    .await
                    .expect("request reached the server")
                    .unwrap();
                resp.await.unwrap();
                assert_eq!(got.uri, uri, "seed {seed} request {i}");
                assert_eq!(got.headers, sent, "seed {seed} request {i}");
            }
        }
    });
}

/// A log sink for one test thread.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn captured_logs(run: impl FnOnce()) -> String {
    let sink = Captured::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, run);
    let out = sink.0.lock().unwrap().clone();
    String::from_utf8(out).unwrap()
}

/// Refusals are never silent: h2's stream reset, the shim's own refusal and
/// a replaced authority each leave a line naming the caller's PID.
#[test]
fn refusals_are_logged_with_the_peer_pid_and_the_reason() {
    // A request h2 refuses for another reason: a connection-level header.
    let mut bad = raw_request(Some(b"localhost"));
    let fields = vec![
        Field {
            name: b":method".to_vec(),
            value: b"POST".to_vec(),
            never_indexed: false,
        },
        Field {
            name: b":scheme".to_vec(),
            value: b"http".to_vec(),
            never_indexed: false,
        },
        Field {
            name: b":path".to_vec(),
            value: b"/x".to_vec(),
            never_indexed: false,
        },
        Field {
            name: b"connection".to_vec(),
            value: b"keep-alive".to_vec(),
            never_indexed: false,
        },
    ];
    let mut block = Vec::new();
    encode_block(&fields, &mut block);
    bad.extend(frame(0x1, 0x5, 3, &block));
    let logs = captured_logs(|| {
        rt().block_on(async {
            assert_eq!(
                exchange(raw_request(Some(b"tmp%2Fa.sock")), true).await,
                Outcome::Accepted("http://localhost/SpiffeWorkloadAPI/FetchX509SVID".into())
            );
            assert_eq!(
                exchange(frame_after_preface(&[0x80 | 99]), true).await,
                Outcome::Closed
            );
        })
    });
    assert!(
        logs.contains("pid=4242")
            && logs.contains("authority=\"tmp%2Fa.sock\"")
            && logs.contains("handed to the server as localhost"),
        "{logs}"
    );
    assert!(
        logs.contains("WARN")
            && logs.contains("the client broke an HTTP/2 rule")
            && logs.contains("index 99 is outside the static and dynamic tables"),
        "{logs}"
    );

    let logs = captured_logs(|| {
        rt().block_on(async {
            let (mut client, server_io) = tokio::io::duplex(1 << 20);
            tokio::spawn(async move {
                let mut conn = h2::server::handshake(AuthorityShim::new(server_io, 4242))
                    .await
                    .unwrap();
                while let Some(Ok((_, mut r))) = conn.accept().await {
                    let _ = r.send_response(http::Response::new(()), true);
                }
            });
            client.write_all(&bad).await.unwrap();
            let mut watch = ServerFrames::default();
            let mut buf = vec![0u8; 4096];
            loop {
                let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
                    .await
                    .expect("the server answered")
                    .unwrap();
                assert!(n > 0, "connection closed before the reset");
                let mut found = Vec::new();
                watch.observe(&buf[..n], &mut found);
                if found.contains(&Refusal::StreamReset { stream: 3, code: 1 }) {
                    break;
                }
            }
        })
    });
    assert!(
        logs.contains("WARN")
            && logs.contains("pid=4242")
            && logs.contains("stream=3")
            && logs.contains("code=\"PROTOCOL_ERROR\"")
            && logs.contains("refused a request at the protocol level")
            && logs.contains(":path \\\"/x\\\""),
        "{logs}"
    );
}

/// The preface, an empty SETTINGS and a HEADERS frame with `block` on stream 1.
fn frame_after_preface(block: &[u8]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(0x4, 0, 0, &[]));
    out.extend(frame(0x1, 0x5, 1, block));
    out
}
