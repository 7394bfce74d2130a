//! `ironroot-server eventlog show` and `policy check`, run as the real binary on the shared
//! firmware log fixtures: the JSON replay of every log equals the ground truth in
//! `eventlogs/expected.json` (all banks, all PCRs), logs that do not parse exit non-zero
//! naming the error, and `policy check`'s exit status is 0 / 1 / 2 for pass / fail /
//! unusable input, with every violation listed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ironroot_testkit::fixtures::fixtures_or_skip;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_ironroot-server");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("fixture paths are UTF-8")
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn show_json(log: &Path) -> Output {
    run(&["eventlog", "show", path_str(log), "--output", "json"])
}

#[test]
fn eventlog_show_replays_every_fixture_like_expected_json() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let logs = dir.join("eventlogs");
    let expected: Value =
        serde_json::from_slice(&std::fs::read(logs.join("expected.json")).unwrap()).unwrap();
    let mut names: Vec<String> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".bin"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 30,
        "only {} logs in {}",
        names.len(),
        logs.display()
    );
    let mut bad = Vec::new();
    for name in &names {
        let want = &expected[name.as_str()];
        let out = show_json(&logs.join(name));
        match want["parse"].as_str() {
            Some("ok") => {
                if !out.status.success() {
                    bad.push(format!("{name}: exit {}: {}", out.status, stderr(&out)));
                    continue;
                }
                let got = json_of(&out);
                if got["schema"] != "ironroot.eventlog.v1" {
                    bad.push(format!("{name}: schema {}", got["schema"]));
                }
                if got["replay"] != want["replay"] {
                    bad.push(format!(
                        "{name}: replay differs\n got {}\nwant {}",
                        got["replay"], want["replay"]
                    ));
                }
                for key in ["format", "banks"] {
                    if got[key] != want[key] {
                        bad.push(format!("{name}: {key} {} != {}", got[key], want[key]));
                    }
                }
                let events = got["events"].as_array().map_or(0, Vec::len);
                if Some(events as u64) != want["events"].as_u64() {
                    bad.push(format!("{name}: {events} events != {}", want["events"]));
                }
            }
            Some("error") => {
                let why = want["parse_error"].as_str().unwrap();
                if out.status.code() != Some(2) || !stderr(&out).contains(why) {
                    bad.push(format!(
                        "{name}: expected exit 2 naming {why:?}, got {} {:?}",
                        out.status,
                        stderr(&out)
                    ));
                }
            }
            other => bad.push(format!("{name}: no usable expected.json entry ({other:?})")),
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn eventlog_show_decodes_events_and_flags_digest_mismatches() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let logs = dir.join("eventlogs");
    let sd = json_of(&show_json(
        &logs.join("tpm2-tools-event-sd-boot-fedora37.bin"),
    ));
    let ev = |i: usize| sd["events"][i].clone();
    assert_eq!(ev(4)["type"], "EV_EFI_VARIABLE_DRIVER_CONFIG");
    assert_eq!(ev(4)["data"]["kind"], "uefi_variable");
    assert_eq!(ev(4)["data"]["name"], "SecureBoot");
    assert_eq!(ev(9)["data"]["kind"], "separator");
    assert_eq!(ev(9)["data"]["meaning"], "normal");
    assert_eq!(ev(9)["digest_check"], "matches_data");
    assert_eq!(ev(25)["data"]["tag_name"], "INITRD_EVENT_TAG_ID");
    assert_eq!(
        ev(27)["data"]["text"],
        "Exit Boot Services Returned with Success"
    );
    assert_eq!(ev(0)["digest_check"], "not_extended");

    let mb = json_of(&show_json(&logs.join("keylime-mb_log.bin")));
    let shim = &mb["events"][25];
    assert_eq!(shim["type"], "EV_EFI_BOOT_SERVICES_APPLICATION");
    assert_eq!(shim["data"]["kind"], "image_load");
    let path = shim["data"]["device_path"].as_str().unwrap();
    assert!(path.ends_with("\\EFI\\centos\\shimx64.efi"), "{path}");
    assert_eq!(shim["digest_check"], "not_of_data");

    // Old shim's "Shim" authority events: the log's digest findings, per event and listed.
    let sb = json_of(&show_json(
        &logs.join("go-attestation-sb_cert_eventlog.bin"),
    ));
    assert_eq!(sb["events"][12]["digest_check"], "mismatch");
    assert_eq!(sb["events"][14]["digest_check"], "mismatch");
    let flagged: Vec<u64> = sb["digest_findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["event_index"].as_u64().unwrap())
        .collect();
    assert!(
        flagged.contains(&12) && flagged.contains(&14),
        "{flagged:?}"
    );
}

/// What a policy in each bank would see: none for an honest log, named events for a log
/// whose PCR7 separator was retyped.
#[test]
fn eventlog_show_lists_profile_findings_per_bank() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let ovmf = dir.join("ovmf-qemu").join("eventlog.bin");
    let honest = json_of(&show_json(&ovmf));
    assert_eq!(honest["profile_findings"]["sha256"], serde_json::json!([]));

    let bytes = std::fs::read(&ovmf).unwrap();
    let log = ironroot_tpm::verify::eventlog::EventLog::parse(&bytes).unwrap();
    let sep = log
        .events()
        .iter()
        .find(|e| {
            e.pcr == 7 && e.event_type == ironroot_tpm::verify::eventlog::EventType::EV_SEPARATOR
        })
        .unwrap();
    let mut forged = bytes.clone();
    // TCG_PCR_EVENT2: pcrIndex (4) then eventType (4).
    forged[sep.offset + 4..sep.offset + 8].copy_from_slice(&0x8000_0007u32.to_le_bytes());
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("forged.bin");
    std::fs::write(&path, forged).unwrap();
    let report = json_of(&show_json(&path));
    let list = report["profile_findings"]["sha256"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["pcr"], 7);
    assert_eq!(list[0]["event_index"], sep.index);
    assert_eq!(list[0]["type"], "EV_EFI_ACTION");
    assert!(
        list[0]["message"]
            .as_str()
            .unwrap()
            .contains("not typed EV_SEPARATOR"),
        "{list:?}"
    );
}

#[test]
fn eventlog_show_text_is_readable() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let log = dir.join("eventlogs/tpm2-tools-event-sd-boot-fedora37.bin");
    let out = run(&["eventlog", "show", path_str(&log)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "format crypto-agile, banks sha256",
        "#25   PCR9   EV_EVENT_TAG",
        "tagged event 0x8f3b22ec (INITRD_EVENT_TAG_ID)",
        "UEFI variable 8be4df61-93ca-11d2-aa0d-00e098032b8c \"SecureBoot\"",
        "replayed PCRs (sha256):",
        "PCR9   2913f6478fa2d1954ece3b40efc111c18f3feb29204e49f627aa0ca493801eeb",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
}

#[test]
fn eventlog_show_unreadable_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.bin");
    let out = run(&["eventlog", "show", path_str(&missing)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the event log"),
        "{}",
        stderr(&out)
    );
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let out = show_json(&empty);
    assert_eq!(out.status.code(), Some(2));
    let j = json_of(&out);
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("the event log is empty"),
        "{j}"
    );
}

/// `policy generate` from `log` into `dir/<name>.toml`.
fn generate(log: &Path, dir: &Path, name: &str) -> PathBuf {
    let out_path = dir.join(format!("{name}.toml"));
    let out = run(&[
        "policy",
        "generate",
        "--eventlog",
        path_str(log),
        "--name",
        name,
        "--output",
        path_str(&out_path),
    ]);
    assert!(out.status.success(), "generate: {}", stderr(&out));
    out_path
}

fn check(policy: &Path, log: &Path, json: bool) -> Output {
    let mut args = vec![
        "policy",
        "check",
        "--policy",
        path_str(policy),
        "--eventlog",
        path_str(log),
    ];
    if json {
        args.extend(["--output", "json"]);
    }
    run(&args)
}

#[test]
fn policy_check_passes_fails_and_lists_violations() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let good_log = dir.join("eventlogs/keylime-mb_log.bin");
    let other_log = dir.join("eventlogs/tpm2-tools-event-moklisttrusted.bin");
    let policy = generate(&good_log, tmp.path(), "centos");

    // The boot the policy was made from passes.
    let out = check(&policy, &good_log, false);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("PASS"));
    let j = json_of(&check(&policy, &good_log, true));
    assert_eq!(j["schema"], "ironroot.policy-check.v1");
    assert_eq!(
        (j["verdict"].as_str(), j["policy"].as_str()),
        (Some("pass"), Some("centos"))
    );
    assert_eq!(j["violations"], serde_json::json!([]));

    // Another machine's boot fails, every violation listed with rule, PCR, event and digest.
    let out = check(&policy, &other_log, true);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = json_of(&out);
    assert_eq!(j["verdict"], "fail");
    let v = j["violations"].as_array().unwrap();
    let apps: Vec<&Value> = v
        .iter()
        .filter(|x| x["rule"] == "boot_applications")
        .collect();
    assert!(!apps.is_empty(), "no boot_applications violation in {v:?}");
    assert!(apps.iter().all(|a| a["pcr"] == 4
        && a["event_index"].is_u64()
        && a["digest"]["bank"] == "sha256"
        && a["text"]
            .as_str()
            .unwrap()
            .contains("rule boot_applications")));
    assert!(v.iter().any(|x| x["rule"] == "pk" && x["pcr"] == 7));
    let text = check(&policy, &other_log, false);
    assert_eq!(text.status.code(), Some(1));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    assert!(
        text.starts_with(&format!(
            "FAIL: policy \"centos\": {} violation(s)",
            v.len()
        )),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1 + v.len(), "{text}");

    // The same boot against a tampered policy: the changed rule fails, naming the event.
    let mut doc: toml::Table = toml::from_str(&std::fs::read_to_string(&policy).unwrap()).unwrap();
    doc.insert(
        "boot_applications".into(),
        toml::Value::Array(vec![toml::Value::String("00".repeat(32))]),
    );
    let tampered = tmp.path().join("tampered.toml");
    std::fs::write(&tampered, toml::to_string(&doc).unwrap()).unwrap();
    let out = check(&tampered, &good_log, true);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let j = json_of(&out);
    let v = j["violations"].as_array().unwrap();
    assert!(!v.is_empty());
    assert!(v.iter().all(|x| x["rule"] == "boot_applications"), "{v:?}");
    assert_eq!(v[0]["type"], "EV_EFI_BOOT_SERVICES_APPLICATION");
    assert_eq!(v[0]["event_index"], 25);
}

