//! X.509-SVID signing throughput through the CA path (CSR in, signed
//! certificate out) in both CA modes (`signing = "hsm"`: every SVID signed in
//! the token; `signing = "memory"`: signed by an in-memory key the token
//! certified) against the raw C_Sign rate of the same SoftHSM2 token and the
//! floor every SVID pays in both modes (CSR parse + proof-of-possession
//! signature check), on 1 and 2 threads, in one run. `make bench` runs it;
//! figures go to docs/benchmarks.md.
//!
//! Needs softhsm2-util (scripts/install-deps.sh). Run:
//!   cargo bench -p ironroot-server --bench svid_signing

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_hsm::{KeyAlgorithm, KeyManager, PinSource, Pkcs11Config, Pkcs11KeyManager};
use ironroot_server::ca::{CaSettings, CertificateAuthority, SigningMode};
use ironroot_server::store::{DataStore, SledStore};

const RUN: Duration = Duration::from_secs(4);

fn token(dir: &Path) -> Pkcs11Config {
    let hsm = ironroot_testkit::softhsm::SoftHsm::new(dir);
    hsm.init_token("bench");
    // SoftHSM reads its config at C_Initialize, in this process.
    std::env::set_var("SOFTHSM2_CONF", &hsm.conf);
    Pkcs11Config {
        module: ironroot_testkit::softhsm::MODULE.into(),
        token_label: "bench".into(),
        pin: PinSource::File(hsm.pin_file.clone()),
        sessions: 2,
    }
}

/// Runs `op` on `threads` threads for RUN; returns operations per second.
fn rate(threads: usize, op: Arc<dyn Fn(usize) + Send + Sync>) -> f64 {
    ironroot_testkit::bench::rate(threads, RUN, op)
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = token(dir.path());
    let km: Arc<dyn KeyManager> = Arc::new(Pkcs11KeyManager::open(&cfg).expect("open token"));
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
    let memory_settings = CaSettings {
        signing: SigningMode::Memory,
        key_label_prefix: "bench-memory".into(),
        ..settings.clone()
    };
    let ca = Arc::new(CertificateAuthority::open(settings, km.clone(), store, None).expect("CA"));
    let label = ca.status().expect("status").x509_key_label;
    let memory_store: Arc<dyn DataStore> = Arc::new(
        SledStore::open(
            &dir.path().join("store-memory"),
            TrustDomain::parse("bench.example").expect("td"),
        )
        .expect("store"),
    );
    let memory_ca = Arc::new(
        CertificateAuthority::open(memory_settings, km.clone(), memory_store, None)
            .expect("memory-mode CA"),
    );

    // Distinct CSRs, made up front so key generation is not measured.
    let csrs: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..512)
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

    // Where the CA path's time goes besides C_Sign, on one thread.
    let csrs_v = csrs.clone();
    let verify_rate = rate(
        1,
        Arc::new(move |i| {
            ironroot_server::ca::x509::parse_csr(&csrs_v[i % csrs_v.len()]).expect("csr");
        }),
    );
    let soft_ca = ironroot_server::ca::x509::ca_params(
        &ironroot_server::ca::x509::CaSubject {
            country: "US".into(),
            organization: "bench".into(),
            trust_domain: TrustDomain::parse("bench.example").expect("td"),
        },
        0,
        4_000_000_000,
    )
    .expect("params");
    let soft_issuer = Arc::new(rcgen::Issuer::new(
        soft_ca,
        rcgen::KeyPair::generate().expect("key"),
    ));
    let leaf_key = Arc::new(rcgen::KeyPair::generate().expect("key"));
    let id_b = id.clone();
    let build_rate = rate(
        1,
        Arc::new(move |_| {
            let p = ironroot_server::ca::x509::svid_params(&id_b, &[], 0, 4_000_000_000)
                .expect("params");
            p.signed_by(leaf_key.as_ref(), soft_issuer.as_ref())
                .expect("cert");
        }),
    );

    // The floor under the CSR check: one ring P-256 signature verification.
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        &rng,
    )
    .expect("key");
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .expect("key");
    let msg = vec![5u8; 200];
    let sig = kp.sign(&rng, &msg).expect("sign").as_ref().to_vec();
    let pk = ring::signature::KeyPair::public_key(&kp).as_ref().to_vec();
    let ring_rate = rate(
        1,
        Arc::new(move |_| {
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, &pk)
                .verify(&msg, &sig)
                .expect("verify");
        }),
    );
    println!(
        "ring ECDSA P-256 verification alone: {:.1} us",
        1e6 / ring_rate
    );

    println!(
        "X.509-SVID signing, SoftHSM2 P-256 CA key, {}s per figure",
        RUN.as_secs()
    );
    println!(
        "CA path parts on 1 thread: CSR parse + signature check {:.1} us; \
         certificate build + in-process ring P-256 signature {:.1} us",
        1e6 / verify_rate,
        1e6 / build_rate
    );
    println!(
        "| threads | raw C_Sign (sig/s) | CA path, signing = \"hsm\" (cert/s) | ratio to raw | \
         CA path, signing = \"memory\" (cert/s) | floor: CSR parse + PoP check alone (/s) |"
    );
    println!("|---|---|---|---|---|---|");
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
        let (ca3, csrs3, id3) = (memory_ca.clone(), csrs.clone(), id.clone());
        let memory_path = rate(
            threads,
            Arc::new(move |i| {
                let csr = &csrs3[i % csrs3.len()];
                ca3.sign_x509_svid_csr(csr, &id3, 3600, &[]).expect("svid");
            }),
        );
        let csrs4 = csrs.clone();
        let floor = rate(
            threads,
            Arc::new(move |i| {
                ironroot_server::ca::x509::parse_csr(&csrs4[i % csrs4.len()]).expect("csr");
            }),
        );
        println!(
            "| {threads} | {raw:.0} | {path:.0} | {:.1} % | {memory_path:.0} | {floor:.0} |",
            100.0 * path / raw
        );
    }
}
