use super::*;

fn td() -> TrustDomain {
    TrustDomain::parse("example.org").unwrap()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn spec() -> EntrySpec {
    EntrySpec {
        spiffe_id: SpiffeId::parse("spiffe://example.org/web").unwrap(),
        parent_id: SpiffeId::parse("spiffe://example.org/spire/agent/tpm/abc").unwrap(),
        selectors: vec![sel("unix:uid:1000")],
        x509_svid_ttl: 0,
        jwt_svid_ttl: 300,
        dns_names: vec!["web.example.org".into(), "*.svc.example.org".into()],
        admin: false,
        downstream: false,
        hint: "web".into(),
        expires_at: 0,
        federates_with: vec![],
    }
}

fn invalid(f: impl FnOnce(&mut EntrySpec)) -> EntryError {
    let mut s = spec();
    f(&mut s);
    s.validate(&td()).unwrap_err()
}

/// A name of `len` bytes made of 63-byte labels.
fn long_dns_name(len: usize) -> String {
    let mut name = String::new();
    while name.len() < len {
        if !name.is_empty() {
            name.push('.');
        }
        let room = (len - name.len()).min(63);
        name.push_str(&"a".repeat(room));
    }
    assert_eq!(name.len(), len);
    name
}

#[test]
fn valid_spec_passes() {
    spec().validate(&td()).unwrap();
    let mut s = spec();
    s.x509_svid_ttl = MAX_TTL_SECS;
    s.hint = "h".repeat(MAX_HINT_LEN);
    s.selectors = (0..MAX_SELECTORS).map(|i| sel(&format!("t:{i}"))).collect();
    s.dns_names = vec![long_dns_name(253)];
    s.validate(&td()).unwrap();
}

#[test]
fn rejects_foreign_trust_domain() {
    let e = invalid(|s| s.spiffe_id = SpiffeId::parse("spiffe://other.org/web").unwrap());
    assert_eq!(
        e,
        EntryError::ForeignTrustDomain {
            field: "spiffe_id",
            id: "spiffe://other.org/web".into(),
            trust_domain: "example.org".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "spiffe_id: 'spiffe://other.org/web' is not in the trust domain 'example.org'"
    );
    let e = invalid(|s| s.parent_id = SpiffeId::parse("spiffe://other.org/a").unwrap());
    assert!(matches!(
        e,
        EntryError::ForeignTrustDomain {
            field: "parent_id",
            ..
        }
    ));
}

#[test]
fn rejects_reserved_and_empty_path() {
    for p in [
        "spiffe://example.org/spire/agent/x",
        "spiffe://example.org/spire",
    ] {
        let e = invalid(|s| s.spiffe_id = SpiffeId::parse(p).unwrap());
        assert_eq!(e, EntryError::ReservedPath { id: p.into() });
    }
    // Only the exact segment is reserved.
    let mut s = spec();
    s.spiffe_id = SpiffeId::parse("spiffe://example.org/spirex/a").unwrap();
    s.validate(&td()).unwrap();
    let e = invalid(|s| s.spiffe_id = td().id());
    assert_eq!(
        e,
        EntryError::EmptyPath {
            id: "spiffe://example.org".into()
        }
    );
}

#[test]
fn rejects_selector_problems() {
    assert_eq!(invalid(|s| s.selectors.clear()), EntryError::NoSelectors);
    let e = invalid(|s| s.selectors = (0..65).map(|i| sel(&format!("t:{i}"))).collect());
    assert_eq!(e, EntryError::TooManySelectors { count: 65, max: 64 });
    let e = invalid(|s| {
        s.selectors.push(Selector {
            kind: "Bad".into(),
            value: "x".into(),
        })
    });
    assert!(matches!(e, EntryError::Selector { index: 1, .. }), "{e:?}");
    assert!(e
        .to_string()
        .starts_with("selectors[1]: selector type 'Bad'"));
}

#[test]
fn rejects_bad_dns_names() {
    let cases = [
        ("", "it is empty"),
        (
            "a..b",
            "it has an empty label (leading, trailing or double '.')",
        ),
        (
            "a.b.",
            "it has an empty label (leading, trailing or double '.')",
        ),
        ("-a.b", "a label starts or ends with '-'"),
        (
            "a_b.c",
            "only letters, digits, '-' and '.' are allowed (and '*.' first)",
        ),
        (
            "a.*.c",
            "only letters, digits, '-' and '.' are allowed (and '*.' first)",
        ),
        (
            "a b",
            "only letters, digits, '-' and '.' are allowed (and '*.' first)",
        ),
    ];
    for (name, reason) in cases {
        let e = invalid(|s| s.dns_names = vec!["ok.org".into(), name.into()]);
        assert_eq!(
            e,
            EntryError::DnsName {
                index: 1,
                name: name.into(),
                reason
            },
            "{name}"
        );
    }
    let long_label = format!("{}.org", "a".repeat(64));
    let e = invalid(|s| s.dns_names = vec![long_label.clone()]);
    assert!(matches!(
        e,
        EntryError::DnsName {
            reason: "a label is longer than 63 bytes",
            ..
        }
    ));
    let e = invalid(|s| s.dns_names = vec![long_dns_name(254)]);
    assert!(matches!(
        e,
        EntryError::DnsName {
            reason: "it is longer than 253 bytes",
            ..
        }
    ));
}

#[test]
fn rejects_ttl_hint_expiry() {
    let e = invalid(|s| s.jwt_svid_ttl = MAX_TTL_SECS + 1);
    assert_eq!(
        e,
        EntryError::TtlTooLong {
            field: "jwt_svid_ttl",
            value: u64::from(MAX_TTL_SECS) + 1,
            max: MAX_TTL_SECS
        }
    );
    assert!(e.to_string().starts_with("jwt_svid_ttl: 31536001 seconds"));
    let e = invalid(|s| s.x509_svid_ttl = u32::MAX);
    assert!(matches!(
        e,
        EntryError::TtlTooLong {
            field: "x509_svid_ttl",
            ..
        }
    ));
    let e = invalid(|s| s.hint = "h".repeat(MAX_HINT_LEN + 1));
    assert_eq!(
        e,
        EntryError::HintTooLong {
            len: 1025,
            max: 1024
        }
    );
    let e = invalid(|s| s.expires_at = -1);
    assert_eq!(e, EntryError::NegativeExpiry { value: -1 });
}

#[test]
fn proto_round_trip() {
    let mut s = spec();
    s.selectors = vec![sel("unix:uid:1000"), sel("a:b"), sel("unix:uid:1000")];
    let wire: admin::EntryFields = s.clone().into();
    let back = EntrySpec::try_from(wire).unwrap();
    // Came back normalized.
    assert_eq!(back.selectors, vec![sel("a:b"), sel("unix:uid:1000")]);
    s.normalize();
    assert_eq!(back, s);

    let entry = RegistrationEntry::from_spec("id-1".into(), s.clone(), 3, 1_700_000_000);
    let wire: admin::Entry = entry.clone().into();
    assert_eq!(wire.revision_number, 3);
    assert_eq!(RegistrationEntry::try_from(wire).unwrap(), entry);
    assert_eq!(entry.spec, s);
}

#[test]
fn proto_errors_name_the_field() {
    let good: admin::EntryFields = spec().into();

    let mut f = good.clone();
    f.spiffe_id = "spiffe://Example.org/x".into();
    let e = EntrySpec::try_from(f).unwrap_err();
    assert!(matches!(
        e,
        EntryError::SpiffeId {
            field: "spiffe_id",
            ..
        }
    ));
    assert!(e
        .to_string()
        .starts_with("spiffe_id: trust domain contains an upper-case letter 'E'"));

    let mut f = good.clone();
    f.parent_id.clear();
    assert_eq!(
        EntrySpec::try_from(f).unwrap_err(),
        EntryError::MissingField { field: "parent_id" }
    );

    let mut f = good.clone();
    f.selectors.push(admin::Selector {
        r#type: "unix".into(),
        value: String::new(),
    });
    assert_eq!(
        EntrySpec::try_from(f).unwrap_err(),
        EntryError::Selector {
            index: 1,
            source: SelectorError::EmptyValue
        }
    );

    let mut f = good.clone();
    f.x509_svid_ttl = -5;
    let e = EntrySpec::try_from(f).unwrap_err();
    assert_eq!(
        e,
        EntryError::NegativeTtl {
            field: "x509_svid_ttl",
            value: -5
        }
    );
    assert_eq!(e.to_string(), "x509_svid_ttl: -5 is negative");

    let missing = admin::Entry {
        id: "x".into(),
        fields: None,
        revision_number: 0,
        created_at: 0,
    };
    assert_eq!(
        RegistrationEntry::try_from(missing).unwrap_err(),
        EntryError::MissingField { field: "fields" }
    );
    let no_id = admin::Entry {
        id: String::new(),
        fields: Some(good),
        revision_number: 0,
        created_at: 0,
    };
    assert_eq!(
        RegistrationEntry::try_from(no_id).unwrap_err(),
        EntryError::MissingField { field: "id" }
    );
}

#[test]
fn serde_round_trip() {
    let entry = RegistrationEntry::from_spec("id".into(), spec(), 0, 5);
    let json = serde_json::to_string(&entry).unwrap();
    assert!(json.contains("\"spiffe_id\":\"spiffe://example.org/web\""));
    assert!(json.contains("\"selectors\":[\"unix:uid:1000\"]"));
    let back: RegistrationEntry = serde_json::from_str(&json).unwrap();
    assert_eq!(back, entry);
}

/// Stored entries keep the layout they had before the spec had its own type: the spec's
/// fields beside `id`, no `spec` object (stores written earlier still read).
#[test]
fn stored_entries_keep_their_flat_layout() {
    let mut s = spec();
    s.normalize();
    let entry = RegistrationEntry::from_spec("id-1".into(), s, 3, 1_700_000_000);
    let json = serde_json::to_value(&entry).unwrap();
    let keys: Vec<&str> = json
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for k in [
        "id",
        "spiffe_id",
        "parent_id",
        "selectors",
        "hint",
        "revision",
        "created_at",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert!(!keys.contains(&"spec"), "{keys:?}");
    let back: RegistrationEntry = serde_json::from_value(json).unwrap();
    assert_eq!(back, entry);
}

fn tds(names: &[&str]) -> Vec<TrustDomain> {
    names
        .iter()
        .map(|n| TrustDomain::parse(n).unwrap())
        .collect()
}

fn wire_with_federates(list: &[&str]) -> admin::EntryFields {
    let mut f = admin::EntryFields::from(spec());
    f.federates_with = list.iter().map(|s| s.to_string()).collect();
    f
}

/// SPIRE's two spellings are one trust domain; stored sorted, deduplicated, bare.
#[test]
fn federates_with_accepts_both_spellings_and_normalizes() {
    let s = EntrySpec::try_from(wire_with_federates(&[
        "spiffe://partner.org",
        "another.org",
        "partner.org",
    ]))
    .unwrap();
    assert_eq!(s.federates_with, tds(&["another.org", "partner.org"]));
    s.validate(&td()).unwrap();
    let back = admin::EntryFields::from(s);
    assert_eq!(back.federates_with, vec!["another.org", "partner.org"]);
}

#[test]
fn federates_with_refuses_what_is_not_a_trust_domain() {
    for (bad, why) in [
        ("", "it is empty"),
        ("spiffe://partner.org/workload", "it has a path"),
        ("Partner.org", "upper-case"),
        ("https://partner.org", "scheme"),
        ("partner.org:443", "port"),
        ("spiffe://", "trust domain is missing"),
    ] {
        let e = EntrySpec::try_from(wire_with_federates(&["ok.org", bad])).unwrap_err();
        match &e {
            EntryError::FederatesWith { index, value, .. } => {
                assert_eq!((*index, value.as_str()), (1, bad), "{e}");
            }
            other => panic!("{bad}: {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.starts_with("federates_with[1]: "), "{msg}");
        assert!(msg.contains(why), "{bad}: {msg}");
    }
}

#[test]
fn federates_with_refuses_the_own_trust_domain_in_either_spelling() {
    for own in ["example.org", "spiffe://example.org"] {
        let s = EntrySpec::try_from(wire_with_federates(&["partner.org", own])).unwrap();
        assert_eq!(
            s.validate(&td()).unwrap_err(),
            EntryError::FederatesWithOwnTrustDomain {
                trust_domain: "example.org".into()
            }
        );
    }
}

#[test]
fn federates_with_has_a_limit() {
    let mut s = spec();
    s.federates_with = (0..=MAX_FEDERATES_WITH)
        .map(|i| TrustDomain::parse(&format!("td{i}.org")).unwrap())
        .collect();
    assert_eq!(
        s.validate(&td()).unwrap_err(),
        EntryError::TooManyFederatesWith {
            count: MAX_FEDERATES_WITH + 1,
            max: MAX_FEDERATES_WITH
        }
    );
    s.federates_with.pop();
    s.validate(&td()).unwrap();
}

#[test]
fn federated_bundles_must_exist() {
    let mut s = spec();
    s.federates_with = tds(&["a.org", "b.org"]);
    let stored = tds(&["a.org"]);
    let e = s
        .check_federated_bundles(|td| stored.contains(td))
        .unwrap_err();
    assert_eq!(
        e,
        EntryError::FederatedBundleMissing {
            trust_domain: "b.org".into()
        }
    );
    assert!(e.to_string().contains("federates-with-needs-bundle"), "{e}");
    s.federates_with.pop();
    s.check_federated_bundles(|td| stored.contains(td)).unwrap();
}

/// Records written before the field existed read as federating with nothing, and
/// an entry without it is stored exactly as before (no new key).
#[test]
fn federates_with_is_optional_in_stored_records() {
    let old = RegistrationEntry::from_spec("id".into(), spec(), 0, 5);
    let json = serde_json::to_value(&old).unwrap();
    assert!(json.get("federates_with").is_none(), "{json}");
    let back: RegistrationEntry = serde_json::from_value(json).unwrap();
    assert!(back.spec.federates_with.is_empty());

    let mut s = spec();
    s.federates_with = tds(&["partner.org"]);
    let new = RegistrationEntry::from_spec("id".into(), s, 0, 5);
    let json = serde_json::to_value(&new).unwrap();
    assert_eq!(json["federates_with"], serde_json::json!(["partner.org"]));
    assert_eq!(
        serde_json::from_value::<RegistrationEntry>(json).unwrap(),
        new
    );
}
