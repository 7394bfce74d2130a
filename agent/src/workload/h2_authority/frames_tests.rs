//! The frame layer: other frames pass byte for byte, header blocks keep their
//! list except an unparseable `:authority`, framing faults close the
//! connection with the rule named.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::super::error::HpackError;
use super::super::hpack::tests::{encode_independently, random_list};
use super::*;

const DATA: u8 = 0x0;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const WINDOW_UPDATE: u8 = 0x8;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_head(&mut out, payload.len(), kind, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn connection(frames: &[Vec<u8>]) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    for f in frames {
        out.extend_from_slice(f);
    }
    out
}

/// Feeds `input` in chunks of random sizes; returns the output and replacements.
fn run(input: &[u8], rng: &mut StdRng) -> Result<(Vec<u8>, Vec<Replaced>), ShimError> {
    let mut shim = ClientFrames::default();
    let (mut out, mut replaced) = (Vec::new(), Vec::new());
    let mut rest = input;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len().min(4000));
        shim.feed(&rest[..n], &mut out, &mut replaced)?;
        rest = &rest[n..];
    }
    Ok((out, replaced))
}

fn run_once(input: &[u8]) -> Result<(Vec<u8>, Vec<Replaced>), ShimError> {
    let mut shim = ClientFrames::default();
    let (mut out, mut replaced) = (Vec::new(), Vec::new());
    shim.feed(input, &mut out, &mut replaced)?;
    Ok((out, replaced))
}

/// The frames of `bytes` after the preface: (head, payload).
fn split_frames(bytes: &[u8]) -> Vec<(FrameHead, Vec<u8>)> {
    assert_eq!(&bytes[..24], PREFACE);
    let mut rest = &bytes[24..];
    let mut frames = Vec::new();
    while !rest.is_empty() {
        let head = FrameHead::parse(rest[..9].try_into().unwrap());
        frames.push((head, rest[9..9 + head.len].to_vec()));
        rest = &rest[9 + head.len..];
    }
    frames
}

/// A header list as a block: (name, value) pairs, literal, without indexing.
fn block_of(list: &[(&[u8], &[u8])]) -> Vec<u8> {
    let fields: Vec<Field> = list
        .iter()
        .map(|(n, v)| Field {
            name: n.to_vec(),
            value: v.to_vec(),
            never_indexed: false,
        })
        .collect();
    let mut b = Vec::new();
    hpack::encode_block(&fields, &mut b);
    b
}

/// A decoded header list: (name, value, httlib flags) per field.
type HeaderList = Vec<(Vec<u8>, Vec<u8>, u8)>;

/// What a server decodes from the output's header blocks, per HEADERS frame.
fn server_lists(out: &[u8]) -> Vec<(u32, HeaderList)> {
    let mut server = httlib_hpack::Decoder::default();
    let mut lists = Vec::new();
    let mut block: Option<(u32, Vec<u8>)> = None;
    for (head, payload) in split_frames(out) {
        match head.kind {
            HEADERS => {
                assert!(block.is_none());
                assert_eq!(head.flags & PADDED, 0, "padding is dropped");
                let skip = if head.flags & PRIORITY != 0 { 5 } else { 0 };
                block = Some((head.stream(), payload[skip..].to_vec()));
            }
            CONTINUATION => block.as_mut().unwrap().1.extend_from_slice(&payload),
            _ => assert!(block.is_none(), "a frame inside a header block"),
        }
        assert!(head.len <= SERVER_MAX_FRAME_SIZE);
        if matches!(head.kind, HEADERS | CONTINUATION) && head.flags & END_HEADERS != 0 {
            let (stream, mut b) = block.take().unwrap();
            let mut list = Vec::new();
            server.decode(&mut b, &mut list).unwrap();
            lists.push((stream, list));
        }
    }
    assert!(block.is_none(), "a header block left open");
    lists
}

const PATH: &[u8] = b"/SpiffeWorkloadAPI/FetchX509SVID";

#[test]
fn other_frames_pass_byte_for_byte() {
    let input = connection(&[
        frame(SETTINGS, 0, 0, &[0, 4, 0, 0, 0xff, 0xff]),
        frame(SETTINGS, 1, 0, &[]),
        frame(WINDOW_UPDATE, 0, 0, &[0, 0, 0x10, 0]),
        frame(PING, 0, 0, b"12345678"),
        frame(DATA, 1, 0x8000_0003, b"any bytes at all"),
        frame(0x42, 0xff, 7, b"an extension frame"),
        frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]),
        // Even one over the server's frame size: h2 refuses it, not the shim.
        frame(DATA, 0, 5, &vec![7u8; SERVER_MAX_FRAME_SIZE + 1]),
    ]);
    for seed in 0..10 {
        let (out, replaced) = run(&input, &mut StdRng::seed_from_u64(seed)).unwrap();
        assert_eq!(out, input);
        assert!(replaced.is_empty());
    }
}

