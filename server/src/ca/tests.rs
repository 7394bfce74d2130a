//! The CA's rotation checks over a key manager that goes away: a real key store (the
//! software one, in a temp dir) behind a switch that makes every call fail as an unreachable
//! HSM does, and a real sled store. Time is the rotation's argument, so hours of schedule run
//! in a moment.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_hsm::{
    HsmError, KeyAlgorithm, KeyInfo, KeyManager, KeyManagerHealth, SoftwareKeyManager,
};
use rand::{Rng, SeedableRng};

use super::{CaError, CaSettings, CertificateAuthority, HealthState, SigningMode};
use crate::store::{DataStore, SledStore};

/// A key store that can be switched off: then every call fails with
/// [`HsmError::Unreachable`], as the PKCS#11 key manager's do while its HSM is gone.
struct Switchable {
    keys: SoftwareKeyManager,
    down: AtomicBool,
}

impl Switchable {
    fn check(&self) -> Result<(), HsmError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(HsmError::Unreachable {
                token: "ca".into(),
                since: SystemTime::UNIX_EPOCH,
                reason: "C_Sign returned CKR_DEVICE_ERROR".into(),
            });
        }
        Ok(())
    }
}

impl KeyManager for Switchable {
    fn generate(&self, label: &str, algorithm: KeyAlgorithm) -> Result<KeyInfo, HsmError> {
        self.check()?;
        self.keys.generate(label, algorithm)
    }
    fn find(&self, label: &str) -> Result<Option<KeyInfo>, HsmError> {
        self.check()?;
        self.keys.find(label)
    }
    fn sign_digest(&self, label: &str, digest: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.check()?;
        self.keys.sign_digest(label, digest)
    }
    fn list(&self) -> Result<Vec<KeyInfo>, HsmError> {
        self.check()?;
        self.keys.list()
    }
    fn destroy(&self, label: &str) -> Result<(), HsmError> {
        self.check()?;
        self.keys.destroy(label)
    }
    fn describe(&self) -> String {
        "switchable test key store".into()
    }
    fn health(&self) -> KeyManagerHealth {
        match self.check() {
            Ok(()) => KeyManagerHealth::Available,
            Err(_) => KeyManagerHealth::Unreachable {
                since: SystemTime::UNIX_EPOCH,
                reason: "C_Sign returned CKR_DEVICE_ERROR".into(),
            },
        }
    }
}

const CA_TTL: i64 = 3600;
const MEMORY_KEY_TTL: i64 = 600;

struct Rig {
    km: Arc<Switchable>,
    ca: CertificateAuthority,
    _dir: tempfile::TempDir,
}

fn rig(now: i64, signing: SigningMode) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let km = Arc::new(Switchable {
        keys: SoftwareKeyManager::open(&dir.path().join("keys")).expect("key store"),
        down: AtomicBool::new(false),
    });
    let td = TrustDomain::parse("example.org").expect("td");
    let store: Arc<dyn DataStore> =
        Arc::new(SledStore::open(&dir.path().join("store"), td.clone()).expect("store"));
    let settings = CaSettings {
        trust_domain: td,
        key_algorithm: KeyAlgorithm::EcP256,
        ca_ttl: Duration::from_secs(CA_TTL as u64),
        default_x509_svid_ttl: Duration::from_secs(600),
        default_jwt_svid_ttl: Duration::from_secs(300),
        key_label_prefix: "test".into(),
        organization: "ironroot".into(),
        country: "US".into(),
        jwt_issuer: None,
        signing,
        memory_key_ttl: Duration::from_secs(MEMORY_KEY_TTL as u64),
    };
    let ca = CertificateAuthority::open(settings, km.clone(), store, None).expect("CA");
    // `open` rotated at the wall clock; the test's clock starts at `now`.
    ca.rotate(now).expect("first check");
    Rig { km, ca, _dir: dir }
}

/// The active authorities' labels, or why there are none.
fn active(ca: &CertificateAuthority) -> Result<(String, String), CaError> {
    let st = ca.status()?;
    Ok((st.x509_key_label, st.jwt_key_id))
}

