use super::*;

#[test]
fn trim_der_cuts_padding_after_the_outer_sequence() {
    let cert = vec![0x30, 0x03, 0x02, 0x01, 0x05];
    let mut padded = cert.clone();
    padded.extend_from_slice(&[0, 0, 0, 0xff]);
    assert_eq!(trim_der(padded), cert);

    let mut long = vec![0x30, 0x82, 0x01, 0x00];
    long.extend(std::iter::repeat_n(7u8, 0x100));
    let mut padded = long.clone();
    padded.extend_from_slice(&[0; 16]);
    assert_eq!(trim_der(padded), long);
}

#[test]
fn trim_der_leaves_other_shapes_alone() {
    for b in [
        vec![],
        vec![0x30],
        vec![0x04, 0x01, 0x00],
        vec![0x30, 0x82, 0x10, 0x00, 0x01],
        vec![0x30, 0x85, 1, 1, 1, 1, 1],
    ] {
        assert_eq!(trim_der(b.clone()), b);
    }
}

#[test]
fn contains_finds_key_bytes() {
    assert!(contains(b"..abc..", b"abc"));
    assert!(!contains(b"..abd..", b"abc"));
    assert!(!contains(b"ab", b"abc"));
}
