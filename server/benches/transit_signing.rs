//! X.509-SVID and JWT-SVID signing through the CA on OpenBao's transit engine, next to the
//! raw transit signature rate of the same key (`sign_digest`: one HTTP request per
//! signature) in the same run, on 1 and 2 threads. The server runs a local `bao server -dev`
//! (plain HTTP on loopback, in memory), so the figures are OpenBao's and the client's cost
//! without a network: a real deployment adds a TLS handshake and the round trip per call.
//!
//! Needs the bao binary (scripts/install-deps.sh, or IRONROOT_BAO). Run:
//!   cargo bench -p ironroot-server --bench transit_signing

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_hsm::{
    KeyAlgorithm, KeyManager, SecretSource, TransitAuth, TransitConfig, TransitKeyManager,
};
use ironroot_server::ca::{CaSettings, CertificateAuthority, SigningMode};
use ironroot_server::store::{DataStore, SledStore};
use ironroot_testkit::openbao::{OpenBao, ROOT_TOKEN};

const RUN: Duration = Duration::from_secs(4);

/// Runs `op` on `threads` threads for RUN; returns operations per second.
fn rate(threads: usize, op: Arc<dyn Fn(usize) + Send + Sync>) -> f64 {
    ironroot_testkit::bench::rate(threads, RUN, op)
}

fn main() {
    let Some(bao) = OpenBao::start_or_skip() else {
        return;
    };
    bao.enable_transit("transit");
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, ROOT_TOKEN).expect("token file");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let km: Arc<dyn KeyManager> = Arc::new(
        TransitKeyManager::open(TransitConfig {
            address: bao.address(),
            mount: "transit".into(),
            key_prefix: "ironroot-".into(),
            ca_file: None,
            insecure_http: true,
            auth: TransitAuth::Token(SecretSource::File(token)),
            timeout: Duration::from_secs(10),
            namespace: None,
        })
        .expect("open transit"),
    );
    let td = TrustDomain::parse("bench.example").expect("td");
    let store: Arc<dyn DataStore> =
        Arc::new(SledStore::open(&dir.path().join("store"), td.clone()).expect("store"));
    let settings = CaSettings {
        trust_domain: td,
        key_algorithm: KeyAlgorithm::EcP256,
        ca_ttl: Duration::from_secs(86400),
        default_x509_svid_ttl: Duration::from_secs(3600),
        default_jwt_svid_ttl: Duration::from_secs(300),
        key_label_prefix: "bench".into(),
        organization: "ironroot".into(),
        country: "US".into(),
        jwt_issuer: None,
        signing: SigningMode::Hsm,
        memory_key_ttl: Duration::from_secs(3600),
    };
    let ca = Arc::new(CertificateAuthority::open(settings, km.clone(), store, None).expect("CA"));
    let label = ca.status().expect("status").x509_key_label;

    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..256)
            .map(|_| {
                let k = rcgen::KeyPair::generate().expect("key");
                rcgen::CertificateParams::default()
                    .serialize_request(&k)
                    .expect("csr")
                    .der()
                    .to_vec()
            })
            .collect(),
    );
    let id = SpiffeId::parse("spiffe://bench.example/workload").expect("id");
    let digest = [7u8; 32];

    println!(
        "CA on OpenBao transit ({} at {}), P-256 CA key, {}s per figure",
        bao.binary().display(),
        bao.address(),
        RUN.as_secs()
    );
    println!(
        "| threads | raw transit sign_digest (sig/s) | CA path CSR → X.509-SVID (cert/s) | ratio to raw | CA path JWT-SVID (tokens/s) |"
    );
    println!("|---|---|---|---|---|");
    for threads in [1usize, 2] {
        let (km2, l2) = (km.clone(), label.clone());
        let raw = rate(
            threads,
            Arc::new(move |_| {
                km2.sign_digest(&l2, &digest).expect("sign");
            }),
        );
        let (ca2, csrs2, id2) = (ca.clone(), csrs.clone(), id.clone());
        let path = rate(
            threads,
            Arc::new(move |i| {
                let csr = &csrs2[i % csrs2.len()];
                ca2.sign_x509_svid_csr(csr, &id2, 3600, &[]).expect("svid");
            }),
        );
        let (ca3, id3) = (ca.clone(), id.clone());
        let jwt = rate(
            threads,
            Arc::new(move |_| {
                ca3.mint_jwt_svid(&id3, &["bench".to_owned()], 300)
                    .expect("jwt");
            }),
        );
        println!(
            "| {threads} | {raw:.0} | {path:.0} | {:.1} % | {jwt:.0} |",
            100.0 * path / raw
        );
    }
}
