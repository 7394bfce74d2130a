//! The sled store against a real directory.

use std::path::Path;
use std::sync::Arc;

use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::entry::{EntryError, EntrySpec, RegistrationEntry};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_server::store::{AttestedNode, DataStore, EntryFilter, SledStore, StoreError};

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org{s}")).unwrap()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, td()).unwrap()
}

fn spec(path: &str, selectors: &[&str]) -> EntrySpec {
    EntrySpec {
        spiffe_id: id(path),
        parent_id: id("/spire/agent/tpm/node1"),
        selectors: selectors.iter().map(|s| sel(s)).collect(),
        x509_svid_ttl: 0,
        jwt_svid_ttl: 0,
        dns_names: vec![],
        admin: false,
        downstream: false,
        hint: String::new(),
        expires_at: 0,
    }
}

fn all(store: &SledStore) -> Vec<RegistrationEntry> {
    store.list_entries(&EntryFilter::default()).unwrap()
}

#[test]
fn entry_crud_and_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let web = store
        .create_entry(spec(
            "/web",
            &["unix:uid:1000", "unix:gid:1000", "unix:uid:1000"],
        ))
        .unwrap();
    assert_eq!(web.revision, 0);
    assert!(uuid::Uuid::parse_str(&web.id).is_ok());
    assert!(web.created_at > 1_600_000_000);
    // Stored sorted and deduplicated.
    assert_eq!(
        web.spec.selectors,
        vec![sel("unix:gid:1000"), sel("unix:uid:1000")]
    );
    let mut db_spec = spec("/db", &["unix:uid:1001"]);
    db_spec.parent_id = id("/spire/agent/tpm/node2");
    let db = store.create_entry(db_spec).unwrap();

    assert_eq!(store.get_entry(&web.id).unwrap().unwrap(), web);
    assert_eq!(store.get_entry("no-such-id").unwrap(), None);
    assert_eq!(store.count_entries().unwrap(), 2);

    let by_id = EntryFilter {
        spiffe_id: Some(id("/db")),
        ..EntryFilter::default()
    };
    assert_eq!(store.list_entries(&by_id).unwrap(), vec![db.clone()]);
    let by_parent = EntryFilter {
        parent_id: Some(id("/spire/agent/tpm/node1")),
        ..EntryFilter::default()
    };
    assert_eq!(store.list_entries(&by_parent).unwrap(), vec![web.clone()]);
    let by_sel = EntryFilter {
        selectors_superset_of: vec![sel("unix:uid:1000")],
        ..EntryFilter::default()
    };
    assert_eq!(store.list_entries(&by_sel).unwrap(), vec![web.clone()]);
    let none = EntryFilter {
        selectors_superset_of: vec![sel("unix:uid:1000"), sel("unix:uid:1001")],
        ..EntryFilter::default()
    };
    assert!(store.list_entries(&none).unwrap().is_empty());
    let both = EntryFilter {
        spiffe_id: Some(id("/web")),
        parent_id: Some(id("/spire/agent/tpm/node2")),
        ..EntryFilter::default()
    };
    assert!(store.list_entries(&both).unwrap().is_empty());
    assert_eq!(all(&store).len(), 2);

    let mut changed = spec("/web", &["unix:uid:1000"]);
    changed.hint = "v2".into();
    let updated = store.update_entry(&web.id, changed, None).unwrap();
    assert_eq!(updated.revision, 1);
    assert_eq!(updated.created_at, web.created_at);
    assert_eq!(updated.spec.hint, "v2");
    assert_eq!(store.get_entry(&web.id).unwrap().unwrap(), updated);

    let deleted = store.delete_entry(&web.id).unwrap();
    assert_eq!(deleted, updated);
    assert_eq!(store.get_entry(&web.id).unwrap(), None);
    assert_eq!(store.count_entries().unwrap(), 1);
    assert!(matches!(
        store.delete_entry(&web.id).unwrap_err(),
        StoreError::EntryNotFound { id } if id == web.id
    ));
    assert!(matches!(
        store
            .update_entry("nope", spec("/x", &["a:b"]), None)
            .unwrap_err(),
        StoreError::EntryNotFound { .. }
    ));
    // Deleting released the identity: the same entry can be created again.
    store
        .create_entry(spec("/web", &["unix:uid:1000"]))
        .unwrap();
}

