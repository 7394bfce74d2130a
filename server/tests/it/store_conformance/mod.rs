//! The DataStore conformance suite: one set of cases every backend passes
//! (`conformance_suite!(Backend)` in a backend's test file makes each case a
//! test). A backend supplies a fresh store, a way to reopen the same
//! storage, and a way to plant a record that does not decode.

use std::collections::BTreeSet;
use std::sync::Arc;

use ironroot_api::bundle::{JwtAuthority, TrustBundle};
use ironroot_api::entry::{EntryError, EntrySpec, RegistrationEntry};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_server::store::{
    AttestedNode, Change, ChangesSince, DataStore, EntryFilter, PageRequest, Revision, StoreError,
};

/// What a backend gives the suite.
pub(crate) trait Backend: Sized + Send {
    /// A fresh, empty store for trust domain `example.org`.
    async fn fresh() -> (Self, Arc<dyn DataStore>);
    /// The same storage opened again for `td` (the previous handle dropped
    /// first by the caller).
    async fn reopen(&self, td: TrustDomain) -> Result<Arc<dyn DataStore>, StoreError>;
    /// Replaces the stored entry `id` with bytes that do not decode (the
    /// previous handle dropped first by the caller).
    async fn corrupt_entry(&self, id: &str);
}

pub(crate) fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

pub(crate) fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://example.org{s}")).unwrap()
}

pub(crate) fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