/// The socket paths gRPC clients send, and what the server must get.
#[test]
fn unix_socket_authorities_become_localhost_and_others_stay() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"tmp%2Frun%2Fagent.sock", b"localhost"),
        (b"%2Frun%2Fspire%2Fagent.sock", b"localhost"),
        (b"/run/spire/sockets/agent.sock", b"localhost"),
        (b"", b"localhost"),
        (b"\xff\xfe", b"localhost"),
        (b"localhost", b"localhost"),
        (b"example.org:8081", b"example.org:8081"),
        (b"[::1]:443", b"[::1]:443"),
    ];
    for (sent, seen) in cases {
        let list = [
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", PATH),
            (b":authority", sent),
            (b"workload.spiffe.io", b"true"),
        ];
        let input = connection(&[frame(HEADERS, END_HEADERS, 1, &block_of(&list))]);
        let (out, replaced) = run_once(&input).unwrap();
        let lists = server_lists(&out);
        assert_eq!(lists.len(), 1);
        let got: Vec<(&[u8], &[u8])> = lists[0]
            .1
            .iter()
            .map(|(n, v, _)| (n.as_slice(), v.as_slice()))
            .collect();
        let mut want = list.to_vec();
        want[3].1 = seen;
        assert_eq!(got, want, "authority {:?}", String::from_utf8_lossy(sent));
        assert!(server_accepts_authority(seen));
        let expect_replaced = sent != seen;
        assert_eq!(
            replaced,
            if expect_replaced {
                vec![Replaced {
                    stream: 1,
                    original: sent.to_vec(),
                }]
            } else {
                vec![]
            }
        );
    }
}

#[test]
fn padding_is_dropped_and_priority_and_end_stream_kept() {
    let block = block_of(&[(b":method", b"POST"), (b":authority", b"a%2Fb")]);
    let mut payload = vec![3]; // pad length
    payload.extend_from_slice(&[0x80, 0, 0, 1, 200]); // exclusive dep on 1, weight 200
    payload.extend_from_slice(&block);
    payload.extend_from_slice(&[0, 0, 0]);
    let input = connection(&[frame(
        HEADERS,
        END_HEADERS | END_STREAM | PADDED | PRIORITY,
        3,
        &payload,
    )]);
    let (out, _) = run_once(&input).unwrap();
    let frames = split_frames(&out);
    assert_eq!(frames.len(), 1);
    let (head, body) = &frames[0];
    assert_eq!(head.flags, END_HEADERS | END_STREAM | PRIORITY);
    assert_eq!(&body[..5], &[0x80, 0, 0, 1, 200]);
    assert_eq!(
        &body[5..],
        &block_of(&[(b":method", b"POST"), (b":authority", b"localhost")])[..]
    );
}

#[test]
fn continuations_are_joined_and_large_blocks_split_to_the_frame_size() {
    let big = vec![b'v'; 40_000];
    let block = block_of(&[(b":path", PATH), (b"x-big", &big), (b":authority", b"")]);
    let (a, rest) = block.split_at(10_000);
    let (b, c) = rest.split_at(10_000);
    let (c, d) = c.split_at(10_000);
    let input = connection(&[
        frame(HEADERS, END_STREAM, 5, a),
        frame(CONTINUATION, 0, 5, b),
        frame(CONTINUATION, 0, 5, c),
        frame(CONTINUATION, END_HEADERS, 5, d),
        frame(PING, 0, 0, b"87654321"),
    ]);
    let (out, _) = run_once(&input).unwrap();
    let frames = split_frames(&out);
    let kinds: Vec<(u8, u8, usize)> = frames
        .iter()
        .map(|(h, _)| (h.kind, h.flags, h.len))
        .collect();
    let total = block.len() + "localhost".len();
    assert_eq!(
        kinds,
        vec![
            (HEADERS, END_STREAM, SERVER_MAX_FRAME_SIZE),
            (CONTINUATION, 0, SERVER_MAX_FRAME_SIZE),
            (CONTINUATION, END_HEADERS, total - 2 * SERVER_MAX_FRAME_SIZE),
            (PING, 0, 8),
        ]
    );
    let lists = server_lists(&out);
    assert_eq!(lists[0].1[1].1, big);
    assert_eq!(lists[0].1[2].1, b"localhost");
}

fn fault(frames: &[Vec<u8>]) -> ShimError {
    run_once(&connection(frames)).unwrap_err()
}