#[test]
fn duplicates_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = store.create_entry(spec("/web", &["b:2", "a:1"])).unwrap();
    let other = store.create_entry(spec("/web", &["a:1"])).unwrap();
    let before = all(&store);

    // Same selectors in another order, other non-identity fields: still a duplicate.
    let mut dup = spec("/web", &["a:1", "b:2", "a:1"]);
    dup.hint = "different".into();
    let e = store.create_entry(dup).unwrap_err();
    assert!(matches!(&e, StoreError::DuplicateEntry { existing_id } if *existing_id == first.id));
    assert!(e.to_string().contains(&first.id));
    assert_eq!(store.count_entries().unwrap(), 2);
    assert_eq!(all(&store), before);

    // An update that would collide with another entry is refused too.
    let e = store
        .update_entry(&other.id, spec("/web", &["a:1", "b:2"]), None)
        .unwrap_err();
    assert!(matches!(e, StoreError::DuplicateEntry { existing_id } if existing_id == first.id));
    assert_eq!(all(&store), before);
    // Updating an entry without changing its identity is not a collision with itself.
    let same = store
        .update_entry(&first.id, spec("/web", &["a:1", "b:2"]), None)
        .unwrap();
    assert_eq!(same.revision, 1);
}

#[test]
fn invalid_entries_are_rejected_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = store.create_entry(spec("/web", &["a:1"])).unwrap();
    let before = all(&store);

    let mut foreign = spec("/web", &["a:2"]);
    foreign.spiffe_id = SpiffeId::parse("spiffe://other.org/web").unwrap();
    let reserved = spec("/spire/agent/x", &["a:3"]);
    let no_selectors = spec("/web", &[]);
    let mut bad_ttl = spec("/web", &["a:4"]);
    bad_ttl.x509_svid_ttl = u32::MAX;
    let mut bad_dns = spec("/web", &["a:5"]);
    bad_dns.dns_names = vec!["not a name".into()];
    for bad in [foreign, reserved, no_selectors, bad_ttl, bad_dns] {
        let e = store.create_entry(bad.clone()).unwrap_err();
        assert!(matches!(e, StoreError::InvalidEntry(_)), "{e:?}");
        let e = store.update_entry(&good.id, bad, None).unwrap_err();
        assert!(matches!(e, StoreError::InvalidEntry(_)), "{e:?}");
    }
    let e = store.create_entry(spec("/web", &[])).unwrap_err();
    assert!(matches!(
        e,
        StoreError::InvalidEntry(EntryError::NoSelectors)
    ));
    assert_eq!(all(&store), before);
    assert_eq!(store.count_entries().unwrap(), 1);
}

#[test]
fn revision_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let e = store.create_entry(spec("/web", &["a:1"])).unwrap();
    let v1 = store
        .update_entry(&e.id, spec("/web", &["a:2"]), Some(0))
        .unwrap();
    assert_eq!(v1.revision, 1);
    let err = store
        .update_entry(&e.id, spec("/web", &["a:3"]), Some(0))
        .unwrap_err();
    assert!(matches!(
        &err,
        StoreError::RevisionMismatch { id, expected: 0, actual: 1 } if *id == e.id
    ));
    assert_eq!(store.get_entry(&e.id).unwrap().unwrap(), v1);
    let v2 = store
        .update_entry(&e.id, spec("/web", &["a:3"]), Some(1))
        .unwrap();
    assert_eq!(v2.revision, 2);
}

fn node(path: &str) -> AttestedNode {
    AttestedNode {
        spiffe_id: id(path),
        attestor: "tpm".into(),
        selectors: vec![sel("tpm:ek_hash:abcd"), sel("tpm:secure_boot:enabled")],
        serial_number: "0a1b".into(),
        expires_at: 1_900_000_000,
        banned: false,
        first_attested_at: 1_700_000_000,
        last_attested_at: 1_700_000_100,
    }
}

fn bundle(name: &str, seq: u64) -> TrustBundle {
    TrustBundle {
        trust_domain: TrustDomain::parse(name).unwrap(),
        // The store treats these as opaque bytes.
        x509_authorities: vec![vec![0x30, 0x03, 1, 2, 3]],
        jwt_authorities: vec![JwtAuthority {
            key_id: "k1".into(),
            public_key_der: vec![0x30, 0x00],
            expires_at: 5,
        }],
        sequence_number: seq,
        refresh_hint_secs: 300,
    }
}

