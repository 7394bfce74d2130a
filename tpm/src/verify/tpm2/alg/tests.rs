use super::*;

#[test]
fn ids_sizes_and_computability() {
    for alg in HashAlg::COMPUTABLE {
        assert_eq!(HashAlg::computable_from_id(alg.id()), Some(alg));
        assert_eq!(alg.digest(b"abc").unwrap().len(), alg.digest_len().unwrap());
        assert_eq!(alg.known_size(), Some(alg.digest_len().unwrap()));
        assert_eq!(alg.computable().unwrap(), alg);
    }
    assert_eq!(HashAlg::computable_from_id(id::NULL), None);
    assert_eq!(HashAlg::computable_from_id(id::ECC), None);
    let unknown = HashAlg::Unknown(0x0027);
    assert!(matches!(
        unknown.computable(),
        Err(TpmError::Unsupported { .. })
    ));
    assert!(matches!(
        unknown.digest_len(),
        Err(TpmError::Unsupported { .. })
    ));
    assert!(matches!(
        unknown.digest(b"abc"),
        Err(TpmError::Unsupported { .. })
    ));
    assert!(matches!(
        unknown.hmac(b"k", &[b"abc"]),
        Err(TpmError::Unsupported { .. })
    ));
}

#[test]
fn digests_and_hmac_known_answers() {
    assert_eq!(
        hex::encode(HashAlg::Sha256.digest_parts(&[b"a", b"bc"]).unwrap()),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    let mac = |h: HashAlg| {
        hex::encode(
            h.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])
                .unwrap(),
        )
    };
    assert_eq!(
        mac(HashAlg::Sha256),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        mac(HashAlg::Sha384),
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
         8e2240ca5e69e2c78b3239ecfab21649"
    );
    assert!(alg_name(0x0023).contains("ECC"));
    assert_eq!(alg_name(0x7777), "0x7777");
}
