//! What survives a reopen, and a record that does not decode.

use super::*;

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
    store.replace_ca_journal(None, b"journal-v1").await.unwrap();
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
