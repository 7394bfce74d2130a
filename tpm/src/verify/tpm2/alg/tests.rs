use super::*;

#[test]
fn ids_sizes_and_event_log_conversion() {
    for alg in TpmHashAlg::ALL {
        assert_eq!(TpmHashAlg::from_id(alg.id()), Some(alg));
        assert_eq!(alg.digest(b"abc").len(), alg.size());
        let log: HashAlg = alg.into();
        assert_eq!(log.known_size(), Some(alg.size()));
        assert_eq!(TpmHashAlg::try_from(log).unwrap(), alg);
        assert_eq!(log.to_string(), alg.to_string());
    }
    assert_eq!(TpmHashAlg::from_id(id::NULL), None);
    assert!(matches!(
        TpmHashAlg::try_from(HashAlg::Unknown(0x0027)),
        Err(TpmError::Unsupported { .. })
    ));
}

#[test]
fn digests_and_hmac_known_answers() {
    assert_eq!(
        hex::encode(TpmHashAlg::Sha256.digest_parts(&[b"a", b"bc"])),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
    let mac = |h: TpmHashAlg| {
        hex::encode(
            h.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])
                .unwrap(),
        )
    };
    assert_eq!(
        mac(TpmHashAlg::Sha256),
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
    assert_eq!(
        mac(TpmHashAlg::Sha384),
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
         8e2240ca5e69e2c78b3239ecfab21649"
    );
    assert!(alg_name(0x0023).contains("ECC"));
    assert_eq!(alg_name(0x7777), "0x7777");
}
