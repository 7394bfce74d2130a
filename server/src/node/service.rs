//! The Node API stream: params -> (challenge -> answer) -> agent SVID.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ironroot_api::node::{self as pb, node_server::Node};
use ironroot_runtime::unix_now;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use super::limits::NodeLimits;
use super::registry::Registry;
use super::{AttestError, Attested, AttestorRefusal, Begun, Evidence, NodeAttestor};
use crate::ca::{x509, CertificateAuthority};
use crate::status;
use crate::store::{AttestedNode, DataStore};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::SpiffeId;

pub(crate) struct NodeService {
    /// The enabled node attestors, by name.
    pub(crate) attestors: Registry,
    pub(crate) ca: Arc<CertificateAuthority>,
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) agent_svid_ttl: Duration,
    /// How long an agent has to answer a challenge.
    pub(crate) challenge_ttl: Duration,
    /// `[node_api.limits]`, shared with the agent API and the accept loop.
    pub(crate) limits: Arc<NodeLimits>,
    /// Every attestation, accepted or refused, is recorded before the agent is answered.
    pub(crate) audit: crate::audit::Audit,
}

type AttestStream = Pin<Box<dyn Stream<Item = Result<pb::AttestResponse, Status>> + Send>>;

fn step_of(msg: Option<pb::AttestRequest>) -> Option<pb::attest_request::Step> {
    msg.and_then(|m| m.step)
}

impl NodeService {
    async fn run(
        self: Arc<Self>,
        mut inbound: Streaming<pb::AttestRequest>,
        tx: &mpsc::Sender<Result<pb::AttestResponse, Status>>,
        attestor_named: &mut String,
    ) -> Result<pb::AttestResult, Status> {
        // An idle stream must not hold a task forever.
        let first = tokio::time::timeout(self.challenge_ttl, inbound.message())
            .await
            .map_err(|_| {
                Status::deadline_exceeded("no attestation parameters were sent in time")
            })??;
        let Some(pb::attest_request::Step::Params(params)) = step_of(first) else {
            return Err(Status::invalid_argument(
                "the first message must carry the attestation parameters",
            ));
        };
        attestor_named.clone_from(&params.attestor);
        let attestor = self
            .attestors
            .get(&params.attestor)
            .map_err(|r| status::attest(&r.into()))?;
        // Proof of possession of the agent key before any attestor work.
        let public_key = x509::parse_csr(&params.csr)
            .map_err(|e| status::attest(&AttestError::malformed("agent CSR", e.to_string())))?;
        if params.payload.is_empty() {
            return Err(status::attest(
                &AttestorRefusal::EmptyPayload {
                    attestor: attestor.name(),
                    message: "evidence",
                }
                .into(),
            ));
        }

        let begin_with = attestor.clone();
        let begun = blocking(move || {
            begin_with.begin(&Evidence {
                payload: &params.payload,
                csr: &params.csr,
            })
        })
        .await?;
        let attested = match begun {
            Begun::Done(a) => a,
            Begun::Challenge(challenge, pending) => {
                tx.send(Ok(pb::AttestResponse {
                    step: Some(pb::attest_response::Step::Challenge(pb::Challenge {
                        payload: challenge,
                    })),
                }))
                .await
                .map_err(|_| Status::cancelled("the agent went away"))?;
                let answer = tokio::time::timeout(self.challenge_ttl, inbound.message())
                    .await
                    .map_err(|_| {
                        status::attest(&AttestError::rejected(
                            "challenge",
                            format!(
                                "no answer within {}s; the challenge expired",
                                self.challenge_ttl.as_secs()
                            ),
                        ))
                    })??;
                let Some(pb::attest_request::Step::ChallengeResponse(resp)) = step_of(answer)
                else {
                    return Err(Status::invalid_argument(
                        "the second message must answer the challenge",
                    ));
                };
                blocking(move || pending.finish(&resp.payload)).await?
            }
        };
        let attested = seal(attestor.as_ref(), attested).map_err(|e| status::attest(&e))?;
        self.issue(attested, public_key).await
    }

