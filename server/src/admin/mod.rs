//! The admin API (gRPC on a unix socket that only allowed uids may use).

mod socket;

pub use socket::AdminSocketError;
pub(crate) use socket::{bind_admin_socket, serve_admin};

use std::sync::Arc;

use ironroot_api::admin::{self as pb, admin_server::Admin};
use ironroot_api::bundle::TrustBundle;
use ironroot_api::entry::EntrySpec;
use ironroot_api::selector::Selector;
use ironroot_api::spiffe_id::{SpiffeId, TrustDomain};
use tonic::{Request, Response, Status};
use tracing::info;

use crate::ca::CertificateAuthority;
use crate::status;
use crate::store::{DataStore, EntryFilter, PageRequest, MAX_BATCH};

/// Most selectors accepted in one list filter.
const MAX_FILTER_SELECTORS: usize = 64;

pub(crate) struct AdminService {
    pub(crate) store: Arc<dyn DataStore>,
    pub(crate) ca: Arc<CertificateAuthority>,
    /// The agents' view of the store: health reports what it could not read.
    pub(crate) cache: Arc<crate::authorized::AuthorizedCache>,
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

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_entry(
        &self,
        req: Request<pb::CreateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let spec = entry_spec(req.into_inner().entry)?;
        let e = self.store.create_entry(spec).await.map_err(status::store)?;
        info!(entry = %e.id, spiffe_id = %e.spec.spiffe_id, "entry created");
        Ok(Response::new(e.into()))
    }

    async fn update_entry(
        &self,
        req: Request<pb::UpdateEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let r = req.into_inner();
        let spec = entry_spec(r.entry)?;
        let expected = (r.expected_revision != 0).then_some(r.expected_revision);
        let e = self
            .store
            .update_entry(&r.id, spec, expected)
            .await
            .map_err(status::store)?;
        info!(entry = %e.id, revision = e.revision, "entry updated");
        Ok(Response::new(e.into()))
    }

