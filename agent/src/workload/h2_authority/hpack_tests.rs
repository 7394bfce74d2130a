//! The shim's HPACK decoder against RFC 7541's examples and an independent
//! codec (`httlib-hpack`), and against blocks that break the rules.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn plain(list: &[(&str, &str)]) -> Vec<Field> {
    list.iter()
        .map(|(n, v)| Field {
            name: n.as_bytes().to_vec(),
            value: v.as_bytes().to_vec(),
            never_indexed: false,
        })
        .collect()
}

#[test]
fn static_table_matches_an_independent_decoder() {
    for index in 1..=STATIC_TABLE.len() {
        let mut other = httlib_hpack::Decoder::default();
        let mut dst = Vec::new();
        other
            .decode(&mut vec![0x80 | index as u8], &mut dst)
            .unwrap();
        let (n, v) = STATIC_TABLE[index - 1];
        assert_eq!(
            (dst[0].0.as_slice(), dst[0].1.as_slice()),
            (n.as_bytes(), v.as_bytes()),
            "static index {index}"
        );
    }
}

/// RFC 7541 C.3 (literals) and C.4 (Huffman): three requests on one connection.
#[test]
fn rfc7541_request_examples() {
    let first = [
        (":method", "GET"),
        (":scheme", "http"),
        (":path", "/"),
        (":authority", "www.example.com"),
    ];
    let mut second = first.to_vec();
    second.push(("cache-control", "no-cache"));
    let third = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/index.html"),
        (":authority", "www.example.com"),
        ("custom-key", "custom-value"),
    ];
    let literal = [
        "8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d",
        "8286 84be 5808 6e6f 2d63 6163 6865",
        "8287 85bf 400a 6375 7374 6f6d 2d6b 6579 0c63 7573 746f 6d2d 7661 6c75 65",
    ];
    let huffman = [
        "8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
        "8286 84be 5886 a8eb 1064 9cbf",
        "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
    ];
    for blocks in [literal, huffman] {
        let mut d = Decoder::default();
        assert_eq!(d.decode_block(&hex(blocks[0])).unwrap(), plain(&first));
        assert_eq!(d.decode_block(&hex(blocks[1])).unwrap(), plain(&second));
        assert_eq!(d.decode_block(&hex(blocks[2])).unwrap(), plain(&third));
        assert_eq!(d.table.size, 164, "RFC 7541 C.3.3 / C.4.3 table size");
    }
}

const NAMES: &[&str] = &[
    ":authority",
    ":path",
    "content-type",
    "te",
    "user-agent",
    "workload.spiffe.io",
    "grpc-timeout",
    "x-bin",
    "authorization",
    "cookie",
];

/// A random header list: names from `NAMES` or random ones, values of any
/// bytes (HPACK carries octets), some long enough to evict table entries.
pub(crate) fn random_list(rng: &mut StdRng) -> Vec<(Vec<u8>, Vec<u8>, bool)> {
    (0..rng.gen_range(0..12))
        .map(|_| {
            let name = if rng.gen_bool(0.7) {
                NAMES[rng.gen_range(0..NAMES.len())].as_bytes().to_vec()
            } else {
                (0..rng.gen_range(1..20))
                    .map(|_| rng.gen_range(b'a'..=b'z'))
                    .collect()
            };
            let len = if rng.gen_bool(0.1) {
                rng.gen_range(200..2000)
            } else {
                rng.gen_range(0..40)
            };
            let value = (0..len).map(|_| rng.gen()).collect();
            (name, value, rng.gen_bool(0.2))
        })
        .collect()
}

/// Encodes `list` with the independent encoder, choosing per field Huffman,
/// indexing and "never indexed" at random; sometimes a table size update first.
pub(crate) fn encode_independently(
    enc: &mut httlib_hpack::Encoder<'_>,
    rng: &mut StdRng,
    list: &[(Vec<u8>, Vec<u8>, bool)],
) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.gen_bool(0.1) {
        enc.update_max_dynamic_size(rng.gen_range(0..=4096), &mut out)
            .unwrap();
    }
    for (name, value, never) in list {
        let mut flags = 0u8;
        if rng.gen_bool(0.5) {
            flags |= httlib_hpack::Encoder::HUFFMAN_NAME;
        }
        if rng.gen_bool(0.5) {
            flags |= httlib_hpack::Encoder::HUFFMAN_VALUE;
        }
        if *never {
            flags |= httlib_hpack::Encoder::NEVER_INDEXED;
        } else if rng.gen_bool(0.6) {
            flags |= httlib_hpack::Encoder::WITH_INDEXING;
        }
        // The best format may index a full match, which drops "never indexed".
        if !*never && rng.gen_bool(0.7) {
            flags |= httlib_hpack::Encoder::BEST_FORMAT;
        }
        enc.encode((name.clone(), value.clone(), flags), &mut out)
            .unwrap();
    }
    out
}

/// Random lists, encoded by an independent encoder that keeps a dynamic
/// table, decode to the same list here; re-encoded, they decode to the same
/// list again in an independent decoder, with "never indexed" kept and
/// nothing inserted into its table.
#[test]
fn random_lists_survive_decode_and_reencode() {
    for seed in 0..20u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut enc = httlib_hpack::Encoder::default();
        let mut ours = Decoder::default();
        let mut server = httlib_hpack::Decoder::default();
        for block_no in 0..20 {
            let list = random_list(&mut rng);
            let block = encode_independently(&mut enc, &mut rng, &list);
            let fields = ours
                .decode_block(&block)
                .unwrap_or_else(|e| panic!("seed {seed} block {block_no}: {e}"));
            let got: Vec<_> = fields
                .iter()
                .map(|f| (f.name.clone(), f.value.clone(), f.never_indexed))
                .collect();
            assert_eq!(got, list, "seed {seed} block {block_no}");

            let mut again = Vec::new();
            encode_block(&fields, &mut again);
            let mut seen = Vec::new();
            server.decode(&mut again, &mut seen).unwrap();
            let seen: Vec<_> = seen
                .into_iter()
                .map(|(n, v, flags)| {
                    assert_eq!(flags & httlib_hpack::Decoder::WITH_INDEXING, 0);
                    (n, v, flags & httlib_hpack::Decoder::NEVER_INDEXED != 0)
                })
                .collect();
            assert_eq!(seen, list, "seed {seed} block {block_no} after re-encoding");
        }
    }
}