    /// Records the node and signs its agent SVID.
    async fn issue(
        &self,
        attested: Sealed,
        public_key: rcgen::PublicKey,
    ) -> Result<pb::AttestResult, Status> {
        check_not_banned(self.store.as_ref(), &attested).await?;
        // Before the HSM signs anything for a replay; the record below re-checks atomically.
        if !attested.can_reattest {
            check_first_attestation(self.store.as_ref(), &attested).await?;
        }
        let ca = self.ca.clone();
        let ttl = u32::try_from(self.agent_svid_ttl.as_secs()).unwrap_or(u32::MAX);
        let agent_id = attested.agent_id.clone();
        let svid = tokio::task::spawn_blocking(move || {
            ca.sign_x509_svid(&public_key, &agent_id, ttl, &[])
                .map_err(status::ca)
        })
        .await
        .map_err(status::worker)??;
        let now = unix_now();
        let serial = svid
            .chain
            .first()
            .and_then(|leaf| x509::serial_hex(leaf))
            .unwrap_or_default();
        let a = &attested;
        let node = AttestedNode {
            spiffe_id: a.agent_id.clone(),
            attestor: a.attestor.to_owned(),
            selectors: a.selectors.clone(),
            serial_number: serial,
            expires_at: svid.expires_at,
            banned: false,
            first_attested_at: now,
            last_attested_at: now,
        };
        let recorded = if a.can_reattest {
            self.store.record_attestation(&node).await
        } else {
            self.store.record_first_attestation(&node).await
        };
        recorded.map_err(|e| match e {
            crate::store::StoreError::Banned { .. } => {
                status::attest(&AttestError::rejected("ban list", e.to_string()))
            }
            crate::store::StoreError::AlreadyAttested { .. } => {
                status::attest(&AttestError::rejected(ALREADY_ATTESTED, e.to_string()))
            }
            e => status::store(e),
        })?;
        let roots = self.ca.bundle().map_err(status::ca)?.x509_authorities;
        info!(
            agent = %attested.agent_id,
            policy = attested.boot_policy.as_deref().unwrap_or("-"),
            "node attested"
        );
        Ok(pb::AttestResult {
            spiffe_id: attested.agent_id.to_string(),
            selectors: attested.selectors.iter().map(|s| s.to_string()).collect(),
            svid_chain: svid.chain,
            root_cas: roots,
            expires_at: svid.expires_at,
            boot_policy: attested.boot_policy.unwrap_or_default(),
            devid_certificate_chain: attested.devid_chain,
        })
    }
}

