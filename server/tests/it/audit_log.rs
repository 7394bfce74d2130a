//! The audit log on a real server (SoftHSM holds the checkpoint key): admin
//! changes and refusals are on disk before the CLI gets its answer, CA steps and
//! signed SVIDs are recorded, `audit verify` checks the log against the HSM's
//! key and names a tampered record, and a log that cannot be written stops
//! changes (fail closed) and makes the server unhealthy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use ironroot_audit::{Event, Record};
use ironroot_testkit::server::{server_bin, ServerProcess};
use ironroot_testkit::softhsm::SoftHsm;

const AUDIT: &str = "[audit]\ncheckpoint_interval = \"1s\"\nsvid_summary_interval = \"1s\"\n";

fn log_dir(test_dir: &Path) -> PathBuf {
    test_dir.join("data/audit")
}

fn records(dir: &Path) -> Vec<Record> {
    ironroot_audit::read_records(dir).unwrap()
}

fn last_admin(dir: &Path) -> (String, String, String) {
    records(dir)
        .into_iter()
        .rev()
        .find_map(|r| match r.event {
            Event::Admin {
                action,
                target,
                outcome,
                actor,
            } => {
                assert!(actor.starts_with("uid:0 pid:"), "{actor}");
                Some((action, target, outcome))
            }
            _ => None,
        })
        .expect("an admin record")
}

fn audit_cli(hsm: &SoftHsm, args: &[&str]) -> Output {
    Command::new(server_bin())
        .arg("audit")
        .args(args)
        .env("SOFTHSM2_CONF", &hsm.conf)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn changes_are_recorded_before_the_answer_and_verify_names_a_tampered_record() {
    let dir = tempfile::tempdir().unwrap();
    let (hsm, mut server) = ServerProcess::start_on_new_token("audit_log", dir.path(), AUDIT);
    let logs = log_dir(dir.path());

    // Each answer is given only once its record is on disk: read right after the CLI returns.
    let out = server.cli_ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://example.org/web",
        "--parent-id",
        "spiffe://example.org/spire/agent/join_token/x",
        "--selector",
        "unix:uid:1000",
        "--output",
        "json",
    ]);
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()["entries"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (action, target, outcome) = last_admin(&logs);
    assert_eq!((action.as_str(), outcome.as_str()), ("entry.create", "ok"));
    assert!(
        target.starts_with(&id) && target.contains("spiffe://example.org/web"),
        "{target}"
    );

    // A refusal is recorded with the refusal the caller saw.
    let refused = server.cli(&[
        "agent",
        "ban",
        "--spiffe-id",
        "spiffe://example.org/spire/agent/x/none",
    ]);
    assert!(!refused.status.success());
    let (action, _, outcome) = last_admin(&logs);
    assert_eq!(action, "agent.ban");
    assert!(outcome.starts_with("refused (NotFound)"), "{outcome}");

    server.cli_ok(&["x509", "mint", "--spiffe-id", "spiffe://example.org/web"]);
    assert_eq!(last_admin(&logs).0, "x509.mint");
    // Signed SVIDs are counted into one record per interval; the head is then signed.
    wait_for("the SVID count and a checkpoint", || {
        let r = records(&logs);
        r.iter()
            .any(|r| matches!(r.event, Event::SvidsSigned { x509: 1.., .. }))
            && matches!(r.last().unwrap().event, Event::Checkpoint { .. })
    });
    assert!(
        records(&logs)
            .iter()
            .any(|r| matches!(&r.event, Event::Ca { step, .. } if step == "active_at_start")),
        "the CA's keys at start are recorded"
    );

    // Verified against the key read from the HSM (-c), while the server runs.
    let conf = server.conf.to_str().unwrap().to_owned();
    let v = audit_cli(&hsm, &["verify", "-c", &conf]);
    assert!(v.status.success(), "{}", text(&v));
    assert!(
        text(&v).contains("verified against the pinned key"),
        "{}",
        text(&v)
    );

    // A clean stop seals everything written.
    server.stop();
    let pem = audit_cli(&hsm, &["public-key", "-c", &conf]);
    assert!(pem.status.success(), "{}", text(&pem));
    let key = dir.path().join("audit-key.pem");
    std::fs::write(&key, &pem.stdout).unwrap();
    let logs_s = logs.to_str().unwrap().to_owned();
    let key_s = key.to_str().unwrap().to_owned();
    let v = audit_cli(
        &hsm,
        &[
            "verify",
            "--dir",
            &logs_s,
            "--public-key",
            &key_s,
            "--output",
            "json",
        ],
    );
    assert!(v.status.success(), "{}", text(&v));
    let report: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(report["unsealed"], 0, "{report}");

    // An operator's record edited by hand: verify fails (exit 1) and names where.
    let file = ironroot_audit::writer::log_files(&logs)
        .unwrap()
        .pop()
        .unwrap();
    let original = std::fs::read_to_string(&file).unwrap();
    let (line, _) = original
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"action\":\"agent.ban\""))
        .unwrap();
    std::fs::write(
        &file,
        original.replace("\"action\":\"agent.ban\"", "\"action\":\"agent.list\""),
    )
    .unwrap();
    let v = audit_cli(&hsm, &["verify", "--dir", &logs_s, "--public-key", &key_s]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    let said = text(&v);
    assert!(
        said.contains(&format!("line {}", line + 2))
            && said.contains("the record before it was changed"),
        "{said}"
    );
    // A record deleted: named as missing.
    let without: Vec<&str> = original
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != line)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&file, without.join("\n") + "\n").unwrap();
    let v = audit_cli(&hsm, &["verify", "--dir", &logs_s, "--public-key", &key_s]);
    assert_eq!(v.status.code(), Some(1), "{}", text(&v));
    assert!(text(&v).contains("is missing here"), "{}", text(&v));
    // Not checkable at all is exit 2, not "broken".
    let v = audit_cli(&hsm, &["verify", "--dir", "/nonexistent-audit-dir"]);
    assert_eq!(v.status.code(), Some(2), "{}", text(&v));
}

