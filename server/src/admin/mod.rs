//! The admin API: gRPC on a unix socket that only allowed uids may use, and on the
//! Node API's TLS port for callers whose X.509-SVID is an admin's (`tls`).

mod changes;
mod counted;
mod federates_with;
mod socket;
mod tls;

pub(crate) use counted::Counted;
pub use socket::AdminSocketError;
pub(crate) use socket::{bind_admin_socket, serve_admin};
pub(crate) use tls::{AdminAuthorizer, AdminOverTls};

use std::sync::Arc;

use ironroot_api::admin::{self as pb, admin_server::Admin};
use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::{parse_federated_trust_domain, EntryError, EntrySpec};
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use tonic::{Request, Response, Status};

use crate::ca::{CertificateAuthority, HealthState};
use crate::status;
use crate::store::{DataStore, EntryFilter, FederatesWithFilter, FederatesWithMatch, PageRequest};

/// Most selectors accepted in one list filter.
const MAX_FILTER_SELECTORS: usize = 64;

pub(crate) struct AdminService {
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) ca: Arc<CertificateAuthority>,
    /// The agents' view of the store: health reports what it could not read.
    pub(crate) cache: Arc<crate::authorized::AuthorizedCache>,
    /// Every change is recorded here before the caller is answered.
    pub(crate) audit: crate::audit::Audit,
}

fn bundle_pb(b: &TrustBundle) -> Result<pb::Bundle, Status> {
    let jwks_json = b
        .to_jwks_json()
        .map_err(|e| Status::internal(format!("cannot encode bundle: {e}")))?;
    Ok(pb::Bundle {
        trust_domain: b.trust_domain.to_string(),
        x509_authorities: b.x509_authorities.clone(),
        jwks_json,
        sequence_number: b.sequence_number as i64,
    })
}

/// "other.org" or "spiffe://other.org".
/// `by_federates_with` and its match mode as a store filter; none when the list is empty.
fn federates_with_filter(
    names: &[String],
    match_on: i32,
) -> Result<Option<FederatesWithFilter>, Status> {
    let match_on = match pb::FederatesWithMatch::try_from(match_on) {
        Ok(pb::FederatesWithMatch::Superset) => FederatesWithMatch::Superset,
        Ok(pb::FederatesWithMatch::Exact) => FederatesWithMatch::Exact,
        Ok(pb::FederatesWithMatch::Any) => FederatesWithMatch::Any,
        Ok(pb::FederatesWithMatch::Subset) => FederatesWithMatch::Subset,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "match_federates_with_on {match_on}: not a match mode (superset, exact, any, \
                 subset)"
            )))
        }
    };
    if names.is_empty() {
        return Ok(None);
    }
    if names.len() > MAX_FILTER_SELECTORS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_FILTER_SELECTORS} trust domains in by_federates_with"
        )));
    }
    // The same two spellings, and the same refusals, as an entry's own federates_with.
    let trust_domains = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            parse_federated_trust_domain(i, n).map_err(|e| {
                let reason = match e {
                    EntryError::FederatesWith { reason, .. } => reason,
                    other => other.to_string(),
                };
                Status::invalid_argument(format!("by_federates_with {n:?}: {reason}"))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Some(FederatesWithFilter {
        trust_domains,
        match_on,
    }))
}

fn parse_td(s: &str) -> Result<TrustDomain, Status> {
    TrustDomain::parse(s.trim_start_matches("spiffe://"))
        .map_err(|e| Status::invalid_argument(format!("trust_domain {s:?}: {e}")))
}

/// The CERTIFICATE blocks of a PEM text (at least one, each a parsable certificate).
fn pem_certificates(text: &str) -> Result<Vec<Vec<u8>>, Status> {
    use der::Decode;
    let certs = ironroot_api::bundle::certificates_from_pem(text.as_bytes())
        .map_err(|e| Status::invalid_argument(format!("pem {e}")))?;
    for c in &certs {
        x509_cert::Certificate::from_der(c).map_err(|e| {
            Status::invalid_argument(format!("pem: a certificate does not parse: {e}"))
        })?;
    }
    Ok(certs)
}

fn agent_pb(n: crate::store::AttestedNode) -> pb::Agent {
    pb::Agent {
        spiffe_id: n.spiffe_id.to_string(),
        attestor: n.attestor,
        selectors: n.selectors.into_iter().map(Into::into).collect(),
        serial_number: n.serial_number,
        expires_at: n.expires_at,
        banned: n.banned,
        first_attested_at: n.first_attested_at,
        last_attested_at: n.last_attested_at,
    }
}

fn parse_id(field: &str, s: &str) -> Result<SpiffeId, Status> {
    SpiffeId::parse(s).map_err(|e| Status::invalid_argument(format!("{field} {s:?}: {e}")))
}

fn ttl_field(field: &str, v: i32) -> Result<u32, Status> {
    u32::try_from(v).map_err(|_| Status::invalid_argument(format!("{field} must not be negative")))
}

/// Runs store or HSM work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(status::worker)?
}

