//! Crashes during writes, against the real server process: what the admin API acknowledged is
//! what the store holds afterwards.
//!
//! The invariant, for both backends: after the server is killed with SIGKILL in the middle of
//! concurrent creates, batch creates and deletes, and started again on the same store,
//! - every entry whose create was acknowledged is there, with the id the server answered;
//! - no entry whose delete was acknowledged is there;
//! - anything else that is there was named by a request that was in flight (never invented).
//!
//! On PostgreSQL the database itself is also crashed (`pg_ctl stop -m immediate`, `fsync` on)
//! under the running server, which must carry on by itself once the database is back.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironroot_api::admin as pb;
use ironroot_api::admin::admin_client::AdminClient;
use ironroot_server::cli::{ClientArgs, Output};
use ironroot_testkit::postgres::{Postgres, PostgresOptions};
use ironroot_testkit::server::*;
use ironroot_testkit::softhsm::SoftHsm;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const PARENT: &str = "spiffe://example.org/spire/agent/join_token/writer";
const TRIALS: usize = 20;
const WRITERS: usize = 3;

/// What the writers were told, by SPIFFE ID (each create names a new one).
#[derive(Debug, Default)]
struct Acknowledged {
    /// Created and not deleted since: SPIFFE ID → entry id.
    present: BTreeMap<String, String>,
    /// Deleted (the delete was answered OK).
    deleted: BTreeSet<String>,
    /// Requests that got no answer: these may or may not have happened.
    in_doubt: BTreeSet<String>,
}

fn fields(spiffe_id: &str) -> pb::EntryFields {
    pb::EntryFields {
        spiffe_id: spiffe_id.to_owned(),
        parent_id: PARENT.to_owned(),
        selectors: vec![pb::Selector {
            r#type: "unix".into(),
            value: "uid:1000".into(),
        }],
        ..Default::default()
    }
}

async fn admin(socket: &Path) -> AdminClient<Channel> {
    ironroot_server::client::connect(&ClientArgs {
        socket_path: Some(socket.to_owned()),
        config: None,
        tls: Default::default(),
        output: Output::Text,
    })
    .await
    .expect("admin socket")
}

/// One writer: creates, batch creates and deletes until a request fails (the server is
/// gone), recording each answer in `ack`. Its SPIFFE IDs are `/trial<t>/w<w>/<n>`.
async fn writer(socket: &Path, trial: usize, w: usize, seed: u64, ack: Arc<Mutex<Acknowledged>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let Ok(mut client) = tokio::time::timeout(Duration::from_secs(5), admin(socket)).await else {
        return;
    };
    let mut n = 0usize;
    let mut next_id = || {
        n += 1;
        format!("spiffe://example.org/trial{trial}/w{w}/{n}")
    };
    loop {
        let roll = rng.gen_range(0..10);
        if roll < 5 {
            let id = next_id();
            let req = pb::CreateEntryRequest {
                entry: Some(fields(&id)),
            };
            match client.create_entry(req).await {
                Ok(r) => {
                    let mut a = ack.lock().unwrap();
                    a.present.insert(id, r.into_inner().id);
                }
                Err(_) => {
                    ack.lock().unwrap().in_doubt.insert(id);
                    return;
                }
            }
        } else if roll < 8 {
            let ids: Vec<String> = (0..5).map(|_| next_id()).collect();
            let req = pb::BatchCreateEntryRequest {
                entries: ids.iter().map(|id| fields(id)).collect(),
            };
            match client.batch_create_entry(req).await {
                Ok(r) => {
                    let results = r.into_inner().results;
                    assert_eq!(results.len(), ids.len());
                    let mut a = ack.lock().unwrap();
                    for (id, res) in ids.into_iter().zip(results) {
                        let status = res.status.unwrap_or_default();
                        assert_eq!(status.code, 0, "batch item {id}: {}", status.message);
                        a.present.insert(id, res.entry.expect("entry").id);
                    }
                }
                Err(_) => {
                    ack.lock().unwrap().in_doubt.extend(ids);
                    return;
                }
            }
        } else {
            // Delete one of this writer's acknowledged entries.
            let prefix = format!("spiffe://example.org/trial{trial}/w{w}/");
            let victim = {
                let a = ack.lock().unwrap();
                let mine: Vec<_> = a
                    .present
                    .iter()
                    .filter(|(s, _)| s.starts_with(&prefix))
                    .collect();
                (!mine.is_empty())
                    .then(|| mine[rng.gen_range(0..mine.len())])
                    .map(|(s, e)| (s.clone(), e.clone()))
            };
            let Some((spiffe_id, entry_id)) = victim else {
                continue;
            };
            let req = pb::DeleteEntryRequest { id: entry_id };
            let answer = client.delete_entry(req).await;
            let mut a = ack.lock().unwrap();
            a.present.remove(&spiffe_id);
            match answer {
                Ok(_) => {
                    a.deleted.insert(spiffe_id);
                }
                Err(_) => {
                    a.in_doubt.insert(spiffe_id);
                    return;
                }
            }
        }
    }
}

