use super::*;
use crate::store::postgres::{PasswordSource, PostgresTarget};

fn parse(s: &str) -> Result<ServerConfig, String> {
    ServerConfig::from_toml(s, Path::new("test.toml")).map_err(|e| e.to_string())
}

fn invalid_key(s: &str) -> &'static str {
    match ServerConfig::from_toml(s, Path::new("test.toml")) {
        Err(ConfigError::Invalid { source, .. }) => source.key,
        other => panic!("expected an invalid option, got {other:?}"),
    }
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
    assert_eq!(c.ca.signing, crate::ca::SigningMode::Hsm);
    assert_eq!(c.ca.memory_key_ttl, Duration::from_secs(3600));
    assert_eq!(c.admin.socket_path, PathBuf::from(DEFAULT_ADMIN_SOCKET));
    assert_eq!(c.admin.allowed_uids, vec![0]);
    assert_eq!(c.admin.socket_mode.bits(), 0o600);
    assert!(
        c.admin.admin_ids.is_empty(),
        "no admin over mTLS unless configured"
    );
    assert_eq!(
        c.node_api.listen.as_ref().map(ListenAddress::as_str),
        Some(DEFAULT_NODE_LISTEN)
    );
    assert_eq!(
        c.key_manager,
        KeyManagerConfig::Pkcs11(Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "ironroot".into(),
            pin: PinSource::Env("PIN".into()),
            sessions: 0,
        })
    );
    assert!(c.upstream.is_none());
    assert!(
        c.metrics_listen.is_none(),
        "no metrics endpoint unless asked for"
    );
}

#[test]
fn metrics_listen_is_off_when_empty_and_refused_when_not_host_port() {
    const BASE: &str = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n";
    let c = parse(&format!("{BASE}[metrics]\nlisten = \"\"\n")).unwrap();
    assert!(c.metrics_listen.is_none());
    let c = parse(&format!("{BASE}[metrics]\nlisten = \"127.0.0.1:9988\"\n")).unwrap();
    assert_eq!(
        c.metrics_listen.as_ref().map(ListenAddress::as_str),
        Some("127.0.0.1:9988")
    );
    assert_eq!(
        invalid_key(&format!("{BASE}[metrics]\nlisten = \"9988\"\n")),
        "metrics.listen"
    );
    let unknown = parse(&format!("{BASE}[metrics]\naddress = \"127.0.0.1:9988\"\n"));
    assert!(
        unknown.unwrap_err().contains("address"),
        "unknown keys are refused"
    );
}

#[test]
fn signing_mode_and_memory_key_ttl() {
    let base = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n[ca]\n";
    let c = parse(&format!(
        "{base}signing = \"memory\"\nmemory_key_ttl = \"10m\""
    ))
    .unwrap();
    assert_eq!(c.ca.signing, crate::ca::SigningMode::Memory);
    assert_eq!(c.ca.memory_key_ttl, Duration::from_secs(600));
    let e = parse(&format!("{base}signing = \"software\"")).unwrap_err();
    assert!(e.contains("signing") && e.contains("memory"), "{e}");
    // Replaced at half its life by a rotation check: room for a few checks is required.
    let e = parse(&format!(
        "{base}signing = \"memory\"\nmemory_key_ttl = \"30s\""
    ))
    .unwrap_err();
    assert!(
        e.contains("ca.memory_key_ttl")
            && e.contains("rotation_check_interval")
            && e.contains("40s"),
        "{e}"
    );
    parse(&format!(
        "{base}signing = \"memory\"\nmemory_key_ttl = \"30s\"\nrotation_check_interval = \"5s\""
    ))
    .unwrap();
    // In HSM mode the option is unused: a long check interval is not refused for it.
    parse(&format!("{base}rotation_check_interval = \"1h\"")).unwrap();
}

