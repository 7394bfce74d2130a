use super::*;

#[test]
fn ids_round_trip_and_sizes() {
    for (id, alg, size) in [
        (4u16, HashAlg::Sha1, 20usize),
        (0xb, HashAlg::Sha256, 32),
        (0xc, HashAlg::Sha384, 48),
        (0xd, HashAlg::Sha512, 64),
        (0x12, HashAlg::Sm3_256, 32),
    ] {
        assert_eq!(HashAlg::from_id(id), alg);
        assert_eq!(alg.id(), id);
        assert_eq!(alg.known_size(), Some(size));
        assert_eq!(alg.hash(b"x").map(|d| d.as_bytes().len()), Some(size));
        assert_eq!(alg.to_string().parse::<HashAlg>(), Ok(alg));
    }
    assert_eq!(HashAlg::from_id(0x27), HashAlg::Unknown(0x27));
    assert!(HashAlg::Unknown(0x27).hash(b"x").is_none());
}

#[test]
fn sm3_known_answer() {
    // GB/T 32905-2016 example 1: SM3("abc").
    let d = HashAlg::Sm3_256.hash(b"abc").unwrap();
    assert_eq!(
        d.to_hex(),
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    );
}

#[test]
fn seed_and_extend() {
    let s = Digest::seed(HashAlg::Sha1, 20, 3);
    assert_eq!(s.to_hex(), "0000000000000000000000000000000000000003");
    let zero = Digest::seed(HashAlg::Sha256, 32, 0);
    let sep = HashAlg::Sha256.hash(&[0, 0, 0, 0]).unwrap();
    // Known value: PCR extended once with the 00000000 separator.
    assert_eq!(
        zero.extend(&sep).unwrap().to_hex(),
        "3d458cfe55cc03ea1f443f1562beec8df51c75e14a9fcf9a7234a13f198e7969"
    );
    assert!(Digest::new(HashAlg::Sha256, &[0; 20]).is_none());
    assert!(Digest::new(HashAlg::Unknown(9), &[0; 65]).is_none());
    assert!(Digest::new(HashAlg::Unknown(9), &[0; 7]).is_some());
}
