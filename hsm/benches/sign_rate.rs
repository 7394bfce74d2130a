//! Signature throughput on SoftHSM2 P-256, and what the object-handle cache
//! saves. A bench binary (prints figures); run it on an idle machine:
//!
//! ```text
//! cargo bench -p ironroot-hsm --bench sign_rate
//! ```

#[path = "../tests/it/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, ObjectClass};
use ironroot_hsm::{KeyAlgorithm, KeyManager, Pkcs11Config, Pkcs11KeyManager};

use support::raw::Raw;
use support::{sha256, Hsm};

const RUN: Duration = Duration::from_secs(2);

/// Signatures per second with `threads` threads calling `km.sign_digest` for `RUN`.
fn rate(km: &Arc<dyn KeyManager>, threads: usize) -> f64 {
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let km = km.clone();
            thread::spawn(move || {
                let digest = sha256(b"bench");
                let mut n = 0u64;
                while start.elapsed() < RUN {
                    km.sign_digest("ca", &digest).expect("sign");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().expect("worker")).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let hsm = Hsm::new();
    hsm.init_token("bench");
    let cfg = Pkcs11Config {
        sessions: 2,
        ..hsm.config("bench")
    };
    {
        let km = Pkcs11KeyManager::open(&cfg).expect("open");
        km.generate("ca", KeyAlgorithm::EcP256).expect("gen");
        // A token rarely holds one key: CA rotation keeps the previous and next keys, and
        // the JWT keys sit beside them.
        for i in 0..8 {
            km.generate(&format!("other-{i}"), KeyAlgorithm::EcP256)
                .expect("gen other");
        }
        let km: Arc<dyn KeyManager> = Arc::new(km);
        println!(
            "P-256 sign_digest, 2 sessions, 1 thread : {:>7.0}/s",
            rate(&km, 1)
        );
        println!(
            "P-256 sign_digest, 2 sessions, 2 threads: {:>7.0}/s",
            rate(&km, 2)
        );
    }
    {
        let one = Pkcs11Config {
            sessions: 1,
            ..cfg.clone()
        };
        let km: Arc<dyn KeyManager> = Arc::new(Pkcs11KeyManager::open(&one).expect("open"));
        println!(
            "P-256 sign_digest, 1 session,  2 threads: {:>7.0}/s",
            rate(&km, 2)
        );
    }

    // What the handle cache saves: the same C_Sign with and without a C_FindObjects before
    // it, on a raw session (the managers above are dropped, so the module is free).
    let raw = Raw::open("bench");
    let session = raw.s();
    let template = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::Label(b"ca".to_vec()),
    ];
    let handle = raw.find(ObjectClass::PRIVATE_KEY, "ca")[0];
    let digest = sha256(b"bench");
    let measure = |search: bool| {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed() < RUN {
            let h = if search {
                session.find_objects(&template).expect("find")[0]
            } else {
                handle
            };
            session.sign(&Mechanism::Ecdsa, h, &digest).expect("sign");
            n += 1;
        }
        n as f64 / start.elapsed().as_secs_f64()
    };
    println!(
        "raw C_Sign, cached handle         : {:>7.0}/s",
        measure(false)
    );
    println!(
        "raw C_FindObjects + C_Sign         : {:>7.0}/s",
        measure(true)
    );
}
