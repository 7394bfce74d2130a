//! Nodes and bans, federated bundles, the CA journal and join tokens.

use super::*;

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

    // First use only (TOFU attestors): refused while the node is there, in the same
    // transaction; a banned node stays refused as banned; after eviction, accepted.
    let t = node("/spire/agent/aws_iid/1/r/i-1");
    store.record_first_attestation(&t).await.unwrap();
    assert!(matches!(
        store.record_first_attestation(&t).await.unwrap_err(),
        StoreError::AlreadyAttested { .. }
    ));
    store.set_node_banned(&t.spiffe_id, true).await.unwrap();
    assert!(matches!(
        store.record_first_attestation(&t).await.unwrap_err(),
        StoreError::Banned { .. }
    ));
    store.delete_attested_node(&t.spiffe_id).await.unwrap();
    store.record_first_attestation(&t).await.unwrap();
    store.delete_attested_node(&t.spiffe_id).await.unwrap();

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
    store
        .replace_ca_journal(None, b"{\"version\":1}")
        .await
        .unwrap();
    store
        .replace_ca_journal(Some(b"{\"version\":1}"), b"\x00\xffopaque")
        .await
        .unwrap();
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

/// The CA journal is a compare-and-swap: a write based on another journal than the stored
/// one (or on none when there is one) changes nothing and makes no event; of writers racing
/// from the same journal exactly one wins.
pub(crate) async fn the_ca_journal_is_replaced_only_from_what_was_read(store: Arc<dyn DataStore>) {
    let changed = |r: Result<(), StoreError>| matches!(r, Err(StoreError::CaJournalChanged));
    store.replace_ca_journal(None, b"first").await.unwrap();
    let head = store.watch_head().borrow().0;
    // Another server already created it.
    assert!(changed(store.replace_ca_journal(None, b"mine").await));
    // Based on a journal that is no longer stored (nor a prefix of it: whole bytes count).
    assert!(changed(
        store.replace_ca_journal(Some(b"firs"), b"mine").await
    ));
    assert!(changed(
        store.replace_ca_journal(Some(b"older"), b"mine").await
    ));
    assert_eq!(store.get_ca_journal().await.unwrap().unwrap(), b"first");
    assert_eq!(
        store.watch_head().borrow().0,
        head,
        "a refused write makes no event"
    );
    assert!(events_after(store.as_ref(), head).await.is_empty());

    // Eight writers from the same journal: one wins, the others are told.
    let winner = one_of_eight_wins(
        &store,
        |store, i| async move { store.replace_ca_journal(Some(b"first"), &[b'w', i]).await },
        |e| matches!(e, StoreError::CaJournalChanged),
    )
    .await;
    assert_eq!(
        store.get_ca_journal().await.unwrap().unwrap(),
        vec![b'w', winner]
    );
    let events = events_after(store.as_ref(), head).await;
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0].change, Change::CaJournal));
}

/// A federated bundle written on condition: only over the bundle (or the absence) it was
/// judged against, compared as decoded; a refused write changes nothing and makes no event;
/// of writers racing from the same bundle exactly one wins. The unconditional put (an
/// operator's `bundle set`) still overwrites whatever is there.
pub(crate) async fn a_federated_bundle_is_replaced_only_over_what_was_judged(
    store: Arc<dyn DataStore>,
) {
    let changed =
        |r: Result<(), StoreError>| matches!(r, Err(StoreError::FederatedBundleChanged { .. }));
    let first = bundle("other.org", 1);
    store.replace_federated_bundle(None, &first).await.unwrap();
    let head = store.watch_head().borrow().0;
    // Judged against no bundle, but one is stored now (set by hand during the fetch).
    assert!(changed(
        store
            .replace_federated_bundle(None, &bundle("other.org", 5))
            .await
    ));
    // Judged against another bundle than the stored one.
    assert!(changed(
        store
            .replace_federated_bundle(Some(&bundle("other.org", 9)), &bundle("other.org", 10))
            .await
    ));
    assert_eq!(
        store
            .get_federated_bundle(&first.trust_domain)
            .await
            .unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.watch_head().borrow().0,
        head,
        "a refused write makes no event"
    );
    assert!(events_after(store.as_ref(), head).await.is_empty());

    // Eight refreshes judged against the same bundle: one is stored.
    let winner = one_of_eight_wins(
        &store,
        |store, i| {
            let expected = first.clone();
            async move {
                store
                    .replace_federated_bundle(Some(&expected), &bundle("other.org", 2 + u64::from(i)))
                    .await
            }
        },
        |e| matches!(e, StoreError::FederatedBundleChanged { trust_domain } if trust_domain == "other.org"),
    )
    .await;
    let stored = store
        .get_federated_bundle(&first.trust_domain)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored, bundle("other.org", 2 + u64::from(winner)));
    assert_eq!(events_after(store.as_ref(), head).await.len(), 1);

    // Deleted by hand during a fetch: the fetch does not bring it back.
    assert!(store
        .delete_federated_bundle(&first.trust_domain)
        .await
        .unwrap());
    assert!(changed(
        store
            .replace_federated_bundle(Some(&stored), &bundle("other.org", 20))
            .await
    ));
    assert_eq!(
        store
            .get_federated_bundle(&first.trust_domain)
            .await
            .unwrap(),
        None
    );
    // The operator's unconditional write is not refused.
    store.put_federated_bundle(&first).await.unwrap();
    store
        .put_federated_bundle(&bundle("other.org", 3))
        .await
        .unwrap();
    // Nor is the own trust domain accepted through the conditional path.
    assert!(matches!(
        store
            .replace_federated_bundle(None, &bundle("example.org", 1))
            .await
            .unwrap_err(),
        StoreError::OwnTrustDomain { .. }
    ));
}

/// Runs eight conditional writes (`write(store, i)`) from the same read at once: exactly one
/// succeeds and every other is told so (`lost`); returns the winner's `i`.
async fn one_of_eight_wins<F, Fut>(
    store: &Arc<dyn DataStore>,
    write: F,
    lost: impl Fn(&StoreError) -> bool,
) -> u8
where
    F: Fn(Arc<dyn DataStore>, u8) -> Fut,
    Fut: std::future::Future<Output = Result<(), StoreError>> + Send + 'static,
{
    let tasks: Vec<_> = (0..8u8)
        .map(|i| tokio::spawn(write(store.clone(), i)))
        .collect();
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(()) => winners.push(i as u8),
            Err(e) if lost(&e) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one writer wins: {winners:?}");
    winners[0]
}