#[test]
fn missing_hsm_is_refused_unless_insecure() {
    let e = parse(r#"trust_domain = "example.org""#).unwrap_err();
    assert!(e.contains("must live in an HSM"), "{e}");
    let c = parse("trust_domain = \"example.org\"\ninsecure_software_keys = true").unwrap();
    assert_eq!(c.key_manager, KeyManagerConfig::InsecureSoftware);
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
fn admin_ids_are_spiffe_ids_of_the_trust_domain() {
    let c = parse(
        "trust_domain = \"example.org\"\ninsecure_software_keys = true\n\
         [admin]\nadmin_ids = [\"spiffe://example.org/ops\", \"spiffe://example.org/spire/agent/x/y\"]",
    )
    .unwrap();
    let ids: Vec<String> = c.admin.admin_ids.iter().map(|i| i.to_string()).collect();
    assert_eq!(
        ids,
        [
            "spiffe://example.org/ops",
            "spiffe://example.org/spire/agent/x/y"
        ]
    );
}

#[test]
fn refusals_name_the_key() {
    let insecure = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n";
    for (extra, key) in [
        ("[admin]\nsocket_mode = \"0999\"", "admin.socket_mode"),
        ("[admin]\nmax_request_bytes = 10", "admin.max_request_bytes"),
        ("[admin]\nadmin_ids = [\"not an id\"]", "admin.admin_ids"),
        (
            "[admin]\nadmin_ids = [\"spiffe://other.org/ops\"]",
            "admin.admin_ids",
        ),
        ("[ca]\nkey_label_prefix = \"a b\"", "ca.key_label_prefix"),
        (
            "[ca]\nrotation_check_interval = \"0s\"",
            "ca.rotation_check_interval",
        ),
        (
            "[ca]\ndefault_jwt_svid_ttl = \"0s\"",
            "ca.default_jwt_svid_ttl",
        ),
        ("[node_api]\nlisten = \"8081\"", "node_api.listen"),
        (
            "[upstream]\nkind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"up\"\n\
             key_label = \"root\"\ncert_file = \"/root.pem\"",
            "upstream",
        ),
    ] {
        assert_eq!(invalid_key(&format!("{insecure}{extra}")), key, "{extra}");
    }
    assert_eq!(
        invalid_key("trust_domain = \"example.org\""),
        "key_manager.pkcs11"
    );
}

#[test]
fn written_values_keep_their_meaning() {
    let c = parse(
        "trust_domain = \"example.org\"\ninsecure_software_keys = true\n\
         [admin]\nsocket_mode = \"0o660\"\n[node_api]\nlisten = \"\"",
    )
    .unwrap();
    assert_eq!(c.admin.socket_mode.bits(), 0o660);
    assert_eq!(c.admin.socket_mode.to_string(), "0660");
    assert!(
        c.node_api.listen.is_none(),
        "an empty listen disables the Node API"
    );
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
    match c.upstream {
        Some(UpstreamConfig::Pkcs11 { token, .. }) => {
            assert_eq!(token.pin, PinSource::File("/p".into()))
        }
        other => panic!("{other:?}"),
    }
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

#[test]
fn upstream_openbao_parses_with_its_defaults_and_refuses_what_is_unsafe() {
    let head = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n[upstream]\n\
                kind = \"openbao\"\n";
    let c = parse(&format!(
        "{head}address = \"https://bao:8200\"\ntoken_file = \"/t\"\n"
    ))
    .unwrap();
    match c.upstream {
        Some(UpstreamConfig::OpenBao(pki)) => {
            assert_eq!(pki.connection.mount, "pki");
            assert_eq!(pki.issuer, None);
            assert_eq!(pki.root_file, None, "no pin unless asked");
            assert_eq!(
                pki.connection.namespace, None,
                "the root namespace unless asked"
            );
            assert!(!pki.connection.insecure_http);
            assert_eq!(pki.connection.timeout, std::time::Duration::from_secs(10));
            assert_eq!(
                pki.connection.auth,
                ironroot_hsm::TransitAuth::Token(ironroot_hsm::SecretSource::File("/t".into()))
            );
        }
        other => panic!("{other:?}"),
    }
    let c = parse(&format!(
        "{head}address = \"https://bao:8200\"\nmount = \"pki_int\"\nissuer = \"up-2\"\n\
         root_file = \"/etc/ironroot/upstream-root.pem\"\nnamespace = \"org/team-a\"\n\
         [upstream.approle]\nrole_id = \"r\"\nsecret_id_file = \"/s\"\n"
    ))
    .unwrap();
    match c.upstream {
        Some(UpstreamConfig::OpenBao(pki)) => {
            assert_eq!(pki.connection.mount, "pki_int");
            assert_eq!(pki.issuer.as_deref(), Some("up-2"));
            assert_eq!(
                pki.root_file.as_deref(),
                Some(std::path::Path::new("/etc/ironroot/upstream-root.pem"))
            );
            assert_eq!(pki.connection.namespace.as_deref(), Some("org/team-a"));
        }
        other => panic!("{other:?}"),
    }
    for (body, needle) in [
        (
            "address = \"http://bao:8200\"\ntoken_file = \"/t\"\n",
            "upstream.address",
        ),
        (
            "address = \"https://bao:8200\"\n",
            "exactly one of token_file",
        ),
        (
            "address = \"https://bao:8200\"\ntoken_file = \"/t\"\nmount = \"../sys\"\n",
            "upstream.mount",
        ),
        (
            "address = \"https://bao:8200\"\ntoken_file = \"/t\"\nissuer = \"a/b\"\n",
            "upstream.issuer",
        ),
        (
            "address = \"https://bao:8200\"\ntoken_file = \"/t\"\nkey_prefix = \"x\"\n",
            "key_prefix",
        ),
        (
            "address = \"https://bao:8200\"\ntoken_file = \"/t\"\nrole = \"r\"\n",
            "role",
        ),
        (
            "address = \"https://bao:8200\"\ntoken_file = \"/t\"\nnamespace = \"a//b\"\n",
            "upstream.namespace",
        ),
        (
            "address = \"https://bao:8200\"\ntoken_file = \"/t\"\nnamespace = \"a\\nX-Evil: 1\"\n",
            "upstream.namespace",
        ),
    ] {
        let e = parse(&format!("{head}{body}")).unwrap_err().to_string();
        assert!(e.contains(needle), "{body}: {e}");
    }
}

#[test]
fn upstream_pkcs11_reads_every_token_key() {
    let c = parse(
        r#"trust_domain = "example.org"
        insecure_software_keys = true
        [upstream]
        kind = "pkcs11"
        module = "/m.so"
        token_label = "up"
        pin_env = "UP_PIN"
        sessions = 3
        key_label = "root"
        cert_file = "/root.pem"
        bundle_file = "/roots.pem""#,
    )
    .unwrap();
    match c.upstream {
        Some(UpstreamConfig::Pkcs11 {
            token,
            key_label,
            cert_file,
            bundle_file,
        }) => {
            assert_eq!(
                token,
                Pkcs11Config {
                    module: "/m.so".into(),
                    token_label: "up".into(),
                    pin: PinSource::Env("UP_PIN".into()),
                    sessions: 3,
                }
            );
            assert_eq!(key_label, "root");
            assert_eq!(cert_file, PathBuf::from("/root.pem"));
            assert_eq!(bundle_file, Some(PathBuf::from("/roots.pem")));
        }
        other => panic!("{other:?}"),
    }
}

/// `[node_attestors]` sections are attestors by name: an unknown one is refused naming it
/// and the known ones, a typo inside a section names the key; join_token stays enabled
/// unless its section says otherwise.
#[test]
fn node_attestor_sections_are_attestors_by_name() {
    let head = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n";
    let e = parse(&format!(
        "{head}[node_attestors.tpm_ek]\npolicies_dir = \"/p\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("node_attestors.tpm_ek"), "{e}");
    assert!(e.contains("unknown variant `tpm_ek`"), "{e}");
    assert!(e.contains("`tpm`") && e.contains("`join_token`"), "{e}");
    let e = parse(&format!(
        "{head}[node_attestors.tpm]\npolicies_dir = \"/p\"\npolicy_dir = \"/p\"\n"
    ))
    .unwrap_err();
    assert!(e.contains("node_attestors.tpm"), "{e}");
    assert!(e.contains("unknown field `policy_dir`"), "{e}");

    let c = parse(&format!(
        "{head}[node_attestors.tpm]\npolicies_dir = \"/p\"\n"
    ))
    .unwrap();
    assert!(c.node_attestors.join_token().enabled);
    assert_eq!(c.node_attestors.sections().len(), 2);
    let c = parse(&format!(
        "{head}[node_attestors.join_token]\nenabled = false\n"
    ))
    .unwrap();
    assert!(!c.node_attestors.join_token().enabled);
    assert!(c.node_attestors.tpm().is_none());
    assert_eq!(c.node_attestors.sections().len(), 1);
}

/// The flattened token keys do not open `[upstream]` to any key: a typo is refused, named.
#[test]
fn unknown_upstream_keys_are_refused() {
    let head = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n[upstream]\n";
    let pkcs11 = "kind = \"pkcs11\"\nmodule = \"/m.so\"\ntoken_label = \"up\"\n\
                  pin_env = \"P\"\nkey_label = \"root\"\ncert_file = \"/root.pem\"\n";
    let disk = "kind = \"disk\"\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\n";
    for (body, bad) in [
        (pkcs11, "pin_fil = \"/p\""),
        (pkcs11, "key_file = \"/k.pem\""),
        (pkcs11, "bogus = 1"),
        (disk, "module = \"/m.so\""),
        (disk, "bogus = 1"),
    ] {
        let key = bad.split(' ').next().unwrap_or_default();
        let e = parse(&format!("{head}{body}{bad}")).unwrap_err();
        assert!(e.contains(&format!("unknown field `{key}`")), "{bad}: {e}");
    }
    let e = parse(
        "trust_domain = \"example.org\"\n[key_manager.pkcs11]\nmodule = \"/m.so\"\n\
         token_label = \"t\"\npin_env = \"P\"\nkey_label = \"root\"",
    )
    .unwrap_err();
    assert!(e.contains("unknown field `key_label`"), "{e}");
}

#[test]
fn upstream_pkcs11_without_a_token_key_is_refused() {
    let e = parse(
        "trust_domain = \"example.org\"\ninsecure_software_keys = true\n[upstream]\n\
         kind = \"pkcs11\"\ntoken_label = \"up\"\npin_env = \"P\"\n\
         key_label = \"root\"\ncert_file = \"/root.pem\"",
    )
    .unwrap_err();
    assert!(e.contains("missing field `module`"), "{e}");
}

/// The commented `[upstream]` examples in conf/server.toml parse once uncommented.
#[test]
fn the_annotated_upstream_examples_parse() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/server.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut examples: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let uncommented = line.strip_prefix("# ").filter(|l| !l.is_empty());
        match (uncommented, current.as_mut()) {
            (Some("[upstream]"), _) => {
                examples.extend(current.take());
                current = Some("[upstream]\n".to_owned());
            }
            (Some(l), Some(c)) if l.contains(" = ") => {
                c.push_str(l);
                c.push('\n');
            }
            (_, Some(_)) => examples.extend(current.take()),
            _ => {}
        }
    }
    examples.extend(current);
    assert_eq!(examples.len(), 3, "{examples:?}");
    for example in examples {
        let c = parse(&format!(
            "trust_domain = \"example.org\"\ninsecure_software_keys = true\n{example}"
        ))
        .unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(c.upstream.is_some());
    }
}

/// conf/server.toml, the annotated example the docs point to, parses, and every default
/// it states is the default the server applies.
#[test]
fn the_annotated_example_parses_with_the_defaults_it_states() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/server.toml");
    let c = ServerConfig::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let defaults = parse("trust_domain = \"example.org\"\ninsecure_software_keys = true").unwrap();
    assert_eq!(c.data_dir, defaults.data_dir);
    assert_eq!(c.log_level, defaults.log_level);
    assert_eq!(c.admin.socket_path, defaults.admin.socket_path);
    assert_eq!(c.admin.socket_mode, defaults.admin.socket_mode);
    assert_eq!(c.admin.allowed_uids, defaults.admin.allowed_uids);
    assert_eq!(c.admin.max_request_bytes, defaults.admin.max_request_bytes);
    assert_eq!(c.admin.admin_ids, defaults.admin.admin_ids);
    assert_eq!(c.ca.key_algorithm, defaults.ca.key_algorithm);
    assert_eq!(c.ca.ca_ttl, defaults.ca.ca_ttl);
    assert_eq!(
        c.ca.default_x509_svid_ttl,
        defaults.ca.default_x509_svid_ttl
    );
    assert_eq!(c.ca.default_jwt_svid_ttl, defaults.ca.default_jwt_svid_ttl);
    assert_eq!(
        c.ca.rotation_check_interval,
        defaults.ca.rotation_check_interval
    );
    assert_eq!(c.ca.key_label_prefix, defaults.ca.key_label_prefix);
    assert_eq!(c.ca.subject_organization, defaults.ca.subject_organization);
    assert_eq!(c.ca.subject_country, defaults.ca.subject_country);
    assert_eq!(c.ca.signing, defaults.ca.signing);
    assert_eq!(c.ca.memory_key_ttl, defaults.ca.memory_key_ttl);
    assert_eq!(c.federation, defaults.federation);
    assert_eq!(c.federation.bundle_endpoint, None);
    assert_eq!(c.node_api.listen, defaults.node_api.listen);
    assert_eq!(c.node_api.agent_svid_ttl, defaults.node_api.agent_svid_ttl);
    assert_eq!(c.node_api.challenge_ttl, defaults.node_api.challenge_ttl);
    assert_eq!(
        c.node_api.max_message_bytes,
        defaults.node_api.max_message_bytes
    );
    assert_eq!(c.node_api.limits, defaults.node_api.limits);
    assert_eq!(c.node_api.limits, NodeLimitsConfig::default());
    assert!(c.node_attestors.join_token().enabled);
    let tpm = c
        .node_attestors
        .tpm()
        .expect("the example enables the TPM attestors");
    assert_eq!(tpm.ldevid_ttl, DEFAULT_LDEVID_TTL);
    assert!(tpm.require_tpm_agent_key);
    assert!(!tpm.devid_issuer);
    assert!(matches!(c.key_manager, KeyManagerConfig::Pkcs11(_)));
    assert_eq!(c.store, defaults.store);
    assert_eq!(c.store, StoreConfig::Sled(SledConfig::default()));
    assert_eq!(c.oidc, defaults.oidc);
    assert!(c.oidc.is_none(), "the example leaves OIDC discovery off");
}

const INSECURE: &str = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n";

#[test]
fn the_sled_page_cache_is_16_mib_unless_set_and_never_below_1_mib() {
    assert_eq!(
        parse(INSECURE).unwrap().store,
        StoreConfig::Sled(SledConfig {
            cache_bytes: 16 * 1024 * 1024
        })
    );
    let c = parse(&format!(
        "{INSECURE}[store]\nkind = \"sled\"\ncache_bytes = 67108864\n"
    ))
    .unwrap();
    assert_eq!(
        c.store,
        StoreConfig::Sled(SledConfig {
            cache_bytes: 64 * 1024 * 1024
        })
    );
    assert_eq!(
        invalid_key(&format!(
            "{INSECURE}[store]\nkind = \"sled\"\ncache_bytes = 1000\n"
        )),
        "store.cache_bytes"
    );
}

#[test]
fn the_store_is_sled_unless_postgres_is_configured() {
    assert_eq!(
        parse(INSECURE).unwrap().store,
        StoreConfig::Sled(SledConfig::default())
    );
    let c = parse(&format!(
        "{INSECURE}[store]\nkind = \"postgres\"\nurl = \"postgresql://ironroot@db/ironroot\"\n\
         password_env = \"PGPW\"\npool_size = 4\nwait_timeout = \"2s\""
    ))
    .unwrap();
    let StoreConfig::Postgres(pg) = c.store else {
        panic!("{:?}", c.store)
    };
    assert_eq!(
        pg.target,
        PostgresTarget::Url("postgresql://ironroot@db/ironroot".into())
    );
    assert_eq!(pg.password, Some(PasswordSource::Env("PGPW".into())));
    assert_eq!(pg.pool_size, 4);
    assert_eq!(pg.wait_timeout, Duration::from_secs(2));
    assert_eq!(pg.connect_timeout, DEFAULT_PG_CONNECT_TIMEOUT);
    assert_eq!(pg.statement_timeout, DEFAULT_PG_STATEMENT_TIMEOUT);
    assert_eq!(pg.changes_kept, DEFAULT_PG_CHANGES_KEPT);

    let c = parse(&format!(
        "{INSECURE}[store]\nkind = \"postgres\"\nhost = \"/run/postgresql\"\n\
         password_file = \"/etc/ironroot/pg.password\""
    ))
    .unwrap();
    let StoreConfig::Postgres(pg) = c.store else {
        panic!("{:?}", c.store)
    };
    assert_eq!(
        pg.target,
        PostgresTarget::Params {
            host: "/run/postgresql".into(),
            port: 5432,
            dbname: DEFAULT_PG_DBNAME.into(),
            user: DEFAULT_PG_USER.into(),
        }
    );
    assert_eq!(pg.pool_size, DEFAULT_PG_POOL_SIZE);
}

#[test]
fn store_refusals_name_the_key() {
    let pg = "[store]\nkind = \"postgres\"\n";
    for (extra, key) in [
        ("", "store.host"),
        ("url = \"postgresql://u:secret@db/x\"", "store.url"),
        ("url = \"host=db password=secret\"", "store.url"),
        ("url = \"postgresql://db/x\"\nhost = \"db\"", "store.url"),
        (
            "host = \"db\"\npassword_file = \"/p\"\npassword_env = \"P\"",
            "store.password_file",
        ),
        ("host = \"db\"\npool_size = 0", "store.pool_size"),
        (
            "host = \"db\"\nconnect_timeout = \"0s\"",
            "store.connect_timeout",
        ),
        ("host = \"db\"\nchanges_kept = 0", "store.changes_kept"),
        // TLS is asked for in one place, never without verifying the database.
        ("url = \"postgresql://db/x?sslmode=require\"", "store.url"),
        (
            "url = \"postgresql://db/x?sslmode=disable\"\ntls_ca_file = \"/ca.pem\"",
            "store.url",
        ),
        (
            "host = \"db\"\ntls_cert_file = \"/c.pem\"",
            "store.tls_ca_file",
        ),
        (
            "host = \"db\"\ntls_ca_file = \"/ca.pem\"\ntls_cert_file = \"/c.pem\"",
            "store.tls_cert_file",
        ),
        (
            "host = \"/run/postgresql\"\ntls_ca_file = \"/ca.pem\"",
            "store.tls_ca_file",
        ),
    ] {
        assert_eq!(
            invalid_key(&format!("{INSECURE}{pg}{extra}")),
            key,
            "{extra}"
        );
    }
    // A password inline is not even a key.
    let e = parse(&format!("{INSECURE}{pg}host = \"db\"\npassword = \"x\"")).unwrap_err();
    assert!(e.contains("password"), "{e}");
    let e = parse(&format!("{INSECURE}[store]\nkind = \"mysql\"")).unwrap_err();
    assert!(e.contains("mysql"), "{e}");
}

#[test]
fn node_api_limits_parse_and_default_the_rest() {
    let c = parse(&format!(
        "{INSECURE}[node_api.limits]\nattestations_per_ip_per_second = 0.5\n\
         attestation_burst = 3\nmax_connections = 7\nmax_jwt_audiences = 4"
    ))
    .unwrap();
    let l = &c.node_api.limits;
    assert_eq!(l.attestations_per_ip_per_second, 0.5);
    assert_eq!(l.attestation_burst, 3);
    assert_eq!(l.max_connections, 7);
    assert_eq!(l.max_jwt_audiences, 4);
    assert_eq!(
        l.signings_per_ip_per_second,
        limits::DEFAULT_SIGNINGS_PER_IP_PER_SECOND
    );
    assert_eq!(l.max_pending_nonces, limits::DEFAULT_MAX_PENDING_NONCES);
    let e = parse(&format!("{INSECURE}[node_api.limits]\nmax_conections = 7")).unwrap_err();
    assert!(e.contains("unknown field `max_conections`"), "{e}");
}

#[test]
fn node_api_limit_refusals_name_the_key() {
    for (line, key) in [
        (
            "attestations_per_ip_per_second = 0.0",
            "node_api.limits.attestations_per_ip_per_second",
        ),
        (
            "signings_per_ip_per_second = -1.0",
            "node_api.limits.signings_per_ip_per_second",
        ),
        (
            "signings_per_ip_per_second = nan",
            "node_api.limits.signings_per_ip_per_second",
        ),
        (
            "attestations_per_ip_per_second = inf",
            "node_api.limits.attestations_per_ip_per_second",
        ),
        ("attestation_burst = 0", "node_api.limits.attestation_burst"),
        ("max_connections = 0", "node_api.limits.max_connections"),
        (
            "max_streams_per_connection = 0",
            "node_api.limits.max_streams_per_connection",
        ),
        ("max_watch_streams = 0", "node_api.limits.max_watch_streams"),
        (
            "max_attestations_in_flight = 0",
            "node_api.limits.max_attestations_in_flight",
        ),
        (
            "max_pending_nonces = 0",
            "node_api.limits.max_pending_nonces",
        ),
        (
            "max_tracked_addresses = 0",
            "node_api.limits.max_tracked_addresses",
        ),
        ("max_jwt_audiences = 0", "node_api.limits.max_jwt_audiences"),
        (
            "max_x509_svids_per_batch = 99",
            "node_api.limits.max_x509_svids_per_batch",
        ),
        (
            "max_x509_svids_per_batch = 2000",
            "node_api.limits.signing_burst",
        ),
    ] {
        assert_eq!(
            invalid_key(&format!("{INSECURE}[node_api.limits]\n{line}")),
            key,
            "{line}"
        );
    }
    let e = parse(&format!("{INSECURE}[node_api.limits]\nsigning_burst = 500")).unwrap_err();
    assert!(
        e.contains("500 is below max_x509_svids_per_batch (1000)"),
        "{e}"
    );
}

/// The commented cloud attestor examples in conf/server.toml parse once uncommented, with
/// the defaults docs/configuration.md states; an unknown option is refused naming it.
#[cfg(feature = "cloud")]
#[test]
fn the_annotated_cloud_attestor_examples_parse_with_their_defaults() {
    use crate::config::NodeAttestorConfig;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/server.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let block: String = text
        .lines()
        .skip_while(|l| *l != "# [node_attestors.aws_iid]")
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with('[') || l.contains(" = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let c = parse(&format!(
        "trust_domain = \"example.org\"\ninsecure_software_keys = true\n{block}"
    ))
    .unwrap_or_else(|e| panic!("{block}: {e}"));
    let (mut aws, mut gcp, mut azure, mut imds) = (false, false, false, false);
    for s in c.node_attestors.sections() {
        match s {
            NodeAttestorConfig::AwsIid(a) => {
                aws = true;
                assert_eq!(a.region_certificates.len(), 1);
                assert_eq!(
                    a.account_allow_list.as_deref(),
                    Some(&["123456789012".to_owned()][..])
                );
            }
            NodeAttestorConfig::GcpIit(g) => {
                gcp = true;
                assert_eq!(g.audience, "spire-gcp-node-attestor");
                assert_eq!(g.clock_skew, Duration::from_secs(60));
                assert_eq!(
                    g.certs_url.as_deref(),
                    Some("https://www.googleapis.com/oauth2/v1/certs")
                );
                assert_eq!(g.keys_fetch_timeout, Duration::from_secs(10));
                assert_eq!(g.keys_max_age_floor, Duration::from_secs(300));
                assert_eq!(g.keys_max_age_ceiling, Duration::from_secs(86_400));
                assert_eq!(
                    g.keys_ca_file,
                    Path::new("/etc/ssl/certs/ca-certificates.crt")
                );
            }
            NodeAttestorConfig::AzureMsi(a) => {
                azure = true;
                assert_eq!(a.clock_skew, Duration::from_secs(300));
                assert!(a.jwks_url.is_some() && a.jwks_path.is_some());
                assert_eq!(a.keys_max_age_floor, Duration::from_secs(300));
                let t = &a.tenants["72f988bf-86f1-41af-91ab-2d7cd011db47"];
                assert_eq!(t.resource_id, "https://management.azure.com/");
            }
            NodeAttestorConfig::AzureImds(a) => {
                imds = true;
                assert_eq!(a.clock_skew, Duration::from_secs(300));
                assert_eq!(a.allowed_metadata_domains, ["metadata.azure.com"]);
                assert!(a.intermediate_certificates.is_some());
                let t = &a.tenants["contoso.onmicrosoft.com"];
                assert_eq!(t.tenant_id, "72f988bf-86f1-41af-91ab-2d7cd011db47");
                assert_eq!(t.restrict_to_subscriptions.len(), 1);
            }
            _ => {}
        }
    }
    assert!(aws && gcp && azure && imds, "{block}");
    let e = parse(
        "trust_domain = \"example.org\"\ninsecure_software_keys = true\n\
         [node_attestors.gcp_iit]\nprojectid_allow_list = [\"p\"]\ncerts_path = \"/x\"\n\
         projectid_allowlist = [\"q\"]\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("node_attestors.gcp_iit") && e.contains("projectid_allowlist"),
        "{e}"
    );
}

const OIDC_BASE: &str = "trust_domain = \"example.org\"\ninsecure_software_keys = true\n";

#[test]
fn oidc_is_off_by_default_and_its_issuer_alone_sets_the_jwt_iss() {
    let c = parse(OIDC_BASE).unwrap();
    assert!(c.oidc.is_none());
    assert_eq!(c.ca.jwt_issuer, None);
    let c = parse(&format!(
        "{OIDC_BASE}[oidc]\nissuer = \"https://oidc.example.org\""
    ))
    .unwrap();
    assert!(c.oidc.is_none(), "no listen: no endpoint");
    assert_eq!(c.ca.jwt_issuer.as_deref(), Some("https://oidc.example.org"));
}

#[test]
fn oidc_endpoint_takes_its_issuer_from_either_option() {
    let from_ca = parse(&format!(
        "{OIDC_BASE}[ca]\njwt_issuer = \"https://oidc.example.org\"\n\
         [oidc]\nlisten = \"127.0.0.1:8443\""
    ))
    .unwrap();
    let o = from_ca.oidc.unwrap();
    assert_eq!(o.issuer, "https://oidc.example.org");
    assert_eq!(o.jwks_uri, "https://oidc.example.org/keys");
    assert_eq!(o.listen.as_str(), "127.0.0.1:8443");
    assert_eq!(o.cache_max_age, Duration::from_secs(300));
    assert!(o.tls.is_none());
    let from_oidc = parse(&format!(
        "{OIDC_BASE}[oidc]\nlisten = \"127.0.0.1:8443\"\nissuer = \"https://o.example.org/td\"\n\
         jwks_uri = \"https://cdn.example.org/jwks.json\"\n\
         tls_cert_file = \"/etc/c.pem\"\ntls_key_file = \"/etc/k.pem\"\ncache_max_age = \"1m\""
    ))
    .unwrap();
    assert_eq!(
        from_oidc.ca.jwt_issuer.as_deref(),
        Some("https://o.example.org/td")
    );
    let o = from_oidc.oidc.unwrap();
    assert_eq!(o.jwks_uri, "https://cdn.example.org/jwks.json");
    assert_eq!(o.cache_max_age, Duration::from_secs(60));
    assert_eq!(
        o.tls,
        Some(OidcTls {
            cert_file: "/etc/c.pem".into(),
            key_file: "/etc/k.pem".into()
        })
    );
    let both_equal = parse(&format!(
        "{OIDC_BASE}[ca]\njwt_issuer = \"https://a.example\"\n[oidc]\nissuer = \"https://a.example\"\nlisten = \"127.0.0.1:1\""
    ))
    .unwrap();
    assert_eq!(both_equal.oidc.unwrap().issuer, "https://a.example");
}

#[test]
fn oidc_refusals_name_the_options() {
    let e = parse(&format!(
        "{OIDC_BASE}[ca]\njwt_issuer = \"https://a.example\"\n[oidc]\nissuer = \"https://b.example\""
    ))
    .unwrap_err();
    assert!(
        e.contains("oidc.issuer") && e.contains("ca.jwt_issuer") && e.contains("https://a.example"),
        "{e}"
    );
    let cases = [
        ("[oidc]\nlisten = \"127.0.0.1:8443\"", "oidc.issuer"),
        ("[oidc]\nlisten = \"8443\"\nissuer = \"https://a.example\"", "oidc.listen"),
        ("[oidc]\nissuer = \"https://a.example/\"", "oidc.issuer"),
        ("[oidc]\nissuer = \"oidc.example.org\"", "oidc.issuer"),
        ("[oidc]\nissuer = \"https://\"", "oidc.issuer"),
        ("[oidc]\nissuer = \"https://a.example/?x=1\"", "oidc.issuer"),
        (
            "[ca]\njwt_issuer = \"https://a.example/\"\n[oidc]\nlisten = \"127.0.0.1:1\"",
            "ca.jwt_issuer",
        ),
        (
            "[oidc]\nlisten = \"127.0.0.1:1\"\nissuer = \"https://a.example\"\njwks_uri = \"keys\"",
            "oidc.jwks_uri",
        ),
        (
            "[oidc]\nlisten = \"127.0.0.1:1\"\nissuer = \"https://a.example\"\ntls_cert_file = \"/c.pem\"",
            "oidc.tls_cert_file",
        ),
        (
            "[oidc]\nlisten = \"127.0.0.1:1\"\nissuer = \"https://a.example\"\ntls_key_file = \"/k.pem\"",
            "oidc.tls_cert_file",
        ),
        // The default ca_ttl is 24h: a cached JWKS must expire before 8h.
        (
            "[oidc]\nlisten = \"127.0.0.1:1\"\nissuer = \"https://a.example\"\ncache_max_age = \"8h\"",
            "oidc.cache_max_age",
        ),
    ];
    for (extra, key) in cases {
        assert_eq!(invalid_key(&format!("{OIDC_BASE}{extra}")), key, "{extra}");
    }
    let e = parse(&format!(
        "{OIDC_BASE}[oidc]\nissuer_url = \"https://a.example\""
    ))
    .unwrap_err();
    assert!(e.contains("unknown field `issuer_url`"), "{e}");
}

/// The commented `[key_manager.transit]` example in conf/server.toml parses once uncommented
/// (with one way to authenticate), with the defaults it states.
#[test]
fn the_annotated_transit_example_parses_with_its_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/server.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    let start = text
        .find("# [key_manager.transit]\n")
        .expect("transit example");
    let lines: Vec<&str> = text[start..]
        .lines()
        .map_while(|l| l.strip_prefix("# "))
        .collect();
    let strip = |l: &&str| l.split("  #").next().unwrap_or_default().to_owned();
    let (token, approle): (Vec<&str>, Vec<&str>) = {
        let at = lines
            .iter()
            .position(|l| *l == "[key_manager.transit.approle]")
            .expect("approle example");
        (lines[..at].to_vec(), lines[at..].to_vec())
    };
    let base = "trust_domain = \"example.org\"\n";
    let token_only: Vec<String> = token
        .iter()
        .filter(|l| !l.starts_with("token_env"))
        .map(strip)
        .collect();
    let c = parse(&format!("{base}{}", token_only.join("\n"))).unwrap();
    let KeyManagerConfig::Transit(t) = &c.key_manager else {
        panic!("{:?}", c.key_manager)
    };
    assert_eq!(t.mount, transit::DEFAULT_TRANSIT_MOUNT);
    assert_eq!(t.key_prefix, transit::DEFAULT_TRANSIT_KEY_PREFIX);
    assert_eq!(t.timeout, transit::DEFAULT_TRANSIT_TIMEOUT);
    assert_eq!(t.namespace.as_deref(), Some("team-a"));
    assert!(!t.insecure_http);
    assert_eq!(
        t.auth,
        ironroot_hsm::TransitAuth::Token(ironroot_hsm::SecretSource::File(
            "/etc/ironroot/bao-token".into()
        ))
    );

    let with_approle: Vec<String> = token
        .iter()
        .filter(|l| !l.starts_with("token_"))
        .chain(approle.iter())
        .map(strip)
        .collect();
    let c = parse(&format!("{base}{}", with_approle.join("\n"))).unwrap();
    let KeyManagerConfig::Transit(t) = &c.key_manager else {
        panic!("{:?}", c.key_manager)
    };
    assert!(
        matches!(&t.auth, ironroot_hsm::TransitAuth::AppRole { mount, .. } if mount == transit::DEFAULT_APPROLE_MOUNT)
    );
}