pub(crate) fn spec(path: &str, selectors: &[&str]) -> EntrySpec {
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

pub(crate) fn node(path: &str) -> AttestedNode {
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

pub(crate) fn bundle(name: &str, seq: u64) -> TrustBundle {
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

/// Every entry passing `filter`, through every page of `size`.
pub(crate) async fn list_all(
    store: &dyn DataStore,
    filter: &EntryFilter,
    size: usize,
) -> Vec<RegistrationEntry> {
    let mut out = Vec::new();
    let mut page = PageRequest::first(size);
    loop {
        let p = store.list_entries(filter, &page).await.unwrap();
        out.extend(p.items);
        match p.next {
            Some(next) => page.after = Some(next),
            None => return out,
        }
    }
}

pub(crate) async fn all(store: &dyn DataStore) -> Vec<RegistrationEntry> {
    list_all(store, &EntryFilter::default(), 0).await
}

/// Every change event after `after`.
pub(crate) async fn events_after(
    store: &dyn DataStore,
    after: u64,
) -> Vec<ironroot_server::store::ChangeEvent> {
    match store.changes_since(Revision(after), 10_000).await.unwrap() {
        ChangesSince::Events(e) => e,
        other => panic!("expected events after {after}, got {other:?}"),
    }
}

pub(crate) async fn entry_crud_and_filters(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let web = store
        .create_entry(spec(
            "/web",
            &["unix:uid:1000", "unix:gid:1000", "unix:uid:1000"],
        ))
        .await
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
    let db = store.create_entry(db_spec).await.unwrap();

    assert_eq!(store.get_entry(&web.id).await.unwrap().unwrap(), web);
    assert_eq!(store.get_entry("no-such-id").await.unwrap(), None);
    assert_eq!(store.count_entries().await.unwrap(), 2);

    let f = |spiffe: Option<&str>, parent: Option<&str>, sels: &[&str]| EntryFilter {
        spiffe_id: spiffe.map(id),
        parent_id: parent.map(id),
        selectors_superset_of: sels.iter().map(|s| sel(s)).collect(),
    };
    assert_eq!(
        all_of(store, &f(Some("/db"), None, &[])).await,
        vec![db.clone()]
    );
    assert_eq!(
        all_of(store, &f(None, Some("/spire/agent/tpm/node1"), &[])).await,
        vec![web.clone()]
    );
    assert_eq!(
        all_of(store, &f(None, None, &["unix:uid:1000"])).await,
        vec![web.clone()]
    );
    assert!(
        all_of(store, &f(None, None, &["unix:uid:1000", "unix:uid:1001"]))
            .await
            .is_empty()
    );
    assert!(
        all_of(store, &f(Some("/web"), Some("/spire/agent/tpm/node2"), &[]))
            .await
            .is_empty()
    );
    assert_eq!(all(store).await.len(), 2);

    let mut changed = spec("/web", &["unix:uid:1000"]);
    changed.hint = "v2".into();
    let updated = store.update_entry(&web.id, changed, None).await.unwrap();
    assert_eq!(updated.revision, 1);
    assert_eq!(updated.created_at, web.created_at);
    assert_eq!(updated.spec.hint, "v2");
    assert_eq!(store.get_entry(&web.id).await.unwrap().unwrap(), updated);

    let deleted = store.delete_entry(&web.id).await.unwrap();
    assert_eq!(deleted, updated);
    assert_eq!(store.get_entry(&web.id).await.unwrap(), None);
    assert_eq!(store.count_entries().await.unwrap(), 1);
    assert!(matches!(
        store.delete_entry(&web.id).await.unwrap_err(),
        StoreError::EntryNotFound { id } if id == web.id
    ));
    assert!(matches!(
        store
            .update_entry("nope", spec("/x", &["a:b"]), None)
            .await
            .unwrap_err(),
        StoreError::EntryNotFound { .. }
    ));
    // Deleting released the identity (and the index keys): the same entry can
    // be created again, and the old parent no longer lists it.
    assert!(all_of(store, &f(None, Some("/spire/agent/tpm/node1"), &[]))
        .await
        .is_empty());
    store
        .create_entry(spec("/web", &["unix:uid:1000"]))
        .await
        .unwrap();
}

async fn all_of(store: &dyn DataStore, filter: &EntryFilter) -> Vec<RegistrationEntry> {
    list_all(store, filter, 0).await
}

pub(crate) async fn duplicates_are_rejected_and_change_nothing(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let first = store
        .create_entry(spec("/web", &["b:2", "a:1"]))
        .await
        .unwrap();
    let other = store.create_entry(spec("/web", &["a:1"])).await.unwrap();
    let before = all(store).await;
    let head = *store.watch_head().borrow();

    // Same selectors in another order, other non-identity fields: still a duplicate.
    let mut dup = spec("/web", &["a:1", "b:2", "a:1"]);
    dup.hint = "different".into();
    let e = store.create_entry(dup).await.unwrap_err();
    assert!(matches!(&e, StoreError::DuplicateEntry { existing_id } if *existing_id == first.id));
    assert!(e.to_string().contains(&first.id));
    assert_eq!(all(store).await, before);

    // An update that would collide with another entry is refused too.
    let e = store
        .update_entry(&other.id, spec("/web", &["a:1", "b:2"]), None)
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::DuplicateEntry { existing_id } if existing_id == first.id));
    assert_eq!(all(store).await, before);
    // A refused write moves no revision.
    assert_eq!(*store.watch_head().borrow(), head);
    // Updating an entry without changing its identity is not a collision with itself.
    let same = store
        .update_entry(&first.id, spec("/web", &["a:1", "b:2"]), None)
        .await
        .unwrap();
    assert_eq!(same.revision, 1);
}

pub(crate) async fn invalid_entries_are_rejected_and_change_nothing(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let good = store.create_entry(spec("/web", &["a:1"])).await.unwrap();
    let before = all(store).await;

    let mut foreign = spec("/web", &["a:2"]);
    foreign.spiffe_id = SpiffeId::parse("spiffe://other.org/web").unwrap();
    let reserved = spec("/spire/agent/x", &["a:3"]);
    let no_selectors = spec("/web", &[]);
    let mut bad_ttl = spec("/web", &["a:4"]);
    bad_ttl.x509_svid_ttl = u32::MAX;
    let mut bad_dns = spec("/web", &["a:5"]);
    bad_dns.dns_names = vec!["not a name".into()];
    for bad in [foreign, reserved, no_selectors, bad_ttl, bad_dns] {
        let e = store.create_entry(bad.clone()).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidEntry(_)), "{e:?}");
        let e = store.update_entry(&good.id, bad, None).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidEntry(_)), "{e:?}");
    }
    let e = store.create_entry(spec("/web", &[])).await.unwrap_err();
    assert!(matches!(
        e,
        StoreError::InvalidEntry(EntryError::NoSelectors)
    ));
    assert_eq!(all(store).await, before);
}

