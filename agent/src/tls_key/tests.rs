use super::*;

#[test]
fn a_software_key_signs_through_the_same_seam() {
    let (key, _csr) = AgentKey::software().unwrap();
    let sk = key.signing_key().unwrap();
    assert_eq!(sk.algorithm(), SignatureAlgorithm::ECDSA);
    assert!(sk
        .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256])
        .is_none());
    let signer = sk.choose_scheme(&[SCHEME]).expect("P-256 offered");
    let sig = signer.sign(b"transcript").unwrap();
    let kp = rcgen::KeyPair::try_from(key.pkcs8().unwrap()).unwrap();
    ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        rcgen::PublicKeyData::der_bytes(&kp),
    )
    .verify(b"transcript", &sig)
    .unwrap();
}
