//! Invariant: with the writer's head and the checkpoint key pinned, any change
//! to the log's bytes (edit, delete, insert, reorder, truncate, re-sign) makes
//! verify fail and name the first broken link.

use ironroot_audit::{verify_dir, ChainBreak, KeySource, LogFile, Report, VerifyOptions};
use proptest::prelude::*;

use crate::support::*;

fn pinned() -> VerifyOptions {
    VerifyOptions {
        public_key: Some(SoftSigner::new(7).public_der()),
        ..Default::default()
    }
}

fn check(dir: &std::path::Path, opts: VerifyOptions) -> Result<Report, ironroot_audit::Broken> {
    verify_dir(dir, opts).expect("the directory is readable")
}

/// Lines of the only file, each without its newline.
fn lines(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(only_file(dir))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn rewrite(dir: &std::path::Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(only_file(dir), text).unwrap();
}

#[test]
fn an_honest_log_verifies_with_its_checkpoint_under_the_pinned_key() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 10);
    let r = check(dir.path(), pinned()).unwrap();
    // log_opened + 10 admin records + the checkpoint written at close.
    assert_eq!((r.records, r.first_seq, r.last_seq), (12, 0, 11));
    assert_eq!(
        (r.checkpoints, r.last_checkpoint, r.unsealed),
        (1, Some(11), 0)
    );
    assert_eq!(r.key, KeySource::Pinned);
    // Without a pinned key the log's own key is used, and the report says so.
    assert_eq!(
        check(dir.path(), VerifyOptions::default()).unwrap().key,
        KeySource::FromLog
    );
}

#[test]
fn an_edited_record_breaks_the_link_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 10);
    let mut l = lines(dir.path());
    l[4] = l[4].replace("entry-3", "entry-X");
    rewrite(dir.path(), &l);
    let e = check(dir.path(), pinned()).unwrap_err();
    assert_eq!((e.line, e.seq), (6, Some(5)), "{e}");
    assert!(matches!(*e.rule, ChainBreak::BrokenLink { .. }), "{e}");
    assert!(
        e.to_string().contains("the record before it was changed"),
        "{e}"
    );
}

#[test]
fn a_deleted_record_is_named_as_missing() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 10);
    let mut l = lines(dir.path());
    l.remove(3);
    rewrite(dir.path(), &l);
    let e = check(dir.path(), pinned()).unwrap_err();
    assert_eq!(
        *e.rule,
        ChainBreak::SequenceGap {
            expected: 3,
            found: 4
        }
    );
    assert!(e.to_string().contains("record 3 is missing here"), "{e}");
}

#[test]
fn reordered_records_are_named() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 10);
    let mut l = lines(dir.path());
    l.swap(5, 6);
    rewrite(dir.path(), &l);
    let e = check(dir.path(), pinned()).unwrap_err();
    assert_eq!(e.line, 6, "{e}");
    assert!(matches!(*e.rule, ChainBreak::SequenceGap { .. }), "{e}");
}

#[test]
fn records_cut_off_the_end_are_named_against_the_writers_head() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 10);
    let mut l = lines(dir.path());
    l.truncate(8);
    rewrite(dir.path(), &l);
    let e = check(dir.path(), pinned()).unwrap_err();
    assert_eq!(
        *e.rule,
        ChainBreak::Truncated {
            last: 7,
            expected: 11
        }
    );
    // A record cut in the middle of its line is named as such.
    let text = std::fs::read(only_file(dir.path())).unwrap();
    std::fs::write(only_file(dir.path()), &text[..text.len() - 10]).unwrap();
    assert_eq!(
        *check(dir.path(), pinned()).unwrap_err().rule,
        ChainBreak::CutShort
    );
}

#[test]
fn an_inserted_record_breaks_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 4);
    let mut l = lines(dir.path());
    let forged = l[2].replace("entry-1", "entry-forged");
    l.insert(3, forged);
    rewrite(dir.path(), &l);
    let e = check(dir.path(), pinned()).unwrap_err();
    assert_eq!(e.line, 4, "{e}");
}