pub(crate) async fn revision_mismatch(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let e = store.create_entry(spec("/web", &["a:1"])).await.unwrap();
    let v1 = store
        .update_entry(&e.id, spec("/web", &["a:2"]), Some(0))
        .await
        .unwrap();
    assert_eq!(v1.revision, 1);
    let err = store
        .update_entry(&e.id, spec("/web", &["a:3"]), Some(0))
        .await
        .unwrap_err();
    assert!(matches!(
        &err,
        StoreError::RevisionMismatch { id, expected: 0, actual: 1 } if *id == e.id
    ));
    assert_eq!(store.get_entry(&e.id).await.unwrap().unwrap(), v1);
    let v2 = store
        .update_entry(&e.id, spec("/web", &["a:3"]), Some(1))
        .await
        .unwrap();
    assert_eq!(v2.revision, 2);
}

pub(crate) async fn nodes_bans_bundles_journal_and_tokens(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let a = node("/spire/agent/tpm/a");
    let b = node("/spire/agent/tpm/b");
    store.record_attestation(&b).await.unwrap();
    store.record_attestation(&a).await.unwrap();
    assert_eq!(
        store.get_attested_node(&a.spiffe_id).await.unwrap(),
        Some(a.clone())
    );
    let listed = store
        .list_attested_nodes(&PageRequest::default())
        .await
        .unwrap();
    assert_eq!(listed.items, vec![a.clone(), b.clone()]);
    assert_eq!(listed.next, None);

    // A re-attestation keeps first_attested_at.
    let mut again = a.clone();
    again.first_attested_at = 1_800_000_000;
    again.serial_number = "ffff".into();
    let stored = store.record_attestation(&again).await.unwrap();
    assert_eq!(stored.first_attested_at, a.first_attested_at);
    assert_eq!(stored.serial_number, "ffff");

    // Bans: listed by the index, refuse attestation, survive until unbanned.
    assert!(store.list_banned_nodes().await.unwrap().is_empty());
    let banned = store.set_node_banned(&b.spiffe_id, true).await.unwrap();
    assert!(banned.banned);
    assert_eq!(
        store.list_banned_nodes().await.unwrap(),
        vec![banned.clone()]
    );
    assert!(matches!(
        store.record_attestation(&b).await.unwrap_err(),
        StoreError::Banned { .. }
    ));
    assert!(
        store
            .get_attested_node(&b.spiffe_id)
            .await
            .unwrap()
            .unwrap()
            .banned
    );
    store.set_node_banned(&b.spiffe_id, false).await.unwrap();
    assert!(store.list_banned_nodes().await.unwrap().is_empty());
    store.set_node_banned(&b.spiffe_id, true).await.unwrap();
    // Eviction forgets the node and its ban.
    assert!(store
        .delete_attested_node(&b.spiffe_id)
        .await
        .unwrap()
        .is_some());
    assert!(store.list_banned_nodes().await.unwrap().is_empty());
    store.record_attestation(&b).await.unwrap();
    assert!(matches!(
        store
            .set_node_banned(&id("/spire/agent/tpm/nobody"), true)
            .await
            .unwrap_err(),
        StoreError::NodeNotFound { .. }
    ));
    assert_eq!(
        store
            .delete_attested_node(&a.spiffe_id)
            .await
            .unwrap()
            .map(|n| n.spiffe_id),
        Some(a.spiffe_id.clone())
    );
    assert_eq!(
        store.delete_attested_node(&a.spiffe_id).await.unwrap(),
        None
    );

    let fed = bundle("other.org", 1);
    store.put_federated_bundle(&fed).await.unwrap();
    store
        .put_federated_bundle(&bundle("another.org", 2))
        .await
        .unwrap();
    let fed2 = bundle("other.org", 2);
    store.put_federated_bundle(&fed2).await.unwrap();
    assert_eq!(
        store.get_federated_bundle(&fed.trust_domain).await.unwrap(),
        Some(fed2.clone())
    );
    let listed = store.list_federated_bundles().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].trust_domain.as_str(), "another.org");
    assert!(store
        .delete_federated_bundle(&fed.trust_domain)
        .await
        .unwrap());
    assert!(!store
        .delete_federated_bundle(&fed.trust_domain)
        .await
        .unwrap());
    assert!(matches!(
        store
            .put_federated_bundle(&bundle("example.org", 1))
            .await
            .unwrap_err(),
        StoreError::OwnTrustDomain { .. }
    ));

    assert_eq!(store.get_ca_journal().await.unwrap(), None);
    store.put_ca_journal(b"{\"version\":1}").await.unwrap();
    store.put_ca_journal(b"\x00\xffopaque").await.unwrap();
    assert_eq!(
        store.get_ca_journal().await.unwrap().unwrap(),
        b"\x00\xffopaque"
    );

    // A join token is taken once.
    let h = [7u8; 32];
    store.put_join_token(&h, 1234).await.unwrap();
    assert_eq!(store.take_join_token(&h).await.unwrap(), Some(1234));
    assert_eq!(store.take_join_token(&h).await.unwrap(), None);
    assert_eq!(store.take_join_token(&[8u8; 32]).await.unwrap(), None);
}

