use super::*;

fn load(text: &str) -> Result<AgentConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("agent.toml");
    std::fs::write(&p, text).unwrap();
    AgentConfig::load(&p)
}

const BASE: &str = "trust_domain = \"example.org\"\nserver_address = \"127.0.0.1:8081\"\n\
                    trust_bundle_path = \"/etc/ironroot/bundle.pem\"\n";

#[test]
fn the_agent_key_is_in_the_tpm_by_default_for_tpm_attestors() {
    let cfg = load(BASE).unwrap();
    assert_eq!(cfg.tpm.agent_key, None);
    assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Tpm);
    let cfg = load(&format!("{BASE}[tpm]\nagent_key = \"software\"\n")).unwrap();
    assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Software);
    let cfg = load(&format!("{BASE}[tpm]\nagent_key = \"tpm\"\n")).unwrap();
    assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Tpm);
}

#[test]
fn join_token_agents_keep_a_software_key_and_refuse_a_tpm_one() {
    let jt = format!("{BASE}node_attestor = \"join_token\"\njoin_token = \"t\"\n");
    assert_eq!(
        load(&jt).unwrap().agent_key_storage(),
        AgentKeyStorage::Software
    );
    let e = load(&format!("{jt}[tpm]\nagent_key = \"tpm\"\n")).unwrap_err();
    assert!(
        matches!(&e, ConfigError::InFile { error, .. } if matches!(**error, ConfigError::TpmKeyWithoutTpmAttestor)),
        "{e}"
    );
}

#[test]
fn an_unknown_agent_key_value_is_an_error_naming_the_choices() {
    let e = load(&format!("{BASE}[tpm]\nagent_key = \"hsm\"\n")).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("agent_key") && text.contains("tpm") && text.contains("software"),
        "{text}"
    );
}

#[test]
fn values_are_typed_at_load_and_a_bad_one_names_its_key() {
    let cfg = load(&format!(
        "{BASE}node_attestor = \"join_token\"\njoin_token = \"t\"\n\
         [tpm]\nek = \"ecc\"\n[workload_api]\nsocket_mode = \"0660\"\n"
    ))
    .unwrap();
    assert_eq!(cfg.trust_domain.as_str(), "example.org");
    assert_eq!(cfg.tpm.ek, EkType::Ecc);
    assert_eq!(cfg.workload_api.socket_mode.bits(), 0o660);
    assert_eq!(
        cfg.node_attestor().unwrap(),
        NodeAttestor::JoinToken { token: "t" }
    );
    for (bad, key) in [
        ("node_attestor = \"tpm\"\n", "node_attestor"),
        ("[tpm]\nek = \"dsa\"\n", "ek"),
        ("[workload_api]\nsocket_mode = \"rw\"\n", "socket_mode"),
    ] {
        let e = load(&format!("{BASE}{bad}")).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
    let e = load(&BASE.replace("127.0.0.1:8081", "8081")).unwrap_err();
    assert!(
        e.to_string()
            .contains("server address \"8081\" is not host:port"),
        "{e}"
    );
    let e = load(&BASE.replace("example.org", "Example.org")).unwrap_err();
    assert!(e.to_string().contains("trust_domain"), "{e}");
}

#[test]
fn missing_attestor_options_are_named() {
    let missing = |text: &str| match load(&format!("{BASE}{text}")).unwrap_err() {
        ConfigError::InFile { error, .. } => *error,
        other => panic!("{other}"),
    };
    assert!(matches!(
        missing("node_attestor = \"join_token\"\n"),
        ConfigError::MissingJoinToken
    ));
    // tpm_devid without a path reads the LDevID an enrollment wrote to the data dir
    let cfg = load(&format!("{BASE}node_attestor = \"tpm_devid\"\n")).unwrap();
    assert_eq!(
        cfg.node_attestor().unwrap(),
        NodeAttestor::TpmDevId {
            certificate_path: cfg.data_dir.join("devid.pem")
        }
    );
    let cfg = load(&format!(
        "{BASE}node_attestor = \"tpm_devid\"\n[tpm]\ndevid_certificate_path = \"/etc/devid.pem\"\n"
    ))
    .unwrap();
    assert_eq!(
        cfg.node_attestor().unwrap(),
        NodeAttestor::TpmDevId {
            certificate_path: "/etc/devid.pem".into()
        }
    );
}

/// conf/agent.toml is the annotated reference: it must load, and hold the defaults.
#[test]
fn the_annotated_example_config_loads_with_the_defaults() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../conf/agent.toml");
    let cfg = AgentConfig::load(&path).unwrap();
    assert_eq!(cfg.data_dir, Path::new(DEFAULT_DATA_DIR));
    assert_eq!(cfg.node_attestor, NodeAttestorKind::TpmEk);
    assert_eq!(cfg.log_level, DEFAULT_LOG_LEVEL);
    assert_eq!(cfg.tpm.tcti, DEFAULT_TCTI);
    assert_eq!(cfg.tpm.event_log_path, Path::new(DEFAULT_EVENT_LOG));
    assert_eq!(cfg.tpm.ek, EkType::Rsa);
    assert_eq!(cfg.tpm.ak_handle, DEFAULT_AK_HANDLE);
    assert_eq!(cfg.tpm.devid_handle, DEFAULT_DEVID_HANDLE);
    assert_eq!(
        cfg.workload_api.socket_path,
        Path::new(DEFAULT_WORKLOAD_SOCKET)
    );
    assert_eq!(cfg.workload_api.socket_mode, DEFAULT_WORKLOAD_SOCKET_MODE);
    assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Tpm);
    assert!(cfg.sds.enabled);
    assert_eq!(
        cfg.metrics.address(),
        None,
        "no metrics endpoint unless asked for"
    );
    assert_eq!(cfg.aws_iid, Default::default());
    assert_eq!(cfg.gcp_iit, Default::default());
    assert_eq!(cfg.azure_msi, Default::default());
    assert_eq!(
        cfg.aws_iid.ec2_metadata_endpoint,
        super::cloud::DEFAULT_AWS_METADATA_ENDPOINT
    );
}

