//! The cloud node attestors end to end: the agent library fetches its evidence from a
//! stand-in metadata service (`ironroot_testkit::cloud_metadata`, documents signed the real
//! way with test keys) and attests to the real server process. For `aws_iid`: the honest
//! case (agent ID, prefixed selectors, the IMDSv2 requests as sent), trust on first use
//! (a replay refused by name, also after a server restart; accepted again after `agent
//! evict`; a banned node stays refused), a wrong signer, an unsigned copy that differs, an
//! account not allowed, a malformed payload, and the agent's own errors naming what it
//! could not fetch. The JWT attestors are in `cloud_attest_jwt`; the agent process in
//! `cloud_attest_agent`.

use std::path::{Path, PathBuf};

use ironroot_agent::attest::{attest_with, AttestError, AttestOutcome, Hooks, KeySource};
use ironroot_agent::config::{AgentConfig, NodeAttestorKind};
use ironroot_api::node as pb;
use ironroot_cloud_attest::test_support::{aws_document, TestCert, Validity};
use ironroot_testkit::cloud_metadata::{AwsImds, AWS_IMDS_TOKEN};
use ironroot_testkit::server::{NodeApiServer, ServerProcess};
use tonic::Code;

use crate::attest_seam::assert_refused;
use crate::common::{agent_config, rt};

/// A server with the TPM section `NodeApiServer` always writes, then `sections` (further
/// `[node_attestors.<name>]` sections).
pub(crate) fn start_server(test: &str, sections: &str, node_api_extra: &str) -> NodeApiServer {
    NodeApiServer::start(test, &format!("\n{sections}"), &[], node_api_extra)
}

/// One attestation with the library, a software key.
pub(crate) fn attest(cfg: &AgentConfig) -> Result<AttestOutcome, AttestError> {
    rt().block_on(attest_with(cfg, &KeySource::Software, Hooks::default()))
}

/// One attestation with `edit` applied to the first message.
pub(crate) fn attest_edited(
    cfg: &AgentConfig,
    edit: &mut (dyn FnMut(&mut pb::AttestParams) + Send),
) -> Result<AttestOutcome, AttestError> {
    let hooks = Hooks {
        params: Some(edit),
        ..Hooks::default()
    };
    rt().block_on(attest_with(cfg, &KeySource::Software, hooks))
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    p
}

pub(crate) const ACCOUNT: &str = "123456789012";
const REGION: &str = "us-west-2";

/// `[node_attestors.aws_iid]` trusting `cert` for us-west-2, account allow-list ACCOUNT.
pub(crate) fn aws_section(files: &Path, cert: &TestCert) -> String {
    let pem = write(files, "aws-us-west-2.pem", &cert.pem());
    format!(
        "[node_attestors.aws_iid]\naccount_allow_list = [\"{ACCOUNT}\"]\n\
         [node_attestors.aws_iid.region_certificates]\n\"{REGION}\" = \"{}\"\n",
        pem.display()
    )
}

fn restart(env: &mut NodeApiServer, test: &str) {
    env.server.stop();
    let conf = env.server.conf.clone();
    env.server = ServerProcess::start(test, &conf, &env.hsm, &env.dir.path().join("admin.sock"));
}

