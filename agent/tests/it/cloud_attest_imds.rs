//! `azure_imds` end to end (see `cloud_attest`): the server challenges with a nonce, the
//! agent library fetches IMDS's attested data over it from a stand-in (PKCS#7 SignedData
//! made by `openssl cms` with a stand-in Azure PKI: root, issuing CA, a
//! `*.metadata.azure.com` signer) and the real server process verifies it. The honest
//! case (agent ID, selector, the IMDS requests as sent), a replay refused (TOFU on the
//! vmId), a document over another nonce, a signer that does not chain, content altered
//! after signing, an expired document, a tenant and a subscription not allowed, a
//! malformed answer — each refusal named — and an agent process that attests once and
//! renews over mTLS.

use std::time::{Duration, SystemTime};

use ironroot_agent::attest::{attest_with, Hooks, KeySource};
use ironroot_agent::config::{AgentConfig, NodeAttestorKind};
use ironroot_cloud_attest::test_support::{azure_attested_content, unix, TestCert, Validity};
use ironroot_testkit::cloud_metadata::{
    AzureAttestedData, AzurePki, AZURE_ATTESTED_PATH, AZURE_INSTANCE_PATH, AZURE_ISSUER_URL,
};
use ironroot_testkit::server::NodeApiServer;
use tonic::Code;

use crate::attest_seam::assert_refused;
use crate::cloud_attest::{attest, start_server, write};
use crate::cloud_attest_agent::wait_for;
use crate::common::{agent_bin, agent_config, rt, AgentProcess};

const DOMAIN: &str = "contoso.onmicrosoft.com";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const SUB: &str = "11111111-2222-3333-4444-555555555555";

fn vm(n: u8) -> String {
    format!("02aab8a4-74ef-476e-8182-f6d2ba4166{n:02x}")
}

/// `[node_attestors.azure_imds]` trusting `pki`'s root and issuing CA, tenant DOMAIN
/// restricted to SUB.
fn section(files: &std::path::Path, pki: &AzurePki) -> String {
    let root = write(files, "azure-roots.pem", &pki.root.pem());
    let issuing = write(files, "azure-issuing.pem", &pki.intermediate.pem());
    format!(
        "[node_attestors.azure_imds]\nroot_certificates = \"{}\"\n\
         intermediate_certificates = \"{}\"\n\
         [node_attestors.azure_imds.tenants.\"{DOMAIN}\"]\ntenant_id = \"{TENANT}\"\n\
         restrict_to_subscriptions = [\"{SUB}\"]\n",
        root.display(),
        issuing.display()
    )
}

/// The content IMDS signs for `nonce`, created a minute ago, expiring in five.
fn content(nonce: &str, sub: &str, vm_id: &str) -> String {
    let t = unix(SystemTime::now());
    azure_attested_content(nonce, sub, vm_id, t - 60, t + 300)
}

fn start(test: &str, extra: &str) -> (tempfile::TempDir, AzureAttestedData, NodeApiServer) {
    let files = tempfile::tempdir().unwrap();
    let imds = AzureAttestedData::start();
    let env = start_server(test, &section(files.path(), &imds.pki), extra);
    (files, imds, env)
}

fn imds_agent(env: &NodeApiServer, imds: &AzureAttestedData) -> AgentConfig {
    let mut cfg = agent_config(env, "azure-imds-agent", NodeAttestorKind::AzureImds);
    cfg.azure_imds.tenant_domain = DOMAIN.into();
    cfg.azure_imds.metadata_endpoint = imds.server.base_url();
    cfg
}

