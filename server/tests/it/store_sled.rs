//! The sled store: the conformance suite against a real directory, and what
//! only sled has (the migration from its first layout).

use std::path::PathBuf;
use std::sync::Arc;

use crate::store_conformance::{all, id, list_all, node, spec, td, Backend};
use ironroot_api::entry::RegistrationEntry;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_server::store::{
    Change, ChangeEvent, ChangesSince, DataStore, EntryFilter, Revision, SledStore, StoreError,
};

/// The one tree of schema 4, and the byte that starts an entry's key in it.
const STORE_TREE: &str = "store";

fn entry_key(id: &str) -> Vec<u8> {
    [b"e".as_slice(), id.as_bytes()].concat()
}

struct Sled {
    dir: tempfile::TempDir,
}

impl Sled {
    fn path(&self) -> PathBuf {
        self.dir.path().join("store")
    }
}

impl Backend for Sled {
    async fn fresh() -> (Self, Arc<dyn DataStore>) {
        let b = Sled {
            dir: tempfile::tempdir().unwrap(),
        };
        let store = SledStore::open(&b.path(), td()).unwrap();
        (b, Arc::new(store))
    }

    async fn reopen(&self, td: TrustDomain) -> Result<Arc<dyn DataStore>, StoreError> {
        let path = self.path();
        Ok(Arc::new(
            when_unlocked(|| SledStore::open(&path, td.clone())).await?,
        ))
    }

    async fn corrupt_entry(&self, id: &str) {
        let path = self.path();
        let db = when_unlocked(|| sled::open(&path)).await.unwrap();
        db.open_tree(STORE_TREE)
            .unwrap()
            .insert(entry_key(id), &b"{not json"[..])
            .unwrap();
        db.flush().unwrap();
    }
}

/// `open` once sled's file lock is free. A dropped store lets go of the lock when sled's
/// background flusher has finished, a moment later (under load, long enough for the next open
/// in the same process to find it held): a server restart, a new process, never sees this.
async fn when_unlocked<T, E: std::fmt::Debug>(
    mut open: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match open() {
            Err(e)
                if format!("{e:?}").contains("could not acquire lock")
                    && std::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            r => return r,
        }
    }
}

crate::conformance_suite!(Sled);

/// A store written by the first layout (no listing indexes, no feed) opens,
/// is migrated, and answers as a new one would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_1_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let mut web = RegistrationEntry::from_spec(
        "11111111-1111-4111-8111-111111111111".into(),
        spec("/web", &["a:1"]),
        3,
        1_700_000_000,
    );
    web.spec.selectors.sort();
    let mut banned = node("/spire/agent/tpm/b");
    banned.banned = true;
    {
        let db = sled::open(&path).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", "1").unwrap();
        meta.insert("trust_domain", "example.org").unwrap();
        db.open_tree("entries")
            .unwrap()
            .insert(web.id.as_bytes(), serde_json::to_vec(&web).unwrap())
            .unwrap();
        db.open_tree("entry_keys")
            .unwrap()
            .insert(
                ironroot_server::store::entry_identity_key(&web),
                web.id.as_bytes(),
            )
            .unwrap();
        db.open_tree("nodes")
            .unwrap()
            .insert(
                banned.spiffe_id.to_string().as_bytes(),
                serde_json::to_vec(&banned).unwrap(),
            )
            .unwrap();
        db.flush().unwrap();
    }
    let store = when_unlocked(|| SledStore::open(&path, td()))
        .await
        .unwrap();
    assert_eq!(all(&store).await, vec![web.clone()]);
    let by_parent = EntryFilter {
        parent_id: Some(web.spec.parent_id.clone()),
        ..EntryFilter::default()
    };
    assert_eq!(list_all(&store, &by_parent, 0).await, vec![web.clone()]);
    assert_eq!(store.list_banned_nodes().await.unwrap(), vec![banned]);
    assert!(matches!(
        store.create_entry(spec("/web", &["a:1"])).await.unwrap_err(),
        StoreError::DuplicateEntry { existing_id } if existing_id == web.id
    ));
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.revision.0, 0);
    let e = store.create_entry(spec("/db", &["a:1"])).await.unwrap();
    assert_eq!(store.watch_head().borrow().0, 1);
    drop(store);
    // Migrated once: opening again changes nothing.
    let store = when_unlocked(|| SledStore::open(&path, td()))
        .await
        .unwrap();
    assert_eq!(all(&store).await.len(), 2);
    assert_eq!(store.get_entry(&e.id).await.unwrap(), Some(e));
    let _ = id("/x");
}

