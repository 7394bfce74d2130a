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

/// Listing by `federates_with` in SPIRE's four match modes, alone and with the indexed
/// filters, across pages.
pub(crate) async fn entries_are_listed_by_federates_with(store: Arc<dyn DataStore>) {
    let store = store.as_ref();
    let mut made = Vec::new();
    for (path, fed) in [
        ("/none", &[][..]),
        ("/a", &["a.org"][..]),
        ("/ab", &["a.org", "b.org"][..]),
        ("/b", &["b.org"][..]),
        ("/abc", &["a.org", "b.org", "c.org"][..]),
    ] {
        let mut s = spec(path, &["k:1"]);
        s.federates_with = tds(fed);
        made.push(store.create_entry(s).await.unwrap());
    }
    let list = |names: &[&str], match_on: FederatesWithMatch| {
        let filter = EntryFilter {
            federates_with: Some(FederatesWithFilter {
                trust_domains: tds(names),
                match_on,
            }),
            ..EntryFilter::default()
        };
        async move {
            // Pages of one: the filter holds across pages, none repeated or skipped.
            let mut paths = Vec::new();
            let mut page = PageRequest::first(1);
            loop {
                let p = store.list_entries(&filter, &page).await.unwrap();
                paths.extend(p.items.iter().map(|e| e.spec.spiffe_id.path().to_owned()));
                match p.next {
                    Some(n) => page.after = Some(n),
                    None => break,
                }
            }
            paths.sort();
            paths
        }
    };
    use FederatesWithMatch::*;
    assert_eq!(list(&["a.org"], Superset).await, ["/a", "/ab", "/abc"]);
    assert_eq!(list(&["a.org", "b.org"], Superset).await, ["/ab", "/abc"]);
    assert_eq!(list(&["a.org", "b.org"], Exact).await, ["/ab"]);
    assert_eq!(list(&["b.org"], Exact).await, ["/b"]);
    assert_eq!(list(&["a.org", "c.org"], Any).await, ["/a", "/ab", "/abc"]);
    assert_eq!(list(&["a.org", "b.org"], Subset).await, ["/a", "/ab", "/b"]);
    assert_eq!(list(&["z.org"], Any).await, Vec::<String>::new());
    // With an indexed filter: the SPIFFE ID index, then federates_with.
    let by_id = EntryFilter {
        spiffe_id: Some(made[2].spec.spiffe_id.clone()),
        federates_with: Some(FederatesWithFilter {
            trust_domains: tds(&["c.org"]),
            match_on: Superset,
        }),
        ..EntryFilter::default()
    };
    assert!(store
        .list_entries(&by_id, &PageRequest::first(10))
        .await
        .unwrap()
        .items
        .is_empty());
    let by_parent = EntryFilter {
        parent_id: Some(made[0].spec.parent_id.clone()),
        federates_with: Some(FederatesWithFilter {
            trust_domains: tds(&["c.org"]),
            match_on: Any,
        }),
        ..EntryFilter::default()
    };
    let found = store
        .list_entries(&by_parent, &PageRequest::first(10))
        .await
        .unwrap()
        .items;
    assert_eq!(found, vec![made[4].clone()]);
}