/// What the attestor proved, as the server records it: every selector value prefixed with
/// the attestor's selector type (SPIRE's rule: an attestor cannot make selectors of another
/// type), and the agent ID checked to be under `/spire/agent/<name>/` (an attestor cannot
/// name an agent of another attestor, or the server).
pub(super) fn seal(attestor: &dyn NodeAttestor, a: Attested) -> Result<Sealed, AttestError> {
    let name = attestor.name();
    let under = a
        .agent_id
        .path()
        .strip_prefix("/spire/agent/")
        .and_then(|rest| rest.strip_prefix(name))
        .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'));
    if !under {
        return Err(AttestError::internal(
            "agent id",
            format!(
                "attestor '{name}' named agent {}, outside spiffe://<td>/spire/agent/{name}/",
                a.agent_id
            ),
        ));
    }
    let kind = attestor.selector_type();
    let selectors = a
        .selectors
        .iter()
        .map(|v| {
            Selector::new(kind, v.clone())
                .map_err(|e| AttestError::internal("selectors", format!("attestor '{name}': {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Sealed {
        attestor: name,
        can_reattest: attestor.can_reattest(),
        agent_id: a.agent_id,
        selectors,
        boot_policy: a.boot_policy,
        devid_chain: a.devid_chain,
    })
}

/// An attestation the service accepted from its attestor (see [`seal`]).
#[derive(Debug)]
pub(super) struct Sealed {
    pub(super) attestor: &'static str,
    /// The attestor's [`NodeAttestor::can_reattest`].
    pub(super) can_reattest: bool,
    pub(super) agent_id: SpiffeId,
    pub(super) selectors: Vec<Selector>,
    pub(super) boot_policy: Option<String>,
    pub(super) devid_chain: Vec<Vec<u8>>,
}

/// Refuses a banned node, and any node whose TPM (EK hash) belongs to a banned
/// node: a banned TPM cannot come back under another attestor or a new LDevID.
/// Reads only the banned nodes (an index), never every node.
async fn check_not_banned(store: &dyn DataStore, a: &Sealed) -> Result<(), Status> {
    let ek = a
        .selectors
        .iter()
        .find(|s| s.kind == super::tpm::SELECTOR_TYPE && s.value.starts_with("ek_hash:"));
    let banned = store
        .list_banned_nodes()
        .await
        .map_err(status::store)?
        .into_iter()
        .find(|n| n.spiffe_id == a.agent_id || ek.is_some_and(|s| n.selectors.contains(s)));
    match banned {
        Some(n) => Err(status::attest(&AttestError::rejected(
            "ban list",
            format!(
                "{} is banned{}; evict it before this node may attest again",
                n.spiffe_id,
                if n.spiffe_id == a.agent_id {
                    ""
                } else {
                    " and shares this node's TPM"
                }
            ),
        ))),
        None => Ok(()),
    }
}

/// The check a trust-on-first-use refusal names.
const ALREADY_ATTESTED: &str = "already attested";

/// Refuses a node whose attestor attests once (SPIRE's TOFU rule) when its agent ID is
/// already in the store: a replayed document, or the same node attesting again without
/// being evicted. Kept across restarts (the store holds it); eviction re-enables it.
async fn check_first_attestation(store: &dyn DataStore, a: &Sealed) -> Result<(), Status> {
    match store.get_attested_node(&a.agent_id).await {
        Ok(None) => Ok(()),
        Ok(Some(_)) => Err(status::attest(&AttestError::rejected(
            ALREADY_ATTESTED,
            crate::store::StoreError::AlreadyAttested {
                id: a.agent_id.to_string(),
            }
            .to_string(),
        ))),
        Err(e) => Err(status::store(e)),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AttestError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(status::attest(&e)),
        Err(e) => Err(status::worker(e)),
    }
}

/// The gRPC face of a shared [`NodeService`].
pub(crate) struct NodeApi(pub Arc<NodeService>);

#[tonic::async_trait]
impl Node for NodeApi {
    type AttestStream = AttestStream;

    async fn attest(
        &self,
        req: Request<Streaming<pb::AttestRequest>>,
    ) -> Result<Response<Self::AttestStream>, Status> {
        let remote = req.remote_addr();
        // An attestation that could not be recorded would be refused after the node was
        // stored (and a TOFU attestor's document spent): refuse before any work instead.
        self.0.audit.check_writable()?;
        // Before any message is read: the address's rate, then the server-wide cap.
        let permit = self
            .0
            .limits
            .admit_attestation(remote, Instant::now())
            .map_err(|e| e.to_status())?;
        let peer = remote
            .map(|a| a.to_string())
            .unwrap_or_else(|| "unknown".into());
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(2);
        let svc = self.0.clone();
        tokio::spawn(async move {
            // Counted against max_attestations_in_flight until the exchange ends.
            let _permit = permit;
            let mut attestor = String::new();
            let started = Instant::now();
            let outcome = svc.clone().run(inbound, &tx, &mut attestor).await;
            // The label is the enabled attestor's own name: never a string the agent sent.
            let attestor_label = svc.attestors.get(&attestor).map_or("unknown", |a| a.name());
            let outcome_label = match &outcome {
                Ok(_) => "accepted",
                Err(status) => ironroot_runtime::metrics::grpc_code_label(status.code() as i32),
            };
            crate::metrics::metrics().attestation(attestor_label, outcome_label, started.elapsed());
            let msg = match outcome {
                // Not answered unless recorded: an agent holds no SVID the log does not show.
                Ok(result) => svc
                    .audit
                    .attestation(&attestor, &result.spiffe_id, &peer, None)
                    .await
                    .map(|()| pb::AttestResponse {
                        step: Some(pb::attest_response::Step::Result(result)),
                    }),
                Err(status) => {
                    warn!(peer = %peer, reason = %status.message(), "node attestation rejected");
                    // A refusal is recorded too; failing to record it changes nothing for
                    // the agent (it is refused either way).
                    let _ = svc
                        .audit
                        .attestation(&attestor, "", &peer, Some(status.message()))
                        .await;
                    Err(status)
                }
            };
            let _ = tx.send(msg).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ironroot_api::spiffe_id::TrustDomain;

    struct Fixed(&'static str, &'static str);
    impl NodeAttestor for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn selector_type(&self) -> &'static str {
            self.1
        }
        fn begin(&self, _: &Evidence<'_>) -> Result<Begun, AttestError> {
            unreachable!("not called by these tests")
        }
    }

    fn attested(path: &str, selectors: &[&str]) -> Attested {
        let td: TrustDomain = "example.org".parse().unwrap();
        Attested {
            agent_id: SpiffeId::from_path(&td, path).unwrap(),
            selectors: selectors.iter().map(|s| s.to_string()).collect(),
            boot_policy: None,
            devid_chain: Vec::new(),
        }
    }

    #[test]
    fn selector_values_get_the_attestor_type_and_agent_ids_stay_under_its_name() {
        let aws = Fixed("aws_iid", "aws_iid");
        let s = seal(
            &aws,
            attested(
                "/spire/agent/aws_iid/123/eu-west-1/i-1",
                &["account_id:123", "tpm:ek_hash:ab"],
            ),
        )
        .unwrap();
        let shown: Vec<String> = s.selectors.iter().map(|s| s.to_string()).collect();
        // A value that looks like another type's selector stays inside this type.
        assert_eq!(
            shown,
            ["aws_iid:account_id:123", "aws_iid:tpm:ek_hash:ab"],
            "every value is prefixed with the attestor's type"
        );
        assert_eq!(s.attestor, "aws_iid");
        // The TPM attestors keep their `tpm` type.
        let tpm = Fixed("tpm_ek", "tpm");
        let s = seal(
            &tpm,
            attested("/spire/agent/tpm_ek/ab12", &["ek_hash:ab12"]),
        )
        .unwrap();
        assert_eq!(s.selectors[0].to_string(), "tpm:ek_hash:ab12");

        for path in [
            "/spire/agent/tpm_ek/ab12",
            "/spire/agent/aws_iid",
            "/spire/agent/aws_iidx/1",
            "/spire/server",
            "/workload/aws_iid/1",
        ] {
            let e = seal(&aws, attested(path, &[])).unwrap_err();
            assert_eq!(e.check, "agent id", "{path}");
            assert_eq!(e.kind, crate::node::RejectKind::Internal, "{path}");
        }
    }
}