#[test]
fn azure_imds_attests_with_a_document_signed_over_the_servers_nonce_once() {
    let (_files, imds, env) = start("cloud_attest_imds", "");
    let cfg = imds_agent(&env, &imds);

    // Honest: Azure's signer, the nonce the server sent.
    imds.serve(|pki, nonce| {
        AzureAttestedData::attested_body(&pki.signer, &content(nonce, SUB, &vm(1)))
    });
    let o = attest(&cfg).expect("honest azure_imds attestation");
    let agent_id = format!(
        "spiffe://example.org/spire/agent/azure_imds/{TENANT}/{SUB}/{}",
        vm(1)
    );
    assert_eq!(o.spiffe_id, agent_id);
    assert_eq!(o.selectors, [format!("azure_imds:subscription-id:{SUB}")]);
    // SPIRE's requests: the attested document over the nonce, then the instance metadata.
    let seen = imds.server.requests();
    assert_eq!(
        seen.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(),
        [AZURE_ATTESTED_PATH, AZURE_INSTANCE_PATH]
    );
    assert!(seen.iter().all(|r| r.headers["metadata"] == "true"));
    let nonce = seen[0]
        .query
        .strip_prefix("api-version=2025-04-07&nonce=")
        .unwrap_or_else(|| panic!("{}", seen[0].query))
        .to_owned();
    assert_eq!(nonce.len(), 32, "{nonce}");
    assert!(nonce.bytes().all(|b| b.is_ascii_alphanumeric()), "{nonce}");
    assert_eq!(seen[1].query, "api-version=2025-04-07&format=json");

    // The same VM again (a replay, or the VM without eviction): trust on first use.
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: already attested:", &agent_id],
    );
    // Evicted, it attests again, over a new nonce.
    env.server
        .cli_ok(&["agent", "evict", "--spiffe-id", &agent_id]);
    attest(&cfg).expect("attests again after evict");
    let second = &imds.server.requests()[4];
    assert!(!second.query.ends_with(&nonce), "a nonce was sent twice");
}

#[test]
fn azure_imds_refuses_replayed_forged_altered_expired_and_foreign_documents_by_name() {
    let (_files, imds, env) = start("cloud_attest_imds_refusals", "");
    let mut cfg = imds_agent(&env, &imds);
    let denied = |cfg: &AgentConfig, words: &[&str]| {
        assert_refused(attest(cfg), Code::PermissionDenied, words)
    };

    // A genuine document over a nonce of an earlier exchange (captured, replayed).
    let old = AzureAttestedData::attested_body(
        &imds.pki.signer,
        &content("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", SUB, &vm(2)),
    );
    imds.serve(move |_, _| old.clone());
    denied(
        &cfg,
        &[
            "attestation rejected: nonce: azure_imds signed nonce \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\" is not the challenge sent",
            "replayed",
        ],
    );

    // Signed by a certificate of the same names from a CA the server does not trust.
    let forged_root = TestCert::ca(
        "DigiCert Global Root G2 (test)",
        None,
        Validity::around_now(30),
    );
    let forger = TestCert::tls_leaf(
        0x0033_0000_0001,
        "metadata.azure.com",
        &["metadata.azure.com", "eastus.metadata.azure.com"],
        Some(AZURE_ISSUER_URL),
        &forged_root,
        Validity::around_now(30),
    );
    imds.serve(move |_, nonce| {
        AzureAttestedData::attested_body(&forger, &content(nonce, SUB, &vm(3)))
    });
    denied(
        &cfg,
        &["attestation rejected: signer certificate chain: azure_imds signer's certificate does not chain to a configured root"],
    );

    // Azure's signature over one VM, the content then altered to name another.
    imds.serve(|pki, nonce| {
        let signed = content(nonce, SUB, &vm(4));
        let mut der = AzureAttestedData::sign(&pki.signer, &signed);
        let (from, to) = (vm(4), vm(5));
        let at = der
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .expect("the content is in the SignedData");
        der[at..at + to.len()].copy_from_slice(to.as_bytes());
        AzureAttestedData::attested_body_der(&der)
    });
    denied(
        &cfg,
        &["attestation rejected: signature: azure_imds signature refused"],
    );

    // Expired half an hour ago (beyond the five minutes of skew).
    imds.serve(|pki, nonce| {
        let t = unix(SystemTime::now());
        let c = azure_attested_content(nonce, SUB, &vm(6), t - 3600, t - 1800);
        AzureAttestedData::attested_body(&pki.signer, &c)
    });
    denied(
        &cfg,
        &["attestation rejected: document lifetime: azure_imds document expired"],
    );

    // A subscription the tenant does not allow, though Azure signed it.
    imds.serve(|pki, nonce| {
        let c = content(nonce, "99999999-2222-3333-4444-555555555555", &vm(7));
        AzureAttestedData::attested_body(&pki.signer, &c)
    });
    denied(
        &cfg,
        &["attestation rejected: restrict_to_subscriptions: azure_imds subscription \"99999999-2222-3333-4444-555555555555\""],
    );

    // A tenant domain the server does not have.
    imds.serve(|pki, nonce| {
        AzureAttestedData::attested_body(&pki.signer, &content(nonce, SUB, &vm(8)))
    });
    cfg.azure_imds.tenant_domain = "fabrikam.onmicrosoft.com".into();
    denied(
        &cfg,
        &["attestation rejected: tenants: azure_imds tenant domain \"fabrikam.onmicrosoft.com\" is not in tenants"],
    );
    cfg.azure_imds.tenant_domain = DOMAIN.into();

    // An answer that is not SPIRE's JSON, and an empty one.
    for (payload, words) in [
        (
            b"{\"document\": 7".to_vec(),
            "the challenge response payload does not decode as attestor 'azure_imds' defines it",
        ),
        (Vec::new(), "was sent an empty challenge response payload"),
    ] {
        let mut edit = |p: &mut Vec<u8>| *p = payload.clone();
        let hooks = Hooks {
            challenge_response: Some(&mut edit),
            ..Hooks::default()
        };
        assert_refused(
            rt().block_on(attest_with(&cfg, &KeySource::Software, hooks)),
            Code::InvalidArgument,
            &[words],
        );
    }

    // None of those attested: the honest document of the same VM still does.
    imds.serve(|pki, nonce| {
        AzureAttestedData::attested_body(&pki.signer, &content(nonce, SUB, &vm(8)))
    });
    attest(&cfg).expect("honest after the refusals");

    // The agent's own error names what it could not fetch.
    imds.server.route(
        "GET",
        AZURE_ATTESTED_PATH,
        ironroot_testkit::cloud_metadata::Reply {
            status: 400,
            body: "Bad request".into(),
            require: Vec::new(),
        },
    );
    let e = attest(&cfg).expect_err("no document").to_string();
    assert!(e.contains("HTTP 400 for the attested data document"), "{e}");
}