#[test]
fn framing_faults_close_the_connection_with_the_rule_named() {
    let block = block_of(&[(b":method", b"POST")]);
    let e = run_once(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap_err();
    assert!(matches!(e, ShimError::NotHttp2), "{e}");
    assert!(e.to_string().contains("connection preface"));

    let e = fault(&[frame(HEADERS, 0, 1, &block), frame(DATA, 0, 1, b"x")]);
    assert!(
        matches!(
            e,
            ShimError::HeaderBlockInterrupted {
                stream: 1,
                kind: DATA
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("CONTINUATION frames must follow"));

    let e = fault(&[
        frame(HEADERS, 0, 1, &block),
        frame(HEADERS, END_HEADERS, 3, &block),
    ]);
    assert!(
        matches!(
            e,
            ShimError::HeaderBlockInterrupted {
                stream: 1,
                kind: HEADERS
            }
        ),
        "{e}"
    );

    let e = fault(&[frame(CONTINUATION, END_HEADERS, 1, &block)]);
    assert!(
        matches!(e, ShimError::UnexpectedContinuation { stream: 1 }),
        "{e}"
    );

    let e = fault(&[
        frame(HEADERS, 0, 1, &block),
        frame(CONTINUATION, END_HEADERS, 3, &block),
    ]);
    assert!(
        matches!(e, ShimError::UnexpectedContinuation { stream: 3 }),
        "{e}"
    );

    let e = fault(&[frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82])]);
    assert!(matches!(e, ShimError::ClientPushPromise), "{e}");

    let e = fault(&[frame(
        HEADERS,
        END_HEADERS,
        1,
        &vec![0x82; SERVER_MAX_FRAME_SIZE + 1],
    )]);
    assert!(
        matches!(
            e,
            ShimError::FrameTooLarge {
                frame: "HEADERS",
                len: 16385,
                stream: 1,
                max: 16384
            }
        ),
        "{e}"
    );

    let e = fault(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[5, 0x82, 0, 0])]);
    assert!(matches!(e, ShimError::BadPadding { stream: 1 }), "{e}");
    let e = fault(&[frame(HEADERS, END_HEADERS | PADDED, 1, &[])]);
    assert!(matches!(e, ShimError::BadPadding { stream: 1 }), "{e}");

    let e = fault(&[frame(HEADERS, END_HEADERS | PRIORITY, 1, &[0, 0, 0])]);
    assert!(matches!(e, ShimError::BadPriority { stream: 1 }), "{e}");

    let mut many = vec![frame(HEADERS, 0, 1, &block)];
    many.extend((0..=MAX_CONTINUATIONS).map(|_| frame(CONTINUATION, 0, 1, &[])));
    let e = fault(&many);
    assert!(
        matches!(e, ShimError::TooManyContinuations { stream: 1, max: 32 }),
        "{e}"
    );

    let mut large = vec![frame(HEADERS, 0, 1, &vec![0x82; 16_000])];
    large.extend((0..4).map(|_| frame(CONTINUATION, 0, 1, &vec![0x82; 16_000])));
    let e = fault(&large);
    assert!(
        matches!(e, ShimError::HeaderBlockTooLarge { stream: 1, .. }),
        "{e}"
    );

    let e = fault(&[frame(HEADERS, END_HEADERS, 1, &[0x80 | 70])]);
    assert!(
        matches!(
            e,
            ShimError::Hpack {
                stream: 1,
                source: HpackError::BadIndex { index: 70, .. }
            }
        ),
        "{e}"
    );
    assert!(e
        .to_string()
        .contains("outside the static and dynamic tables"));
}

