//! RS256 tokens on hostile input, through the gcp_iit and azure_msi verifiers and the two
//! key-set formats. Errors, never a panic; nothing the fuzzer makes can verify.
#![no_main]

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ironroot_cloud_attest::azure_msi::{self, AzureMsiConfig, TenantConfig};
use ironroot_cloud_attest::gcp_iit::{self, GcpIitConfig};
use ironroot_cloud_attest::jwt::JwkSet;
use libfuzzer_sys::fuzz_target;

const CERT: &str = include_str!("../fixtures/rsa2048-cert.pem");
const NOW: u64 = 1_767_225_600;

fuzz_target!(|data: &[u8]| {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(NOW);
    // Key sets from hostile JSON: errors only.
    let _ = JwkSet::from_jwks_json(data);
    let _ = JwkSet::from_google_certs_json(data);
    let certs = format!("{{\"k\": {}}}", serde_json_string(CERT));
    let keys = JwkSet::from_google_certs_json(certs.as_bytes()).expect("fixture key set");
    let token = String::from_utf8_lossy(data);
    let gcp = GcpIitConfig::new(keys.clone(), ["p".to_owned()]);
    assert!(gcp_iit::verify(&gcp, &token, now).is_err());
    let msi = AzureMsiConfig {
        keys,
        tenants: BTreeMap::from([("t".to_owned(), TenantConfig::default())]),
        clock_skew: Duration::from_secs(300),
    };
    assert!(azure_msi::verify(&msi, &token, now).is_err());
});

fn serde_json_string(s: &str) -> String {
    format!("\"{}\"", s.replace('\n', "\\n"))
}