pub(crate) async fn batches_give_a_result_per_item(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let existing = store.create_entry(spec("/old", &["a:1"])).await.unwrap();
    let head = store.watch_head().borrow().0;
    let results = store
        .create_entries(vec![
            spec("/b/0", &["a:1"]),
            spec("/old", &["a:1"]), // duplicate of a stored entry
            spec("/b/2", &[]),      // invalid
            spec("/b/0", &["a:1"]), // duplicate of an earlier item
            spec("/b/4", &["a:1"]),
        ])
        .await
        .unwrap();
    assert_eq!(results.len(), 5);
    assert!(results[0].is_ok());
    assert!(
        matches!(&results[1], Err(StoreError::DuplicateEntry { existing_id }) if *existing_id == existing.id)
    );
    assert!(matches!(
        &results[2],
        Err(StoreError::InvalidEntry(EntryError::NoSelectors))
    ));
    let first = results[0].as_ref().unwrap();
    assert!(
        matches!(&results[3], Err(StoreError::DuplicateEntry { existing_id }) if *existing_id == first.id)
    );
    assert!(results[4].is_ok());
    assert_eq!(store.count_entries().await.unwrap(), 3);
    // Two creates, two events.
    assert_eq!(store.watch_head().borrow().0, head + 2);

    let ids = vec![
        first.id.clone(),
        "no-such-id".to_owned(),
        existing.id.clone(),
        existing.id.clone(),
    ];
    let results = store.delete_entries(ids).await.unwrap();
    assert!(results[0].is_ok());
    assert!(matches!(&results[1], Err(StoreError::EntryNotFound { .. })));
    assert!(results[2].is_ok());
    assert!(matches!(&results[3], Err(StoreError::EntryNotFound { .. })));
    assert_eq!(store.count_entries().await.unwrap(), 1);

    // Batches over the limit are refused whole.
    let too_many = vec![spec("/x", &["a:1"]); ironroot_server::store::MAX_BATCH + 1];
    assert!(matches!(
        store.create_entries(too_many).await.unwrap_err(),
        StoreError::BatchTooLarge { .. }
    ));
    assert_eq!(store.count_entries().await.unwrap(), 1);
}

