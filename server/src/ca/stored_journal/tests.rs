//! Two CAs of one trust domain on one store and one key directory (two servers on one
//! database and one token), driven with a clock of the test's choosing: exactly one of them
//! makes each rotation step, the other follows it and keeps no key of its own.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ironroot_api::spiffe_id::TrustDomain;
use ironroot_hsm::{KeyAlgorithm, KeyManager, SoftwareKeyManager};
use ironroot_runtime::unix_now;

use super::load;
use crate::ca::rotation::Schedule;
use crate::ca::{CaSettings, CertificateAuthority, SigningMode};
use crate::store::{DataStore, JournalFault, SledStore};

/// The CA lifetime: prepare at half of it, activate at a sixth left.
const TTL: i64 = 600;

struct Cluster {
    _dir: tempfile::TempDir,
    sled: SledStore,
    store: Arc<dyn DataStore>,
    keys: PathBuf,
}

fn cluster() -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let td = TrustDomain::parse("example.org").unwrap();
    let sled = SledStore::open(&dir.path().join("store"), td).unwrap();
    let store: Arc<dyn DataStore> = Arc::new(sled.clone());
    let keys = dir.path().join("keys");
    Cluster {
        _dir: dir,
        sled,
        store,
        keys,
    }
}

impl Cluster {
    /// A server's CA: its own key manager on the shared key directory.
    fn server(&self) -> CertificateAuthority {
        let km: Arc<dyn KeyManager> = Arc::new(SoftwareKeyManager::open(&self.keys).unwrap());
        let settings = CaSettings {
            trust_domain: TrustDomain::parse("example.org").unwrap(),
            key_algorithm: KeyAlgorithm::EcP256,
            ca_ttl: Duration::from_secs(TTL as u64),
            default_x509_svid_ttl: Duration::from_secs(60),
            default_jwt_svid_ttl: Duration::from_secs(60),
            key_label_prefix: "ironroot".into(),
            organization: "ironroot".into(),
            country: "US".into(),
            jwt_issuer: None,
            signing: SigningMode::Hsm,
            memory_key_ttl: Duration::from_secs(3600),
        };
        CertificateAuthority::open(settings, km, self.store.clone(), None).unwrap()
    }

    /// The labels of the keys in the shared key directory.
    fn token(&self) -> Vec<String> {
        let km = SoftwareKeyManager::open(&self.keys).unwrap();
        km.list().unwrap().into_iter().map(|k| k.label).collect()
    }

    /// The labels the stored journal names.
    fn journal(&self) -> Vec<String> {
        let mut labels: Vec<String> = super::labels(&load(self.store.as_ref()).unwrap().journal)
            .map(str::to_owned)
            .collect();
        labels.sort();
        labels
    }
}

/// What agents see of a CA: its roots and JWT key ids.
fn published(ca: &CertificateAuthority) -> (Vec<Vec<u8>>, Vec<String>) {
    let b = ca.bundle().unwrap();
    let kids = b.jwt_authorities.into_iter().map(|a| a.key_id).collect();
    (b.x509_authorities, kids)
}

#[test]
fn the_loser_of_a_rotation_race_destroys_its_key_and_follows_the_winner() {
    let c = cluster();
    let a = c.server();
    // The second server takes up the first one's keys instead of making its own.
    let b = c.server();
    assert_eq!(
        b.status().unwrap().x509_key_label,
        a.status().unwrap().x509_key_label
    );
    assert_eq!(published(&b), published(&a));
    assert_eq!(c.token().len(), 2, "one X.509 and one JWT key");

    // Both plan the next keys from the same journal; the first to write wins.
    let stale = load(c.store.as_ref()).unwrap();
    let t = unix_now() + TTL / 2;
    assert!(a.rotate(t).unwrap(), "A prepares the next keys");
    assert_eq!(c.token().len(), 4);
    assert!(
        b.update_from(stale, t, Schedule::Run, &mut Default::default())
            .unwrap(),
        "B's bundle changes: it follows A"
    );
    // B made keys for the same step, lost the write and destroyed them.
    assert_eq!(c.token(), c.journal(), "only the journal's keys are left");
    assert_eq!(c.token().len(), 4);
    let (roots, kids) = published(&b);
    assert_eq!((roots.len(), kids.len()), (2, 2));
    assert_eq!(published(&b), published(&a));
}

#[test]
fn a_server_follows_the_steps_another_made() {
    let c = cluster();
    let a = c.server();
    let b = c.server();
    let first = a.status().unwrap().x509_key_label;

    let prepare = unix_now() + TTL / 2;
    assert!(a.rotate(prepare).unwrap());
    assert!(b.follow_journal(prepare).unwrap());
    assert_eq!(published(&b), published(&a));
    assert_eq!(b.status().unwrap().x509_key_label, first, "prepared only");

    let activate = unix_now() + TTL - TTL / 6 + 1;
    assert!(a.rotate(activate).unwrap());
    assert!(b.follow_journal(activate).unwrap());
    let active = a.status().unwrap();
    assert_ne!(active.x509_key_label, first);
    assert_eq!(b.status().unwrap().x509_key_label, active.x509_key_label);
    assert_eq!(b.status().unwrap().jwt_key_id, active.jwt_key_id);

    // Nothing new: following again changes nothing, and B's own check makes no key.
    assert!(!b.follow_journal(activate).unwrap());
    assert!(!b.rotate(activate).unwrap());
    assert_eq!(c.token(), c.journal());
    assert_eq!(c.token().len(), 4);
}

#[test]
fn a_key_made_for_an_unwritten_journal_is_destroyed_once_the_journal_moves_on() {
    let c = cluster();
    let a = c.server();
    assert_eq!(c.token().len(), 2);
    // The next keys are due; the store answers nothing and wrote nothing.
    let t = unix_now() + TTL / 2;
    c.sled.fail_next_journal_write(JournalFault::Unwritten);
    assert!(a.rotate(t).is_err());
    assert_eq!(
        c.token().len(),
        3,
        "the key made for the write is kept while the write may still land"
    );
    assert_eq!(c.journal().len(), 2);
    assert_eq!(a.rotation.lock().unwrap().len(), 1);
    // The next check makes the step again, with a new key; once that is stored, the first
    // key can never be, and goes.
    assert!(a.rotate(t).unwrap());
    assert_eq!(c.token(), c.journal(), "no key left that no journal names");
    assert_eq!(c.token().len(), 4);
    assert_eq!(a.rotation.lock().unwrap().len(), 0);
}

#[test]
fn a_key_whose_journal_write_was_stored_unacknowledged_is_kept_and_used() {
    let c = cluster();
    let a = c.server();
    let t = unix_now() + TTL / 2;
    c.sled
        .fail_next_journal_write(JournalFault::WrittenButUnacknowledged);
    assert!(a.rotate(t).is_err());
    // The journal names the key although the write was reported failed.
    assert_eq!(c.token(), c.journal());
    assert_eq!(c.token().len(), 3);
    assert!(a.rotate(t).unwrap());
    assert_eq!(c.token(), c.journal(), "the stored key was not destroyed");
    assert_eq!(c.token().len(), 4);
    assert_eq!(a.rotation.lock().unwrap().len(), 0);
    // And it is the one the CA publishes next to the active root.
    let (roots, kids) = published(&a);
    assert_eq!((roots.len(), kids.len()), (2, 2));
}