#[test]
fn policy_check_unusable_input_exits_2() {
    let Some(dir) = fixtures_or_skip() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let log = dir.join("eventlogs/keylime-mb_log.bin");
    let policy = generate(&log, tmp.path(), "p");

    let malformed = tmp.path().join("malformed.toml");
    std::fs::write(&malformed, "name = \"x\"\nno_such_rule = 1\n").unwrap();
    let out = check(&malformed, &log, false);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("is not a usable policy") && err.contains("no_such_rule"),
        "{err}"
    );
    assert!(
        out.stdout.is_empty(),
        "no verdict on stdout for unusable input"
    );

    let j = json_of(&check(&malformed, &log, true));
    assert_eq!(j["verdict"], "unusable");
    assert!(j["error"].as_str().unwrap().contains("policy TOML"), "{j}");

    let bogus = dir.join("eventlogs/keylime-binary_bios_measurements-bogus.bin");
    let out = check(&policy, &bogus, true);
    assert_eq!(out.status.code(), Some(2));
    let j = json_of(&out);
    assert_eq!(
        (j["verdict"].as_str(), j["policy"].as_str()),
        (Some("unusable"), Some("p"))
    );
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("is not a valid TCG event log"),
        "{j}"
    );

    let out = check(&tmp.path().join("missing.toml"), &log, false);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read the policy"),
        "{}",
        stderr(&out)
    );
}