/// The cloud attestors: their sections parse in every build; one is usable only in an agent
/// built with the `cloud` feature (else refused at load, naming the feature); their keys are
/// software; metadata URLs must be plain http with a host.
#[test]
fn cloud_attestors_are_refused_by_name_without_the_feature_and_checked_at_load() {
    let aws = load(&format!(
        "{BASE}node_attestor = \"aws_iid\"\n[aws_iid]\nec2_metadata_endpoint = \"http://127.0.0.1:9/latest\"\ntimeout = \"2s\"\n"
    ));
    if cfg!(feature = "cloud") {
        let cfg = aws.unwrap();
        assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Software);
        assert_eq!(cfg.aws_iid.timeout, std::time::Duration::from_secs(2));
        assert!(!cfg.node_attestor.uses_tpm());
    } else {
        let e = format!("{:#}", aws.unwrap_err());
        assert!(
            e.contains("needs ironroot-agent built with the 'cloud' cargo feature"),
            "{e}"
        );
    }
    for (section, bad) in [
        (
            "[aws_iid]\nec2_metadata_endpoint = \"https://169.254.169.254\"",
            "must start with http://",
        ),
        (
            "[azure_msi]\nmetadata_endpoint = \"http://\"",
            "names no host",
        ),
        (
            "[gcp_iit]\nidentity_token_host = \"http://metadata\"",
            "no scheme, no path",
        ),
        (
            "[azure_imds]\nmetadata_endpoint = \"169.254.169.254\"",
            "azure_imds.metadata_endpoint",
        ),
    ] {
        let e = load(&format!(
            "{BASE}node_attestor = \"join_token\"\njoin_token = \"t\"\n{section}\n"
        ))
        .unwrap_err();
        assert!(format!("{e:#}").contains(bad), "{section}: {e:#}");
    }
}

