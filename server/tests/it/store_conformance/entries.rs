//! Entries: CRUD and filters, the rules that refuse an entry, batches and pages.

use super::*;

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
        federates_with: None,
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