/// A page request from the wire's `page_size` / `page_token`.
fn page_request(size: i32, token: String) -> Result<PageRequest, Status> {
    let size = usize::try_from(size)
        .map_err(|_| Status::invalid_argument("page_size must not be negative"))?;
    Ok(PageRequest {
        after: (!token.is_empty()).then_some(token),
        size,
    })
}

/// A batch item's outcome on the wire: code 0, or the code and message its
/// error maps to (the same as for a single call).
fn item_status(r: Result<(), Status>) -> pb::ItemStatus {
    match r {
        Ok(()) => pb::ItemStatus::default(),
        Err(s) => pb::ItemStatus {
            code: s.code() as i32,
            message: s.message().to_owned(),
        },
    }
}

fn entry_spec(fields: Option<pb::EntryFields>) -> Result<EntrySpec, Status> {
    let fields = fields.ok_or_else(|| Status::invalid_argument("entry is required"))?;
    EntrySpec::try_from(fields).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Who made an admin call, as the audit log names them: the SPIFFE ID of an admin
/// authorized over mTLS, else the socket peer's uid and pid.
fn actor<T>(req: &Request<T>) -> String {
    if let Some(tls::AdminCaller(id)) = req.extensions().get::<tls::AdminCaller>() {
        return id.to_string();
    }
    match req
        .extensions()
        .get::<tonic::transport::server::UdsConnectInfo>()
        .and_then(|i| i.peer_cred)
    {
        Some(c) => match c.pid() {
            Some(pid) => format!("uid:{} pid:{pid}", c.uid()),
            None => format!("uid:{}", c.uid()),
        },
        None => "unknown".into(),
    }
}

/// An entry as the audit log names it: its SPIFFE ID and parent.
fn entry_target(fields: Option<&pb::EntryFields>) -> String {
    fields.map_or_else(String::new, |f| {
        format!("spiffe_id={} parent_id={}", f.spiffe_id, f.parent_id)
    })
}

/// A batch's items as the audit log names them: the IDs it applied to, and how
/// many items were refused.
fn batch_target<'a>(items: impl Iterator<Item = Option<&'a str>>) -> String {
    let (mut done, mut refused) = (Vec::new(), 0usize);
    for i in items {
        match i {
            Some(id) => done.push(id),
            None => refused += 1,
        }
    }
    format!(
        "{} applied, {refused} refused: {}",
        done.len(),
        done.join(" ")
    )
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_entry(
        &self,
        req: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let (actor, target) = (actor(&req), entry_target(req.get_ref().entry.as_ref()));
        self.audit.check_writable()?;
        let r = self.handle_create_entry(req).await;
        let target = match &r {
            Ok(e) => format!("{} {target}", e.get_ref().id),
            Err(_) => target,
        };
        self.audit.admin(&actor, "entry.create", target, r).await
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = req.get_ref();
        let (actor, target) = (
            actor(&req),
            format!("{} {}", r.id, entry_target(r.entry.as_ref())),
        );
        self.audit.check_writable()?;
        let r = self.handle_update_entry(req).await;
        self.audit.admin(&actor, "entry.update", target, r).await
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let (actor, target) = (actor(&req), req.get_ref().id.clone());
        self.audit.check_writable()?;
        let r = self.handle_delete_entry(req).await;
        self.audit.admin(&actor, "entry.delete", target, r).await
    }

    async fn batch_create_entry(
        &self,
        req: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        let actor = actor(&req);
        self.audit.check_writable()?;
        let r = self.handle_batch_create_entry(req).await;
        // One record per batch: the IDs created, and how many items were refused.
        let target = match &r {
            Ok(b) => batch_target(
                b.get_ref()
                    .results
                    .iter()
                    .map(|i| i.entry.as_ref().map(|e| e.id.as_str())),
            ),
            Err(_) => String::new(),
        };
        self.audit
            .admin(&actor, "entry.batch_create", target, r)
            .await
    }

    async fn batch_delete_entry(
        &self,
        req: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        let actor = actor(&req);
        self.audit.check_writable()?;
        let r = self.handle_batch_delete_entry(req).await;
        let target = match &r {
            Ok(b) => batch_target(b.get_ref().results.iter().map(|i| {
                i.status
                    .as_ref()
                    .is_none_or(|s| s.code == 0)
                    .then_some(i.id.as_str())
            })),
            Err(_) => String::new(),
        };
        self.audit
            .admin(&actor, "entry.batch_delete", target, r)
            .await
    }

    async fn mint_x509_svid(
        &self,
        req: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        let (actor, target) = (actor(&req), req.get_ref().spiffe_id.clone());
        self.audit.check_writable()?;
        let r = self.handle_mint_x509_svid(req).await;
        self.audit.admin(&actor, "x509.mint", target, r).await
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let r = req.get_ref();
        let (actor, target) = (
            actor(&req),
            format!("{} audience={}", r.spiffe_id, r.audience.join(",")),
        );
        self.audit.check_writable()?;
        let r = self.handle_mint_jwt_svid(req).await;
        self.audit.admin(&actor, "jwt.mint", target, r).await
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let actor = actor(&req);
        self.audit.check_writable()?;
        let r = self.handle_create_join_token(req).await;
        // The token itself is a credential: only when it expires goes in the log.
        let target = match &r {
            Ok(t) => format!("expires_at={}", t.get_ref().expires_at),
            Err(_) => String::new(),
        };
        self.audit.admin(&actor, "token.generate", target, r).await
    }

    async fn ban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let (actor, target) = (actor(&req), req.get_ref().spiffe_id.clone());
        self.audit.check_writable()?;
        let r = self.handle_ban_agent(req).await;
        self.audit.admin(&actor, "agent.ban", target, r).await
    }

    async fn evict_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let (actor, target) = (actor(&req), req.get_ref().spiffe_id.clone());
        self.audit.check_writable()?;
        let r = self.handle_evict_agent(req).await;
        self.audit.admin(&actor, "agent.evict", target, r).await
    }

    async fn set_federated_bundle(
        &self,
        req: Request<pb::SetFederatedBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let (actor, target) = (actor(&req), req.get_ref().trust_domain.clone());
        self.audit.check_writable()?;
        let r = self.handle_set_federated_bundle(req).await;
        self.audit.admin(&actor, "bundle.set", target, r).await
    }

    async fn delete_federated_bundle(
        &self,
        req: Request<pb::DeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::DeleteFederatedBundleResponse>, Status> {
        let (actor, target) = (actor(&req), req.get_ref().trust_domain.clone());
        self.audit.check_writable()?;
        let r = self.handle_delete_federated_bundle(req).await;
        self.audit.admin(&actor, "bundle.delete", target, r).await
    }

    async fn get_entry(
        &self,
        req: Request<pb::GetEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = req.into_inner().id;
        let found = self.store.get_entry(&id).await.map_err(status::store)?;
        found
            .map(|e| Response::new(e.into()))
            .ok_or_else(|| Status::not_found("no entry with that id"))
    }

    async fn list_entries(
        &self,
        req: Request<pb::ListEntriesRequest>,
    ) -> Result<Response<pb::ListEntriesResponse>, Status> {
        let r = req.into_inner();
        if r.by_selectors.len() > MAX_FILTER_SELECTORS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_FILTER_SELECTORS} selectors in a filter"
            )));
        }
        let filter = EntryFilter {
            spiffe_id: (!r.by_spiffe_id.is_empty())
                .then(|| parse_id("by_spiffe_id", &r.by_spiffe_id))
                .transpose()?,
            parent_id: (!r.by_parent_id.is_empty())
                .then(|| parse_id("by_parent_id", &r.by_parent_id))
                .transpose()?,
            selectors_superset_of: r
                .by_selectors
                .iter()
                .map(|s| {
                    Selector::new(&s.r#type, &s.value)
                        .map_err(|e| Status::invalid_argument(format!("by_selectors: {e}")))
                })
                .collect::<Result<_, _>>()?,
            federates_with: federates_with_filter(&r.by_federates_with, r.match_federates_with_on)?,
        };
        let page = page_request(r.page_size, r.page_token)?;
        let page = self
            .store
            .list_entries(&filter, &page)
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::ListEntriesResponse {
            entries: page.items.into_iter().map(Into::into).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let b = self.ca.bundle().map_err(status::ca)?;
        bundle_pb(&b).map(Response::new)
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let r = req.into_inner();
        let page = page_request(r.page_size, r.page_token)?;
        let page = self
            .store
            .list_attested_nodes(&page)
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::ListAgentsResponse {
            agents: page.items.into_iter().map(agent_pb).collect(),
            next_page_token: page.next.unwrap_or_default(),
        }))
    }

    async fn list_federated_bundles(
        &self,
        _req: Request<pb::ListFederatedBundlesRequest>,
    ) -> Result<Response<pb::ListFederatedBundlesResponse>, Status> {
        let bundles = self
            .store
            .list_federated_bundles()
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::ListFederatedBundlesResponse {
            bundles: bundles.iter().map(bundle_pb).collect::<Result<_, _>>()?,
        }))
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let st = self.ca.status().map_err(status::ca)?;
        let entries = self.store.count_entries().await.map_err(status::store)?;
        // The key manager's probe is a blocking PKCS#11 call.
        let ca = self.ca.clone();
        let mut health = tokio::task::spawn_blocking(move || ca.health())
            .await
            .map_err(status::worker)?;
        if let Some(p) = self.audit.problem() {
            // Unwritable: changes are refused. Only the checkpoint failing: records are
            // still written, not yet sealed.
            let state = if self.audit.is_writable() {
                HealthState::Degraded
            } else {
                HealthState::Unhealthy
            };
            health.report(state, format!("audit log: {p}"));
        }
        Ok(Response::new(pb::HealthResponse {
            state: health.state.as_str().to_owned(),
            problems: health.problems,
            trust_domain: self.ca.trust_domain().to_string(),
            key_manager: st.key_manager,
            active_x509_authority: st.x509_key_label,
            active_x509_authority_expires_at: st.x509_not_after,
            active_jwt_key_id: st.jwt_key_id,
            entries: entries as i64,
            unreadable_records: self
                .cache
                .read()
                .unreadable()
                .iter()
                .map(|u| u.to_string())
                .collect(),
        }))
    }
}
