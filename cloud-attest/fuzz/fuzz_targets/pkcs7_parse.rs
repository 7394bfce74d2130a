//! PKCS#7 SignedData on hostile BER/DER: BER normalisation, CMS decoding, signer lookup and
//! the signature check against a fixed certificate and against the bag's own signer.
//! Errors, never a panic.
#![no_main]

use der::Decode;
use ironroot_cloud_attest::pkcs7::ParsedSignedData;
use libfuzzer_sys::fuzz_target;

const CERT: &[u8] = include_bytes!("../fixtures/rsa2048-cert.pem");

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = ParsedSignedData::from_ber(data) else {
        return;
    };
    let content = sd.content().unwrap_or(b"detached").to_vec();
    let fixed = pem::parse(CERT).expect("fixture is PEM");
    if let Ok(cert) = x509_cert::Certificate::from_der(fixed.contents()) {
        let _ = sd.names_signer(&cert);
        let _ = sd.verify_signature(&cert, &content);
    }
    if let Ok(signer) = sd.signer_certificate() {
        let _ = sd.verify_signature(signer, &content);
    }
});