#[test]
fn an_azure_imds_agent_attests_once_and_renews_over_mtls() {
    let (_files, imds, env) = start("cloud_attest_imds_agent", "agent_svid_ttl = \"6s\"\n");
    imds.serve(|pki, nonce| {
        AzureAttestedData::attested_body(&pki.signer, &content(nonce, SUB, &vm(9)))
    });
    let dir = env.dir.path().join("azure-imds-agent");
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("api.sock");
    let conf = dir.join("agent.toml");
    std::fs::write(
        &conf,
        format!(
            "trust_domain = \"example.org\"\nserver_address = \"{}\"\ntrust_bundle_path = \"{}\"\n\
             data_dir = \"{}\"\nnode_attestor = \"azure_imds\"\nlog_level = \"debug\"\n\n\
             [azure_imds]\ntenant_domain = \"{DOMAIN}\"\nmetadata_endpoint = \"{}\"\n\
             timeout = \"2s\"\n\n[workload_api]\nsocket_path = \"{}\"\n",
            env.address,
            env.bundle.display(),
            dir.join("data").display(),
            imds.server.base_url(),
            socket.display()
        ),
    )
    .unwrap();
    let log = ironroot_testkit::test_log_dir("cloud_attest_imds_agent").join("agent.log");
    let logf = std::fs::File::create(&log).unwrap();
    let child = std::process::Command::new(agent_bin())
        .args(["run", "-c"])
        .arg(&conf)
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    let _agent = AgentProcess {
        child,
        socket,
        dir: dir.clone(),
    };
    let svid_file = dir.join("data/agent_svid.pem");
    wait_for("no agent SVID", &log, Duration::from_secs(20), || {
        svid_file.exists()
    });
    let first = std::fs::read(&svid_file).unwrap();
    wait_for(
        "agent SVID not renewed",
        &log,
        Duration::from_secs(15),
        || std::fs::read(&svid_file).is_ok_and(|b| b != first),
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        !text.contains("already attested"),
        "it must renew, not attest again:\n{text}"
    );
    // One attestation (document + instance metadata): the renewal fetched nothing.
    assert_eq!(
        imds.server.requests().len(),
        2,
        "{:?}",
        imds.server.requests()
    );
}