#[test]
fn transit_options_are_checked() {
    let base = "trust_domain = \"example.org\"\n[key_manager.transit]\n";
    let e = parse(&format!("{base}address = \"https://b:8200\"")).unwrap_err();
    assert!(e.contains("exactly one of token_file, token_env"), "{e}");
    let e = parse(&format!(
        "{base}address = \"https://b:8200\"\ntoken_file = \"/t\"\ntoken_env = \"T\""
    ))
    .unwrap_err();
    assert!(e.contains("exactly one"), "{e}");
    assert_eq!(
        invalid_key(&format!(
            "{base}address = \"http://b:8200\"\ntoken_env = \"T\""
        )),
        "key_manager.transit.address"
    );
    let c = parse(&format!(
        "{base}address = \"http://127.0.0.1:8200\"\ninsecure_http = true\ntoken_env = \"T\""
    ))
    .unwrap();
    assert!(matches!(c.key_manager, KeyManagerConfig::Transit(_)));
    assert_eq!(
        invalid_key(&format!(
            "{base}address = \"https://b\"\ntoken_env = \"T\"\ntimeout = \"100ms\""
        )),
        "key_manager.transit.timeout"
    );
    let e = parse(&format!(
        "{base}address = \"https://b\"\ntoken = \"inline\""
    ))
    .unwrap_err();
    assert!(e.contains("unknown field `token`"), "{e}");
    let both = "trust_domain = \"example.org\"\n[key_manager.pkcs11]\nmodule = \"/m\"\n\
                token_label = \"t\"\npin_env = \"P\"\n[key_manager.transit]\n\
                address = \"https://b\"\ntoken_env = \"T\"\n";
    assert_eq!(invalid_key(both), "key_manager");
}

