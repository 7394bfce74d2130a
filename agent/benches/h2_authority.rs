//! What the Workload API's `:authority` shim costs per request header block
//! (`cargo bench -p ironroot-agent --bench h2_authority`; docs/benchmarks.md):
//! the headers a gRPC C-core client (Python grpcio) sends for FetchX509SVID,
//! encoded as C-core does (Huffman, incremental indexing), through
//! `ClientFrames` as the agent runs it on every connection.
//!
//! 1. first request on a new connection (every field a Huffman literal);
//! 2. later requests on it (fields indexed from the dynamic table);
//! 3. a new connection end to end: preface, SETTINGS and the first request.

use std::time::Instant;

use ironroot_agent::workload::h2_authority::frames::ClientFrames;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn headers() -> Vec<(&'static [u8], &'static [u8])> {
    vec![
        (b":scheme", b"http"),
        (b":method", b"POST"),
        (b":authority", b"run%2Fironroot%2Fagent%2Fpublic%2Fapi.sock"),
        (b":path", b"/SpiffeWorkloadAPI/FetchX509SVID"),
        (b"te", b"trailers"),
        (b"content-type", b"application/grpc"),
        (
            b"user-agent",
            b"grpc-python/1.85.4 grpc-c/51.0.0 (linux; chttp2)",
        ),
        (b"grpc-accept-encoding", b"identity, deflate, gzip"),
        (b"workload.spiffe.io", b"true"),
    ]
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// `n` HEADERS frames of the same request on streams 1, 3, 5, … as an
/// indexing, Huffman-coding encoder writes them.
fn requests(n: u32) -> Vec<Vec<u8>> {
    let mut enc = httlib_hpack::Encoder::default();
    let flags = httlib_hpack::Encoder::HUFFMAN_NAME
        | httlib_hpack::Encoder::HUFFMAN_VALUE
        | httlib_hpack::Encoder::WITH_INDEXING
        | httlib_hpack::Encoder::BEST_FORMAT;
    (0..n)
        .map(|i| {
            let mut block = Vec::new();
            for (name, value) in headers() {
                enc.encode((name.to_vec(), value.to_vec(), flags), &mut block)
                    .unwrap();
            }
            frame(0x1, 0x4, 2 * i + 1, &block)
        })
        .collect()
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() * 99 / 100])
}

fn main() {
    const RUNS: usize = 2_000;
    let reqs = requests(8);
    let mut setup = PREFACE.to_vec();
    setup.extend(frame(0x4, 0, 0, &[]));

    let (mut first, mut later, mut connection) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let mut shim = ClientFrames::default();
        let (mut out, mut replaced) = (Vec::new(), Vec::new());
        let t = Instant::now();
        shim.feed(&setup, &mut out, &mut replaced).unwrap();
        let t1 = Instant::now();
        shim.feed(&reqs[0], &mut out, &mut replaced).unwrap();
        let t2 = Instant::now();
        first.push((t2 - t1).as_secs_f64() * 1e6);
        connection.push((t2 - t).as_secs_f64() * 1e6);
        for r in &reqs[1..] {
            let t = Instant::now();
            shim.feed(r, &mut out, &mut replaced).unwrap();
            later.push(t.elapsed().as_secs_f64() * 1e6);
        }
        assert_eq!(replaced.len(), reqs.len());
    }
    let (f50, f99) = percentiles(first);
    let (l50, l99) = percentiles(later);
    let (c50, c99) = percentiles(connection);
    println!(
        "h2_authority shim, gRPC C-core FetchX509SVID headers ({} bytes first, {} bytes later):",
        reqs[0].len() - 9,
        reqs[1].len() - 9
    );
    println!(
        "  first request on a connection (Huffman literals): p50 {f50:.1} µs, p99 {f99:.1} µs"
    );
    println!(
        "  later requests (indexed fields):                  p50 {l50:.1} µs, p99 {l99:.1} µs"
    );
    println!(
        "  new connection: preface + SETTINGS + first request: p50 {c50:.1} µs, p99 {c99:.1} µs"
    );
}
