use super::*;

fn entry(id: &str, selectors: &[(&str, &str)]) -> pb::Entry {
    pb::Entry {
        id: id.into(),
        spiffe_id: format!("spiffe://example.org/{id}"),
        selectors: selectors
            .iter()
            .map(|(t, v)| pb::Selector {
                r#type: (*t).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

#[test]
fn entries_are_parsed_once_and_bad_ones_are_reported_not_dropped_quietly() {
    let good = entry("good", &[("unix", "uid:1000")]);
    let bare = entry("bare", &[]);
    let bad = entry("bad", &[("unix", "uid:1000"), ("", "x")]);
    let p = parse("example.org", vec![good, bare, bad], "", HashMap::new());
    assert_eq!(p.entries.len(), 1);
    assert_eq!(
        p.entries[0].selectors,
        vec![Selector::new("unix", "uid:1000").unwrap()]
    );
    let subjects: Vec<String> = p.rejected.iter().map(Rejected::subject).collect();
    assert_eq!(subjects, ["entry bare", "entry bad"]);
    // An entry with a bad selector is not served with its other selectors alone:
    // that would match more callers than the entry names.
    assert!(matches!(p.rejected[1], Rejected::Selector { .. }));
}

#[test]
fn bundles_are_parsed_once_and_a_bad_one_is_reported() {
    let mut partner = TrustBundle::new(TrustDomain::parse("partner.org").unwrap());
    partner.sequence_number = 7;
    let federated = HashMap::from([
        ("partner.org".to_string(), partner.to_jwks_json().unwrap()),
        ("broken.org".to_string(), "{not json".to_string()),
    ]);
    let p = parse("example.org", Vec::new(), "", federated);
    assert_eq!(p.jwt_bundle, None, "no JWKS yet is not an error");
    assert_eq!(p.federated.get("partner.org"), Some(&partner));
    assert_eq!(p.rejected.len(), 1);
    assert_eq!(p.rejected[0].subject(), "bundle broken.org");
}

#[test]
fn matching_needs_every_selector_of_the_entry() {
    let p = parse(
        "example.org",
        vec![entry("both", &[("unix", "uid:1000"), ("unix", "gid:1")])],
        "",
        HashMap::new(),
    );
    let snap = Snapshot {
        entries: p.entries,
        ..Default::default()
    };
    let uid = Selector::new("unix", "uid:1000").unwrap();
    let gid = Selector::new("unix", "gid:1").unwrap();
    assert!(snap.matching_entries(std::slice::from_ref(&uid)).is_empty());
    assert_eq!(snap.matching_entries(&[uid, gid]).len(), 1);
}