/// Clears the immutable flag again, also when an assertion fails (or the temp
/// directory could not be removed).
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Self {
        let s = Command::new("chattr").arg("+i").arg(path).status().unwrap();
        assert!(
            s.success(),
            "chattr +i {} (the test needs ext4-like attributes)",
            path.display()
        );
        Immutable(path.to_owned())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

#[test]
fn a_log_that_cannot_be_written_stops_changes_and_makes_the_server_unhealthy() {
    let dir = tempfile::tempdir().unwrap();
    let (_hsm, server) =
        ServerProcess::start_on_new_token("audit_log_unwritable", dir.path(), AUDIT);
    let logs = log_dir(dir.path());
    let file = ironroot_audit::writer::log_files(&logs)
        .unwrap()
        .pop()
        .unwrap();
    let _guard = Immutable::set(&file);

    let create = |name: &str| {
        server.cli(&[
            "entry",
            "create",
            "--spiffe-id",
            &format!("spiffe://example.org/{name}"),
            "--parent-id",
            "spiffe://example.org/spire/agent/join_token/x",
            "--selector",
            "unix:uid:1",
        ])
    };
    // The first change is made, but its answer says it could not be recorded.
    let first = create("a");
    assert!(!first.status.success());
    assert!(
        text(&first)
            .contains("entry.create was applied, but its audit record could not be written"),
        "{}",
        text(&first)
    );
    // From then on, changes are refused before they are made.
    let second = create("b");
    assert!(!second.status.success());
    assert!(
        text(&second).contains("changes are refused while the audit log cannot be written"),
        "{}",
        text(&second)
    );
    let shown = server.cli_ok(&["entry", "show", "--spiffe-id", "spiffe://example.org/b"]);
    assert!(shown.contains("Found 0 entries"), "{shown}");
    let h = server.cli(&["healthcheck", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&h.stdout).unwrap();
    assert!(!h.status.success());
    assert_eq!(json["state"], "unhealthy", "{json}");
    assert!(
        json["problems"].to_string().contains("audit log:"),
        "{json}"
    );
}
