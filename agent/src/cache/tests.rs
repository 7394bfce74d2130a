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

#[test]
fn federates_with_is_parsed_sorted_and_a_bad_name_rejects_the_entry() {
    let mut fed = entry("fed", &[("unix", "uid:1")]);
    fed.federates_with = vec!["b.org".into(), "a.org".into(), "b.org".into()];
    let mut bad = entry("bad", &[("unix", "uid:1")]);
    bad.federates_with = vec!["a.org".into(), "spiffe://a.org".into()];
    let p = parse("example.org", vec![fed, bad], "", HashMap::new());
    assert_eq!(p.entries.len(), 1);
    assert_eq!(p.entries[0].federates_with, ["a.org", "b.org"]);
    // Not served with fewer trust domains than it names, nor matched loosely.
    assert!(
        matches!(&p.rejected[..], [Rejected::FederatesWith { id, value, .. }]
            if id == "bad" && value == "spiffe://a.org"),
        "{:?}",
        p.rejected
    );
}

#[test]
fn a_federated_jwt_bundle_only_for_a_caller_federating_with_it() {
    let partner = TrustBundle::new(TrustDomain::parse("partner.org").unwrap());
    let mut fed = entry("fed", &[("unix", "uid:1")]);
    fed.federates_with = vec!["partner.org".into()];
    let p = parse(
        "example.org",
        vec![fed, entry("plain", &[("unix", "uid:2")])],
        "",
        HashMap::new(),
    );
    let s = Snapshot {
        trust_domain: "example.org".into(),
        entries: p.entries,
        federated: HashMap::from([("partner.org".to_string(), partner.clone())]),
        ..Snapshot::default()
    };
    let for_uid = |uid: u32| {
        let sel = [Selector::new("unix", format!("uid:{uid}")).unwrap()];
        s.federated_bundles_for(s.matching_entries(&sel))
    };
    let one = for_uid(1);
    assert_eq!(s.jwt_bundle_of("partner.org", &one), Some(&partner));
    let two = for_uid(2);
    assert!(two.is_empty());
    assert_eq!(s.jwt_bundle_of("partner.org", &two), None);
}