/// The attacker who rewrites the chain from an edited record on (new prev hashes,
/// new head file, checkpoint re-signed with their own key) is caught by the
/// pinned key; without a pin, the report says the key came from the log itself.
#[test]
fn a_rewritten_and_resigned_chain_fails_against_the_pinned_key() {
    use base64::Engine;
    use ironroot_audit::record::checkpoint_message;
    use ironroot_audit::{Event, Record, RecordHash};
    use p256::ecdsa::signature::Signer;

    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 5);
    let mut records: Vec<Record> = lines(dir.path())
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    if let Event::Admin { target, .. } = &mut records[2].event {
        *target = "entry-forged".into();
    }
    let forger = SoftSigner::new(9);
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut prev = records[0].prev;
    let mut out = Vec::new();
    for r in &mut records {
        r.prev = prev;
        if let Event::Checkpoint {
            covers,
            head,
            public_key,
            signature,
            ..
        } = &mut r.event
        {
            *head = prev;
            *public_key = b64.encode(forger.public_der());
            let sig: p256::ecdsa::Signature = forger.0.sign(&checkpoint_message(*covers, &prev));
            *signature = b64.encode(sig.to_bytes());
        }
        let line = String::from_utf8(r.to_line()).unwrap();
        prev = RecordHash::of_line(line.as_bytes());
        out.push(line);
    }
    rewrite(dir.path(), &out);
    let last = records.last().unwrap().seq;
    std::fs::write(dir.path().join("audit.head"), format!("{last} {prev}\n")).unwrap();

    let e = check(dir.path(), pinned()).unwrap_err();
    assert_eq!(
        *e.rule,
        ChainBreak::CheckpointSignature {
            against: "the pinned public key"
        }
    );
    let r = check(dir.path(), VerifyOptions::default()).unwrap();
    assert_eq!(r.key, KeySource::FromLog, "unanchored, and said so");
}

#[test]
fn a_log_missing_its_first_records_is_named_unless_archiving_was_declared() {
    let dir = tempfile::tempdir().unwrap();
    written_log(dir.path(), 5);
    let mut l = lines(dir.path());
    l.drain(..2);
    rewrite(dir.path(), &l);
    assert_eq!(
        *check(dir.path(), pinned()).unwrap_err().rule,
        ChainBreak::StartsLate { first: 2 }
    );
    let opts = VerifyOptions {
        allow_pruned_start: true,
        ..pinned()
    };
    assert_eq!(check(dir.path(), opts).unwrap().first_seq, 2);
}

/// One honest log's bytes and the writer's head, written once for all cases.
fn honest_log() -> &'static (Vec<u8>, (u64, ironroot_audit::RecordHash)) {
    static LOG: std::sync::OnceLock<(Vec<u8>, (u64, ironroot_audit::RecordHash))> =
        std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        written_log(dir.path(), 6);
        let bytes = std::fs::read(only_file(dir.path())).unwrap();
        let head = ironroot_audit::writer::read_head_file(dir.path())
            .unwrap()
            .unwrap();
        (bytes, head)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Any change of any one byte anywhere in the log is caught.
    #[test]
    fn any_changed_byte_is_caught(at in any::<prop::sample::Index>(), flip in 1u8..=255) {
        let (honest, head) = honest_log();
        let opts = VerifyOptions { expected_head: Some(*head), ..pinned() };
        let mut bytes = honest.clone();
        let i = at.index(bytes.len());
        bytes[i] ^= flip;
        let verdict = ironroot_audit::verify_log(&[LogFile { name: "audit", bytes: &bytes }], &opts);
        prop_assert!(verdict.is_err(), "byte {} changed and the log still verifies: {:?}", i, verdict);
    }
}

/// Every single record removed, and every pair of neighbours swapped, is caught
/// (all of them: the log is small enough to try each).
#[test]
fn every_removed_or_swapped_record_is_caught() {
    let (honest, head) = honest_log();
    let opts = VerifyOptions {
        expected_head: Some(*head),
        ..pinned()
    };
    let verify = |bytes: &[u8]| {
        ironroot_audit::verify_log(
            &[LogFile {
                name: "audit",
                bytes,
            }],
            &opts,
        )
    };
    assert!(verify(honest).is_ok(), "the honest log verifies");
    let lines: Vec<&[u8]> = honest.split_inclusive(|b| *b == b'\n').collect();
    for i in 0..lines.len() {
        let mut removed = lines.clone();
        removed.remove(i);
        assert!(verify(&removed.concat()).is_err(), "record {i} removed");
        if i + 1 < lines.len() {
            let mut swapped = lines.clone();
            swapped.swap(i, i + 1);
            assert!(
                verify(&swapped.concat()).is_err(),
                "records {i} and {} swapped",
                i + 1
            );
        }
    }
}