/// A random connection: header blocks of random lists (with the socket
/// path, an empty value or a host as `:authority`), encoded by an
/// independent HPACK encoder, cut into HEADERS and CONTINUATIONs with random
/// padding and priority, between other frames. Through the shim, fed in
/// random chunks, the other frames are unchanged and the server decodes the
/// same lists except for each unparseable `:authority`.
#[test]
fn random_connections_keep_everything_but_an_unparseable_authority() {
    for seed in 0..30u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut enc = httlib_hpack::Encoder::default();
        let mut frames = Vec::new();
        let mut others = Vec::new();
        let mut want = Vec::new();
        for i in 0..rng.gen_range(1..25u32) {
            let stream = 2 * i + 1;
            if rng.gen_bool(0.5) {
                let f = frame(
                    [DATA, PING, WINDOW_UPDATE, 0x20][rng.gen_range(0..4)],
                    rng.gen(),
                    stream,
                    &(0..rng.gen_range(0..300))
                        .map(|_| rng.gen())
                        .collect::<Vec<u8>>(),
                );
                others.push(f.clone());
                frames.push(f);
            }
            let mut list = random_list(&mut rng);
            let authority: &[u8] = [
                &b"tmp%2Frun%2Fagent.sock"[..],
                b"/tmp/run/agent.sock",
                b"",
                b"localhost",
                b"example.org:443",
            ][rng.gen_range(0..5)];
            list.insert(0, (b":authority".to_vec(), authority.to_vec(), false));
            let block = encode_independently(&mut enc, &mut rng, &list);
            let expected: Vec<_> = list
                .into_iter()
                .map(|(n, v, never)| {
                    let v = if n == b":authority" && !server_accepts_authority(&v) {
                        b"localhost".to_vec()
                    } else {
                        v
                    };
                    (
                        n,
                        v,
                        if never {
                            httlib_hpack::Decoder::NEVER_INDEXED
                        } else {
                            0
                        },
                    )
                })
                .collect();
            want.push((stream, expected));

            // Pieces that fit a frame, some of them small.
            let mut cuts = Vec::new();
            let mut at = 0;
            while at < block.len() {
                at += if rng.gen_bool(0.5) {
                    16_000
                } else {
                    rng.gen_range(1..=16_000)
                };
                cuts.push(at.min(block.len()));
            }
            if cuts.is_empty() {
                cuts.push(0);
            }
            let mut start = 0;
            for (k, end) in cuts.iter().enumerate() {
                let piece = &block[start..*end];
                start = *end;
                let last = k + 1 == cuts.len();
                let mut flags = if last { END_HEADERS } else { 0 };
                if k == 0 {
                    let mut payload = Vec::new();
                    let pad = rng.gen_bool(0.3).then(|| rng.gen_range(0..40u8));
                    let prio = rng.gen_bool(0.3);
                    if let Some(p) = pad {
                        flags |= PADDED;
                        payload.push(p);
                    }
                    if prio {
                        flags |= PRIORITY;
                        payload.extend_from_slice(&[0, 0, 0, 0, 15]);
                    }
                    if rng.gen_bool(0.5) {
                        flags |= END_STREAM;
                    }
                    payload.extend_from_slice(piece);
                    payload.extend(std::iter::repeat_n(0, usize::from(pad.unwrap_or(0))));
                    frames.push(frame(HEADERS, flags, stream, &payload));
                } else {
                    frames.push(frame(CONTINUATION, flags, stream, piece));
                }
            }
        }
        let input = connection(&frames);
        let (out, _) = run(&input, &mut rng).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let got = server_lists(&out);
        let got: Vec<_> = got
            .into_iter()
            .map(|(s, l)| {
                (
                    s,
                    l.into_iter()
                        .map(|(n, v, f)| (n, v, f & httlib_hpack::Decoder::NEVER_INDEXED))
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(got.len(), want.len(), "seed {seed}: header blocks");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "seed {seed}, stream {}", w.0);
        }
        let passed: Vec<Vec<u8>> = split_frames(&out)
            .into_iter()
            .filter(|(h, _)| !matches!(h.kind, HEADERS | CONTINUATION))
            .map(|(h, p)| frame(h.kind, h.flags, h.stream_raw, &p))
            .collect();
        assert_eq!(passed, others, "seed {seed}");
    }
}

#[test]
fn the_server_side_reports_resets_and_goaways_across_any_split() {
    let mut bytes = frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100]);
    bytes.extend(frame(HEADERS, END_HEADERS, 1, &[0x88]));
    bytes.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 1]));
    bytes.extend(frame(DATA, 0, 3, &[9; 1000]));
    bytes.extend(frame(RST_STREAM, 0, 3, &[0, 0, 0, 8]));
    let mut goaway = vec![0, 0, 0, 3, 0, 0, 0, 0xb];
    goaway.extend(std::iter::repeat_n(b'd', 300));
    bytes.extend(frame(GOAWAY, 0, 0, &goaway));
    let want = vec![
        Refusal::StreamReset { stream: 1, code: 1 },
        Refusal::StreamReset { stream: 3, code: 8 },
        Refusal::GoAway {
            last_stream: 3,
            code: 0xb,
            debug: vec![b'd'; GOAWAY_DEBUG_KEPT],
        },
    ];
    for seed in 0..20 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut watch = ServerFrames::default();
        let mut found = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let n = rng.gen_range(1..=rest.len().min(50));
            watch.observe(&rest[..n], &mut found);
            rest = &rest[n..];
        }
        assert_eq!(found, want, "seed {seed}");
    }
    assert_eq!(error_code_name(1), "PROTOCOL_ERROR");
}