#[test]
fn integers_round_trip_at_prefix_boundaries() {
    for prefix in [4u8, 5, 6, 7] {
        for v in [
            0usize,
            1,
            14,
            15,
            16,
            30,
            31,
            62,
            63,
            126,
            127,
            128,
            255,
            4096,
            1 << 20,
        ] {
            let mut out = Vec::new();
            encode_int(v, prefix, 0, &mut out);
            let mut pos = 0;
            assert_eq!(
                decode_int(&out, &mut pos, prefix).unwrap(),
                v,
                "{v} /{prefix}"
            );
            assert_eq!(pos, out.len());
        }
    }
}

fn err(block: &[u8]) -> HpackError {
    Decoder::default().decode_block(block).unwrap_err()
}

#[test]
fn refuses_index_zero_and_past_the_tables() {
    assert_eq!(
        err(&[0x80]),
        HpackError::BadIndex {
            index: 0,
            entries: 61
        }
    );
    assert_eq!(
        err(&[0x80 | 62]),
        HpackError::BadIndex {
            index: 62,
            entries: 61
        }
    );
    // A literal whose name index is past the tables.
    assert_eq!(
        err(&[0x0f, 0x30, 0x00]),
        HpackError::BadIndex {
            index: 63,
            entries: 61
        }
    );
}

#[test]
fn refuses_table_size_updates_after_a_field_or_above_the_server_setting() {
    assert_eq!(err(&[0x82, 0x20]), HpackError::LateTableSizeUpdate);
    let mut over = Vec::new();
    encode_int(4097, 5, 0x20, &mut over);
    assert_eq!(
        err(&over),
        HpackError::TableSizeTooLarge {
            size: 4097,
            max: 4096
        }
    );
    // At the start, any number of them within the limit is fine.
    let mut ok = Vec::new();
    encode_int(4096, 5, 0x20, &mut ok);
    ok.extend_from_slice(&[0x20, 0x82]);
    assert_eq!(Decoder::default().decode_block(&ok).unwrap().len(), 1);
}

#[test]
fn a_table_size_update_evicts() {
    let mut d = Decoder::default();
    // custom-key: custom-value, indexed (RFC 7541 C.2.1), then referenced.
    let insert = hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572");
    d.decode_block(&insert).unwrap();
    assert_eq!(d.decode_block(&[0x80 | 62]).unwrap()[0].name, b"custom-key");
    assert_eq!(
        d.decode_block(&[0x20, 0x80 | 62]).unwrap_err(),
        HpackError::BadIndex {
            index: 62,
            entries: 61
        }
    );
}

#[test]
fn an_entry_larger_than_the_table_empties_it() {
    let mut d = Decoder::default();
    d.decode_block(&[0x40, 1, b'a', 1, b'b']).unwrap();
    let mut big = vec![0x40, 1, b'x'];
    encode_int(4090, 7, 0, &mut big);
    big.extend(std::iter::repeat_n(b'y', 4090));
    d.decode_block(&big).unwrap();
    assert_eq!((d.table.entries.len(), d.table.size), (0, 0));
}

#[test]
fn refuses_malformed_integers_and_strings() {
    assert_eq!(
        err(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        HpackError::IntegerOverflow
    );
    assert_eq!(err(&[0xff, 0x80]), HpackError::IntegerTruncated);
    assert_eq!(
        err(&[0x00, 0x05, b'a']),
        HpackError::StringTruncated { len: 5, left: 1 }
    );
    assert_eq!(err(&[0x00, 0x01, b'a']), HpackError::IntegerTruncated);
}

#[test]
fn refuses_bad_huffman() {
    use loona_hpack::huffman::HuffmanDecoderError as H;
    // '0' is 00000; the three bits left are zeros, not the EOS prefix.
    assert_eq!(
        err(&[0x00, 0x81, 0x00, 0x00]),
        HpackError::Huffman(H::InvalidPadding)
    );
    // EOS (30 ones) inside the string.
    assert_eq!(
        err(&[0x00, 0x01, b'a', 0x84, 0xff, 0xff, 0xff, 0xfc]),
        HpackError::Huffman(H::EOSInString)
    );
    // More than 7 bits of padding.
    assert_eq!(
        err(&[0x00, 0x01, b'a', 0x82, 0x07, 0xff]),
        HpackError::Huffman(H::PaddingTooLarge)
    );
}

/// An HPACK bomb: one 4 KB entry referenced over and over decodes past the
/// shim's list limit and is refused instead of expanding.
#[test]
fn refuses_a_header_list_past_the_limit() {
    let mut d = Decoder::default();
    let mut insert = vec![0x40, 1, b'x'];
    encode_int(4000, 7, 0, &mut insert);
    insert.extend(std::iter::repeat_n(b'y', 4000));
    d.decode_block(&insert).unwrap();
    let bomb = vec![0x80 | 62; 100];
    assert_eq!(
        d.decode_block(&bomb).unwrap_err(),
        HpackError::HeaderListTooLarge {
            max: MAX_HEADER_LIST
        }
    );
}