/// azure_imds needs the tenant domain its answers name; refused at load without it.
#[cfg(feature = "cloud")]
#[test]
fn azure_imds_needs_a_tenant_domain() {
    let e = load(&format!("{BASE}node_attestor = \"azure_imds\"\n")).unwrap_err();
    assert!(
        format!("{e:#}").contains("needs [azure_imds] tenant_domain"),
        "{e:#}"
    );
    let cfg = load(&format!(
        "{BASE}node_attestor = \"azure_imds\"\n[azure_imds]\ntenant_domain = \"contoso.onmicrosoft.com\"\n"
    ))
    .unwrap();
    assert_eq!(cfg.azure_imds.timeout, std::time::Duration::from_secs(5));
    assert_eq!(cfg.agent_key_storage(), AgentKeyStorage::Software);
}

/// `server_addresses` lists several servers; `server_address` names one; a config has
/// exactly one of them, with at least one address, each valid and listed once.
#[test]
fn servers_come_from_one_of_server_address_and_server_addresses() {
    let rest = "trust_domain = \"example.org\"\ntrust_bundle_path = \"/b.pem\"\n";
    let listed = load(&format!(
        "{rest}server_addresses = [\"a.example.org:8081\", \"10.0.0.2:8081\", \"[::1]:8081\"]\n"
    ))
    .unwrap();
    let servers: Vec<&str> = listed.servers().iter().map(|s| &**s).collect();
    assert_eq!(
        servers,
        ["a.example.org:8081", "10.0.0.2:8081", "[::1]:8081"]
    );
    let one = load(BASE).unwrap();
    let servers: Vec<&str> = one.servers().iter().map(|s| &**s).collect();
    assert_eq!(servers, ["127.0.0.1:8081"]);

    let refused = |text: String| match load(&text).unwrap_err() {
        ConfigError::InFile { error, .. } => *error,
        other => panic!("{other}"),
    };
    let e = refused(format!("{BASE}server_addresses = [\"b:8081\"]\n"));
    assert!(matches!(e, ConfigError::ServerAddressTwice), "{e}");
    assert!(e.to_string().contains("keep one"), "{e}");
    let e = refused(rest.to_owned());
    assert!(matches!(e, ConfigError::NoServerAddress), "{e}");
    assert!(e.to_string().contains("server_addresses = ["), "{e}");
    let e = refused(format!("{rest}server_addresses = []\n"));
    assert!(matches!(e, ConfigError::EmptyServerAddresses), "{e}");
    let e = refused(format!(
        "{rest}server_addresses = [\"a:1\", \"b:2\", \"a:1\"]\n"
    ));
    assert!(
        matches!(&e, ConfigError::DuplicateServerAddress(a) if a == "a:1"),
        "{e}"
    );
    assert_eq!(e.to_string(), "server_addresses lists a:1 twice");

    // A bad item is refused by the parser, naming the key and the value.
    let e = load(&format!("{rest}server_addresses = [\"a:1\", \"b\"]\n"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("server_addresses") && e.contains("server address \"b\" is not host:port"),
        "{e}"
    );
}

#[test]
fn metrics_listen_is_off_when_empty_and_refused_when_not_host_port() {
    assert_eq!(load(BASE).unwrap().metrics.address(), None);
    let on = load(&format!("{BASE}[metrics]\nlisten = \"127.0.0.1:9988\"\n")).unwrap();
    assert_eq!(on.metrics.address(), Some("127.0.0.1:9988"));
    let off = load(&format!("{BASE}[metrics]\nlisten = \"\"\n")).unwrap();
    assert_eq!(off.metrics.address(), None);
    let bad = load(&format!("{BASE}[metrics]\nlisten = \"9988\"\n")).unwrap_err();
    assert!(bad.to_string().contains("metrics.listen"), "{bad}");
    let unknown = load(&format!("{BASE}[metrics]\nport = 9988\n")).unwrap_err();
    assert!(unknown.to_string().contains("port"), "{unknown}");
}