#[test]
fn http1_listeners_take_a_per_address_cap_and_a_header_deadline() {
    let oidc = format!(
        "{OIDC_BASE}[oidc]\nlisten = \"127.0.0.1:8443\"\nissuer = \"https://o.example.org\"\n"
    );
    let endpoint =
        format!("{OIDC_BASE}[federation.bundle_endpoint]\nlisten = \"127.0.0.1:8444\"\n");
    let o = parse(&oidc).unwrap().oidc.unwrap().limits;
    let b = parse(&endpoint)
        .unwrap()
        .federation
        .bundle_endpoint
        .unwrap()
        .limits;
    for (l, section) in [(o, "oidc"), (b, "federation.bundle_endpoint")] {
        assert_eq!(l.section, section);
        assert_eq!(l.max_connections_per_address, 16);
        assert_eq!(l.header_read_timeout, Duration::from_secs(10));
    }
    let set = "max_connections_per_address = 4\nheader_read_timeout = \"3s\"\n";
    let o = parse(&format!("{oidc}{set}")).unwrap().oidc.unwrap().limits;
    assert_eq!(
        (o.max_connections_per_address, o.header_read_timeout),
        (4, Duration::from_secs(3))
    );
    for (base, prefix) in [(&oidc, "oidc"), (&endpoint, "federation.bundle_endpoint")] {
        for (bad, option) in [
            (
                "max_connections_per_address = 0",
                "max_connections_per_address",
            ),
            (
                "max_connections_per_address = 257",
                "max_connections_per_address",
            ),
            ("header_read_timeout = \"0s\"", "header_read_timeout"),
        ] {
            assert_eq!(
                invalid_key(&format!("{base}{bad}\n")),
                format!("{prefix}.{option}"),
                "{bad}"
            );
        }
    }
}
