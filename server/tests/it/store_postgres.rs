//! The PostgreSQL store: the conformance suite against a private PostgreSQL
//! per test, and what only a shared database has: several servers on one
//! database (each sees the others' writes through its feed, revisions stay
//! gap-free whoever writes), a database that goes away and comes back, the
//! schema's migrations and the pruned feed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::store_conformance::{events_after, node, spec, td, Backend};
use ironroot_api::spiffe_id::TrustDomain;
use ironroot_server::store::postgres::PostgresTarget;
use ironroot_server::store::{
    Change, ChangesSince, DataStore, PostgresConfig, PostgresStore, Revision, StoreError,
};
use ironroot_testkit::postgres::Postgres;

const DB: &str = "ironroot";

struct Pg {
    server: Postgres,
    config: PostgresConfig,
}

impl Pg {
    /// A private server with an empty database.
    fn start() -> Self {
        let server = tokio::task::block_in_place(Postgres::start);
        server.create_database(DB);
        let config = PostgresConfig::new(PostgresTarget::Url(server.url(DB)));
        Pg { server, config }
    }

    async fn open(&self) -> Arc<PostgresStore> {
        Arc::new(PostgresStore::open(&self.config, td()).await.unwrap())
    }
}

impl Backend for Pg {
    async fn fresh() -> (Self, Arc<dyn DataStore>) {
        let pg = Pg::start();
        let store = pg.open().await;
        (pg, store)
    }

    async fn reopen(&self, td: TrustDomain) -> Result<Arc<dyn DataStore>, StoreError> {
        Ok(Arc::new(PostgresStore::open(&self.config, td).await?))
    }

    async fn corrupt_entry(&self, id: &str) {
        // Valid JSON (the column is JSONB), not an entry.
        self.server.psql(
            DB,
            &format!("UPDATE entries SET data = '{{\"corrupt\": true}}' WHERE id = '{id}'"),
        );
    }
}

crate::conformance_suite!(Pg);

/// Waits until `store`'s head is at least `at`.
async fn head_reaches(store: &dyn DataStore, at: Revision, within: Duration) {
    let mut head = store.watch_head();
    let reached = tokio::time::timeout(within, head.wait_for(|h| *h >= at))
        .await
        .is_ok_and(|r| r.is_ok());
    assert!(
        reached,
        "the head is at {}, not {at}, after {within:?}",
        *store.watch_head().borrow()
    );
}

/// Two servers on one database: a write by one reaches the other's feed
/// within a second, carrying what was stored, and the rules hold across
/// them (a duplicate of the other's entry is refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_see_each_others_writes() {
    let pg = Pg::start();
    let a = pg.open().await;
    let b = pg.open().await;

    let e = a.create_entry(spec("/web", &["a:1"])).await.unwrap();
    let at = *a.watch_head().borrow();
    head_reaches(b.as_ref(), at, Duration::from_secs(1)).await;
    let events = events_after(b.as_ref(), at.0 - 1).await;
    assert!(
        matches!(&events[..], [ev] if matches!(&ev.change, Change::EntryPut { entry } if *entry == e)),
        "{events:?}"
    );
    assert!(matches!(
        b.create_entry(spec("/web", &["a:1"])).await.unwrap_err(),
        StoreError::DuplicateEntry { existing_id } if existing_id == e.id
    ));

    let n = node("/spire/agent/tpm/b");
    b.record_attestation(&n).await.unwrap();
    b.set_node_banned(&n.spiffe_id, true).await.unwrap();
    let at = *b.watch_head().borrow();
    head_reaches(a.as_ref(), at, Duration::from_secs(1)).await;
    let events = events_after(a.as_ref(), at.0 - 2).await;
    assert!(matches!(&events[1].change, Change::NodePut { node } if node.banned));
    assert_eq!(a.list_banned_nodes().await.unwrap().len(), 1);
    assert!(matches!(
        a.record_attestation(&n).await.unwrap_err(),
        StoreError::Banned { .. }
    ));
}