/// Every entry the server lists, SPIFFE ID → entry id (pages walked).
async fn stored(socket: &Path) -> BTreeMap<String, String> {
    let mut client = admin(socket).await;
    let mut out = BTreeMap::new();
    let mut token = String::new();
    loop {
        let page = client
            .list_entries(pb::ListEntriesRequest {
                page_token: token,
                page_size: 10_000,
                ..Default::default()
            })
            .await
            .expect("list entries")
            .into_inner();
        for e in page.entries {
            let f = e.fields.expect("fields");
            let dup = out.insert(f.spiffe_id.clone(), e.id);
            assert!(dup.is_none(), "{} is stored twice", f.spiffe_id);
        }
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// The invariant of the module doc, over every trial so far.
fn check(ack: &Acknowledged, stored: &BTreeMap<String, String>, what: &str) {
    for (spiffe_id, entry_id) in &ack.present {
        assert_eq!(
            stored.get(spiffe_id),
            Some(entry_id),
            "{what}: acknowledged create of {spiffe_id} ({entry_id}) is lost"
        );
    }
    for spiffe_id in &ack.deleted {
        assert!(
            !stored.contains_key(spiffe_id),
            "{what}: acknowledged delete of {spiffe_id} is undone"
        );
    }
    for spiffe_id in stored.keys() {
        assert!(
            ack.present.contains_key(spiffe_id) || ack.in_doubt.contains(spiffe_id),
            "{what}: {spiffe_id} is stored but no request that could make it is unanswered"
        );
    }
}

/// Starts the writers, lets them run for a random 100–600 ms, then `crash`es something;
/// returns once every writer has stopped.
fn writes_then(
    rt: &tokio::runtime::Runtime,
    socket: &Path,
    trial: usize,
    seed: u64,
    ack: &Arc<Mutex<Acknowledged>>,
    crash: impl FnOnce(),
) {
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let socket = socket.to_owned();
            let ack = ack.clone();
            let seed = seed ^ ((w as u64) << 32);
            rt.spawn(async move { writer(&socket, trial, w, seed, ack).await })
        })
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    std::thread::sleep(Duration::from_millis(rng.gen_range(100..600)));
    crash();
    rt.block_on(async {
        for w in writers {
            tokio::time::timeout(Duration::from_secs(60), w)
                .await
                .expect("a writer hangs after the crash")
                .expect("writer panicked");
        }
    });
}

fn seed() -> u64 {
    let seed = std::env::var("IRONROOT_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed} (IRONROOT_FAULT_SEED={seed} repeats this run)");
    seed
}

