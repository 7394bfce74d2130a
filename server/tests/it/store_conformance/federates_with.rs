//! Entries' `federates_with`: stored normalized, read back, replaced by an
//! update, carried by the change feed and the snapshot (what agents are
//! served from), and refused when it names the store's own trust domain.

use super::*;

fn tds(names: &[&str]) -> Vec<TrustDomain> {
    names
        .iter()
        .map(|n| TrustDomain::parse(n).unwrap())
        .collect()
}

pub(crate) async fn federates_with_round_trips_and_updates(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let mut s = spec("/fed", &["a:1"]);
    s.federates_with = tds(&["partner.org", "another.org", "partner.org"]);
    let created = store.create_entry(s).await.unwrap();
    // Stored sorted and deduplicated, like selectors.
    assert_eq!(
        created.spec.federates_with,
        tds(&["another.org", "partner.org"])
    );
    assert_eq!(
        store.get_entry(&created.id).await.unwrap(),
        Some(created.clone())
    );
    let plain = store.create_entry(spec("/plain", &["a:2"])).await.unwrap();
    assert!(plain.spec.federates_with.is_empty());

    // An update replaces the list: one domain removed.
    let mut s = spec("/fed", &["a:1"]);
    s.federates_with = tds(&["partner.org"]);
    let updated = store.update_entry(&created.id, s, None).await.unwrap();
    assert_eq!(updated.revision, 1);
    assert_eq!(updated.spec.federates_with, tds(&["partner.org"]));
    assert_eq!(
        store.get_entry(&created.id).await.unwrap(),
        Some(updated.clone())
    );
    // And emptied.
    let emptied = store
        .update_entry(&created.id, spec("/fed", &["a:1"]), None)
        .await
        .unwrap();
    assert!(emptied.spec.federates_with.is_empty());
    assert_eq!(
        store.get_entry(&created.id).await.unwrap(),
        Some(emptied.clone())
    );

    // The feed carries each version as stored; the snapshot has the last.
    let feed: Vec<Vec<TrustDomain>> = events_after(store, 0)
        .await
        .into_iter()
        .filter_map(|e| match e.change {
            Change::EntryPut { entry } if entry.id == created.id => Some(entry.spec.federates_with),
            _ => None,
        })
        .collect();
    assert_eq!(
        feed,
        vec![
            tds(&["another.org", "partner.org"]),
            tds(&["partner.org"]),
            vec![]
        ]
    );
    let snap = store.snapshot().await.unwrap();
    assert!(snap.entries.contains(&emptied), "{:?}", snap.entries);
    assert!(snap.entries.contains(&plain), "{:?}", snap.entries);

    // The store's own trust domain is refused, on create and on update.
    let before = all(store).await;
    let mut own = spec("/own", &["a:3"]);
    own.federates_with = tds(&["partner.org", "example.org"]);
    let refused = StoreError::InvalidEntry(EntryError::FederatesWithOwnTrustDomain {
        trust_domain: "example.org".into(),
    });
    assert_eq!(
        store
            .create_entry(own.clone())
            .await
            .unwrap_err()
            .to_string(),
        refused.to_string()
    );
    assert_eq!(
        store
            .update_entry(&plain.id, own, None)
            .await
            .unwrap_err()
            .to_string(),
        refused.to_string()
    );
    assert_eq!(all(store).await, before);
}