pub(crate) async fn pages_neither_repeat_nor_skip(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let mut specs = Vec::new();
    for i in 0..57 {
        let mut s = spec(&format!("/p/{i}"), &["a:1"]);
        if i % 3 == 0 {
            s.parent_id = id("/spire/agent/tpm/node2");
        }
        specs.push(s);
    }
    for r in store.create_entries(specs).await.unwrap() {
        r.unwrap();
    }
    let whole = all(store).await;
    assert_eq!(whole.len(), 57);
    let ids: Vec<&str> = whole.iter().map(|e| e.id.as_str()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "ordered by id");
    for size in [1, 7, 56, 57, 58] {
        assert_eq!(
            list_all(store, &EntryFilter::default(), size).await,
            whole,
            "page size {size}"
        );
    }
    // Filtered listings page the same way, through the indexes.
    let by_parent = EntryFilter {
        parent_id: Some(id("/spire/agent/tpm/node2")),
        ..EntryFilter::default()
    };
    let want: Vec<_> = whole
        .iter()
        .filter(|e| by_parent.matches(e))
        .cloned()
        .collect();
    assert_eq!(want.len(), 19);
    for size in [1, 5, 100] {
        assert_eq!(list_all(store, &by_parent, size).await, want);
    }
    // A write between two pages: items that stayed are seen exactly once.
    let p1 = store
        .list_entries(&EntryFilter::default(), &PageRequest::first(20))
        .await
        .unwrap();
    store.delete_entry(&p1.items[3].id).await.unwrap();
    let newcomer = store.create_entry(spec("/p/new", &["a:1"])).await.unwrap();
    let mut rest = list_all_after(store, p1.next.clone().unwrap()).await;
    let mut seen: Vec<String> = p1.items.iter().map(|e| e.id.clone()).collect();
    seen.append(&mut rest);
    let unique: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no item twice");
    for e in &whole {
        assert!(seen.contains(&e.id), "{} skipped", e.id);
    }
    let _ = newcomer;
    // A token that cannot be a key is refused, not silently restarted.
    let bad = PageRequest {
        after: Some("\0".into()),
        size: 5,
    };
    assert!(matches!(
        store
            .list_entries(&EntryFilter::default(), &bad)
            .await
            .unwrap_err(),
        StoreError::BadPageToken { .. }
    ));
    // Nodes page too.
    for i in 0..11 {
        store
            .record_attestation(&node(&format!("/spire/agent/tpm/n{i:02}")))
            .await
            .unwrap();
    }
    let mut nodes = Vec::new();
    let mut page = PageRequest::first(4);
    loop {
        let p = store.list_attested_nodes(&page).await.unwrap();
        nodes.extend(p.items);
        match p.next {
            Some(n) => page.after = Some(n),
            None => break,
        }
    }
    assert_eq!(nodes.len(), 11);
    assert!(nodes.windows(2).all(|w| w[0].spiffe_id < w[1].spiffe_id));
}

async fn list_all_after(store: &dyn DataStore, after: String) -> Vec<String> {
    let mut out = Vec::new();
    let mut page = PageRequest {
        after: Some(after),
        size: 20,
    };
    loop {
        let p = store
            .list_entries(&EntryFilter::default(), &page)
            .await
            .unwrap();
        out.extend(p.items.into_iter().map(|e| e.id));
        match p.next {
            Some(n) => page.after = Some(n),
            None => return out,
        }
    }
}

