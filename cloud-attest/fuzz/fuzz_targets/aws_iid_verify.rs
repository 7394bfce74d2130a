//! aws_iid evidence on hostile input: the agent's JSON payload, and the bytes as the
//! rsa2048 PKCS#7 with an unsigned copy. Errors, never a panic; and whatever verifies
//! (a seed signed with the fixture's key, or a mutation of one in bytes no signature covers)
//! has an identity taken from the signed content, equal to any unsigned copy sent.
#![no_main]

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ironroot_cloud_attest::aws_iid::{self, AttestationData, AwsIidConfig};
use libfuzzer_sys::fuzz_target;

const CERT: &[u8] = include_bytes!("../fixtures/rsa2048-cert.pem");
/// 2026-01-01: a fixed clock, so a run is reproducible.
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let mut config = AwsIidConfig::new();
    config
        .add_region_certificate("us-west-2", CERT)
        .expect("fixture certificate");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    if let Ok(payload) = AttestationData::from_json(data) {
        if let Ok(id) = aws_iid::verify(&config, &payload, now) {
            assert!(
                payload.document.is_empty() || id.signed_document == payload.document.as_bytes()
            );
        }
    }
    let raw = AttestationData {
        document: String::from_utf8_lossy(data).into_owned(),
        signature: String::new(),
        rsa2048: base64::engine::general_purpose::STANDARD.encode(data),
    };
    if let Ok(id) = aws_iid::verify(&config, &raw, now) {
        assert_eq!(id.signed_document, raw.document.as_bytes());
    }
});
