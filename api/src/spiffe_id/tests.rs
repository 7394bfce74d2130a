use super::*;

fn err(s: &str) -> SpiffeIdError {
    SpiffeId::parse(s).unwrap_err()
}

#[test]
fn parses_valid_ids() {
    let id = SpiffeId::parse("spiffe://example.org/ns/prod/sa/web-1_a.b").unwrap();
    assert_eq!(id.trust_domain().as_str(), "example.org");
    assert_eq!(id.path(), "/ns/prod/sa/web-1_a.b");
    assert_eq!(id.to_string(), "spiffe://example.org/ns/prod/sa/web-1_a.b");

    let bare = SpiffeId::parse("spiffe://my_td-1.example").unwrap();
    assert_eq!(bare.path(), "");
    assert_eq!(bare, bare.trust_domain().id());
    // Upper case is fine in the path, which is case-sensitive.
    let upper = SpiffeId::parse("spiffe://td/Workload/ABC").unwrap();
    assert_ne!(upper, SpiffeId::parse("spiffe://td/workload/abc").unwrap());
    // Dots inside a segment are fine; only whole '.'/'..' segments are not.
    SpiffeId::parse("spiffe://td/.../a..b/.hidden").unwrap();
    // An IPv4 address is a valid trust domain name.
    SpiffeId::parse("spiffe://10.0.0.1/x").unwrap();
}

#[test]
fn from_str_and_membership() {
    let id: SpiffeId = "spiffe://a.org/x".parse().unwrap();
    assert!(id.is_member_of(&TrustDomain::parse("a.org").unwrap()));
    assert!(!id.is_member_of(&TrustDomain::parse("b.org").unwrap()));
}

#[test]
fn serde_as_string() {
    let id = SpiffeId::parse("spiffe://a.org/x/y").unwrap();
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, "\"spiffe://a.org/x/y\"");
    let back: SpiffeId = serde_json::from_str(&json).unwrap();
    assert_eq!(back, id);
    let bad = serde_json::from_str::<SpiffeId>("\"spiffe://A.org/x\"").unwrap_err();
    assert!(bad.to_string().contains("upper-case letter 'A'"), "{bad}");

    let td = TrustDomain::parse("a.org").unwrap();
    assert_eq!(serde_json::to_string(&td).unwrap(), "\"a.org\"");
    assert!(serde_json::from_str::<TrustDomain>("\"a:1\"").is_err());
}

#[test]
fn rejects_bad_scheme() {
    assert_eq!(err(""), SpiffeIdError::Empty);
    assert_eq!(err("example.org/x"), SpiffeIdError::MissingScheme);
    assert_eq!(
        err("https://example.org/x"),
        SpiffeIdError::WrongScheme {
            found: "https".into()
        }
    );
    let e = err("SPIFFE://example.org/x");
    assert_eq!(
        e,
        SpiffeIdError::SchemeNotLowercase {
            found: "SPIFFE".into()
        }
    );
    assert!(e.to_string().contains("lower case"));
    assert_eq!(err("spiffe:/example.org"), SpiffeIdError::MissingScheme);
}

#[test]
fn rejects_bad_trust_domain() {
    assert_eq!(err("spiffe://"), SpiffeIdError::MissingTrustDomain);
    assert_eq!(err("spiffe:///path"), SpiffeIdError::MissingTrustDomain);
    let e = err("spiffe://examplE.org/x");
    assert_eq!(
        e,
        SpiffeIdError::TrustDomainUppercase {
            ch: 'E',
            offset: 15
        }
    );
    assert_eq!(
        e.to_string(),
        "trust domain contains an upper-case letter 'E' at byte offset 15; trust domains must be lower case"
    );
    assert_eq!(
        err("spiffe://a.org:443/x"),
        SpiffeIdError::Port { offset: 14 }
    );
    assert_eq!(
        err("spiffe://user@a.org/x"),
        SpiffeIdError::UserInfo { offset: 13 }
    );
    assert_eq!(
        err("spiffe://a%2eorg/x"),
        SpiffeIdError::TrustDomainPercentEncoded { offset: 10 }
    );
    assert_eq!(
        err("spiffe://a+b/x"),
        SpiffeIdError::TrustDomainChar {
            ch: '+',
            offset: 10
        }
    );
    assert_eq!(
        err("spiffe://[::1]/x"),
        SpiffeIdError::TrustDomainChar { ch: '[', offset: 9 }
    );
    assert_eq!(
        err("spiffe://é.org"),
        SpiffeIdError::TrustDomainChar {
            ch: 'é', offset: 9
        }
    );
    let long = format!("spiffe://{}", "a".repeat(256));
    assert_eq!(
        err(&long),
        SpiffeIdError::TrustDomainTooLong { len: 256, max: 255 }
    );
    SpiffeId::parse(&format!("spiffe://{}", "a".repeat(255))).unwrap();
}

#[test]
fn rejects_query_and_fragment() {
    assert_eq!(
        err("spiffe://a.org?x=1"),
        SpiffeIdError::Query { offset: 14 }
    );
    assert_eq!(
        err("spiffe://a.org#f"),
        SpiffeIdError::Fragment { offset: 14 }
    );
    assert_eq!(
        err("spiffe://a.org/p?x"),
        SpiffeIdError::Query { offset: 16 }
    );
    assert_eq!(
        err("spiffe://a.org/p/#f"),
        SpiffeIdError::Fragment { offset: 17 }
    );
}