#[test]
fn attested_nodes_bundles_and_journal_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    let a = node("/spire/agent/tpm/a");
    let mut b = node("/spire/agent/tpm/b");
    store.put_attested_node(&b).unwrap();
    store.put_attested_node(&a).unwrap();
    assert_eq!(
        store.get_attested_node(&a.spiffe_id).unwrap(),
        Some(a.clone())
    );
    assert_eq!(
        store.list_attested_nodes().unwrap(),
        vec![a.clone(), b.clone()]
    );
    b.banned = true;
    store.put_attested_node(&b).unwrap();
    assert!(
        store
            .get_attested_node(&b.spiffe_id)
            .unwrap()
            .unwrap()
            .banned
    );
    assert_eq!(
        store.delete_attested_node(&a.spiffe_id).unwrap(),
        Some(a.clone())
    );
    assert_eq!(store.delete_attested_node(&a.spiffe_id).unwrap(), None);
    assert_eq!(store.get_attested_node(&a.spiffe_id).unwrap(), None);

    let fed = bundle("other.org", 1);
    store.put_federated_bundle(&fed).unwrap();
    store
        .put_federated_bundle(&bundle("another.org", 2))
        .unwrap();
    let fed2 = bundle("other.org", 2);
    store.put_federated_bundle(&fed2).unwrap();
    assert_eq!(
        store.get_federated_bundle(&fed.trust_domain).unwrap(),
        Some(fed2.clone())
    );
    let listed = store.list_federated_bundles().unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].trust_domain.as_str(), "another.org");
    assert!(store.delete_federated_bundle(&fed.trust_domain).unwrap());
    assert!(!store.delete_federated_bundle(&fed.trust_domain).unwrap());
    assert!(matches!(
        store
            .put_federated_bundle(&bundle("example.org", 1))
            .unwrap_err(),
        StoreError::OwnTrustDomain { .. }
    ));

    assert_eq!(store.get_ca_journal().unwrap(), None);
    store.put_ca_journal(b"{\"version\":1}").unwrap();
    store.put_ca_journal(b"\x00\xffopaque").unwrap();
    assert_eq!(store.get_ca_journal().unwrap().unwrap(), b"\x00\xffopaque");
}

#[test]
fn data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (entry, n, fed) = {
        let store = open(dir.path());
        let entry = store.create_entry(spec("/web", &["a:1"])).unwrap();
        let entry = store
            .update_entry(&entry.id, spec("/web", &["a:1", "b:2"]), None)
            .unwrap();
        let n = node("/spire/agent/tpm/a");
        store.put_attested_node(&n).unwrap();
        let fed = bundle("other.org", 3);
        store.put_federated_bundle(&fed).unwrap();
        store.put_ca_journal(b"journal-v1").unwrap();
        (entry, n, fed)
    };
    let store = open(dir.path());
    assert_eq!(all(&store), vec![entry.clone()]);
    assert_eq!(store.list_attested_nodes().unwrap(), vec![n]);
    assert_eq!(store.list_federated_bundles().unwrap(), vec![fed]);
    assert_eq!(store.get_ca_journal().unwrap().unwrap(), b"journal-v1");
    // The uniqueness index came back too.
    assert!(matches!(
        store.create_entry(spec("/web", &["b:2", "a:1"])).unwrap_err(),
        StoreError::DuplicateEntry { existing_id } if existing_id == entry.id
    ));
    drop(store);

    // A store belongs to one trust domain.
    let e = SledStore::open(dir.path(), TrustDomain::parse("other.org").unwrap())
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::TrustDomainMismatch { .. }), "{e:?}");
}

#[test]
fn concurrent_creates_make_no_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut created = 0;
                let mut dups = 0;
                // Every thread tries the same 20 entries, plus 5 of its own.
                for i in 0..25 {
                    let s = if i < 20 {
                        spec(&format!("/shared/{i}"), &["a:1"])
                    } else {
                        spec(&format!("/own/{t}/{i}"), &["a:1"])
                    };
                    match store.create_entry(s) {
                        Ok(_) => created += 1,
                        Err(StoreError::DuplicateEntry { .. }) => dups += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                (created, dups)
            })
        })
        .collect();
    let (mut created, mut dups) = (0, 0);
    for t in threads {
        let (c, d) = t.join().unwrap();
        created += c;
        dups += d;
    }
    assert_eq!(created, 20 + 8 * 5);
    assert_eq!(dups, 7 * 20);
    assert_eq!(store.count_entries().unwrap(), 60);
    let mut ids: Vec<String> = all(&store)
        .into_iter()
        .map(|e| e.spec.spiffe_id.to_string())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 60);
}