/// The feed: every acknowledged change is an event at the next revision, in
/// order, carrying what is stored; replaying the events from a snapshot's
/// revision gives what a later snapshot holds.
pub(crate) async fn the_change_feed_reproduces_the_store(store: Arc<dyn DataStore>) {
    let start = store.snapshot().await.unwrap();
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), start.revision);

    let e = store.create_entry(spec("/feed", &["a:1"])).await.unwrap();
    assert!(head.has_changed().unwrap(), "a write moves the head");
    let e2 = store
        .update_entry(&e.id, spec("/feed", &["a:2"]), None)
        .await
        .unwrap();
    let other = store.create_entry(spec("/other", &["a:1"])).await.unwrap();
    store.delete_entry(&other.id).await.unwrap();
    let n = node("/spire/agent/tpm/feed");
    store.record_attestation(&n).await.unwrap();
    store.set_node_banned(&n.spiffe_id, true).await.unwrap();
    store
        .put_federated_bundle(&bundle("other.org", 1))
        .await
        .unwrap();
    store
        .delete_federated_bundle(&TrustDomain::parse("other.org").unwrap())
        .await
        .unwrap();
    store.put_ca_journal(b"j").await.unwrap();
    // Refused writes and join tokens make no events.
    let _ = store
        .create_entry(spec("/feed", &["a:2"]))
        .await
        .unwrap_err();
    store.put_join_token(&[1; 32], 5).await.unwrap();

    let events = events_after(store.as_ref(), start.revision.0).await;
    let revisions: Vec<u64> = events.iter().map(|e| e.revision.0).collect();
    let want: Vec<u64> = (start.revision.0 + 1..=start.revision.0 + 9).collect();
    assert_eq!(revisions, want, "one event per change, contiguous");
    assert_eq!(store.watch_head().borrow().0, start.revision.0 + 9);
    assert!(matches!(&events[0].change, Change::EntryPut { entry } if *entry == e));
    assert!(matches!(&events[1].change, Change::EntryPut { entry } if *entry == e2));
    assert!(matches!(&events[3].change, Change::EntryDeleted { id } if *id == other.id));
    assert!(matches!(&events[5].change, Change::NodePut { node } if node.banned));
    assert!(matches!(&events[7].change, Change::BundleDeleted { .. }));
    assert!(matches!(&events[8].change, Change::CaJournal));
    // A suffix is exactly that suffix; a limit is honoured.
    let suffix = events_after(store.as_ref(), start.revision.0 + 4).await;
    assert_eq!(suffix, events[4..].to_vec());
    match store.changes_since(start.revision, 2).await.unwrap() {
        ChangesSince::Events(first_two) => assert_eq!(first_two, events[..2].to_vec()),
        other => panic!("{other:?}"),
    }
    // Nothing after the head.
    assert!(events_after(store.as_ref(), start.revision.0 + 9)
        .await
        .is_empty());

    let end = store.snapshot().await.unwrap();
    assert_eq!(end.revision.0, start.revision.0 + 9);
    assert_eq!(end.entries, vec![e2]);
    assert_eq!(end.nodes.len(), 1);
    assert!(end.nodes[0].banned);
    assert!(end.bundles.is_empty());
    assert!(end.unreadable.is_empty());
}

