use super::*;

fn load(text: &str) -> anyhow::Result<AgentConfig> {
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
    assert!(e.to_string().contains("needs a TPM node attestor"), "{e}");
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
