use super::*;

#[test]
fn parses_and_displays() {
    let s = Selector::parse("unix:uid:1000").unwrap();
    assert_eq!(s.kind, "unix");
    assert_eq!(s.value, "uid:1000");
    assert_eq!(s.to_string(), "unix:uid:1000");
    let p = Selector::parse("podman:label:app:web server").unwrap();
    assert_eq!(p.value, "label:app:web server");
    let t: Selector = "tpm_devid:subject_cn:x".parse().unwrap();
    assert_eq!(t.kind, "tpm_devid");
}

#[test]
fn serde_as_string() {
    let s = Selector::parse("k8s:ns:prod").unwrap();
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(json, "\"k8s:ns:prod\"");
    assert_eq!(serde_json::from_str::<Selector>(&json).unwrap(), s);
    assert!(serde_json::from_str::<Selector>("\"nocolon\"").is_err());
}

#[test]
fn rejects_bad_selectors() {
    assert_eq!(
        Selector::parse("unix").unwrap_err(),
        SelectorError::MissingSeparator {
            input: "unix".into()
        }
    );
    assert_eq!(Selector::parse(":x").unwrap_err(), SelectorError::EmptyType);
    assert_eq!(
        Selector::parse("unix:").unwrap_err(),
        SelectorError::EmptyValue
    );
    let e = Selector::parse("Unix:uid:1").unwrap_err();
    assert_eq!(
        e,
        SelectorError::TypeChar {
            kind: "Unix".into(),
            ch: 'U',
            offset: 0
        }
    );
    assert!(e.to_string().contains("only a-z, 0-9 and '_'"));
    assert!(matches!(
        Selector::parse("un-ix:a").unwrap_err(),
        SelectorError::TypeChar {
            ch: '-',
            offset: 2,
            ..
        }
    ));
    assert_eq!(
        Selector::parse("unix:uid\n0").unwrap_err(),
        SelectorError::ValueControlChar {
            ch: '\n',
            offset: 8
        }
    );
    assert_eq!(
        Selector::new("a".repeat(65), "v").unwrap_err(),
        SelectorError::TypeTooLong { len: 65, max: 64 }
    );
    assert_eq!(
        Selector::new("a", "v".repeat(2049)).unwrap_err(),
        SelectorError::ValueTooLong {
            len: 2049,
            max: 2048
        }
    );
    Selector::new("a", "v".repeat(2048)).unwrap();
}

#[test]
fn normalize_and_superset() {
    let mut v = vec![
        Selector::parse("unix:uid:1").unwrap(),
        Selector::parse("docker:x").unwrap(),
        Selector::parse("unix:uid:1").unwrap(),
    ];
    normalize_selectors(&mut v);
    assert_eq!(v.len(), 2);
    assert_eq!(v[0].kind, "docker");
    assert!(Selector::all_in(&v[1..], &v));
    assert!(!Selector::all_in(&[Selector::parse("x:y").unwrap()], &v));
    assert!(Selector::all_in(&[], &v));
}