/// SIGKILL of the server, `TRIALS` times, on one store that every trial adds to.
fn kill_9_trials(test: &str, dir: &Path, hsm: &SoftHsm, store: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conf = server_config(dir, hsm, "ca", store);
    let socket = dir.join("admin.sock");
    let seed = seed();
    let ack = Arc::new(Mutex::new(Acknowledged::default()));
    for trial in 0..TRIALS {
        let mut server = ServerProcess::start(&format!("{test}/trial{trial}"), &conf, hsm, &socket);
        writes_then(&rt, &socket, trial, seed + trial as u64, &ack, || {
            server.kill()
        });
        let server = ServerProcess::start(&format!("{test}/after{trial}"), &conf, hsm, &socket);
        let now = rt.block_on(stored(&socket));
        let a = ack.lock().unwrap();
        check(&a, &now, &format!("after kill -9 number {}", trial + 1));
        let health = server.health();
        assert_eq!(
            health["unreadable_records"],
            serde_json::json!([]),
            "{health}"
        );
        drop(server);
    }
    let a = ack.lock().unwrap();
    eprintln!(
        "{TRIALS} kills: {} entries acknowledged and kept, {} deletes kept, {} requests cut",
        a.present.len(),
        a.deleted.len(),
        a.in_doubt.len()
    );
    // The trials did write: a run where every writer failed at once proves nothing.
    assert!(a.present.len() > TRIALS * 10, "too few writes: {a:?}");
}

#[test]
fn sled_kill_9_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    kill_9_trials("store_faults_sled", dir.path(), &hsm, "");
}

fn postgres_store(pg: &Postgres) -> String {
    pg.create_database("ironroot");
    format!(
        "[store]\nkind = \"postgres\"\nurl = \"{}\"\n",
        pg.url("ironroot")
    )
}

#[test]
fn postgres_kill_9_during_writes_loses_no_acknowledged_write() {
    let pg = Postgres::start_with(PostgresOptions {
        fsync: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    kill_9_trials("store_faults_pg", dir.path(), &hsm, &postgres_store(&pg));
}

/// PostgreSQL crashes (immediate stop, `fsync` on) under a running server, five times: what
/// was acknowledged before is there after, and the same server process takes writes again
/// by itself once the database is back.
#[test]
fn postgres_crash_under_a_running_server_loses_nothing_and_heals() {
    let mut pg = Postgres::start_with(PostgresOptions {
        fsync: true,
        ..Default::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let hsm = SoftHsm::new(&dir.path().join("hsm"));
    hsm.init_token("ca");
    let conf = server_config(dir.path(), &hsm, "ca", &postgres_store(&pg));
    let socket = dir.path().join("admin.sock");
    let server = ServerProcess::start("store_faults_pg_crash", &conf, &hsm, &socket);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let seed = seed();
    let ack = Arc::new(Mutex::new(Acknowledged::default()));
    for trial in 0..5 {
        writes_then(&rt, &socket, trial, seed + trial as u64, &ack, || {
            pg.crash()
        });
        pg.start_again();
        // The server reconnects by itself: a write goes through within the deadline.
        let deadline = Instant::now() + Duration::from_secs(30);
        let probe = format!("spiffe://example.org/probe{trial}");
        let probe_id = loop {
            let answer = rt.block_on(async {
                admin(&socket)
                    .await
                    .create_entry(pb::CreateEntryRequest {
                        entry: Some(fields(&probe)),
                    })
                    .await
            });
            match answer {
                Ok(r) => break r.into_inner().id,
                Err(status) => {
                    assert!(
                        Instant::now() < deadline,
                        "no write accepted 30 s after PostgreSQL came back: {status:?}\n{}",
                        server.log_tail()
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        };
        let mut a = ack.lock().unwrap();
        a.present.insert(probe, probe_id);
        check(
            &a,
            &rt.block_on(stored(&socket)),
            &format!("after database crash number {}", trial + 1),
        );
    }
    assert!(
        ack.lock().unwrap().present.len() > 20,
        "too few writes to prove anything"
    );
}
