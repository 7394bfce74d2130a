//! Entries' `federates_with` through the CLI and admin API of a real server: SPIRE's two
//! spellings stored as one bare name; refused by name when malformed, the server's own
//! trust domain, or a trust domain whose bundle the server does not hold (rule
//! `federates-with-needs-bundle`), on create, update and per item of a `--data` batch;
//! shown by `entry show`; replaced by `entry update`.

use ironroot_testkit::server::*;

const PARENT: &str = "spiffe://example.org/spire/agent/join_token/node";

fn create(server: &ServerProcess, path: &str, federates_with: &[&str]) -> std::process::Output {
    let id = format!("spiffe://example.org{path}");
    let mut args = vec![
        "entry",
        "create",
        "--spiffe-id",
        &id,
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1000",
        "--output",
        "json",
    ];
    for td in federates_with {
        args.extend(["--federates-with", td]);
    }
    server.cli(&args)
}

fn stderr(o: &std::process::Output) -> String {
    assert!(!o.status.success(), "succeeded: {o:?}");
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn entries_federate_only_with_stored_bundles_and_show_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, server) = ServerProcess::start_on_new_token("entry_federates_with", dir.path(), "");

    // No bundle of partner.org yet: refused, naming the rule and the fix; nothing created.
    let e = stderr(&create(&server, "/early", &["partner.org"]));
    assert!(e.contains("federates-with-needs-bundle"), "{e}");
    assert!(e.contains("bundle set --id partner.org"), "{e}");
    let none = json(&server.cli(&["entry", "show", "--output", "json"]));
    assert_eq!(none["entries"], serde_json::json!([]));

    // A bundle of partner.org (any roots will do: the server's own, under another name).
    let pem = dir.path().join("partner.pem");
    std::fs::write(&pem, server.cli_ok(&["bundle", "show"])).unwrap();
    server.set_federated_bundle_pem("partner.org", &pem);

    // Both spellings, once each, stored bare.
    let created = json(&create(
        &server,
        "/fed",
        &["spiffe://partner.org", "partner.org"],
    ));
    let entry = &created["entries"][0];
    assert_eq!(entry["federates_with"], serde_json::json!(["partner.org"]));
    let id = entry["id"].as_str().unwrap().to_owned();
    let text = server.cli_ok(&["entry", "show", "--entry-id", &id]);
    assert!(text.contains("Federates with   : partner.org"), "{text}");

    // Refused by name: malformed, the own trust domain, a path; on create and update.
    for (bad, why) in [
        (
            "Partner.org",
            "federates_with[0]: 'Partner.org' is not a trust domain",
        ),
        ("spiffe://partner.org/web", "it has a path"),
        ("example.org", "the entry's own trust domain"),
        ("spiffe://example.org", "the entry's own trust domain"),
        ("other.org", "federates-with-needs-bundle"),
    ] {
        let e = stderr(&create(&server, "/bad", &[bad]));
        assert!(e.contains(why), "{bad}: {e}");
        let e = stderr(&server.cli(&[
            "entry",
            "update",
            "--entry-id",
            &id,
            "--spiffe-id",
            "spiffe://example.org/fed",
            "--parent-id",
            PARENT,
            "--selector",
            "unix:uid:1000",
            "--federates-with",
            bad,
        ]));
        assert!(e.contains(why), "update {bad}: {e}");
    }

    // An update replaces the list: without --federates-with, none.
    let updated = json(&server.cli(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--spiffe-id",
        "spiffe://example.org/fed",
        "--parent-id",
        PARENT,
        "--selector",
        "unix:uid:1000",
        "--output",
        "json",
    ]));
    assert_eq!(
        updated["entries"][0]["federates_with"],
        serde_json::json!([])
    );
    let text = server.cli_ok(&["entry", "show", "--entry-id", &id]);
    assert!(!text.contains("Federates with"), "{text}");

    // `--data`: SPIRE's field (and its camel-case spelling), per item.
    let data = dir.path().join("entries.json");
    std::fs::write(
        &data,
        serde_json::json!({"entries": [
            {"spiffe_id": "spiffe://example.org/batch-a", "parent_id": PARENT,
             "selectors": [{"type": "unix", "value": "uid:1"}],
             "federates_with": ["spiffe://partner.org"]},
            {"spiffe_id": "spiffe://example.org/batch-b", "parent_id": PARENT,
             "selectors": [{"type": "unix", "value": "uid:2"}],
             "federatesWith": ["absent.org"]},
            {"spiffe_id": "spiffe://example.org/batch-c", "parent_id": PARENT,
             "selectors": [{"type": "unix", "value": "uid:3"}]},
        ]})
        .to_string(),
    )
    .unwrap();
    let o = server.cli(&[
        "entry",
        "create",
        "--data",
        data.to_str().unwrap(),
        "--output",
        "json",
    ]);
    assert!(!o.status.success(), "one item was refused");
    let out: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let created: Vec<(&str, &serde_json::Value)> = out["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["spiffe_id"].as_str().unwrap(), &e["federates_with"]))
        .collect();
    assert_eq!(
        created,
        [
            (
                "spiffe://example.org/batch-a",
                &serde_json::json!(["partner.org"])
            ),
            ("spiffe://example.org/batch-c", &serde_json::json!([])),
        ]
    );
    assert_eq!(out["failed"][0]["index"], 1);
    let why = out["failed"][0]["error"].as_str().unwrap();
    assert!(
        why.contains("federates-with-needs-bundle") && why.contains("absent.org"),
        "{why}"
    );

    // `entry show --federates-with` (SPIRE's -federatesWith), both spellings.
    for td in ["partner.org", "spiffe://partner.org"] {
        let shown =
            json(&server.cli(&["entry", "show", "--federates-with", td, "--output", "json"]));
        let ids: Vec<&str> = shown["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["spiffe_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["spiffe://example.org/batch-a"], "{td}");
    }
    let none = json(&server.cli(&[
        "entry",
        "show",
        "--federates-with",
        "partner.org",
        "--match-federates-with-on",
        "exact",
        "--selector",
        "unix:uid:3",
        "--output",
        "json",
    ]));
    assert_eq!(none["entries"], serde_json::json!([]));
    let e = stderr(&server.cli(&["entry", "show", "--federates-with", "Partner.org"]));
    assert!(e.contains("by_federates_with \"Partner.org\""), "{e}");
}

