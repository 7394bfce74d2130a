use super::*;

const S: &str = "TEST";

#[test]
fn reads_big_endian_integers_in_order() {
    let buf = [1u8, 0x02, 0x03, 4, 5, 6, 7, 0, 0, 0, 0, 0, 0, 0x01, 0x00];
    let mut r = Reader::new(&buf);
    assert_eq!(r.u8(S, "a").unwrap(), 1);
    assert_eq!(r.u16(S, "b").unwrap(), 0x0203);
    assert_eq!(r.u32(S, "c").unwrap(), 0x0405_0607);
    assert_eq!(r.offset(), 7);
    assert_eq!(r.u64(S, "d").unwrap(), 0x100);
    r.finish(S).unwrap();
}

#[test]
fn truncation_names_structure_field_offset_and_sizes() {
    let mut r = Reader::new(&[0, 1, 2]);
    r.u16(S, "first").unwrap();
    let e = r.u32(S, "second").unwrap_err();
    assert_eq!(
        e,
        TpmError::Truncated {
            structure: S,
            field: "second",
            offset: 2,
            needed: 4,
            available: 1
        }
    );
    assert!(e.to_string().contains("TEST.second"), "{e}");
    assert!(e.to_string().contains("byte 2"), "{e}");
    // A failed read consumes nothing.
    assert_eq!(r.u8(S, "third").unwrap(), 2);
}

#[test]
fn tpm2b_checks_cap_before_reading() {
    // Declares 0xffff bytes: over the cap, reported at the size field's offset, no read.
    let mut r = Reader::new(&[9, 0xff, 0xff, 1, 2]);
    r.u8(S, "pad").unwrap();
    match r.tpm2b(S, "blob", 64).unwrap_err() {
        TpmError::Invalid {
            field: "blob",
            offset: 1,
            reason,
            ..
        } => assert!(reason.contains("65535"), "{reason}"),
        e => panic!("{e:?}"),
    }
    // Within the cap but more than present: truncated, at the contents' offset.
    let mut r = Reader::new(&[0, 4, 1, 2]);
    assert!(matches!(
        r.tpm2b(S, "blob", 64),
        Err(TpmError::Truncated {
            offset: 2,
            needed: 4,
            available: 2,
            ..
        })
    ));
    let mut r = Reader::new(&[0, 2, 7, 8, 0, 0]);
    assert_eq!(r.tpm2b(S, "blob", 2).unwrap(), &[7, 8]);
    assert_eq!(r.tpm2b(S, "empty", 0).unwrap(), &[] as &[u8]);
    r.finish(S).unwrap();
}

#[test]
fn sub_reader_reports_absolute_offsets() {
    let buf = [0xaa, 0xbb, 0, 1, 2];
    let mut r = Reader::new(&buf);
    r.u16(S, "head").unwrap();
    let mut sub = r.sub(S, "inner", 2).unwrap();
    assert_eq!(r.remaining(), 1);
    assert_eq!(sub.offset(), 2);
    sub.u8(S, "x").unwrap();
    assert!(matches!(
        sub.u16(S, "y"),
        Err(TpmError::Truncated {
            offset: 3,
            available: 1,
            ..
        })
    ));
}

#[test]
fn finish_rejects_trailing_bytes() {
    let mut r = Reader::new(&[1, 2, 3]);
    r.u8(S, "a").unwrap();
    match r.finish(S).unwrap_err() {
        TpmError::Invalid {
            field: "(end)",
            offset: 1,
            reason,
            ..
        } => assert!(reason.contains("2 unexpected bytes"), "{reason}"),
        e => panic!("{e:?}"),
    }
}

#[test]
fn writer_marshals_tpm2b_and_rejects_oversize() {
    let mut out = Vec::new();
    put_u16(&mut out, 0x0102);
    put_u32(&mut out, 0x0304_0506);
    put_tpm2b(&mut out, S, &[9, 9]).unwrap();
    assert_eq!(out, [1, 2, 3, 4, 5, 6, 0, 2, 9, 9]);
    assert!(put_tpm2b(&mut out, S, &vec![0; 70_000]).is_err());
}

#[test]
fn left_pad_normalises_to_field_size() {
    assert_eq!(left_pad(&[1, 2], 4).unwrap(), [0, 0, 1, 2]);
    assert_eq!(left_pad(&[0, 0, 0, 1, 2], 4).unwrap(), [0, 0, 1, 2]);
    assert_eq!(left_pad(&[], 2).unwrap(), [0, 0]);
    assert!(left_pad(&[1, 2, 3], 2).is_none());
}