#[test]
fn rejects_bad_paths() {
    let e = err("spiffe://a.org/x/../y");
    assert_eq!(
        e,
        SpiffeIdError::DotSegment {
            segment: 2,
            value: "..".into()
        }
    );
    assert_eq!(
        e.to_string(),
        "path segment 2 is '..'; '.' and '..' segments are not allowed"
    );
    assert_eq!(
        err("spiffe://a.org/."),
        SpiffeIdError::DotSegment {
            segment: 1,
            value: ".".into()
        }
    );
    assert_eq!(err("spiffe://a.org/"), SpiffeIdError::TrailingSlash);
    assert_eq!(err("spiffe://a.org/x/"), SpiffeIdError::TrailingSlash);
    assert_eq!(
        err("spiffe://a.org//x"),
        SpiffeIdError::EmptySegment { segment: 1 }
    );
    assert_eq!(
        err("spiffe://a.org/x//y"),
        SpiffeIdError::EmptySegment { segment: 2 }
    );
    assert_eq!(
        err("spiffe://a.org/x/a%20b"),
        SpiffeIdError::PathPercentEncoded {
            segment: 2,
            offset: 18
        }
    );
    let e = err("spiffe://a.org/x/a b");
    assert_eq!(
        e,
        SpiffeIdError::PathChar {
            segment: 2,
            ch: ' ',
            offset: 18
        }
    );
    assert!(e
        .to_string()
        .starts_with("path segment 2 contains ' ' at byte offset 18"));
    assert_eq!(
        err("spiffe://a.org/x:y"),
        SpiffeIdError::PathChar {
            segment: 1,
            ch: ':',
            offset: 16
        }
    );
    assert_eq!(
        err("spiffe://a.org/\n"),
        SpiffeIdError::PathChar {
            segment: 1,
            ch: '\n',
            offset: 15
        }
    );
}

#[test]
fn length_limit() {
    let prefix = "spiffe://a.org/";
    let ok = format!("{prefix}{}", "x".repeat(MAX_SPIFFE_ID_LEN - prefix.len()));
    assert_eq!(SpiffeId::parse(&ok).unwrap().to_string().len(), 2048);
    let too_long = format!("{ok}x");
    assert_eq!(
        err(&too_long),
        SpiffeIdError::TooLong {
            len: 2049,
            max: 2048
        }
    );
}

#[test]
fn trust_domain_parse() {
    assert_eq!(TrustDomain::parse("a.org").unwrap().to_string(), "a.org");
    assert_eq!(
        TrustDomain::parse("spiffe://a.org").unwrap_err(),
        SpiffeIdError::TrustDomainIsUri
    );
    assert_eq!(
        TrustDomain::parse("").unwrap_err(),
        SpiffeIdError::MissingTrustDomain
    );
    assert_eq!(
        TrustDomain::parse("Foo").unwrap_err(),
        SpiffeIdError::TrustDomainUppercase { ch: 'F', offset: 0 }
    );
    assert_eq!(
        TrustDomain::parse("a/b").unwrap_err(),
        SpiffeIdError::TrustDomainChar { ch: '/', offset: 1 }
    );
}

#[test]
fn from_path() {
    let td = TrustDomain::parse("a.org").unwrap();
    let id = SpiffeId::from_path(&td, "/spire/agent/tpm/abc").unwrap();
    assert_eq!(id.to_string(), "spiffe://a.org/spire/agent/tpm/abc");
    assert_eq!(SpiffeId::from_path(&td, "").unwrap(), td.id());
    assert_eq!(
        SpiffeId::from_path(&td, "x").unwrap_err(),
        SpiffeIdError::PathNotAbsolute { path: "x".into() }
    );
    assert_eq!(
        SpiffeId::from_path(&td, "/a/..").unwrap_err(),
        SpiffeIdError::DotSegment {
            segment: 2,
            value: "..".into()
        }
    );
    let long = format!("/{}", "x".repeat(2048));
    assert!(matches!(
        SpiffeId::from_path(&td, &long).unwrap_err(),
        SpiffeIdError::TooLong { .. }
    ));
}

#[test]
fn server_and_agent_ids() {
    let td = TrustDomain::parse("a.org").unwrap();
    assert_eq!(
        SpiffeId::server(&td).to_string(),
        "spiffe://a.org/spire/server"
    );
    assert_eq!(
        SpiffeId::server(&td),
        SpiffeId::parse("spiffe://a.org/spire/server").unwrap()
    );
    assert_eq!(
        SpiffeId::agent(&td, "tpm_ek", "ab12").unwrap().to_string(),
        "spiffe://a.org/spire/agent/tpm_ek/ab12"
    );
    assert!(matches!(
        SpiffeId::agent(&td, "tpm_ek", "a b"),
        Err(SpiffeIdError::PathChar { .. })
    ));
}

#[test]
fn agent_attestor() {
    let td = TrustDomain::parse("a.org").unwrap();
    let agent = SpiffeId::agent(&td, "join_token", "ab12").unwrap();
    assert_eq!(agent.agent_attestor(), Some("join_token"));
    let bare = SpiffeId::parse("spiffe://a.org/spire/agent/x509pop").unwrap();
    assert_eq!(bare.agent_attestor(), Some("x509pop"));
    for other in [
        "spiffe://a.org/spire/server",
        "spiffe://a.org/spire/agent",
        "spiffe://a.org/ns/prod/sa/web",
        "spiffe://a.org",
    ] {
        let id = SpiffeId::parse(other).unwrap();
        assert_eq!(id.agent_attestor(), None, "{other}");
    }
}
