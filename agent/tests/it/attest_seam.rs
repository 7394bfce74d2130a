//! The attestor seam over the real Node API: what the seam itself refuses before any
//! attestor's checks (an unknown name, no name, an attestor not enabled on this server, an
//! empty payload, a payload that does not decode for the attestor named), each with its
//! status code and a message naming the rule, and the selector form the server gives back.
//! A join_token agent is enough (no TPM): the hook rewrites its first message. The token is
//! never spent by a refused exchange, so the honest attestation at the end still passes.

use ironroot_agent::attest::{attest_with, AttestError, AttestOutcome, Hooks, KeySource};
use ironroot_agent::config::{AgentConfig, NodeAttestorKind};
use ironroot_api::node as pb;
use ironroot_testkit::server::NodeApiServer;
use tonic::Code;

use crate::common::{agent_config, rt};

fn join_token_agent(env: &NodeApiServer) -> AgentConfig {
    let out = env
        .server
        .cli_ok(&["token", "generate", "--ttl", "600", "--output", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("token JSON");
    AgentConfig {
        join_token: Some(v["token"].as_str().expect("token").to_owned()),
        ..agent_config(env, "agent", NodeAttestorKind::JoinToken)
    }
}

/// Attests with `edit` applied to the first message.
fn attest_edited(
    cfg: &AgentConfig,
    edit: &mut (dyn FnMut(&mut pb::AttestParams) + Send),
) -> Result<AttestOutcome, AttestError> {
    let hooks = Hooks {
        params: Some(edit),
        ..Hooks::default()
    };
    rt().block_on(attest_with(cfg, &KeySource::Software, hooks))
}

/// Asserts the exchange was refused with `code` and a message containing every `words`.
pub(crate) fn assert_refused(r: Result<AttestOutcome, AttestError>, code: Code, words: &[&str]) {
    let refused = match r {
        Ok(o) => panic!("attestation passed but must be refused: {}", o.spiffe_id),
        Err(AttestError::Refused(r)) => r,
        Err(e) => panic!("attestation failed without a status: {e:#}"),
    };
    assert_eq!(refused.code(), code, "{}", refused.message());
    for w in words {
        assert!(
            refused.message().contains(w),
            "expected '{w}' in: {}",
            refused.message()
        );
    }
}

#[test]
fn the_seam_refuses_names_and_payloads_by_rule_before_any_attestor_runs() {
    // [node_attestors.tpm] without a DevID CA: join_token and tpm_ek enabled, tpm_devid not.
    let env = NodeApiServer::start("attest_seam", "", &[], "");
    let cfg = join_token_agent(&env);

    assert_refused(
        attest_edited(&cfg, &mut |p| p.attestor = "tpm-ek".into()),
        Code::PermissionDenied,
        &[
            "attestation rejected: attestor: attestor 'tpm-ek' is unknown",
            "enabled: join_token, tpm_ek",
            "set the agent's node_attestor",
        ],
    );
    assert_refused(
        attest_edited(&cfg, &mut |p| p.attestor.clear()),
        Code::InvalidArgument,
        &["attestor: the agent named no attestor"],
    );
    assert_refused(
        attest_edited(&cfg, &mut |p| p.attestor = "tpm_devid".into()),
        Code::PermissionDenied,
        &[
            "attestor: attestor 'tpm_devid' is not enabled on this server",
            "(enabled: join_token, tpm_ek)",
            "[node_attestors]",
        ],
    );
    assert_refused(
        attest_edited(&cfg, &mut |p| p.payload.clear()),
        Code::InvalidArgument,
        &[
            "evidence payload: attestor 'join_token' was sent an empty evidence payload",
            "upgrade the agent",
        ],
    );
    // A join token under the TPM attestor's name: not a TpmAttestation.
    assert_refused(
        attest_edited(&cfg, &mut |p| {
            p.attestor = "tpm_ek".into();
            p.payload = vec![0x0a, 0x7f, 0x01];
        }),
        Code::InvalidArgument,
        &[
            "evidence payload: the evidence payload does not decode as attestor 'tpm_ek' \
             defines it (TpmAttestation)",
        ],
    );
    assert_refused(
        attest_edited(&cfg, &mut |p| p.payload = vec![0xff, 0xfe, b'x']),
        Code::InvalidArgument,
        &[
            "evidence payload: the evidence payload does not decode as attestor \
             'join_token' defines it (the token as UTF-8 text)",
        ],
    );

    // None of that spent the token; the server prefixes the selector with the attestor's name.
    let o = attest_edited(&cfg, &mut |_| {}).expect("the honest attestation passes");
    assert!(
        o.spiffe_id
            .starts_with("spiffe://example.org/spire/agent/join_token/"),
        "{}",
        o.spiffe_id
    );
    assert_eq!(o.selectors, ["join_token:attested"]);
}
