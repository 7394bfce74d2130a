//! The writer: durable before acknowledged, crash tails removed and said,
//! rotation that keeps the chain, checkpoints on schedule, batched SVID counts.

use std::time::Duration;

use ironroot_audit::{
    verify_dir, AuditError, AuditLog, ChainBreak, CheckpointSigner, Event, Record, SvidKind,
    VerifyOptions,
};

use crate::support::*;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn records(dir: &std::path::Path) -> Vec<Record> {
    ironroot_audit::read_records(dir).unwrap()
}

#[test]
fn concurrent_appends_get_distinct_sequence_numbers_and_one_chain() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let log = std::sync::Arc::new(AuditLog::open(config(dir.path()), None).unwrap());
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(admin("entry.delete", &i.to_string())).await })
            })
            .collect();
        let mut seqs = Vec::new();
        for t in tasks {
            seqs.push(t.await.unwrap().unwrap());
        }
        seqs.sort_unstable();
        assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
        // Acknowledged means on disk: every acknowledged record is in the file now.
        assert_eq!(records(dir.path()).len(), 201);
        log.close().await;
    });
    let r = verify_dir(dir.path(), VerifyOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(r.last_seq, 200);
}

#[test]
fn a_restart_continues_the_chain_and_removes_a_tail_cut_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 3);
    let path = only_file(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"{\"seq\":99,\"time\":1,\"pr");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(
        *verify_dir(dir.path(), VerifyOptions::default())
            .unwrap()
            .unwrap_err()
            .rule,
        ChainBreak::CutShort
    );
    written_log(dir.path(), 2);
    let all = records(dir.path());
    let reopened = all
        .iter()
        .filter(|r| matches!(r.event, Event::LogOpened { .. }))
        .nth(1)
        .expect("a second log_opened record");
    assert_eq!(
        reopened.event,
        Event::LogOpened {
            writer: "ironroot-audit tests".into(),
            removed_partial_bytes: 22
        }
    );
    let r = verify_dir(
        dir.path(),
        VerifyOptions {
            public_key: Some(SoftSigner::new(7).public_der()),
            ..Default::default()
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!((r.records, r.checkpoints), (all.len() as u64, 2));
}

#[test]
fn a_damaged_last_record_stops_the_writer_from_extending_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 2);
    let path = only_file(dir.path());
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("not a record\n");
    std::fs::write(&path, text).unwrap();
    let e = AuditLog::open(config(dir.path()), None).err().unwrap();
    assert!(matches!(e, AuditError::Damaged { .. }), "{e}");
    assert!(e.to_string().contains("audit verify"), "{e}");
}

#[test]
fn rotation_keeps_one_chain_across_files_and_a_removed_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_file_bytes = 600;
    rt().block_on(async {
        let log = AuditLog::open(cfg, None).unwrap();
        for i in 0..30 {
            log.append(admin("agent.ban", &format!("spiffe://example.org/a/{i}")))
                .await
                .unwrap();
        }
        log.close().await;
    });
    let files = ironroot_audit::writer::log_files(dir.path()).unwrap();
    assert!(files.len() >= 5, "{files:?}");
    let r = verify_dir(dir.path(), VerifyOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!(r.last_seq, 30);
    std::fs::remove_file(&files[2]).unwrap();
    let e = verify_dir(dir.path(), VerifyOptions::default())
        .unwrap()
        .unwrap_err();
    assert!(matches!(*e.rule, ChainBreak::SequenceGap { .. }), "{e}");
    assert!(
        e.file
            .ends_with(files[3].file_name().unwrap().to_str().unwrap()),
        "{e}"
    );
}

struct FailingSigner;

impl CheckpointSigner for FailingSigner {
    fn key_label(&self) -> String {
        "down".into()
    }
    fn public_key_der(&mut self) -> Result<Vec<u8>, String> {
        Err("HSM unreachable".into())
    }
    fn sign(&mut self, _: &[u8]) -> Result<Vec<u8>, String> {
        Err("HSM unreachable".into())
    }
}

#[test]
fn checkpoints_come_on_schedule_and_a_signer_failure_is_a_named_problem_not_an_outage() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.checkpoint_interval = Duration::from_millis(200);
    rt().block_on(async {
        let log = AuditLog::open(cfg.clone(), Some(Box::new(SoftSigner::new(7)))).unwrap();
        log.append(admin("entry.create", "a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        log.close().await;
    });
    let checkpoints = records(dir.path())
        .iter()
        .filter(|r| matches!(r.event, Event::Checkpoint { .. }))
        .count();
    // One after the first interval; none for intervals with nothing new (the close
    // finds nothing unsealed).
    assert_eq!(checkpoints, 1);

    let dir = tempfile::tempdir().unwrap();
    cfg.dir = dir.path().to_owned();
    rt().block_on(async {
        let log = AuditLog::open(cfg, Some(Box::new(FailingSigner))).unwrap();
        log.append(admin("entry.create", "a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let p = log.problem().expect("a problem is reported");
        assert!(
            p.contains("audit checkpoint cannot be signed (HSM unreachable)"),
            "{p}"
        );
        // Records are still written and acknowledged.
        log.append(admin("entry.create", "b")).await.unwrap();
        log.close().await;
    });
    let r = verify_dir(dir.path(), VerifyOptions::default())
        .unwrap()
        .unwrap();
    assert_eq!((r.checkpoints, r.unsealed), (0, 3));
}

#[test]
fn svid_signatures_are_counted_into_one_record() {
    let dir = tempfile::tempdir().unwrap();
    rt().block_on(async {
        let log = AuditLog::open(config(dir.path()), None).unwrap();
        for _ in 0..5 {
            log.count_svid(SvidKind::X509);
        }
        log.count_svid(SvidKind::Jwt);
        log.count_svid(SvidKind::Jwt);
        log.close().await;
    });
    let counts: Vec<(u64, u64)> = records(dir.path())
        .iter()
        .filter_map(|r| match r.event {
            Event::SvidsSigned { x509, jwt, .. } => Some((x509, jwt)),
            _ => None,
        })
        .collect();
    assert_eq!(counts, vec![(5, 2)]);
}

#[test]
fn a_second_writer_on_the_same_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = AuditLog::open(config(dir.path()), None).unwrap();
    let e = AuditLog::open(config(dir.path()), None).err().unwrap();
    assert!(matches!(e, AuditError::InUse { .. }), "{e}");
    rt().block_on(first.close());
    // Closed: the directory is free again.
    AuditLog::open(config(dir.path()), None).unwrap();
}
