//! The change feed, and revisions under concurrent writers.

use super::*;

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
    store.replace_ca_journal(None, b"j").await.unwrap();
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