fn entry(id: &str, path: &str) -> RegistrationEntry {
    let mut spec = spec(path, &["a:1"]);
    spec.normalize();
    RegistrationEntry::from_spec(id.into(), spec, 0, 1_700_000_000)
}

/// Writes a store of schema 1 to 3 by hand, a sled tree per kind of record.
fn write_legacy(
    path: &std::path::Path,
    version: &str,
    head: u64,
    entries: &[&RegistrationEntry],
    records: &[(u64, Vec<u8>)],
) -> sled::Db {
    let db = sled::open(path).unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("schema_version", version).unwrap();
    meta.insert("trust_domain", "example.org").unwrap();
    meta.insert("revision", &head.to_be_bytes()).unwrap();
    for e in entries {
        db.open_tree("entries")
            .unwrap()
            .insert(e.id.as_bytes(), serde_json::to_vec(e).unwrap())
            .unwrap();
        db.open_tree("entry_keys")
            .unwrap()
            .insert(
                ironroot_server::store::entry_identity_key(e),
                e.id.as_bytes(),
            )
            .unwrap();
        for (tree, value) in [
            ("entries_by_parent", &e.spec.parent_id),
            ("entries_by_spiffe_id", &e.spec.spiffe_id),
        ] {
            db.open_tree(tree)
                .unwrap()
                .insert(format!("{value}\0{}", e.id), &[])
                .unwrap();
        }
    }
    let changes = db.open_tree("changes").unwrap();
    for (first, record) in records {
        changes.insert(first.to_be_bytes(), record.clone()).unwrap();
    }
    db
}

async fn read_feed(store: &SledStore, after: u64) -> Vec<ChangeEvent> {
    match store.changes_since(Revision(after), 100).await.unwrap() {
        ChangesSince::Events(e) => e,
        ChangesSince::Truncated { oldest } => panic!("truncated at {oldest:?}"),
    }
}

/// A store written by schema 2 (one change event per record) opens, its feed
/// reads the same events as before, and new writes follow on from its head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_feed_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let a = entry("aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa", "/a");
    let b = entry("bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb", "/b");
    let first = vec![
        ChangeEvent {
            revision: Revision(1),
            change: Change::EntryPut { entry: a.clone() },
        },
        ChangeEvent {
            revision: Revision(2),
            change: Change::EntryPut { entry: b.clone() },
        },
        ChangeEvent {
            revision: Revision(3),
            change: Change::EntryDeleted { id: a.id.clone() },
        },
    ];
    let records: Vec<(u64, Vec<u8>)> = first
        .iter()
        .map(|e| (e.revision.0, serde_json::to_vec(e).unwrap()))
        .collect();
    write_legacy(&path, "2", 3, &[&b], &records)
        .flush()
        .unwrap();

    let store = when_unlocked(|| SledStore::open(&path, td()))
        .await
        .unwrap();
    assert_eq!(read_feed(&store, 0).await, first);
    assert_eq!(read_feed(&store, 1).await, first[1..]);
    assert_eq!(all(&store).await, vec![b.clone()]);
    store.create_entry(spec("/c", &["a:1"])).await.unwrap();
    let after = read_feed(&store, 3).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].revision, Revision(4));
}

