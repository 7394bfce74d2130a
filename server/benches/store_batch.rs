//! Batch entry creation straight through the `DataStore` seam (no gRPC, no
//! server): the store's own share of the fleet bench's "batch entry creation"
//! figure, on sled and on a private PostgreSQL (fsync on), 1,000 entries per
//! batch as the admin API's BatchCreateEntry sends them. `make bench` runs it;
//! figures go to docs/benchmarks.md.
//!
//!   cargo bench -p ironroot-server --bench store_batch
//!
//! IRONROOT_BENCH_ENTRIES (100000) sets the size; IRONROOT_BENCH_STORE=sled or
//! =postgres runs one store only.

use std::sync::Arc;
use std::time::Instant;

use ironroot_api::entry::EntrySpec;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use ironroot_server::store::postgres::PostgresTarget;
use ironroot_server::store::{DataStore, PostgresConfig, PostgresStore, SledStore};
use ironroot_testkit::postgres::PostgresOptions;

const TD: &str = "bench.test";
const PER_BATCH: usize = 1_000;
/// Agents the entries are spread under (as in the fleet bench: 10 per agent).
const PARENTS_PER_ENTRY: usize = 10;

fn specs(count: usize) -> Vec<EntrySpec> {
    let parents = (count / PARENTS_PER_ENTRY).max(1);
    (0..count)
        .map(|i| {
            let mut spec = EntrySpec {
                spiffe_id: SpiffeId::parse(&format!("spiffe://{TD}/w/{i}")).expect("id"),
                parent_id: SpiffeId::parse(&format!(
                    "spiffe://{TD}/spire/agent/join_token/{}",
                    i % parents
                ))
                .expect("parent"),
                selectors: vec![
                    Selector::new("unix", format!("uid:{}", 1000 + i % 50)).expect("selector")
                ],
                x509_svid_ttl: 0,
                jwt_svid_ttl: 0,
                dns_names: Vec::new(),
                admin: false,
                downstream: false,
                hint: String::new(),
                expires_at: 0,
                federates_with: vec![],
            };
            spec.normalize();
            spec
        })
        .collect()
}

/// This process's CPU time (user + system) so far, in seconds: a figure that a
/// compile running beside the bench disturbs less than the wall clock.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start after ") ".
    let after = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// This process's resident set, in MB.
fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    kb / 1024.0
}

/// Entries per second of wall clock and per CPU-second of this process.
async fn create_all(store: &dyn DataStore, count: usize) -> (f64, f64) {
    let all = specs(count);
    let cpu = cpu_seconds();
    let start = Instant::now();
    let mut created = 0;
    for chunk in all.chunks(PER_BATCH) {
        let results = store.create_entries(chunk.to_vec()).await.expect("batch");
        created += results.iter().filter(|r| r.is_ok()).count();
    }
    let took = start.elapsed().as_secs_f64();
    assert_eq!(created, count, "every entry created");
    (count as f64 / took, count as f64 / (cpu_seconds() - cpu))
}

fn main() {
    let count: usize = std::env::var("IRONROOT_BENCH_ENTRIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let only = std::env::var("IRONROOT_BENCH_STORE").ok();
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let td = TrustDomain::parse(TD).expect("trust domain");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    println!("batch entry creation through the DataStore, {count} entries, {PER_BATCH} per batch");
    if wants("sled") {
        let dir = tempfile::tempdir().expect("tempdir");
        let rate = rt.block_on(async {
            let store: Arc<dyn DataStore> =
                Arc::new(SledStore::open(dir.path(), td.clone()).expect("sled"));
            create_all(store.as_ref(), count).await
        });
        println!(
            "  sled: {:.0} entries/s ({:.0} per CPU-second of this process)",
            rate.0, rate.1
        );
        // What sled itself holds at this size: after the burst (2 s for jemalloc's
        // purge), and opened afresh with one full read (a server's start).
        std::thread::sleep(std::time::Duration::from_secs(2));
        let after_burst = rss_mb();
        let reopened = rt.block_on(async {
            // sled lets go of its file lock once its flusher stops, a moment after the drop.
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            let store = loop {
                match SledStore::open(dir.path(), td.clone()) {
                    Ok(s) => break s,
                    Err(e) if Instant::now() > deadline => panic!("reopening the store: {e}"),
                    Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
                }
            };
            let snap = store.snapshot().await.expect("snapshot");
            assert_eq!(snap.entries.len(), count);
            drop(snap);
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            let rss = rss_mb();
            drop(store);
            rss
        });
        println!(
            "  sled RSS of this process: {after_burst:.0} MB after creating them, \
             {reopened:.0} MB with the store reopened and read once"
        );
    }
    if wants("postgres") {
        let pg = ironroot_testkit::postgres::Postgres::start_with(PostgresOptions {
            fsync: true,
            ..Default::default()
        });
        pg.create_database("bench");
        let config = PostgresConfig::new(PostgresTarget::Url(pg.url("bench")));
        let rate = rt.block_on(async {
            let store: Arc<dyn DataStore> = Arc::new(
                PostgresStore::open(&config, td.clone())
                    .await
                    .expect("postgres"),
            );
            create_all(store.as_ref(), count).await
        });
        println!(
            "  postgres (fsync on): {:.0} entries/s ({:.0} per CPU-second of this process; \
             the database's own CPU is not counted)",
            rate.0, rate.1
        );
    }
}

// The server binary's allocator, so the figures are the server's.
ironroot_runtime::use_jemalloc!();
