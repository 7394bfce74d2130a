//! TokenReview, Pod and Node responses on hostile JSON. Errors, never a panic.
//!
//! Input: three documents separated by the bytes 0xde 0xad (review, pod, node).
#![no_main]

use std::collections::BTreeMap;

use ironroot_cloud_attest::k8s_psat::{verify_token_review, ClusterConfig, K8sPsatConfig};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let docs = split(data);
    let config = K8sPsatConfig {
        clusters: BTreeMap::from([("c".to_owned(), ClusterConfig::new(["ns:sa".to_owned()]))]),
    };
    let review = docs.first().copied().unwrap_or_default();
    if let Ok(reviewed) = verify_token_review(&config, "c", review) {
        let pod = docs.get(1).copied().unwrap_or_default();
        let node = docs.get(2).copied().unwrap_or_default();
        if let Ok(identity) = reviewed.bind_pod_and_node(&config, pod, node) {
            let _ = identity.selectors();
            assert!(identity.agent_path().is_ok());
        }
    }
});

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] == 0xde && data[i + 1] == 0xad {
            parts.push(&data[start..i]);
            start = i + 2;
            i += 2;
        } else {
            i += 1;
        }
    }
    parts.push(&data[start..]);
    parts
}