#[test]
fn aws_iid_attests_once_per_instance_until_evicted_and_refuses_forgeries_by_name() {
    let files = tempfile::tempdir().unwrap();
    let aws = AwsImds::region_certificate();
    let test = "cloud_attest_aws";
    let mut env = start_server(test, &aws_section(files.path(), &aws), "");
    let imds = AwsImds::start();
    let mut cfg = agent_config(&env, "aws-agent", NodeAttestorKind::AwsIid);
    cfg.aws_iid.ec2_metadata_endpoint = format!("{}/latest", imds.server.base_url());

    // Honest: the identity from the signed document, selectors prefixed by the server.
    let doc = aws_document(ACCOUNT, REGION, "i-0b22a22eec53b9321");
    imds.serve(&doc, &doc, &aws);
    let o = attest(&cfg).expect("honest aws_iid attestation");
    let agent_id =
        "spiffe://example.org/spire/agent/aws_iid/123456789012/us-west-2/i-0b22a22eec53b9321";
    assert_eq!(o.spiffe_id, agent_id);
    assert_eq!(
        o.selectors,
        [
            "aws_iid:account_id:123456789012",
            "aws_iid:az:us-west-2b",
            "aws_iid:image:id:ami-5fb8c835",
            "aws_iid:instance:id:i-0b22a22eec53b9321",
            "aws_iid:region:us-west-2",
        ]
    );
    // IMDSv2 as SPIRE's agent: the token PUT, then three GETs carrying it.
    let seen = imds.server.requests();
    let shape: Vec<(String, String)> = seen
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    assert_eq!(
        shape,
        [
            ("PUT", "/latest/api/token"),
            ("GET", "/latest/dynamic/instance-identity/document"),
            ("GET", "/latest/dynamic/instance-identity/signature"),
            ("GET", "/latest/dynamic/instance-identity/rsa2048"),
        ]
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
    );
    assert_eq!(
        seen[0].headers["x-aws-ec2-metadata-token-ttl-seconds"],
        "300"
    );
    assert!(seen[1..]
        .iter()
        .all(|r| r.headers["x-aws-ec2-metadata-token"] == AWS_IMDS_TOKEN));

    // The same document again (a replay, or the node without eviction): refused by name.
    let already = [
        "attestation rejected: already attested:",
        agent_id,
        "evict it first with `ironroot-server agent evict --spiffe-id",
    ];
    assert_refused(attest(&cfg), Code::PermissionDenied, &already);
    // The record is in the store: a restarted server still refuses.
    restart(&mut env, test);
    assert_refused(attest(&cfg), Code::PermissionDenied, &already);
    // Evicted, the node attests again.
    env.server
        .cli_ok(&["agent", "evict", "--spiffe-id", agent_id]);
    assert_eq!(
        attest(&cfg).expect("attests again after evict").spiffe_id,
        agent_id
    );
    // Banned, it stays refused (the ban is named, not TOFU).
    env.server
        .cli_ok(&["agent", "ban", "--spiffe-id", agent_id]);
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: ban list:", "is banned"],
    );

    // Signed by another key under the same name and serial (not AWS's certificate).
    let forger = TestCert::self_signed("ec2.amazonaws.com test", 1, Validity::around_now(365));
    let doc = aws_document(ACCOUNT, REGION, "i-00000000000000002");
    imds.serve(&doc, &doc, &forger);
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: signature: aws_iid rsa2048 signature refused"],
    );

    // The unsigned copy names another instance than the signed content.
    let signed = aws_document(ACCOUNT, REGION, "i-00000000000000003");
    let copy = aws_document(ACCOUNT, REGION, "i-0000000000000000f");
    imds.serve(&copy, &signed, &aws);
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &["attestation rejected: unsigned document: aws_iid unsigned document differs"],
    );

    // An account the server does not allow, though AWS signed it.
    let doc = aws_document("999999999999", REGION, "i-00000000000000004");
    imds.serve(&doc, &doc, &aws);
    assert_refused(
        attest(&cfg),
        Code::PermissionDenied,
        &[
            "attestation rejected: account_allow_list:",
            "\"999999999999\" is not in account_allow_list",
        ],
    );

    // A payload that is not SPIRE's JSON.
    assert_refused(
        attest_edited(&cfg, &mut |p| p.payload = b"{\"document\": 7".to_vec()),
        Code::InvalidArgument,
        &["the evidence payload does not decode as attestor 'aws_iid' defines it"],
    );

    // The agent's own errors name what it could not fetch, and where.
    imds.server.route(
        "GET",
        "/latest/dynamic/instance-identity/rsa2048",
        ironroot_testkit::cloud_metadata::Reply {
            status: 404,
            body: "Not Found".into(),
            require: Vec::new(),
        },
    );
    let e = attest(&cfg).expect_err("no rsa2048").to_string();
    assert!(
        e.contains("HTTP 404 for the instance identity rsa2048 PKCS#7 signature"),
        "{e}"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    cfg.aws_iid.ec2_metadata_endpoint = format!("http://127.0.0.1:{port}");
    let e = attest(&cfg).expect_err("no IMDS").to_string();
    assert!(
        e.contains("cannot fetch the IMDSv2 session token from http://127.0.0.1:"),
        "{e}"
    );
}
