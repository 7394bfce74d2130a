use super::*;

fn parse(s: &str) -> Result<ServerConfig, String> {
    let c: ServerConfig = toml::from_str(s).map_err(|e| e.to_string())?;
    c.validate()?;
    Ok(c)
}

#[test]
fn minimal_config_gets_documented_defaults() {
    let c = parse(
        r#"trust_domain = "example.org"
        [key_manager.pkcs11]
        module = "/usr/lib/softhsm/libsofthsm2.so"
        token_label = "ironroot"
        pin_env = "PIN""#,
    )
    .unwrap();
    assert_eq!(c.ca.ca_ttl, Duration::from_secs(86400));
    assert_eq!(c.ca.default_x509_svid_ttl, Duration::from_secs(3600));
    assert_eq!(c.ca.default_jwt_svid_ttl, Duration::from_secs(300));
    assert_eq!(c.ca.key_algorithm, KeyAlgorithm::EcP256);
    assert_eq!(c.admin.socket_path, PathBuf::from(DEFAULT_ADMIN_SOCKET));
    assert_eq!(c.admin.allowed_uids, vec![0]);
    assert!(!c.insecure_software_keys);
    assert!(c.upstream.is_none());
}

#[test]
fn missing_hsm_is_refused_unless_insecure() {
    let e = parse(r#"trust_domain = "example.org""#).unwrap_err();
    assert!(e.contains("must live in an HSM"), "{e}");
    parse("trust_domain = \"example.org\"\ninsecure_software_keys = true").unwrap();
}

#[test]
fn bad_values_are_named() {
    let e = parse("trust_domain = \"Example.org\"\ninsecure_software_keys = true").unwrap_err();
    assert!(e.contains("trust_domain"), "{e}");
    let e = parse(
        "trust_domain = \"example.org\"\ninsecure_software_keys = true\n[ca]\nca_ttl = \"2s\"",
    )
    .unwrap_err();
    assert!(e.contains("ca_ttl"), "{e}");
    let e = parse("trust_domain = \"example.org\"\nbogus = 1").unwrap_err();
    assert!(e.contains("bogus"), "{e}");
    let e = parse(
        r#"trust_domain = "example.org"
        [key_manager.pkcs11]
        module = "/x.so"
        token_label = "t""#,
    )
    .unwrap_err();
    assert!(e.contains("pin_file or pin_env"), "{e}");
}

#[test]
fn upstream_variants_parse() {
    let c = parse(
        r#"trust_domain = "example.org"
        insecure_software_keys = true
        [upstream]
        kind = "pkcs11"
        module = "/m.so"
        token_label = "up"
        pin_file = "/p"
        key_label = "root"
        cert_file = "/root.pem""#,
    )
    .unwrap();
    assert!(matches!(c.upstream, Some(UpstreamConfig::Pkcs11 { .. })));
    let c = parse(
        r#"trust_domain = "example.org"
        insecure_software_keys = true
        [upstream]
        kind = "disk"
        cert_file = "/c.pem"
        key_file = "/k.pem""#,
    )
    .unwrap();
    assert!(matches!(c.upstream, Some(UpstreamConfig::Disk { .. })));
}
