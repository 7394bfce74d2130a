use super::*;

#[test]
fn config_defaults_and_unknown_fields() {
    let c: UnixAttestorConfig = toml::from_str("").expect("empty config");
    assert_eq!(c, UnixAttestorConfig::default());
    assert_eq!(c.sha256_max_bytes, 64 * 1024 * 1024);
    let c: UnixAttestorConfig = toml::from_str("sha256_max_bytes = 10").expect("config");
    assert_eq!(c.sha256_max_bytes, 10);
    assert!(toml::from_str::<UnixAttestorConfig>("sha256_max = 10").is_err());
}
