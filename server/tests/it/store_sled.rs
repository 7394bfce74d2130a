//! The sled store: the conformance suite against a real directory, and what
//! only sled has (the migration from its first layout).

use std::path::PathBuf;
use std::sync::Arc;

use crate::store_conformance::{all, id, list_all, node, spec, td, Backend};
use ironroot_api::entry::RegistrationEntry;
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_server::store::{
    ChangesSince, DataStore, EntryFilter, Revision, SledStore, StoreError,
};

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
        db.open_tree("entries")
            .unwrap()
            .insert(id.as_bytes(), &b"{not json"[..])
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

/// A store written by schema 2 (one change event per record) opens, its feed
/// reads the same events as before, and new writes follow on from its head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_feed_is_migrated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    // Written by this build, then put back into schema 2's shape by hand.
    let first = {
        let store = SledStore::open(&path, td()).unwrap();
        let a = store.create_entry(spec("/a", &["a:1"])).await.unwrap();
        store.create_entry(spec("/b", &["a:1"])).await.unwrap();
        store.delete_entries(vec![a.id.clone()]).await.unwrap();
        store.changes_since(Revision(0), 100).await.unwrap()
    };
    let ChangesSince::Events(first) = first else {
        panic!("feed truncated")
    };
    assert_eq!(first.len(), 3);
    when_unlocked(|| -> Result<(), sled::Error> {
        let db = sled::open(&path)?;
        db.open_tree("meta")?.insert("schema_version", "2")?;
        let changes = db.open_tree("changes")?;
        changes.clear()?;
        for e in &first {
            changes.insert(e.revision.0.to_be_bytes(), serde_json::to_vec(e).unwrap())?;
        }
        db.flush()?;
        Ok(())
    })
    .await
    .unwrap();

    let store = when_unlocked(|| SledStore::open(&path, td()))
        .await
        .unwrap();
    let read = |after: u64| {
        let store = &store;
        async move {
            match store.changes_since(Revision(after), 100).await.unwrap() {
                ChangesSince::Events(e) => e,
                ChangesSince::Truncated { oldest } => panic!("truncated at {oldest:?}"),
            }
        }
    };
    assert_eq!(read(0).await, first);
    assert_eq!(read(1).await, first[1..]);
    store.create_entry(spec("/c", &["a:1"])).await.unwrap();
    let after = read(3).await;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].revision, Revision(4));
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