/// Over random walks of time with the key store going away and coming back, a rotation
/// check never leaves the CA without an active X.509 or JWT authority: one that cannot reach
/// the store fails (and says it could not reach it) and keeps the authorities it had; the
/// first one that can brings the schedule up to date.
///
/// In memory mode, too: the in-memory signing key is kept while the store is down; once it
/// answers, the key has at least half its life left (or all the CA has) and never outlives
/// the CA certificate.
#[test]
fn a_rotation_check_that_cannot_reach_the_key_store_never_drops_the_active_authority() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1d0_7007);
    for (walk, signing) in [SigningMode::Hsm, SigningMode::Memory]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        let mut now = ironroot_runtime::unix_now();
        let r = rig(now, signing);
        let mut rotations_seen = 0;
        let mut last = active(&r.ca).expect("active after open");
        for step in 0..40 {
            // Up to a third of the CA lifetime per step: outages span prepare and activate.
            now += rng.gen_range(0..=CA_TTL / 3);
            let down = rng.gen_bool(0.4);
            r.km.down.store(down, Ordering::SeqCst);
            let memory_before = r.ca.memory_key_not_after();
            let result = r.ca.rotate(now);
            let memory_after = r.ca.memory_key_not_after();
            match signing {
                SigningMode::Hsm => assert_eq!(memory_after, None),
                SigningMode::Memory if down => {
                    assert_eq!(memory_after, memory_before, "kept while the store is down")
                }
                SigningMode::Memory => {
                    let until = memory_after.expect("a signing key once the store answers");
                    let ca_until = r.ca.status().expect("status").x509_not_after;
                    assert!(until <= ca_until, "the signing key outlives its CA");
                    assert!(
                        until - now >= (MEMORY_KEY_TTL / 2).min(ca_until - now),
                        "walk {walk} step {step}: signing key not replaced in time \
                         ({} s left)",
                        until - now
                    );
                }
            }
            let current = active(&r.ca).unwrap_or_else(|e| {
                panic!("walk {walk} step {step} (store down: {down}): no active authority: {e}")
            });
            if down {
                let e = result.expect_err("a check that cannot reach the store fails");
                assert!(e.is_key_manager_unreachable(), "{e}");
                assert!(!e.condemns_active_key(), "{e}");
                assert_eq!(
                    current, last,
                    "the authorities in use are kept while it is down"
                );
                let health = r.ca.health();
                // Memory mode signs X.509-SVIDs on (its key's notAfter is ahead of the wall
                // clock the health check reads): degraded, not unhealthy.
                let expected = match signing {
                    SigningMode::Hsm => HealthState::Unhealthy,
                    SigningMode::Memory => HealthState::Degraded,
                };
                assert_eq!(health.state, expected, "{health:?}");
                assert!(
                    health
                        .problems
                        .iter()
                        .any(|p| p.contains("HSM unreachable since"))
                        && health
                            .problems
                            .iter()
                            .any(|p| p.contains("CA rotation check failing since")),
                    "{health:?}"
                );
            } else {
                result.unwrap_or_else(|e| panic!("walk {walk} step {step}: {e}"));
                let health = r.ca.health();
                assert_eq!(health.state, HealthState::Healthy, "{health:?}");
                if current != last {
                    rotations_seen += 1;
                }
            }
            last = current;
        }
        assert!(rotations_seen > 0, "walk {walk}: the schedule ran");
    }
}

/// Fail closed still holds: when the key store answers that the active key is gone, the CA
/// stops signing with it.
#[test]
fn a_key_the_store_says_is_gone_is_dropped() {
    let now = ironroot_runtime::unix_now();
    let r = rig(now, SigningMode::Hsm);
    let (x509_label, _) = active(&r.ca).expect("active");
    r.km.keys.destroy(&x509_label).expect("destroy");
    let e = r.ca.rotate(now + 1).expect_err("the journal's key is gone");
    assert!(e.condemns_active_key(), "{e}");
    assert!(
        matches!(r.ca.status(), Err(CaError::NotReady("X.509"))),
        "no signing with a key the store no longer holds"
    );
}