/// A store written by schema 3 (a tree per kind of record) opens as one
/// tree: every record is there, the indexes answer (listings by parent and by
/// SPIFFE ID, duplicates found), an unreadable entry is still reported, the
/// feed goes on from its head, and the old trees are gone. A copy cut short
/// by a crash (records in the new tree, no version yet) is redone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_3_store_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let web = entry("11111111-1111-4111-8111-111111111111", "/web");
    let db_entry = entry("22222222-2222-4222-8222-222222222222", "/db");
    let broken = "33333333-3333-4333-8333-333333333333";
    let events = vec![
        ChangeEvent {
            revision: Revision(1),
            change: Change::EntryPut { entry: web.clone() },
        },
        ChangeEvent {
            revision: Revision(2),
            change: Change::EntryPut {
                entry: db_entry.clone(),
            },
        },
    ];
    let mut banned = node("/spire/agent/tpm/b");
    banned.banned = true;
    let token = [7u8; 32];
    {
        let db = write_legacy(
            &path,
            "3",
            2,
            &[&web, &db_entry],
            &[(1, serde_json::to_vec(&events).unwrap())],
        );
        db.open_tree("entries")
            .unwrap()
            .insert(broken, &b"{not json"[..])
            .unwrap();
        let key = banned.spiffe_id.to_string();
        db.open_tree("nodes")
            .unwrap()
            .insert(key.as_bytes(), serde_json::to_vec(&banned).unwrap())
            .unwrap();
        db.open_tree("banned_nodes")
            .unwrap()
            .insert(key.as_bytes(), &[])
            .unwrap();
        db.open_tree("ca")
            .unwrap()
            .insert("journal", &b"journal bytes"[..])
            .unwrap();
        db.open_tree("join_tokens")
            .unwrap()
            .insert(token, &1_900_000_000i64.to_be_bytes())
            .unwrap();
        // A copy to schema 4 that a crash cut short.
        db.open_tree(STORE_TREE)
            .unwrap()
            .insert(
                entry_key("44444444-4444-4444-8444-444444444444"),
                &b"{}"[..],
            )
            .unwrap();
        db.flush().unwrap();
    }

    let store = when_unlocked(|| SledStore::open(&path, td()))
        .await
        .unwrap();
    let mut both = vec![web.clone(), db_entry.clone()];
    both.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(all(&store).await, both);
    let by_parent = EntryFilter {
        parent_id: Some(web.spec.parent_id.clone()),
        ..EntryFilter::default()
    };
    assert_eq!(list_all(&store, &by_parent, 1).await, both);
    let by_spiffe_id = EntryFilter {
        spiffe_id: Some(web.spec.spiffe_id.clone()),
        ..EntryFilter::default()
    };
    assert_eq!(list_all(&store, &by_spiffe_id, 0).await, vec![web.clone()]);
    assert!(matches!(
        store.create_entry(spec("/web", &["a:1"])).await.unwrap_err(),
        StoreError::DuplicateEntry { existing_id } if existing_id == web.id
    ));
    let snap = store.snapshot().await.unwrap();
    assert_eq!(snap.revision, Revision(2));
    assert_eq!(snap.unreadable.len(), 1, "{:?}", snap.unreadable);
    assert_eq!(snap.unreadable[0].key, broken);
    assert_eq!(store.list_banned_nodes().await.unwrap(), vec![banned]);
    assert_eq!(
        store.get_ca_journal().await.unwrap().as_deref(),
        Some(&b"journal bytes"[..])
    );
    assert_eq!(
        store.take_join_token(&token).await.unwrap(),
        Some(1_900_000_000)
    );
    assert_eq!(read_feed(&store, 0).await, events);
    let created = store.create_entry(spec("/c", &["a:1"])).await.unwrap();
    assert_eq!(read_feed(&store, 2).await.len(), 1);
    assert_eq!(store.watch_head().borrow().0, 3);
    drop(store);

    // Migrated once: opening again changes nothing, and the old trees are gone.
    let store = when_unlocked(|| SledStore::open(&path, td()))
        .await
        .unwrap();
    assert_eq!(all(&store).await.len(), 3);
    assert_eq!(store.get_entry(&created.id).await.unwrap(), Some(created));
    drop(store);
    let db = when_unlocked(|| sled::open(&path)).await.unwrap();
    let names: Vec<String> = db
        .tree_names()
        .iter()
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    for old in ["meta", "entries", "entry_keys", "changes", "nodes"] {
        assert!(!names.iter().any(|n| n == old), "{old} left in {names:?}");
    }
}

/// A schema this build does not know is refused, naming both versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    {
        let db = sled::open(&path).unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.insert("schema_version", "9").unwrap();
        meta.insert("trust_domain", "example.org").unwrap();
        db.flush().unwrap();
    }
    match when_unlocked(|| SledStore::open(&path, td())).await {
        Err(e @ StoreError::UnsupportedSchema { .. }) => {
            assert!(e.to_string().contains("'9'"), "{e}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a schema 9 store opened"),
    }
}
