use super::*;

#[test]
fn a_software_key_has_pkcs8_a_csr_for_it_and_never_prints_it() {
    let (key, csr) = AgentKey::software().unwrap();
    assert_eq!(key.kind(), "software");
    let pkcs8 = key.pkcs8().unwrap().to_vec();
    let kp = rcgen::KeyPair::try_from(pkcs8.as_slice()).unwrap();
    let csr_der = rustls::pki_types::CertificateSigningRequestDer::from(csr);
    let req = rcgen::CertificateSigningRequestParams::from_der(&csr_der).unwrap();
    assert_eq!(
        rcgen::PublicKeyData::der_bytes(&req.public_key),
        rcgen::PublicKeyData::der_bytes(&kp)
    );
    assert_eq!(format!("{key:?}"), "AgentKey(software)");
}

#[test]
fn missing_or_partial_blobs_are_no_key() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read_blobs(dir.path()).is_none());
    std::fs::write(dir.path().join(PUBLIC_FILE), b"pub").unwrap();
    assert!(read_blobs(dir.path()).is_none(), "no private part");
    std::fs::write(dir.path().join(PRIVATE_FILE), b"priv").unwrap();
    assert_eq!(
        read_blobs(dir.path()),
        Some(KeyBlobs {
            public: b"pub".to_vec(),
            private: b"priv".to_vec()
        })
    );
}