/// Writers on two servers at once: every create is one event, the
/// revisions are contiguous from 1, and both servers' heads reach the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_two_servers_get_gap_free_revisions() {
    let pg = Pg::start();
    let stores = [pg.open().await, pg.open().await];
    let tasks: Vec<_> = (0..8)
        .map(|t| {
            let store = stores[t % 2].clone();
            tokio::spawn(async move {
                let mut created = 0;
                for i in 0..20 {
                    // Half shared by all tasks (only one create wins each).
                    let path = match i % 2 {
                        0 => format!("/shared/{i}"),
                        _ => format!("/own/{t}/{i}"),
                    };
                    match store.create_entry(spec(&path, &["a:1"])).await {
                        Ok(_) => created += 1,
                        Err(StoreError::DuplicateEntry { .. }) => {}
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                created
            })
        })
        .collect();
    let mut created = 0u64;
    for t in tasks {
        created += t.await.unwrap();
    }
    assert_eq!(created, 10 + 8 * 10);
    let events = events_after(stores[0].as_ref(), 0).await;
    let revisions: Vec<u64> = events.iter().map(|e| e.revision.0).collect();
    assert_eq!(revisions, (1..=created).collect::<Vec<_>>());
    for s in &stores {
        head_reaches(s.as_ref(), Revision(created), Duration::from_secs(1)).await;
    }
}

/// A database that is down: calls fail `Unavailable` within seconds (no
/// hang), and once it is back the same handle works again, its feed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_unavailable_then_the_same_handle_recovers() {
    let mut pg = Pg::start();
    let store = pg.open().await;
    let e = store.create_entry(spec("/web", &["a:1"])).await.unwrap();

    tokio::task::block_in_place(|| pg.server.stop());
    for call in ["read", "write", "snapshot"] {
        let started = Instant::now();
        let result = tokio::time::timeout(Duration::from_secs(10), async {
            match call {
                "read" => store.get_entry(&e.id).await.map(drop),
                "write" => store.create_entry(spec("/db", &["a:1"])).await.map(drop),
                _ => store.snapshot().await.map(drop),
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{call}: still waiting after 10 s"));
        let err = result.expect_err("the database is down");
        assert!(err.is_transient(), "{call}: {err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{call}: {:?}",
            started.elapsed()
        );
    }

    tokio::task::block_in_place(|| pg.server.start_again());
    let deadline = Instant::now() + Duration::from_secs(10);
    let db = loop {
        match store.create_entry(spec("/db", &["a:1"])).await {
            Ok(db) => break db,
            Err(e) if e.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store did not recover: {e:?}"),
        }
    };
    assert_eq!(store.get_entry(&e.id).await.unwrap(), Some(e));
    assert_eq!(store.get_entry(&db.id).await.unwrap(), Some(db));
    // Its listener reconnected: another server's write reaches it.
    let other = pg.open().await;
    other.create_entry(spec("/other", &["a:1"])).await.unwrap();
    let at = *other.watch_head().borrow();
    head_reaches(store.as_ref(), at, Duration::from_secs(8)).await;
}

/// A database whose schema a newer build wrote is refused, naming both
/// versions; servers starting at once on a new database migrate it once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_versions_are_checked_and_migrated_once() {
    let pg = Pg::start();
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let config = pg.config.clone();
            tokio::spawn(async move { PostgresStore::open(&config, td()).await.map(drop) })
        })
        .collect();
    for o in opens {
        o.await.unwrap().unwrap();
    }
    assert_eq!(
        pg.server.psql(
            DB,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        "1,2"
    );
    pg.server.psql(
        DB,
        "INSERT INTO schema_migrations (version, description) VALUES (9, 'from the future')",
    );
    match PostgresStore::open(&pg.config, td()).await {
        Err(e @ StoreError::UnsupportedSchema { .. }) => {
            assert!(e.to_string().contains("'9'"), "{e}");
        }
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("a schema 9 database opened"),
    }
}

/// Migration 2 (entries' `federates_with`) applies over a version-1 database
/// that holds entries: they read as federating with nothing, unchanged; and
/// the database itself refuses a `federates_with` that is not a list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_1_database_with_entries_migrates_to_federates_with() {
    let pg = Pg::start();
    let store = pg.open().await;
    let e = store.create_entry(spec("/old", &["a:1"])).await.unwrap();
    drop(store);
    // Back to what version 1 left (its rows are what this build writes for an
    // entry without federates_with: no such key).
    pg.server.psql(
        DB,
        "ALTER TABLE entries DROP CONSTRAINT entries_federates_with_is_a_list;
         DELETE FROM schema_migrations WHERE version = 2",
    );
    let store = pg.open().await;
    assert_eq!(
        pg.server.psql(
            DB,
            "SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations"
        ),
        "1,2"
    );
    let read = store.get_entry(&e.id).await.unwrap().unwrap();
    assert!(read.spec.federates_with.is_empty());
    assert_eq!(read, e);
    let not_a_list = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        pg.server.psql(
            DB,
            "UPDATE entries SET data = jsonb_set(data, '{federates_with}', '\"partner.org\"')",
        )
    }));
    assert!(not_a_list.is_err(), "a federates_with string was stored");
    assert_eq!(store.get_entry(&e.id).await.unwrap(), Some(e));
}

/// The feed keeps a bounded history: a follower further behind is told to
/// start again from a snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruned_feed_answers_truncated() {
    let mut pg = Pg::start();
    pg.config.changes_kept = 5;
    let store = pg.open().await;
    for i in 0..12 {
        store
            .create_entry(spec(&format!("/p/{i}"), &["a:1"]))
            .await
            .unwrap();
    }
    assert_eq!(
        store.changes_since(Revision(0), 100).await.unwrap(),
        ChangesSince::Truncated {
            oldest: Revision(8)
        }
    );
    assert_eq!(events_after(store.as_ref(), 7).await.len(), 5);
    assert!(events_after(store.as_ref(), 12).await.is_empty());
}