pub(crate) async fn concurrent_writers_make_no_duplicates_and_no_gaps(store: Arc<dyn DataStore>) {
    let start = store.watch_head().borrow().0;
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = store.clone();
            tokio::spawn(async move {
                let (mut created, mut dups) = (0, 0);
                // Every task tries the same 20 entries, plus 5 of its own.
                for i in 0..25 {
                    let s = if i < 20 {
                        spec(&format!("/shared/{i}"), &["a:1"])
                    } else {
                        spec(&format!("/own/{t}/{i}"), &["a:1"])
                    };
                    match store.create_entry(s).await {
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
    for t in tasks {
        let (c, d) = t.await.unwrap();
        created += c;
        dups += d;
    }
    assert_eq!(created, 20 + 8 * 5);
    assert_eq!(dups, 7 * 20);
    assert_eq!(store.count_entries().await.unwrap(), 60);
    let ids: BTreeSet<String> = all(store.as_ref())
        .await
        .into_iter()
        .map(|e| e.spec.spiffe_id.to_string())
        .collect();
    assert_eq!(ids.len(), 60);
    // One event per create, revisions contiguous whatever the interleaving.
    let events = events_after(store.as_ref(), start).await;
    assert_eq!(events.len(), 60);
    assert!(events
        .windows(2)
        .all(|w| w[1].revision.0 == w[0].revision.0 + 1));
}

pub(crate) async fn data_survives_reopen<B: Backend>(backend: B, store: Arc<dyn DataStore>) {
    let entry = store.create_entry(spec("/web", &["a:1"])).await.unwrap();
    let entry = store
        .update_entry(&entry.id, spec("/web", &["a:1", "b:2"]), None)
        .await
        .unwrap();
    let n = node("/spire/agent/tpm/a");
    store.record_attestation(&n).await.unwrap();
    store.set_node_banned(&n.spiffe_id, true).await.unwrap();
    let fed = bundle("other.org", 3);
    store.put_federated_bundle(&fed).await.unwrap();
    store.put_ca_journal(b"journal-v1").await.unwrap();
    let head = *store.watch_head().borrow();
    drop(store);

    let store = backend.reopen(td()).await.unwrap();
    assert_eq!(all(store.as_ref()).await, vec![entry.clone()]);
    assert_eq!(store.list_banned_nodes().await.unwrap().len(), 1);
    assert_eq!(store.list_federated_bundles().await.unwrap(), vec![fed]);
    assert_eq!(
        store.get_ca_journal().await.unwrap().unwrap(),
        b"journal-v1"
    );
    assert_eq!(*store.watch_head().borrow(), head, "the head survives");
    // The uniqueness and listing indexes came back too.
    assert!(matches!(
        store.create_entry(spec("/web", &["b:2", "a:1"])).await.unwrap_err(),
        StoreError::DuplicateEntry { existing_id } if existing_id == entry.id
    ));
    let by_parent = EntryFilter {
        parent_id: Some(entry.spec.parent_id.clone()),
        ..EntryFilter::default()
    };
    assert_eq!(list_all(store.as_ref(), &by_parent, 0).await, vec![entry]);
    drop(store);

    // A store belongs to one trust domain.
    let e = backend
        .reopen(TrustDomain::parse("other.org").unwrap())
        .await
        .err()
        .unwrap();
    assert!(matches!(e, StoreError::TrustDomainMismatch { .. }), "{e:?}");
}

/// One record that does not decode is reported and skipped, never an outage
/// of listings and snapshots; deleting it is how an operator clears it.
pub(crate) async fn an_unreadable_record_is_skipped_and_reported<B: Backend>(
    backend: B,
    store: Arc<dyn DataStore>,
) {
    let good = store.create_entry(spec("/good", &["a:1"])).await.unwrap();
    let bad = store.create_entry(spec("/bad", &["a:1"])).await.unwrap();
    drop(store);
    backend.corrupt_entry(&bad.id).await;
    let store = backend.reopen(td()).await.unwrap();
    assert_eq!(all(store.as_ref()).await, vec![good.clone()]);
    let by_parent = EntryFilter {
        parent_id: Some(good.spec.parent_id.clone()),
        ..EntryFilter::default()
    };
    assert_eq!(
        list_all(store.as_ref(), &by_parent, 0).await,
        vec![good.clone()]
    );
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.entries, vec![good]);
    assert_eq!(snap.unreadable.len(), 1);
    assert!(
        snap.unreadable[0].key.contains(&bad.id),
        "{:?}",
        snap.unreadable
    );
    assert!(matches!(
        store.get_entry(&bad.id).await.unwrap_err(),
        StoreError::Corrupt { .. }
    ));
    // Deleting it works (its result says it was unreadable) and clears it.
    let r = store.delete_entries(vec![bad.id.clone()]).await.unwrap();
    assert!(matches!(&r[0], Err(StoreError::Corrupt { .. })), "{r:?}");
    assert!(store.snapshot().await.unwrap().unreadable.is_empty());
    assert_eq!(store.get_entry(&bad.id).await.unwrap(), None);
}

/// Makes each case a `#[tokio::test]` for backend `$b`.
#[macro_export]
macro_rules! conformance_suite {
    ($b:ty) => {
        $crate::conformance_suite!(@plain $b,
            entry_crud_and_filters,
            duplicates_are_rejected_and_change_nothing,
            invalid_entries_are_rejected_and_change_nothing,
            revision_mismatch,
            nodes_bans_bundles_journal_and_tokens,
            batches_give_a_result_per_item,
            pages_neither_repeat_nor_skip,
            the_change_feed_reproduces_the_store,
            concurrent_writers_make_no_duplicates_and_no_gaps
        );
        $crate::conformance_suite!(@with_backend $b,
            data_survives_reopen,
            an_unreadable_record_is_skipped_and_reported
        );
    };
    (@plain $b:ty, $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (_backend, store) = <$b as $crate::store_conformance::Backend>::fresh().await;
                $crate::store_conformance::$case(store).await;
            }
        )+
    };
    (@with_backend $b:ty, $($case:ident),+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (backend, store) = <$b as $crate::store_conformance::Backend>::fresh().await;
                $crate::store_conformance::$case(backend, store).await;
            }
        )+
    };
}