    async fn delete_entry(
        &self,
        req: Request<pb::DeleteEntryRequest>,
    ) -> Result<Response<pb::Entry>, Status> {
        let id = req.into_inner().id;
        let e = self.store.delete_entry(&id).await.map_err(status::store)?;
        info!(entry = %e.id, "entry deleted");
        Ok(Response::new(e.into()))
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

    async fn batch_create_entry(
        &self,
        req: Request<pb::BatchCreateEntryRequest>,
    ) -> Result<Response<pb::BatchCreateEntryResponse>, Status> {
        let fields = req.into_inner().entries;
        if fields.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} entries in one batch; the limit is {MAX_BATCH}",
                fields.len()
            )));
        }
        // Wire-level rule failures are per item, like the store's: the specs
        // that parse go to the store (moved, not copied), the others keep
        // their place as errors.
        let mut specs: Vec<EntrySpec> = Vec::with_capacity(fields.len());
        let parsed: Vec<Result<(), Status>> = fields
            .into_iter()
            .map(|f| entry_spec(Some(f)).map(|spec| specs.push(spec)))
            .collect();
        let mut stored = self
            .store
            .create_entries(specs)
            .await
            .map_err(status::store)?
            .into_iter();
        let mut results = Vec::with_capacity(parsed.len());
        let mut created = 0usize;
        for p in parsed {
            let r = match p {
                Err(s) => Err(s),
                Ok(_) => match stored.next() {
                    Some(r) => r.map_err(status::store),
                    None => Err(Status::internal(
                        "the store returned fewer results than items",
                    )),
                },
            };
            results.push(match r {
                Ok(e) => {
                    created += 1;
                    pb::batch_create_entry_response::Result {
                        status: Some(item_status(Ok(()))),
                        entry: Some(e.into()),
                    }
                }
                Err(s) => pb::batch_create_entry_response::Result {
                    status: Some(item_status(Err(s))),
                    entry: None,
                },
            });
        }
        info!(
            created,
            failed = results.len() - created,
            "entry batch created"
        );
        Ok(Response::new(pb::BatchCreateEntryResponse { results }))
    }

    async fn batch_delete_entry(
        &self,
        req: Request<pb::BatchDeleteEntryRequest>,
    ) -> Result<Response<pb::BatchDeleteEntryResponse>, Status> {
        let ids = req.into_inner().ids;
        if ids.len() > MAX_BATCH {
            return Err(Status::invalid_argument(format!(
                "{} ids in one batch; the limit is {MAX_BATCH}",
                ids.len()
            )));
        }
        let outcomes = self
            .store
            .delete_entries(ids.clone())
            .await
            .map_err(status::store)?;
        let mut deleted = 0usize;
        let results: Vec<_> = ids
            .into_iter()
            .zip(outcomes)
            .map(|(id, r)| {
                deleted += usize::from(r.is_ok());
                pb::batch_delete_entry_response::Result {
                    status: Some(item_status(r.map(|_| ()).map_err(status::store))),
                    id,
                }
            })
            .collect();
        info!(
            deleted,
            failed = results.len() - deleted,
            "entry batch deleted"
        );
        Ok(Response::new(pb::BatchDeleteEntryResponse { results }))
    }

    async fn get_bundle(
        &self,
        _req: Request<pb::GetBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let b = self.ca.bundle().map_err(status::ca)?;
        bundle_pb(&b).map(Response::new)
    }

    async fn mint_x509_svid(
        &self,
        req: Request<pb::MintX509SvidRequest>,
    ) -> Result<Response<pb::MintX509SvidResponse>, Status> {
        let r = req.into_inner();
        let id = parse_id("spiffe_id", &r.spiffe_id)?;
        let ttl = ttl_field("ttl", r.ttl)?;
        let ca = self.ca.clone();
        let dns = r.dns_names;
        let log_id = id.to_string();
        let svid = blocking(move || {
            ca.sign_x509_svid_csr(&r.csr, &id, ttl, &dns)
                .map_err(status::ca)
        })
        .await?;
        let roots = self.ca.bundle().map_err(status::ca)?.x509_authorities;
        info!(spiffe_id = %log_id, expires_at = svid.expires_at, "X.509-SVID minted by admin");
        Ok(Response::new(pb::MintX509SvidResponse {
            svid_chain: svid.chain,
            expires_at: svid.expires_at,
            root_cas: roots,
        }))
    }

    async fn mint_jwt_svid(
        &self,
        req: Request<pb::MintJwtSvidRequest>,
    ) -> Result<Response<pb::MintJwtSvidResponse>, Status> {
        let r = req.into_inner();
        let id = parse_id("spiffe_id", &r.spiffe_id)?;
        let ttl = ttl_field("ttl", r.ttl)?;
        let ca = self.ca.clone();
        let log_id = id.to_string();
        let (token, expires_at) =
            blocking(move || ca.mint_jwt_svid(&id, &r.audience, ttl).map_err(status::ca)).await?;
        info!(spiffe_id = %log_id, expires_at, "JWT-SVID minted by admin");
        Ok(Response::new(pb::MintJwtSvidResponse { token, expires_at }))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::JoinToken>, Status> {
        let ttl = match req.into_inner().ttl {
            0 => 600,
            t if t < 0 => return Err(Status::invalid_argument("ttl must not be negative")),
            t => i64::from(t),
        };
        let (token, expires_at) = crate::node::join_token::create(self.store.as_ref(), ttl)
            .await
            .map_err(status::store)?;
        info!(expires_at, "join token created");
        Ok(Response::new(pb::JoinToken { token, expires_at }))
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

    async fn ban_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = parse_id("spiffe_id", &req.into_inner().spiffe_id)?;
        let n = self
            .store
            .set_node_banned(&id, true)
            .await
            .map_err(status::store)?;
        tracing::warn!(agent = %n.spiffe_id, "agent banned");
        Ok(Response::new(agent_pb(n)))
    }

    async fn evict_agent(
        &self,
        req: Request<pb::AgentIdRequest>,
    ) -> Result<Response<pb::Agent>, Status> {
        let id = parse_id("spiffe_id", &req.into_inner().spiffe_id)?;
        let n = self
            .store
            .delete_attested_node(&id)
            .await
            .map_err(status::store)?
            .ok_or_else(|| Status::not_found(format!("no attested agent '{id}'")))?;
        info!(agent = %n.spiffe_id, "agent evicted");
        Ok(Response::new(agent_pb(n)))
    }

    async fn set_federated_bundle(
        &self,
        req: Request<pb::SetFederatedBundleRequest>,
    ) -> Result<Response<pb::Bundle>, Status> {
        let r = req.into_inner();
        let td = parse_td(&r.trust_domain)?;
        let bundle = match (r.jwks_json.is_empty(), r.pem.is_empty()) {
            (false, true) => TrustBundle::from_jwks_json(td, &r.jwks_json)
                .map_err(|e| Status::invalid_argument(format!("jwks_json: {e}")))?,
            (true, false) => {
                let mut b = TrustBundle::new(td);
                b.x509_authorities = pem_certificates(&r.pem)?;
                b
            }
            _ => {
                return Err(Status::invalid_argument(
                    "give the bundle as jwks_json or as pem (one of them)",
                ))
            }
        };
        self.store
            .put_federated_bundle(&bundle)
            .await
            .map_err(status::store)?;
        info!(trust_domain = %bundle.trust_domain, "federated bundle set");
        bundle_pb(&bundle).map(Response::new)
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

    async fn delete_federated_bundle(
        &self,
        req: Request<pb::DeleteFederatedBundleRequest>,
    ) -> Result<Response<pb::DeleteFederatedBundleResponse>, Status> {
        let td = parse_td(&req.into_inner().trust_domain)?;
        let deleted = self
            .store
            .delete_federated_bundle(&td)
            .await
            .map_err(status::store)?;
        Ok(Response::new(pb::DeleteFederatedBundleResponse { deleted }))
    }

    async fn health(
        &self,
        _req: Request<pb::HealthRequest>,
    ) -> Result<Response<pb::HealthResponse>, Status> {
        let st = self.ca.status().map_err(status::ca)?;
        let entries = self.store.count_entries().await.map_err(status::store)?;
        // The key manager's probe is a blocking PKCS#11 call.
        let ca = self.ca.clone();
        let ca_health = tokio::task::spawn_blocking(move || ca.health())
            .await
            .map_err(status::worker)?;
        Ok(Response::new(pb::HealthResponse {
            state: ca_health.state.as_str().to_owned(),
            problems: ca_health.problems,
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
