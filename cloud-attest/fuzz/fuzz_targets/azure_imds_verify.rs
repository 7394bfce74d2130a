//! Azure attested documents on hostile input: parsing, the AIA rule, and verification
//! against a fixed root. Errors, never a panic; nothing the fuzzer makes can verify.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use ironroot_cloud_attest::azure_imds::{
    AgentMetadata, AttestedDocument, AzureImdsConfig, ChallengeResponse, ParsedAttestedDocument,
    TenantConfig,
};
use libfuzzer_sys::fuzz_target;
use rustls_pki_types::CertificateDer;

const CERT: &[u8] = include_bytes!("../fixtures/rsa2048-cert.pem");
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let _ = ChallengeResponse::from_json(data);
    let root = pem::parse(CERT).expect("fixture is PEM").into_contents();
    let config = AzureImdsConfig::new(
        vec![CertificateDer::from(root.clone())],
        BTreeMap::from([(
            "d".to_owned(),
            TenantConfig {
                tenant_id: "t".into(),
                ..Default::default()
            },
        )]),
    );
    let doc = AttestedDocument {
        encoding: "pkcs7".into(),
        signature: base64::engine::general_purpose::STANDARD.encode(data),
    };
    let Ok(parsed) = ParsedAttestedDocument::parse(&doc) else {
        return;
    };
    let _ = parsed.issuer_url();
    let metadata = AgentMetadata {
        agent_domain: "d".into(),
        vmss_name: None,
    };
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    let intermediates = [CertificateDer::from(root)];
    assert!(parsed
        .verify(&config, &intermediates, "nonce", &metadata, now)
        .is_err());
});