/// The entry's `federates_with` as the server shows it, by SPIFFE ID path.
fn federates_with_of(server: &ServerProcess) -> Vec<(String, serde_json::Value)> {
    let all = json(&server.cli(&["entry", "show", "--output", "json"]));
    let mut out: Vec<(String, serde_json::Value)> = all["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let id = e["spiffe_id"].as_str().unwrap();
            (
                id.trim_start_matches("spiffe://example.org").to_owned(),
                e["federates_with"].clone(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn deleting_a_bundle_settles_the_entries_that_federate_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_h, server) = ServerProcess::start_on_new_token("bundle_delete_modes", dir.path(), "");
    let pem = dir.path().join("partner.pem");
    std::fs::write(&pem, server.cli_ok(&["bundle", "show"])).unwrap();
    let set = |td: &str| server.set_federated_bundle_pem(td, &pem);
    let bundles = || server.cli_ok(&["bundle", "list"]);
    set("partner.org");
    set("other.org");
    let a = json(&create(&server, "/a", &["partner.org"]));
    let b = json(&create(&server, "/b", &["partner.org", "other.org"]));
    json(&create(&server, "/c", &[]));
    let (a_id, b_id) = (
        a["entries"][0]["id"].as_str().unwrap().to_owned(),
        b["entries"][0]["id"].as_str().unwrap().to_owned(),
    );

    // restrict (the default): refused while entries federate with it, naming them.
    let e = stderr(&server.cli(&["bundle", "delete", "--id", "partner.org"]));
    assert!(e.contains("rule bundle-in-use"), "{e}");
    assert!(e.contains("2 entries federate with partner.org"), "{e}");
    assert!(e.contains(&a_id) && e.contains(&b_id), "{e}");
    assert!(e.contains("--mode dissociate"), "{e}");
    assert!(bundles().contains("partner.org"), "nothing deleted");
    let e = stderr(&server.cli(&[
        "bundle",
        "delete",
        "--id",
        "partner.org",
        "--mode",
        "restrict",
    ]));
    assert!(e.contains("rule bundle-in-use"), "{e}");

    // dissociate: the trust domain leaves the entries, the rest of them stays.
    let out = server.cli_ok(&[
        "bundle",
        "delete",
        "--id",
        "spiffe://partner.org",
        "--mode",
        "dissociate",
    ]);
    assert!(out.contains("2 entries no longer federate with"), "{out}");
    assert!(!bundles().contains("partner.org"));
    assert_eq!(
        federates_with_of(&server),
        [
            ("/a".to_owned(), serde_json::json!([])),
            ("/b".to_owned(), serde_json::json!(["other.org"])),
            ("/c".to_owned(), serde_json::json!([])),
        ]
    );

    // delete: the entries that federate with it go with it, the others stay.
    set("partner.org");
    let d = json(&create(&server, "/d", &["partner.org"]));
    let d_id = d["entries"][0]["id"].as_str().unwrap().to_owned();
    json(&create(&server, "/e", &["other.org"]));
    let out = server.cli_ok(&["bundle", "delete", "--id", "other.org", "--mode", "delete"]);
    assert!(
        out.contains("2 entries that federated with other.org deleted"),
        "{out}"
    );
    assert_eq!(
        federates_with_of(&server),
        [
            ("/a".to_owned(), serde_json::json!([])),
            ("/c".to_owned(), serde_json::json!([])),
            ("/d".to_owned(), serde_json::json!(["partner.org"])),
        ]
    );
    assert!(!bundles().contains("other.org"));
    assert!(bundles().contains("partner.org"));

    // A bundle no entry federates with is deleted in any mode; a missing one is named.
    server.cli_ok(&["entry", "delete", "--entry-id", &d_id]);
    let out = server.cli_ok(&["bundle", "delete", "--id", "partner.org"]);
    assert!(out.contains("deleted") && !out.contains("entries"), "{out}");
    let e = stderr(&server.cli(&["bundle", "delete", "--id", "partner.org"]));
    assert!(e.contains("no federated bundle for partner.org"), "{e}");

    // Every entry a bundle delete changed or deleted has its own audit record.
    let records = ironroot_audit::read_records(&dir.path().join("data/audit")).unwrap();
    let settled = |action: &str, mode: &str| -> usize {
        records
            .iter()
            .filter(|r| {
                matches!(&r.event, ironroot_audit::Event::Admin { action: a, target, outcome, .. }
                    if a == action && outcome == "ok" && target.ends_with(&format!("mode {mode})")))
            })
            .count()
    };
    assert_eq!(settled("entry.update", "dissociate"), 2);
    assert_eq!(settled("entry.delete", "delete"), 2);
}
